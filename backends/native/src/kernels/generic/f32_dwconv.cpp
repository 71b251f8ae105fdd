// Plain C++ depthwise convolution of one channel plane, bounds checked (the oracle: it reads
// the plane directly and leaves the staging rows alone).
#include "kernels/ukernels.h"

namespace kiln {

namespace {

void dwconv_nhwc(const DwConvPlane& p) {
  const size_t S = p.nhwc_stride;
  for (size_t oy = p.oy0; oy < p.oy1; ++oy)
    for (size_t ox = 0; ox < p.ow; ++ox)
      for (size_t c = 0; c < p.channels; ++c) {
        float acc = p.biases ? p.biases[c] : 0.0f;
        for (size_t ky = 0; ky < p.kh; ++ky) {
          const long iy = long(oy * p.sh + ky * p.dh) - long(p.pad_top);
          if (iy < 0 || iy >= long(p.in_h)) continue;
          for (size_t kx = 0; kx < p.kw; ++kx) {
            const long ix = long(ox * p.sw + kx * p.dw) - long(p.pad_left);
            if (ix < 0 || ix >= long(p.in_w)) continue;
            acc += p.w[(ky * p.kw + kx) * S + c] * p.x[(size_t(iy) * p.in_w + size_t(ix)) * S + c];
          }
        }
        const size_t at = (oy * p.ow + ox) * S + c;
        if (p.residual) acc += p.residual[at];
        p.y[at] = activation_reference(p.act, p.alpha, p.beta, acc);
      }
}

}  // namespace

void kiln_f32_dwconv_ukernel__generic(const DwConvPlane& p) {
  if (p.nhwc_stride) return dwconv_nhwc(p);
  if (p.channels) {  // the blocked form: each channel as a plane of its own
    const size_t taps = p.kh * p.kw;
    for (size_t c = 0; c < p.channels; ++c) {
      DwConvPlane one = p;
      one.channels = 0;
      one.x = p.x + c * p.in_h * p.in_w;
      one.y = p.y + c * p.oh * p.ow;
      one.residual = p.residual ? p.residual + c * p.oh * p.ow : nullptr;
      one.w = p.w + c * taps;
      one.bias = p.biases ? p.biases[c] : 0.0f;
      one.has_prologue = p.in_scales != nullptr;
      one.in_scale = p.in_scales ? p.in_scales[c] : 1.0f;
      one.in_shift = p.in_shifts ? p.in_shifts[c] : 0.0f;
      kiln_f32_dwconv_ukernel__generic(one);
    }
    return;
  }
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
