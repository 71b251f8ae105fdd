// The int8 epilogue loops, written once and compiled per ISA (the including file's flags pick
// the vector width). See Int8RowParams in int8_gemm.h.
#pragma once
#include <vector>

#include "kernels/int8_gemm.h"

namespace kiln {
// Internal linkage: this header is compiled once per ISA with that ISA's flags, and shared
// inline definitions would let the linker keep one ISA's copy for all of them (an AVX2 body
// behind the generic kernels).
namespace {

// Parameters are copied to locals and pointers marked restrict: a u8 store may alias
// anything, and without this the compiler reloads p's fields per element and cannot vectorize.
inline void int8_row_f32_impl(size_t n, const int32_t* __restrict acc, const Int8RowParams& p,
                              float* __restrict y) {
  const float* __restrict mult = p.mult;
  const float* __restrict offset = p.offset;
  const int32_t* __restrict ao = p.acc_offset;
  if (ao) {
    for (size_t j = 0; j < n; ++j) {
      const float v = static_cast<float>(acc[j] + ao[j]) * mult[j] + offset[j];
      y[j] = p.relu && !(v > 0.0f) ? 0.0f : v;
    }
  } else if (p.relu) {
    for (size_t j = 0; j < n; ++j) {
      const float v = static_cast<float>(acc[j]) * mult[j] + offset[j];
      y[j] = v > 0.0f ? v : 0.0f;
    }
  } else {
    for (size_t j = 0; j < n; ++j) y[j] = static_cast<float>(acc[j]) * mult[j] + offset[j];
  }
}

inline void int8_row_u8_impl(size_t n, const int32_t* __restrict acc, const Int8RowParams& p,
                             uint8_t* __restrict y) {
  const float* __restrict mult = p.mult;
  const float* __restrict offset = p.offset;
  const float lo = p.lo, hi = p.hi, zero = p.zero;
  for (size_t j = 0; j < n; ++j) {
    float v = static_cast<float>(acc[j]) * mult[j] + offset[j];
    v = v < hi ? v : hi;
    v = v > lo ? v : lo;  // NaN went to hi on the line before
    // half-to-even rounding by the float adder (|v| <= 255 here), then the zero point
    v = (v + 12582912.0f) - 12582912.0f + zero;
    y[j] = static_cast<uint8_t>(static_cast<int32_t>(v));
  }
}

// y[i] = table[y[i]]: the lowering's activation chain between two quantizations.
inline void byte_map_impl(size_t n, const uint8_t* __restrict table, uint8_t* __restrict y) {
  for (size_t i = 0; i < n; ++i) y[i] = table[y[i]];
}

// QuantizeLinear on one run: saturate(round_half_even(x / scale) + zero) into [lo, hi]
// (0..255 for u8, -128..127 for s8). Clamping first keeps |v| small enough for the float adder
// to round; NaN saturates to hi.
// With FMA the quotient is x * (1 / scale) corrected once (Markstein): r = x - q0 * scale is
// exact, and q0 + r / scale rounded is x / scale rounded, the division's own result, at the
// cost of three multiply-adds instead of a divide (a vector divide takes ~16 cycles). An
// infinite x leaves r NaN: q0 (the infinity) is kept.
template <typename Q>
inline void quantize_run_impl(size_t n, const float* __restrict x, float scale, float zero,
                              Q* __restrict y) {
  const float lo = (Q(-1) < Q(0) ? -128.0f : 0.0f) - zero;
  const float hi = (Q(-1) < Q(0) ? 127.0f : 255.0f) - zero;
#ifdef __FMA__
  const float inv = 1.0f / scale;
#endif
  for (size_t i = 0; i < n; ++i) {
#ifdef __FMA__
    const float q0 = x[i] * inv;
    const float r = __builtin_fmaf(-q0, scale, x[i]);
    const float q1 = __builtin_fmaf(r, inv, q0);
    float v = q1 == q1 ? q1 : q0;
#else
    float v = x[i] / scale;
#endif
    v = v > lo ? v : lo;
    v = v < hi ? v : hi;
    v = (v + 12582912.0f) - 12582912.0f + zero;
    y[i] = static_cast<Q>(static_cast<int32_t>(v));
  }
}

// DequantizeLinear on one run: (q - zero) * scale.
template <typename Q>
inline void dequantize_run_impl(size_t n, const Q* __restrict q, float scale, int32_t zero,
                                float* __restrict y) {
  for (size_t i = 0; i < n; ++i)
    y[i] = static_cast<float>(static_cast<int32_t>(q[i]) - zero) * scale;
}

// Depthwise products of a run of output pixels (Int8Loops::dw_u8s8). Channels go in blocks
// of 16 whose int32 sums stay in one register across the taps (the taps' weights are read
// from L1 as memory operands). A u8 x s8 product fits int16 exactly, so the multiply is
// 16-bit and only the sum is widened. kTaps > 0 fixes the tap count (3x3, 5x5) so the tap
// loop unrolls; 0 takes `taps` at run time.
template <size_t kTaps>
inline void dw_u8s8_run(size_t C, size_t taps, size_t pixels, size_t step,
                        const uint8_t* const* x, const int16_t* w, int32_t* __restrict acc) {
  constexpr size_t kBlock = 16;
  const size_t nt = kTaps ? kTaps : taps;
  size_t c0 = 0;
  for (; c0 + kBlock <= C; c0 += kBlock) {
    for (size_t p = 0; p < pixels; ++p) {
      const size_t at = p * step + c0;
      int32_t sum[kBlock] = {};
#pragma GCC unroll 25
      for (size_t t = 0; t < nt; ++t) {
        const uint8_t* __restrict xt = x[t] + at;
        const int16_t* __restrict wt = w + t * C + c0;
        for (size_t j = 0; j < kBlock; ++j)
          sum[j] += static_cast<int16_t>(static_cast<int16_t>(xt[j]) * wt[j]);
      }
      for (size_t j = 0; j < kBlock; ++j) acc[p * C + c0 + j] = sum[j];
    }
  }
  for (size_t p = 0; p < pixels; ++p)
    for (size_t c = c0; c < C; ++c) {
      int32_t sum = 0;
      for (size_t t = 0; t < nt; ++t) sum += int32_t(x[t][p * step + c]) * w[t * C + c];
      acc[p * C + c] = sum;
    }
}

inline void dw_u8s8_impl(size_t C, size_t taps, size_t pixels, size_t step,
                         const uint8_t* const* x, const int16_t* w, const int8_t* /*laid*/,
                         int32_t* acc) {
  if (taps == 9) return dw_u8s8_run<9>(C, taps, pixels, step, x, w, acc);
  if (taps == 25) return dw_u8s8_run<25>(C, taps, pixels, step, x, w, acc);
  dw_u8s8_run<0>(C, taps, pixels, step, x, w, acc);
}

// Bytes transposed (Int8Loops::transpose_u8). Whole 8 x 8 blocks go as eight 64-bit words
// swapped in three rounds (4 x 4, 2 x 2, 1 x 1 byte blocks), a byte at a time only at the
// edges.
inline void transpose_u8_impl(const uint8_t* src, size_t ss, size_t rows, size_t cols,
                              uint8_t* dst, size_t ds) {
  const size_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (size_t i = 0; i < r8; i += 8)
    for (size_t j = 0; j < c8; j += 8) {
      uint64_t x[8];
      for (size_t k = 0; k < 8; ++k) __builtin_memcpy(&x[k], src + (i + k) * ss + j, 8);
      for (size_t k = 0; k < 4; ++k) {
        const uint64_t t = ((x[k] >> 32) ^ x[k + 4]) & 0x00000000FFFFFFFFull;
        x[k] ^= t << 32;
        x[k + 4] ^= t;
      }
      for (size_t k : {0, 1, 4, 5}) {
        const uint64_t t = ((x[k] >> 16) ^ x[k + 2]) & 0x0000FFFF0000FFFFull;
        x[k] ^= t << 16;
        x[k + 2] ^= t;
      }
      for (size_t k = 0; k < 8; k += 2) {
        const uint64_t t = ((x[k] >> 8) ^ x[k + 1]) & 0x00FF00FF00FF00FFull;
        x[k] ^= t << 8;
        x[k + 1] ^= t;
      }
      for (size_t k = 0; k < 8; ++k) __builtin_memcpy(dst + (j + k) * ds + i, &x[k], 8);
    }
  for (size_t i = 0; i < rows; ++i)
    for (size_t j = i < r8 ? c8 : 0; j < cols; ++j) dst[j * ds + i] = src[i * ss + j];
}

// The depthwise weights of a kernel that reads the int16 taps as they are: nothing to lay out.
inline std::vector<int8_t> dw_layout_none(size_t, size_t, bool, const int16_t*) { return {}; }

}  // namespace

// Defines the loops of one ISA (KILN_INT8_LOOPS_DECL) in the file compiled with its flags;
// row_u8 is the u8 epilogue of one row (int8_row_u8_impl's contract), byte_map applies a
// QConv / QGemm byte table (byte_map_impl's), dw computes the depthwise products
// (dw_u8s8_impl's) from weights dw_layout lays out, transpose moves bytes between NCHW and
// NHWC (transpose_u8_impl's).
#define KILN_INT8_LOOPS_DEFS(isa, row_u8, byte_map, dw, dw_layout, transpose)                \
  void kiln_quantize_u8__##isa(size_t n, const float* x, float scale, float zero, uint8_t* y) { \
    quantize_run_impl(n, x, scale, zero, y);                                                 \
  }                                                                                          \
  void kiln_quantize_s8__##isa(size_t n, const float* x, float scale, float zero, int8_t* y) { \
    quantize_run_impl(n, x, scale, zero, y);                                                 \
  }                                                                                          \
  void kiln_dequantize_u8__##isa(size_t n, const uint8_t* q, float scale, int32_t zero,      \
                                 float* y) {                                                 \
    dequantize_run_impl(n, q, scale, zero, y);                                               \
  }                                                                                          \
  void kiln_dequantize_s8__##isa(size_t n, const int8_t* q, float scale, int32_t zero,       \
                                 float* y) {                                                 \
    dequantize_run_impl(n, q, scale, zero, y);                                               \
  }                                                                                          \
  void kiln_int8_row_f32__##isa(size_t n, const int32_t* acc, const Int8RowParams& p,        \
                                float* y) {                                                  \
    int8_row_f32_impl(n, acc, p, y);                                                         \
  }                                                                                          \
  void kiln_int8_row_u8__##isa(size_t n, const int32_t* acc, const Int8RowParams& p,         \
                               uint8_t* y) {                                                 \
    row_u8(n, acc, p, y);                                                                    \
  }                                                                                          \
  void kiln_int8_tile_f32__##isa(size_t rows, size_t n, const int32_t* acc, size_t ld,       \
                                 const Int8RowParams& p, float* y, size_t ys) {              \
    for (size_t r = 0; r < rows; ++r) int8_row_f32_impl(n, acc + r * ld, p, y + r * ys);      \
  }                                                                                          \
  void kiln_int8_tile_u8__##isa(size_t rows, size_t n, const int32_t* acc, size_t ld,        \
                                const Int8RowParams& p, uint8_t* y, size_t ys,               \
                                const uint8_t* table) {                                      \
    for (size_t r = 0; r < rows; ++r) {                                                      \
      row_u8(n, acc + r * ld, p, y + r * ys);                                                \
      if (table) byte_map(n, table, y + r * ys);                                             \
    }                                                                                        \
  }                                                                                          \
  void kiln_dw_u8s8__##isa(size_t C, size_t taps, size_t pixels, size_t step,                \
                           const uint8_t* const* x, const int16_t* w, const int8_t* laid,    \
                           int32_t* acc) {                                                   \
    dw(C, taps, pixels, step, x, w, laid, acc);                                              \
  }                                                                                          \
  std::vector<int8_t> kiln_dw_layout__##isa(size_t C, size_t taps, bool flat,                \
                                            const int16_t* w) {                              \
    return dw_layout(C, taps, flat, w);                                                      \
  }                                                                                          \
  void kiln_transpose_u8__##isa(const uint8_t* src, size_t ss, size_t rows, size_t cols,     \
                                uint8_t* dst, size_t ds) {                                   \
    transpose(src, ss, rows, cols, dst, ds);                                                 \
  }

}  // namespace kiln
