// Winograd F(4x4, 3x3) tile transforms (Lavin & Gray), the contract between conv.cpp and
// the per-ISA transform kernels. A block holds T tiles (T = the ISA's SGEMM nr), stored
// tile-minor so every transform is a straight vector loop over the T tiles:
//   input:  d[(r * 6 + s) * T + t], the 6x6 input patch of tile t;
//           v[xi * vs + t] = (B^T d B)[xi] for xi = r * 6 + s (36 rows, stride vs).
//   output: m[xi * ms + t], the 36 GEMM results of tile t (stride ms);
//           y[(i * 4 + j) * T + t] = (A^T m A)[i][j], the 4x4 outputs.
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//          0 4 0 -5 0 1],  A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1],
//   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//   (weights: U = G g G^T, by the `weights` kernel below, once per convolution in conv.cpp).
#pragma once
#include <algorithm>
#include <cstddef>
#include <limits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kiln {

using wino_input_fn = void (*)(const float* d, float* v, size_t vs);
using wino_output_fn = void (*)(const float* m, size_t ms, float* y);
// Gathers the 6x6 patches of n (<= T) tiles adjacent in one tile row into lanes [0, n) of d:
// d[(r * 6 + s) * T + t] = src[r * rs + 4 * t + s].
using wino_gather_fn = void (*)(const float* src, size_t rs, size_t n, float* d);
// Stores rows i < rows of n whole tiles (4 columns each) adjacent in one tile row:
// dst[i * ds + 4 * t + j] = clamp(y[(i * 4 + j) * T + t] + bias (+ res[i * ds + 4 * t + j]),
// lo, hi): the epilogue's Relu / Clip applied as the values are stored, NaN becoming lo as
// in the SIMD activation kernels (lo = -inf and hi = +inf for none: stored as computed).
using wino_scatter_fn = void (*)(const float* y, size_t n, size_t rows, float bias,
                                 const float* res, float* dst, size_t ds, float lo, float hi);
// Transforms n 3x3 filters, each 9 contiguous taps g[f * 9 + e] (row-major, as ONNX stores
// a [K, C, 3, 3] weight): u[xi][f] = (G g_f G^T)[xi] for xi = r * 6 + s (36 rows).
using wino_weights_fn = void (*)(const float* g, size_t n, float* const* u);

// The transforms as loops over T tiles; each ISA's file instantiates them under its own
// compiler flags so the loops vectorize to that ISA.
namespace wino43 {
// Internal linkage: this header is compiled once per ISA with that ISA's flags (the generic
// and AVX2 files both instantiate 16 tiles), and shared definitions would let the linker keep
// one ISA's copy for both.
namespace {

// out[k] (k = 0..5) = (B^T in)[k], for 6 rows of T values spaced `is` / `os` apart.
template <size_t T>
inline void bt(const float* in, size_t is, float* out, size_t os) {
  for (size_t t = 0; t < T; ++t) {
    const float d0 = in[t], d1 = in[is + t], d2 = in[2 * is + t], d3 = in[3 * is + t],
                d4 = in[4 * is + t], d5 = in[5 * is + t];
    out[t] = 4.0f * d0 - 5.0f * d2 + d4;
    out[os + t] = -4.0f * (d1 + d2) + d3 + d4;
    out[2 * os + t] = 4.0f * (d1 - d2) - d3 + d4;
    out[3 * os + t] = 2.0f * (d3 - d1) - d2 + d4;
    out[4 * os + t] = 2.0f * (d1 - d3) - d2 + d4;
    out[5 * os + t] = 4.0f * d1 - 5.0f * d3 + d5;
  }
}

// out[k] (k = 0..3) = (A^T in)[k].
template <size_t T>
inline void at(const float* in, size_t is, float* out, size_t os) {
  for (size_t t = 0; t < T; ++t) {
    const float m0 = in[t], m1 = in[is + t], m2 = in[2 * is + t], m3 = in[3 * is + t],
                m4 = in[4 * is + t], m5 = in[5 * is + t];
    const float a = m1 + m2, b = m1 - m2, c = m3 + m4, e = m3 - m4;
    out[t] = m0 + a + c;
    out[os + t] = b + 2.0f * e;
    out[2 * os + t] = a + 4.0f * c;
    out[3 * os + t] = b + 8.0f * e + m5;
  }
}

// out[k * os + f] (k = 0..5) = (G in)[k] for 3 rows of n values in[j * is + f].
inline void g3(const float* in, size_t is, float* out, size_t os, size_t n) {
  for (size_t f = 0; f < n; ++f) {
    const float a = in[f], b = in[is + f], c = in[2 * is + f];
    const float ac = a + c, e = a * (1.0f / 24) + c * (1.0f / 6), h = b * (1.0f / 12);
    out[f] = a * 0.25f;
    out[os + f] = (ac + b) * (-1.0f / 6);
    out[2 * os + f] = (b - ac) * (1.0f / 6);
    out[3 * os + f] = e + h;
    out[4 * os + f] = e - h;
    out[5 * os + f] = c;
  }
}

// U = G g G^T for n filters, F at a time: their taps transposed to tap-major rows, then
// G applied down the columns and along the rows as straight loops over the F filters.
inline void weights(const float* g, size_t n, float* const* u) {
  constexpr size_t F = 64;
  alignas(64) float taps[9 * F], gg[18 * F], uu[36 * F];
  for (size_t f0 = 0; f0 < n; f0 += F) {
    const size_t m = n - f0 < F ? n - f0 : F;
    const float* src = g + f0 * 9;
    for (size_t f = 0; f < m; ++f)
      for (size_t e = 0; e < 9; ++e) taps[e * F + f] = src[f * 9 + e];
    // Columns: gg[i * 3 + s] = sum_r G[i][r] g[r][s].
    for (size_t s = 0; s < 3; ++s) g3(taps + s * F, 3 * F, gg + s * F, 3 * F, m);
    // Rows: uu[i * 6 + j] = sum_s gg[i][s] G[j][s].
    for (size_t i = 0; i < 6; ++i) g3(gg + i * 3 * F, F, uu + i * 6 * F, F, m);
    for (size_t xi = 0; xi < 36; ++xi)
      for (size_t f = 0; f < m; ++f) u[xi][f0 + f] = uu[xi * F + f];
  }
}

template <size_t T>
void input(const float* d, float* v, size_t vs) {
  alignas(64) float tmp[36 * T];
  // Columns: tmp[r][s] = sum_k B^T[r][k] d[k][s]  (d rows are 6 * T apart).
  for (size_t s = 0; s < 6; ++s) bt<T>(d + s * T, 6 * T, tmp + s * T, 6 * T);
  // Rows: v[r][s] = sum_k tmp[r][k] B^T[s][k].
  for (size_t r = 0; r < 6; ++r) bt<T>(tmp + r * 6 * T, T, v + r * 6 * vs, vs);
}

template <size_t T>
void output(const float* m, size_t ms, float* y) {
  alignas(64) float tmp[24 * T];
  for (size_t s = 0; s < 6; ++s) at<T>(m + s * ms, 6 * ms, tmp + s * T, 6 * T);
  for (size_t i = 0; i < 4; ++i) at<T>(tmp + i * 6 * T, T, y + i * 4 * T, T);
}

#if defined(__AVX512F__)
// The six columns of tiles [0, m) (m <= 16) of one patch row, base[4 t + s], into out[s * T +
// t]: the tiles' first four columns are four 4 x 4 blocks per 128-bit lane, transposed by
// two rounds of unpacks and put in tile order by a permute; columns 4 and 5 are columns 0
// and 1 of the next tile. Reads base[0, 4 m + 2) only. A run of tiles is at most one tile
// row (14 tiles at 56 x 56), shorter than the compiler's vector loop, which then ran the
// gather a float at a time (5.7% of DenseNet-121 on one thread).
inline void gather_row16(const float* base, size_t m, float* out, size_t T) {
  const size_t len = 4 * m + 2;
  const auto part = [len](size_t from) -> __mmask16 {
    return len <= from ? 0 : len - from >= 16 ? 0xffff : __mmask16((1u << (len - from)) - 1);
  };
  const __m512 v0 = _mm512_maskz_loadu_ps(part(0), base);
  const __m512 v1 = _mm512_maskz_loadu_ps(part(16), base + 16);
  const __m512 v2 = _mm512_maskz_loadu_ps(part(32), base + 32);
  const __m512 v3 = _mm512_maskz_loadu_ps(part(48), base + 48);
  const __m512 v4 = _mm512_maskz_loadu_ps(part(64), base + 64);
  const __m512 a0 = _mm512_unpacklo_ps(v0, v1), a1 = _mm512_unpackhi_ps(v0, v1);
  const __m512 a2 = _mm512_unpacklo_ps(v2, v3), a3 = _mm512_unpackhi_ps(v2, v3);
  // column s, 128-bit lane k: tiles k, 8 + k, 4 + k, 12 + k
  const __m512 b[4] = {_mm512_unpacklo_ps(a0, a2), _mm512_unpackhi_ps(a0, a2),
                       _mm512_unpacklo_ps(a1, a3), _mm512_unpackhi_ps(a1, a3)};
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15);
  const __m512i next0 = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
  const __m512i next1 = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17);
  const __mmask16 keep = m >= 16 ? __mmask16(0xffff) : __mmask16((1u << m) - 1);
  __m512 c[6];
  for (int s = 0; s < 4; ++s) c[s] = _mm512_permutexvar_ps(order, b[s]);
  c[4] = _mm512_permutex2var_ps(c[0], next0, v4);
  c[5] = _mm512_permutex2var_ps(c[1], next1, v4);
  for (int s = 0; s < 6; ++s) _mm512_mask_storeu_ps(out + s * T, keep, c[s]);
}
#endif

template <size_t T>
void gather(const float* src, size_t rs, size_t n, float* d) {
#if defined(__AVX512F__)
  if constexpr (T % 16 == 0) {
    for (size_t r = 0; r < 6; ++r)
      for (size_t t0 = 0; t0 < n; t0 += 16)
        gather_row16(src + r * rs + 4 * t0, std::min<size_t>(16, n - t0), d + r * 6 * T + t0,
                     T);
    return;
  }
#endif
  for (size_t r = 0; r < 6; ++r) {
    const float* row = src + r * rs;
    for (size_t s = 0; s < 6; ++s) {
      float* out = d + (r * 6 + s) * T;
      for (size_t t = 0; t < n; ++t) out[t] = row[4 * t + s];
    }
  }
}

// An output as stored: clamped to [lo, hi] (NaN to lo, as the SIMD activation kernels do)
// for a fused Relu / Clip, else as computed.
template <bool kClamp>
inline float wino_clamp(float v, float lo, float hi) {
  return kClamp ? std::min(hi, std::max(lo, v)) : v;
}

template <size_t T, bool kClamp>
void scatter_rows(const float* y, size_t n, size_t rows, float bias, const float* res,
                  float* dst, size_t ds, float lo, float hi) {
  // Tile-major inner loop: the four columns of a tile are four adjacent stores, which the
  // compiler turns into an interleave of four vectors (a 4 x n transpose in registers)
  // instead of stores at a stride of 4.
  for (size_t i = 0; i < rows; ++i) {
    float* out = dst + i * ds;
    const float* r = res ? res + i * ds : nullptr;
    const float* in0 = y + (i * 4) * T;
    const float* in1 = in0 + T;
    const float* in2 = in1 + T;
    const float* in3 = in2 + T;
    if (r) {
      for (size_t t = 0; t < n; ++t) {
        out[4 * t + 0] = wino_clamp<kClamp>(in0[t] + bias + r[4 * t + 0], lo, hi);
        out[4 * t + 1] = wino_clamp<kClamp>(in1[t] + bias + r[4 * t + 1], lo, hi);
        out[4 * t + 2] = wino_clamp<kClamp>(in2[t] + bias + r[4 * t + 2], lo, hi);
        out[4 * t + 3] = wino_clamp<kClamp>(in3[t] + bias + r[4 * t + 3], lo, hi);
      }
    } else {
      for (size_t t = 0; t < n; ++t) {
        out[4 * t + 0] = wino_clamp<kClamp>(in0[t] + bias, lo, hi);
        out[4 * t + 1] = wino_clamp<kClamp>(in1[t] + bias, lo, hi);
        out[4 * t + 2] = wino_clamp<kClamp>(in2[t] + bias, lo, hi);
        out[4 * t + 3] = wino_clamp<kClamp>(in3[t] + bias, lo, hi);
      }
    }
  }
}

template <size_t T>
void scatter(const float* y, size_t n, size_t rows, float bias, const float* res, float* dst,
             size_t ds, float lo, float hi) {
  if (lo > -std::numeric_limits<float>::infinity() || hi < std::numeric_limits<float>::infinity())
    scatter_rows<T, true>(y, n, rows, bias, res, dst, ds, lo, hi);
  else
    scatter_rows<T, false>(y, n, rows, bias, res, dst, ds, lo, hi);
}

}  // namespace
}  // namespace wino43

}  // namespace kiln

// Defines the five Winograd entry points of one ISA inside namespace kiln (kernels/ukernels.inc
// names them prefix##input / output / gather / scatter / weights) over TILES tiles, in a
// file compiled with that ISA's flags so the templates above vectorize for it
// (kernels/simd/define_ukernels.h for the SIMD ISAs, generic/f32_winograd.cpp).
#define KILN_DEFINE_WINO43_UKERNELS(suffix, TILES)                                              \
  void kiln_f32_wino43_input##suffix(const float* d, float* v, size_t vs) {                     \
    wino43::input<TILES>(d, v, vs);                                                             \
  }                                                                                             \
  void kiln_f32_wino43_output##suffix(const float* m, size_t ms, float* y) {                    \
    wino43::output<TILES>(m, ms, y);                                                            \
  }                                                                                             \
  void kiln_f32_wino43_gather##suffix(const float* src, size_t rs, size_t n, float* d) {       \
    wino43::gather<TILES>(src, rs, n, d);                                                       \
  }                                                                                             \
  void kiln_f32_wino43_scatter##suffix(const float* y, size_t n, size_t rows, float bias,      \
                                       const float* res, float* dst, size_t ds, float lo,      \
                                       float hi) {                                             \
    wino43::scatter<TILES>(y, n, rows, bias, res, dst, ds, lo, hi);                             \
  }                                                                                             \
  void kiln_f32_wino43_weights##suffix(const float* g, size_t n, float* const* u) {            \
    wino43::weights(g, n, u);                                                                   \
  }
