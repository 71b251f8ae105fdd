// AVX-512 pooling of one padded plane: 16 output columns per vector; stride 1 as plain
// loads, stride 2 as two loads and an even-lane permute.
#include <immintrin.h>

#include "kernels/avx512/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

template <int SW, bool MAX>
void plane(const PoolPlane& p) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    const float* rows = p.x + oy * p.sh * p.x_stride;
    float* y = p.y + oy * p.ow;
    for (size_t ox = 0; ox < p.ow; ox += 16) {
      __m512 acc = MAX ? _mm512_set1_ps(-__builtin_inff()) : _mm512_setzero_ps();
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float* s = row + kx * p.dw;
          const __m512 v = SW == 1 ? _mm512_loadu_ps(s)
              : _mm512_permutex2var_ps(_mm512_loadu_ps(s), even, _mm512_loadu_ps(s + 16));
          acc = MAX ? _mm512_max_ps(acc, v) : _mm512_add_ps(acc, v);
        }
      }
      const __mmask16 m = avx512::tail_mask(p.ow - ox);
      if (!MAX)
        acc = _mm512_mul_ps(_mm512_mul_ps(acc, _mm512_set1_ps(p.inv_h[oy])),
                            _mm512_maskz_loadu_ps(m, p.inv_w + ox));
      _mm512_mask_storeu_ps(y + ox, m, acc);
    }
  }
}

}  // namespace

void kiln_f32_pool_ukernel__avx512_x16(const PoolPlane& p) {
  const bool max = p.kind == PoolKind::max;
  if (p.sw == 1) return max ? plane<1, true>(p) : plane<1, false>(p);
  if (p.sw == 2) return max ? plane<2, true>(p) : plane<2, false>(p);
  kiln_f32_pool_ukernel__generic(p);
}

}  // namespace kiln
