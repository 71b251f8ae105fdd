// AVX2 depthwise convolution of one padded plane: 8 output columns per vector, stride 1 as
// plain loads, stride 2 as two loads and an even-lane shuffle.
#include <immintrin.h>

#include "kernels/avx2/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

template <int SW>
void plane(const DwConvPlane& p) {
  using namespace avx2;
  __m256 w[64];
  const size_t taps = p.kh * p.kw;
  for (size_t i = 0; i < taps; ++i) w[i] = _mm256_set1_ps(p.w[i]);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    const float* res = p.residual ? p.residual + oy * p.ow : nullptr;
    for (size_t ox = 0; ox < p.ow; ox += 8) {
      __m256 acc = _mm256_set1_ps(p.bias);
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const float* row = p.x + (oy * p.sh + ky * p.dh) * p.x_stride + ox * SW;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float* s = row + kx * p.dw;
          __m256 v;
          if (SW == 1) {
            v = _mm256_loadu_ps(s);
          } else {
            const __m256 ev = _mm256_shuffle_ps(_mm256_loadu_ps(s), _mm256_loadu_ps(s + 8), 0x88);
            v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xd8));
          }
          acc = _mm256_fmadd_ps(w[ky * p.kw + kx], v, acc);
        }
      }
      const size_t left = p.ow - ox;
      if (left >= 8) {
        if (res) acc = _mm256_add_ps(acc, _mm256_loadu_ps(res + ox));
        _mm256_storeu_ps(y + ox, activate(acc, p.act, p.alpha, p.beta));
      } else {
        const __m256i m = tail_mask(left);
        if (res) acc = _mm256_add_ps(acc, _mm256_maskload_ps(res + ox, m));
        _mm256_maskstore_ps(y + ox, m, activate(acc, p.act, p.alpha, p.beta));
      }
    }
  }
}

// Fixed kernel size: taps in registers, the tap loops unrolled.
template <int KH, int KW, int SW>
void plane_fixed(const DwConvPlane& p) {
  using namespace avx2;
  __m256 w[KH * KW];
#pragma GCC unroll 25
  for (int i = 0; i < KH * KW; ++i) w[i] = _mm256_set1_ps(p.w[i]);
  const __m256 bias = _mm256_set1_ps(p.bias);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    const float* res = p.residual ? p.residual + oy * p.ow : nullptr;
    const float* rows = p.x + oy * p.sh * p.x_stride;
    for (size_t ox = 0; ox < p.ow; ox += 8) {
      __m256 acc0 = bias, acc1 = _mm256_setzero_ps();
#pragma GCC unroll 5
      for (int ky = 0; ky < KH; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
#pragma GCC unroll 5
        for (int kx = 0; kx < KW; ++kx) {
          const float* s = row + kx * p.dw;
          __m256 v;
          if (SW == 1) {
            v = _mm256_loadu_ps(s);
          } else {
            const __m256 ev = _mm256_shuffle_ps(_mm256_loadu_ps(s), _mm256_loadu_ps(s + 8), 0x88);
            v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xd8));
          }
          if ((ky * KW + kx) % 2 == 0) acc0 = _mm256_fmadd_ps(w[ky * KW + kx], v, acc0);
          else acc1 = _mm256_fmadd_ps(w[ky * KW + kx], v, acc1);
        }
      }
      __m256 acc = _mm256_add_ps(acc0, acc1);
      const size_t left = p.ow - ox;
      if (left >= 8) {
        if (res) acc = _mm256_add_ps(acc, _mm256_loadu_ps(res + ox));
        _mm256_storeu_ps(y + ox, activate(acc, p.act, p.alpha, p.beta));
      } else {
        const __m256i m = tail_mask(left);
        if (res) acc = _mm256_add_ps(acc, _mm256_maskload_ps(res + ox, m));
        _mm256_maskstore_ps(y + ox, m, activate(acc, p.act, p.alpha, p.beta));
      }
    }
  }
}

}  // namespace

void kiln_f32_dwconv_ukernel__avx2_x8(const DwConvPlane& p) {
  if (p.kh * p.kw > 64 || (p.sw != 1 && p.sw != 2)) return kiln_f32_dwconv_ukernel__generic(p);
  if (p.kh == 3 && p.kw == 3) return p.sw == 1 ? plane_fixed<3, 3, 1>(p) : plane_fixed<3, 3, 2>(p);
  if (p.kh == 5 && p.kw == 5) return p.sw == 1 ? plane_fixed<5, 5, 1>(p) : plane_fixed<5, 5, 2>(p);
  if (p.sw == 1) plane<1>(p); else plane<2>(p);
}

}  // namespace kiln
