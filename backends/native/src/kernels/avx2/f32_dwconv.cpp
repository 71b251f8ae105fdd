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

}  // namespace

void kiln_f32_dwconv_ukernel__avx2_x8(const DwConvPlane& p) {
  if (p.kh * p.kw > 64 || (p.sw != 1 && p.sw != 2)) return kiln_f32_dwconv_ukernel__generic(p);
  if (p.sw == 1) plane<1>(p); else plane<2>(p);
}

}  // namespace kiln
