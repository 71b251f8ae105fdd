// Plain C++ depthwise convolution of one padded channel plane.
#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_dwconv_ukernel__generic(const DwConvPlane& p) {
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    for (size_t ox = 0; ox < p.ow; ++ox) {
      float acc = p.bias;
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const float* x = p.x + (oy * p.sh + ky * p.dh) * p.x_stride + ox * p.sw;
        for (size_t kx = 0; kx < p.kw; ++kx) acc += p.w[ky * p.kw + kx] * x[kx * p.dw];
      }
      if (p.residual) acc += p.residual[oy * p.ow + ox];
      y[ox] = activation_reference(p.act, p.alpha, p.beta, acc);
    }
  }
}

}  // namespace kiln
