// NEON depthwise convolution of one padded plane: 4 output columns per vector, stride 1 as
// plain loads, stride 2 as a de-interleaving load (ld2).
#include <arm_neon.h>

#include "kernels/neon/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

using neon::V128;

template <int SW>
inline float32x4_t window(const float* s) {
  return SW == 1 ? V128::load(s) : V128::load_even(s);
}

// KH, KW > 0: fixed kernel size with the tap loops unrolled; 0: the plane's own size.
template <int KH, int KW, int SW>
void plane(const DwConvPlane& p) {
  const size_t kh = KH ? KH : p.kh, kw = KW ? KW : p.kw;
  float32x4_t w[64];
  for (size_t i = 0; i < kh * kw; ++i) w[i] = vdupq_n_f32(p.w[i]);
  const float32x4_t bias = vdupq_n_f32(p.bias);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    const float* res = p.residual ? p.residual + oy * p.ow : nullptr;
    const float* rows = p.x + oy * p.sh * p.x_stride;
    for (size_t ox = 0; ox < p.ow; ox += 4) {
      float32x4_t acc0 = bias, acc1 = vdupq_n_f32(0.0f);
#pragma GCC unroll 5
      for (size_t ky = 0; ky < kh; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
#pragma GCC unroll 5
        for (size_t kx = 0; kx < kw; ++kx) {
          const float32x4_t v = window<SW>(row + kx * p.dw);
          if ((ky * kw + kx) % 2 == 0) acc0 = vfmaq_f32(acc0, w[ky * kw + kx], v);
          else acc1 = vfmaq_f32(acc1, w[ky * kw + kx], v);
        }
      }
      float32x4_t acc = vaddq_f32(acc0, acc1);
      const size_t left = p.ow - ox;
      if (res) acc = vaddq_f32(acc, V128::load_n(res + ox, left));
      V128::store_n(y + ox, neon::activate(acc, p.act, p.alpha, p.beta), left);
    }
  }
}

}  // namespace

void kiln_f32_dwconv_ukernel__neon_x4(const DwConvPlane& p) {
  if (p.kh * p.kw > 64 || (p.sw != 1 && p.sw != 2)) return kiln_f32_dwconv_ukernel__generic(p);
  if (p.kh == 3 && p.kw == 3) return p.sw == 1 ? plane<3, 3, 1>(p) : plane<3, 3, 2>(p);
  if (p.kh == 5 && p.kw == 5) return p.sw == 1 ? plane<5, 5, 1>(p) : plane<5, 5, 2>(p);
  if (p.sw == 1) plane<0, 0, 1>(p);
  else plane<0, 0, 2>(p);
}

}  // namespace kiln
