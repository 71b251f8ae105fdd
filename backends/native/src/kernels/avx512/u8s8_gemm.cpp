// u8 x s8 -> s32 microkernel with AVX-512 VNNI (vpdpbusd): 6 rows x up to 32 columns; each k
// quad is one broadcast of four A bytes per row and up to two B vectors. Rows come in segments
// (see int8_gemm.h), so a convolution reads its input in place.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "cpu.h"
#include "kernels/int8_gemm.h"
#include "kernels/int8_row_ukernel.h"

namespace kiln {

// One shape of the kernel: R rows (1..6) by W columns of the panel (8: one 256-bit vector
// per row, 16: one 512-bit, 24: 512 + 256, 32: two 512-bit). Both are template arguments so
// the accumulators stay in registers (indexed by a run-time row count they went to the stack,
// zeroed by `rep stos` on every call: 38% of a 12 -> 96 1x1 layer's kernel time). A panel's
// narrow last columns (24 outputs of a layer, 4 of a 2x2 ConvTranspose to one channel) cost
// the products of the columns that exist, not of 32: where a 512-bit vpdpbusd issues as two
// 256-bit halves, 24 columns take 3/4 of the time and 8 a quarter.
// A tile of one or two rows has too few accumulators to hide vpdpbusd's latency (one row: two
// dependent chains, each product waits for the last); it keeps S sets of them, over
// alternating k quads, added at the end. An M = 1 product (a recurrent step's h x R, 512 x
// 2048) ran at one quad per latency on a single set.
template <int W, int R>
static void u8s8_vnni_tile(size_t nseg, size_t seg_len, const uint8_t* const* a,
                           const int8_t* b, int32_t* c, size_t ldc, size_t cols) {
  constexpr bool kWide0 = W >= 16, kHas1 = W > 16, kWide1 = W == 32;
  constexpr int S = R == 1 ? 4 : R == 2 ? 2 : 1;
  __m512i acc0[S][R], acc1[S][R];
  __m256i acch0[S][R], acch1[S][R];
#pragma GCC unroll 4
  for (int u = 0; u < S; ++u)
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      acc0[u][r] = acc1[u][r] = _mm512_setzero_si512();
      acch0[u][r] = acch1[u][r] = _mm256_setzero_si256();
    }
  for (size_t s = 0; s < nseg; ++s, b += seg_len * kInt8Nr) {
    const uint8_t* ar[R];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) ar[r] = a[r * nseg + s];
    // The products of k quad q into accumulator set u.
    auto quad = [&](size_t q, int u) __attribute__((always_inline)) {
      const int8_t* bq = b + q * kInt8Nr;
      __m512i b0 = _mm512_setzero_si512(), b1 = b0;
      __m256i bh0 = _mm256_setzero_si256(), bh1 = bh0;
      if (kWide0) b0 = _mm512_loadu_si512(bq);
      else bh0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bq));
      if (kWide1) b1 = _mm512_loadu_si512(bq + 64);
      else if (kHas1) bh1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bq + 64));
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        int32_t quad;
        __builtin_memcpy(&quad, ar[r] + q, 4);
        // one broadcast per row: the 256-bit products take its low half
        const __m512i av = _mm512_set1_epi32(quad);
        const __m256i ah = _mm512_castsi512_si256(av);
        if (kWide0) acc0[u][r] = _mm512_dpbusd_epi32(acc0[u][r], av, b0);
        else acch0[u][r] = _mm256_dpbusd_epi32(acch0[u][r], ah, bh0);
        if (kWide1) acc1[u][r] = _mm512_dpbusd_epi32(acc1[u][r], av, b1);
        else if (kHas1) acch1[u][r] = _mm256_dpbusd_epi32(acch1[u][r], ah, bh1);
      }
    };
    size_t q = 0;
    for (; q + 4 * S <= seg_len; q += 4 * S) {
#pragma GCC unroll 4
      for (int u = 0; u < S; ++u) quad(q + 4 * static_cast<size_t>(u), u);
    }
    for (; q < seg_len; q += 4) quad(q, 0);
  }
#pragma GCC unroll 4
  for (int u = 1; u < S; ++u)
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      acc0[0][r] = _mm512_add_epi32(acc0[0][r], acc0[u][r]);
      acc1[0][r] = _mm512_add_epi32(acc1[0][r], acc1[u][r]);
      acch0[0][r] = _mm256_add_epi32(acch0[0][r], acch0[u][r]);
      acch1[0][r] = _mm256_add_epi32(acch1[0][r], acch1[u][r]);
    }
  const auto mask = [cols](size_t from) -> __mmask16 {
    return cols >= from + 16 ? __mmask16(0xffff)
           : cols > from     ? __mmask16((1u << (cols - from)) - 1)
                             : __mmask16(0);
  };
  const __mmask16 m0 = mask(0), m1 = mask(16);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    int32_t* cr = c + r * ldc;
    if (kWide0) _mm512_mask_storeu_epi32(cr, m0, acc0[0][r]);
    else _mm256_mask_storeu_epi32(cr, __mmask8(m0), acch0[0][r]);
    if (kWide1) _mm512_mask_storeu_epi32(cr + 16, m1, acc1[0][r]);
    else if (kHas1) _mm256_mask_storeu_epi32(cr + 16, __mmask8(m1), acch1[0][r]);
  }
}

template <int W>
static void u8s8_vnni_width(size_t rows, size_t nseg, size_t seg_len,
                            const uint8_t* const* a, const int8_t* b, int32_t* c, size_t ldc,
                            size_t cols) {
  static_assert(kInt8Mr == 6, "one instance per row count up to kInt8Mr");
  switch (rows) {
    case 6: return u8s8_vnni_tile<W, 6>(nseg, seg_len, a, b, c, ldc, cols);
    case 5: return u8s8_vnni_tile<W, 5>(nseg, seg_len, a, b, c, ldc, cols);
    case 4: return u8s8_vnni_tile<W, 4>(nseg, seg_len, a, b, c, ldc, cols);
    case 3: return u8s8_vnni_tile<W, 3>(nseg, seg_len, a, b, c, ldc, cols);
    case 2: return u8s8_vnni_tile<W, 2>(nseg, seg_len, a, b, c, ldc, cols);
    case 1: return u8s8_vnni_tile<W, 1>(nseg, seg_len, a, b, c, ldc, cols);
    default: __builtin_trap();  // the driver never passes more than kInt8Mr rows
  }
}

// u8 x s8 with VNNI over one panel: the narrowest width that holds `cols`.
void kiln_u8s8_gemm_ukernel__avx512vnni(size_t rows, size_t nseg, size_t seg_len,
                                        const uint8_t* const* a, const int8_t* b, int32_t* c,
                                        size_t ldc, size_t cols) {
  if (rows == 0) return;
  if (cols > 24) return u8s8_vnni_width<32>(rows, nseg, seg_len, a, b, c, ldc, cols);
  if (cols > 16) return u8s8_vnni_width<24>(rows, nseg, seg_len, a, b, c, ldc, cols);
  if (cols > 8) return u8s8_vnni_width<16>(rows, nseg, seg_len, a, b, c, ldc, cols);
  u8s8_vnni_width<8>(rows, nseg, seg_len, a, b, c, ldc, cols);
}

// 64 table lookups a step where the CPU has VBMI (kernels/avx512vbmi), else one at a time.
static void byte_map_avx512(size_t n, const uint8_t* table, uint8_t* y) {
  static const bool vbmi = cpu_features().avx512_vbmi;
  if (vbmi) return kiln_byte_map__avx512vbmi(n, table, y);
  byte_map_impl(n, table, y);
}

// Depthwise products with VNNI: 64 lanes a vector, four taps a vpdpbusd. The unpacks that
// put a lane's four tap bytes side by side work within 128-bit lanes, so vector m holds lanes
// 16 k + 4 m .. + 3 in lane k; the weights are laid out in that order, and four lane shuffles
// restore the order before the store. At stride 1 (step == C) a row's pixels x channels are
// one run in every tap and in acc, so the lanes run over it (64 lanes = 64 / C pixels of a
// narrow layer) and block b's weights repeat with period C / gcd(64, C) blocks. Products are
// exact int32 sums, as in dw_u8s8_impl.
// One call's layout: flat (stride 1: pixels x channels are one run), the run length, rows, tap
// groups of four, 64-lane blocks, and how many blocks' weights differ (their period when flat).
struct DwVnniShape {
  bool flat;
  size_t len, rows, groups, blocks, patterns;
};

// Blocks of 64 lanes whose weights differ: every block of a pixel's C channels, or when flat
// the period of C channels repeating over 64-lane blocks.
static size_t dw_vnni_patterns(size_t C, bool flat) {
  return flat ? C / std::gcd(size_t{64}, C) : (C + 63) / 64;
}

static DwVnniShape dw_vnni_shape(size_t C, size_t taps, size_t pixels, size_t step) {
  const bool flat = step == C;
  const size_t len = flat ? pixels * C : C, blocks = (len + 63) / 64;
  return {flat, len, flat ? 1 : pixels, (taps + 3) / 4, blocks, dw_vnni_patterns(C, flat)};
}

static void dw_u8s8_vnni_run(size_t C, size_t taps, size_t pixels, size_t step,
                             const uint8_t* const* x, const int8_t* wq, int32_t* acc);

// The weights in the lane order dw_u8s8_vnni_run reads: per 64-lane block pattern, per group
// of four taps, the four vectors of 64 bytes.
static std::vector<int8_t> dw_vnni_layout(size_t C, size_t taps, bool flat, const int16_t* w) {
  const size_t patterns = dw_vnni_patterns(C, flat), groups = (taps + 3) / 4;
  std::vector<int8_t> wq(patterns * groups * 256, 0);
  for (size_t b = 0; b < patterns; ++b)
    for (size_t g = 0; g < groups; ++g)
      for (size_t m = 0; m < 4; ++m)
        for (size_t k = 0; k < 4; ++k)
          for (size_t sl = 0; sl < 4; ++sl)
            for (size_t tt = 0; tt < 4; ++tt) {
              const size_t lane = 64 * b + 16 * k + 4 * m + sl, t = 4 * g + tt;
              const size_t c = flat ? lane % C : lane;
              wq[((b * groups + g) * 4 + m) * 64 + (k * 4 + sl) * 4 + tt] =
                  c < C && t < taps ? static_cast<int8_t>(w[t * C + c]) : 0;
            }
  return wq;
}

// VNNI layouts exist only where the kernel that reads them runs.
static std::vector<int8_t> dw_layout_avx512(size_t C, size_t taps, bool flat,
                                            const int16_t* w) {
  if (!vnni_active()) return {};
  return dw_vnni_layout(C, taps, flat, w);
}

static void dw_u8s8_vnni(size_t C, size_t taps, size_t pixels, size_t step,
                         const uint8_t* const* x, const int16_t* w, const int8_t* laid,
                         int32_t* acc) {
  if (laid) return dw_u8s8_vnni_run(C, taps, pixels, step, x, laid, acc);
  // a layer built without this layout (its plan was built for another ISA): laid out here
  const std::vector<int8_t> wq = dw_vnni_layout(C, taps, step == C, w);
  dw_u8s8_vnni_run(C, taps, pixels, step, x, wq.data(), acc);
}

// The products with the weights laid out by dw_u8s8_vnni.
static void dw_u8s8_vnni_run(size_t C, size_t taps, size_t pixels, size_t step,
                             const uint8_t* const* x, const int8_t* wq, int32_t* acc) {
  const auto [flat, len, rows, groups, blocks, patterns] = dw_vnni_shape(C, taps, pixels, step);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t c0 = 64 * b, left = len - c0;
    const __mmask64 lm = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
    const int8_t* wb = wq + (b % patterns) * groups * 256;
    for (size_t p = 0; p < rows; ++p) {
      const size_t at = p * step + c0;
      __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
      for (size_t g = 0; g < groups; ++g) {
        const size_t t = 4 * g;  // taps past the last read tap 0 (their weights are zero)
        const __m512i x0 = _mm512_maskz_loadu_epi8(lm, x[t] + at);
        const __m512i x1 = _mm512_maskz_loadu_epi8(lm, x[t + 1 < taps ? t + 1 : 0] + at);
        const __m512i x2 = _mm512_maskz_loadu_epi8(lm, x[t + 2 < taps ? t + 2 : 0] + at);
        const __m512i x3 = _mm512_maskz_loadu_epi8(lm, x[t + 3 < taps ? t + 3 : 0] + at);
        const __m512i lo01 = _mm512_unpacklo_epi8(x0, x1), hi01 = _mm512_unpackhi_epi8(x0, x1);
        const __m512i lo23 = _mm512_unpacklo_epi8(x2, x3), hi23 = _mm512_unpackhi_epi8(x2, x3);
        const int8_t* wg = wb + g * 256;
        a0 = _mm512_dpbusd_epi32(a0, _mm512_unpacklo_epi16(lo01, lo23), _mm512_loadu_si512(wg));
        a1 = _mm512_dpbusd_epi32(a1, _mm512_unpackhi_epi16(lo01, lo23),
                                 _mm512_loadu_si512(wg + 64));
        a2 = _mm512_dpbusd_epi32(a2, _mm512_unpacklo_epi16(hi01, hi23),
                                 _mm512_loadu_si512(wg + 128));
        a3 = _mm512_dpbusd_epi32(a3, _mm512_unpackhi_epi16(hi01, hi23),
                                 _mm512_loadu_si512(wg + 192));
      }
      // lane k of a_m -> vector k, slot m: a 4 x 4 transpose of 128-bit lanes
      const __m512i t0 = _mm512_shuffle_i32x4(a0, a1, 0x44);
      const __m512i t1 = _mm512_shuffle_i32x4(a2, a3, 0x44);
      const __m512i t2 = _mm512_shuffle_i32x4(a0, a1, 0xEE);
      const __m512i t3 = _mm512_shuffle_i32x4(a2, a3, 0xEE);
      const __m512i out[4] = {
          _mm512_shuffle_i32x4(t0, t1, 0x88), _mm512_shuffle_i32x4(t0, t1, 0xDD),
          _mm512_shuffle_i32x4(t2, t3, 0x88), _mm512_shuffle_i32x4(t2, t3, 0xDD)};
      int32_t* dst = acc + p * C + c0;
      for (size_t j = 0; j < 4 && 16 * j < left; ++j) {
        const size_t n = left - 16 * j;
        const __mmask16 sm = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
        _mm512_mask_storeu_epi32(dst + 16 * j, sm, out[j]);
      }
    }
  }
}

// VNNI where the plan and CPU allow it (an AVX-512 CPU may lack it), else the shared loop.
static void dw_avx512(size_t C, size_t taps, size_t pixels, size_t step,
                      const uint8_t* const* x, const int16_t* w, const int8_t* laid,
                      int32_t* acc) {
  if (vnni_active()) return dw_u8s8_vnni(C, taps, pixels, step, x, w, laid, acc);
  dw_u8s8_impl(C, taps, pixels, step, x, w, laid, acc);
}

// Bytes transposed 16 rows x 64 columns at a time: four 16 x 16 blocks side by side, one per
// 128-bit lane. Interleaving the bytes of registers k and k + 8 (k < 8) rotates the eight bits
// (register, byte) of each element's position by one, so four rounds swap register and byte:
// register c then holds column c of each lane's block. The last rows (fewer than 16) go the
// same way with zero registers below them and stores masked to the real rows.
static void transpose_u8_avx512(const uint8_t* src, size_t ss, size_t rows, size_t cols,
                                uint8_t* dst, size_t ds) {
  for (size_t i = 0; i < rows; i += 16) {
    const size_t nr = std::min<size_t>(16, rows - i);
    const __mmask16 rm = nr == 16 ? __mmask16(0xffff) : __mmask16((1u << nr) - 1);
    for (size_t j = 0; j < cols; j += 64) {
      const size_t left = cols - j;
      const __mmask64 lm = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
      __m512i v[16], t[16];
      for (size_t r = 0; r < 16; ++r)
        v[r] = r < nr ? _mm512_maskz_loadu_epi8(lm, src + (i + r) * ss + j)
                      : _mm512_setzero_si512();
      for (int round = 0; round < 4; ++round) {
        for (size_t k = 0; k < 8; ++k) {
          t[2 * k] = _mm512_unpacklo_epi8(v[k], v[k + 8]);
          t[2 * k + 1] = _mm512_unpackhi_epi8(v[k], v[k + 8]);
        }
        for (size_t k = 0; k < 16; ++k) v[k] = t[k];
      }
      // lane l of register c: column j + 16 l + c, rows i .. i + nr - 1
      uint8_t* out = dst + j * ds + i;
      for (size_t l = 0; l < 4; ++l)
        for (size_t c = 0; c < 16 && 16 * l + c < left; ++c) {
          const __m128i col = l == 0   ? _mm512_castsi512_si128(v[c])
                              : l == 1 ? _mm512_extracti32x4_epi32(v[c], 1)
                              : l == 2 ? _mm512_extracti32x4_epi32(v[c], 2)
                                       : _mm512_extracti32x4_epi32(v[c], 3);
          _mm_mask_storeu_epi8(out + (16 * l + c) * ds, rm, col);
        }
    }
  }
}

// The u8 epilogue of one row (int8_row_u8_impl's contract) in 16 lanes: the rounding is the
// converter's own (round half to even, the default mode) and the pack saturates, where the
// shared loop adds and subtracts 1.5 * 2^23 and packs through words (a third fewer
// instructions a vector).
static void row_u8_avx512(size_t n, const int32_t* __restrict acc, const Int8RowParams& p,
                          uint8_t* __restrict y) {
  const __m512 lo = _mm512_set1_ps(p.lo), hi = _mm512_set1_ps(p.hi);
  const __m512i zero = _mm512_set1_epi32(static_cast<int32_t>(p.zero));
  for (size_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    __m512 v = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + j));
    v = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(m, p.mult + j),
                        _mm512_maskz_loadu_ps(m, p.offset + j));
    v = _mm512_max_ps(_mm512_min_ps(v, hi), lo);  // NaN: min gives hi, as the shared loop
    const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zero);
    _mm_mask_storeu_epi8(y + j, m, _mm512_cvtusepi32_epi8(q));
  }
}

KILN_INT8_LOOPS_DEFS(avx512, row_u8_avx512, byte_map_avx512, dw_avx512, dw_layout_avx512,
                     transpose_u8_avx512)

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
