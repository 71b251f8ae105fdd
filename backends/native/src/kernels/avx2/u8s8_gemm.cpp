// u8 x s8 -> s32 microkernel for AVX2 CPUs without VNNI. vpmaddubsw would saturate (255 * 127 * 2
// > 32767), so both operands are widened to 16 bits and multiplied with vpmaddwd, which is exact:
// each 32-bit lane sums two u8 x s8 products. Two rows x 16 columns at a time; per column the
// k quad gives two partial sums, added pairwise at the end.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/int8_gemm.h"
#include "kernels/int8_row_ukernel.h"

namespace kiln {

namespace {

// [c0 c0' c1 c1' c2 c2' c3 c3'] and the same for c4..c7 -> [c0 .. c7]
inline __m256i pair_sums(__m256i lo, __m256i hi) {
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
}

}  // namespace

void kiln_u8s8_gemm_ukernel__avx2(size_t rows, size_t nseg, size_t seg_len,
                                  const uint8_t* const* a, const int8_t* b, int32_t* c,
                                  size_t ldc, size_t cols) {
  for (size_t j0 = 0; j0 < cols; j0 += 16) {
    for (size_t r0 = 0; r0 < rows; r0 += 2) {
      const size_t nr = std::min<size_t>(2, rows - r0);
      __m256i acc[2][4];
      for (auto& row : acc)
        for (auto& v : row) v = _mm256_setzero_si256();
      const int8_t* bs = b;
      for (size_t s = 0; s < nseg; ++s, bs += seg_len * kInt8Nr) {
        const uint8_t* ar0 = a[r0 * nseg + s];
        const uint8_t* ar1 = a[(r0 + nr - 1) * nseg + s];
        for (size_t q = 0; q < seg_len; q += 4) {
          const int8_t* bq = bs + q * kInt8Nr + j0 * 4;  // 16 columns x 4 k
          __m256i bw[4];
          for (int t = 0; t < 4; ++t)
            bw[t] = _mm256_cvtepi8_epi16(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(bq + 16 * t)));
          int32_t q0, q1;
          std::memcpy(&q0, ar0 + q, 4);
          std::memcpy(&q1, ar1 + q, 4);
          const __m256i a0 = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(q0)));
          const __m256i a1 = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(q1)));
          for (int t = 0; t < 4; ++t) {
            acc[0][t] = _mm256_add_epi32(acc[0][t], _mm256_madd_epi16(a0, bw[t]));
            acc[1][t] = _mm256_add_epi32(acc[1][t], _mm256_madd_epi16(a1, bw[t]));
          }
        }
      }
      const size_t n = std::min<size_t>(16, cols - j0);
      for (size_t r = 0; r < nr; ++r) {
        alignas(32) int32_t out[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), pair_sums(acc[r][0], acc[r][1]));
        _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8), pair_sums(acc[r][2], acc[r][3]));
        std::memcpy(c + (r0 + r) * ldc + j0, out, n * sizeof(int32_t));
      }
    }
  }
}

KILN_INT8_LOOPS_DEFS(avx2, int8_row_u8_impl, byte_map_impl, dw_u8s8_impl, dw_layout_none,
                     transpose_u8_impl)

}  // namespace kiln
