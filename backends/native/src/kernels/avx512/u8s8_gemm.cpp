// u8 x s8 -> s32 microkernel with AVX-512 VNNI (vpdpbusd): 6 rows x 32 columns, twelve int32
// accumulators; each k quad is one broadcast of four A bytes per row and two B vectors. Rows
// come in segments (see int8_gemm.h), so a convolution reads its input in place.
#include <immintrin.h>

#include "cpu.h"
#include "kernels/int8_gemm.h"
#include "kernels/int8_row_ukernel.h"

namespace kiln {

void kiln_u8s8_gemm_ukernel__avx512vnni(size_t rows, size_t nseg, size_t seg_len,
                                        const uint8_t* const* a, const int8_t* b, int32_t* c,
                                        size_t ldc, size_t cols) {
  __m512i acc[kInt8Mr][2];
  for (size_t r = 0; r < kInt8Mr; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (size_t s = 0; s < nseg; ++s, b += seg_len * kInt8Nr) {
    const uint8_t* ar[kInt8Mr];
    for (size_t r = 0; r < kInt8Mr; ++r) ar[r] = a[(r < rows ? r : 0) * nseg + s];
    for (size_t q = 0; q < seg_len; q += 4) {
      const __m512i b0 = _mm512_loadu_si512(b + q * kInt8Nr);
      const __m512i b1 = _mm512_loadu_si512(b + q * kInt8Nr + 64);
      for (size_t r = 0; r < kInt8Mr; ++r) {
        if (r >= rows) break;
        int32_t quad;
        __builtin_memcpy(&quad, ar[r] + q, 4);
        const __m512i av = _mm512_set1_epi32(quad);
        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
        acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
      }
    }
  }
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xffff)
                       : cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : __mmask16(0);
  for (size_t r = 0; r < rows; ++r) {
    _mm512_mask_storeu_epi32(c + r * ldc, m0, acc[r][0]);
    if (m1) _mm512_mask_storeu_epi32(c + r * ldc + 16, m1, acc[r][1]);
  }
}

// 64 table lookups a step where the CPU has VBMI (kernels/avx512vbmi), else one at a time.
static void byte_map_avx512(size_t n, const uint8_t* table, uint8_t* y) {
  static const bool vbmi = cpu_features().avx512_vbmi;
  if (vbmi) return kiln_byte_map__avx512vbmi(n, table, y);
  byte_map_impl(n, table, y);
}

KILN_INT8_LOOPS_DEFS(avx512, byte_map_avx512)

bool kiln_range_f32__avx512(size_t n, const float* x, float* lo, float* hi) {
  __m512 l0 = _mm512_set1_ps(*lo), h0 = _mm512_set1_ps(*hi), l1 = l0, h1 = h0;
  __mmask16 nan = 0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    l0 = _mm512_min_ps(l0, a);
    h0 = _mm512_max_ps(h0, a);
    l1 = _mm512_min_ps(l1, b);
    h1 = _mm512_max_ps(h1, b);
    nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 a = _mm512_mask_loadu_ps(l0, m, x + i);  // lanes past n repeat lo
    l0 = _mm512_min_ps(l0, a);
    h0 = _mm512_max_ps(h0, _mm512_mask_loadu_ps(h0, m, x + i));
    nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
  }
  *lo = _mm512_reduce_min_ps(_mm512_min_ps(l0, l1));
  *hi = _mm512_reduce_max_ps(_mm512_max_ps(h0, h1));
  return nan != 0;
}

}  // namespace kiln
