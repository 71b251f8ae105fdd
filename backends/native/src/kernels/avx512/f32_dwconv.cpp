// AVX-512 depthwise convolution of one padded plane: 16 output columns per vector, stride 1
// as plain loads, stride 2 as two loads and an even-lane permute.
#include <immintrin.h>

#include "kernels/avx512/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

template <int SW>
void plane(const DwConvPlane& p) {
  using namespace avx512;
  __m512 w[64];
  const size_t taps = p.kh * p.kw;
  for (size_t i = 0; i < taps; ++i) w[i] = _mm512_set1_ps(p.w[i]);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    const float* res = p.residual ? p.residual + oy * p.ow : nullptr;
    for (size_t ox = 0; ox < p.ow; ox += 16) {
      __m512 acc = _mm512_set1_ps(p.bias);
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const float* row = p.x + (oy * p.sh + ky * p.dh) * p.x_stride + ox * SW;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float* s = row + kx * p.dw;
          __m512 v;
          if (SW == 1) {
            v = _mm512_loadu_ps(s);
          } else {
            v = _mm512_permutex2var_ps(_mm512_loadu_ps(s), even, _mm512_loadu_ps(s + 16));
          }
          acc = _mm512_fmadd_ps(w[ky * p.kw + kx], v, acc);
        }
      }
      const __mmask16 m = tail_mask(p.ow - ox);
      if (res) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, res + ox));
      _mm512_mask_storeu_ps(y + ox, m, activate(acc, p.act, p.alpha, p.beta));
    }
  }
}

// Fixed kernel size: taps in registers, the tap loops unrolled.
template <int KH, int KW, int SW>
void plane_fixed(const DwConvPlane& p) {
  using namespace avx512;
  __m512 w[KH * KW];
#pragma GCC unroll 25
  for (int i = 0; i < KH * KW; ++i) w[i] = _mm512_set1_ps(p.w[i]);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512 bias = _mm512_set1_ps(p.bias);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    const float* res = p.residual ? p.residual + oy * p.ow : nullptr;
    const float* rows = p.x + oy * p.sh * p.x_stride;
    for (size_t ox = 0; ox < p.ow; ox += 16) {
      __m512 acc0 = bias, acc1 = _mm512_setzero_ps();
#pragma GCC unroll 5
      for (int ky = 0; ky < KH; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
#pragma GCC unroll 5
        for (int kx = 0; kx < KW; ++kx) {
          const float* s = row + kx * p.dw;
          const __m512 v = SW == 1 ? _mm512_loadu_ps(s)
              : _mm512_permutex2var_ps(_mm512_loadu_ps(s), even, _mm512_loadu_ps(s + 16));
          // two chains halve the dependent FMA latency
          if ((ky * KW + kx) % 2 == 0) acc0 = _mm512_fmadd_ps(w[ky * KW + kx], v, acc0);
          else acc1 = _mm512_fmadd_ps(w[ky * KW + kx], v, acc1);
        }
      }
      __m512 acc = _mm512_add_ps(acc0, acc1);
      const __mmask16 m = tail_mask(p.ow - ox);
      if (res) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, res + ox));
      _mm512_mask_storeu_ps(y + ox, m, activate(acc, p.act, p.alpha, p.beta));
    }
  }
}

}  // namespace

void kiln_f32_dwconv_ukernel__avx512_x16(const DwConvPlane& p) {
  if (p.kh * p.kw > 64 || (p.sw != 1 && p.sw != 2)) return kiln_f32_dwconv_ukernel__generic(p);
  if (p.kh == 3 && p.kw == 3) return p.sw == 1 ? plane_fixed<3, 3, 1>(p) : plane_fixed<3, 3, 2>(p);
  if (p.kh == 5 && p.kw == 5) return p.sw == 1 ? plane_fixed<5, 5, 1>(p) : plane_fixed<5, 5, 2>(p);
  if (p.sw == 1) plane<1>(p); else plane<2>(p);
}

}  // namespace kiln
