// Plain C++ direct convolution over rows of one image, bounds checked (the oracle: it reads
// the input and the packed weights directly and leaves the staging scratch alone).
#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_directconv_ukernel__generic(const DirectConvRows& p) {
  const size_t kdim = p.C * p.kh * p.kw;
  for (size_t k = 0; k < p.K; ++k) {
    const float* w = p.w + (k / kDirectConvBlock) * kdim * kDirectConvBlock +
                     k % kDirectConvBlock;
    for (size_t oy = p.oy0; oy < p.oy1; ++oy)
      for (size_t ox = 0; ox < p.ow; ++ox) {
        float acc = 0.0f;
        for (size_t c = 0; c < p.C; ++c)
          for (size_t ky = 0; ky < p.kh; ++ky) {
            const long iy = long(oy * p.sh + ky * p.dh) - long(p.pad_top);
            if (iy < 0 || iy >= long(p.H)) continue;
            const float* x = p.x + (c * p.H + size_t(iy)) * p.W;
            for (size_t kx = 0; kx < p.kw; ++kx) {
              const long ix = long(ox * p.sw + kx * p.dw) - long(p.pad_left);
              if (ix < 0 || ix >= long(p.W)) continue;
              acc += w[((c * p.kh + ky) * p.kw + kx) * kDirectConvBlock] * x[ix];
            }
          }
        const size_t at = (k * p.oh + oy) * p.ow + ox;
        if (p.bias) acc += p.bias[k];
        if (p.residual) acc += p.residual[at];
        p.y[at] = activation_reference(p.act, p.alpha, p.beta, acc);
      }
  }
}

}  // namespace kiln
