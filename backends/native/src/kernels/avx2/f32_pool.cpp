// AVX2 pooling of one padded plane: 8 output columns per vector; stride 1 as plain loads,
// stride 2 as two loads and an even-lane shuffle.
#include <immintrin.h>

#include "kernels/avx2/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

template <int SW, bool MAX>
void plane(const PoolPlane& p) {
  for (size_t oy = 0; oy < p.oh; ++oy) {
    const float* rows = p.x + oy * p.sh * p.x_stride;
    float* y = p.y + oy * p.ow;
    for (size_t ox = 0; ox < p.ow; ox += 8) {
      __m256 acc = MAX ? _mm256_set1_ps(-__builtin_inff()) : _mm256_setzero_ps();
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float* s = row + kx * p.dw;
          __m256 v;
          if (SW == 1) {
            v = _mm256_loadu_ps(s);
          } else {
            const __m256 ev = _mm256_shuffle_ps(_mm256_loadu_ps(s), _mm256_loadu_ps(s + 8), 0x88);
            v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xd8));
          }
          acc = MAX ? _mm256_max_ps(acc, v) : _mm256_add_ps(acc, v);
        }
      }
      const size_t left = p.ow - ox;
      const __m256i m = avx2::tail_mask(left);
      if (!MAX)
        acc = _mm256_mul_ps(_mm256_mul_ps(acc, _mm256_set1_ps(p.inv_h[oy])),
                            _mm256_maskload_ps(p.inv_w + ox, m));
      if (left >= 8) _mm256_storeu_ps(y + ox, acc);
      else _mm256_maskstore_ps(y + ox, m, acc);
    }
  }
}

}  // namespace

void kiln_f32_pool_ukernel__avx2_x8(const PoolPlane& p) {
  const bool max = p.kind == PoolKind::max;
  if (p.sw == 1) return max ? plane<1, true>(p) : plane<1, false>(p);
  if (p.sw == 2) return max ? plane<2, true>(p) : plane<2, false>(p);
  kiln_f32_pool_ukernel__generic(p);
}

}  // namespace kiln
