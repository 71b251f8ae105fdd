// Plain C++ depthwise convolution of one channel plane, bounds checked (the oracle: it reads
// the plane directly and leaves the staging rows alone).
#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_dwconv_ukernel__generic(const DwConvPlane& p) {
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    for (size_t ox = 0; ox < p.ow; ++ox) {
      float acc = p.bias;
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const long iy = long(oy * p.sh + ky * p.dh) - long(p.pad_top);
        if (iy < 0 || iy >= long(p.in_h)) continue;
        const float* x = p.x + size_t(iy) * p.in_w;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const long ix = long(ox * p.sw + kx * p.dw) - long(p.pad_left);
          if (ix < 0 || ix >= long(p.in_w)) continue;
          float u = x[ix];
          if (p.has_prologue) {
            u = p.in_scale * u + p.in_shift;
            if (p.in_relu) u = u < 0.0f ? 0.0f : u;  // NaN stays NaN
          }
          acc += p.w[ky * p.kw + kx] * u;
        }
      }
      if (p.residual) acc += p.residual[oy * p.ow + ox];
      y[ox] = activation_reference(p.act, p.alpha, p.beta, acc);
    }
  }
}

}  // namespace kiln
