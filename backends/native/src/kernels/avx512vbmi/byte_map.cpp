// y[i] = table[y[i]] (the byte table of kiln::QConv / QGemm) with AVX-512 VBMI: vpermi2b looks
// 64 bytes up at once in one 128-byte half of the table (index bits 0-6), and each byte's top
// bit picks the half.
#include <immintrin.h>

#include "kernels/int8_gemm.h"

namespace kiln {

void kiln_byte_map__avx512vbmi(size_t n, const uint8_t* table, uint8_t* y) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  for (size_t i = 0; i < n; i += 64) {
    const __mmask64 m = n - i >= 64 ? ~__mmask64(0) : (__mmask64(1) << (n - i)) - 1;
    const __m512i idx = _mm512_maskz_loadu_epi8(m, y + i);
    const __m512i lo = _mm512_permutex2var_epi8(t0, idx, t1);
    const __m512i hi = _mm512_permutex2var_epi8(t2, idx, t3);
    _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi));
  }
}

}  // namespace kiln
