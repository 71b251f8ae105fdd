// The direct convolution microkernel (contract in kernels/directconv_ukernel.h), written once
// over a vector traits type V (kernels/<isa>/vec.h). A register tile holds KB output
// channels x NV vectors of one output row; per tap it loads NV input vectors from the staged
// row and broadcasts KB weights, KB * NV FMAs. A weight block of kDirectConvBlock channels
// is walked in KB-channel slices (KB divides the block).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "kernels/directconv_ukernel.h"
#include "kernels/simd/f32_gemm.h"
#include "kernels/simd/lanes.h"
#include "kernels/simd/vmath.h"

namespace kiln::simd {

// Copies one input row into its sw staged phases at dst (see the contract): only the data
// columns, the ring having been zeroed once per call. `readable`: floats readable from src
// (to the end of the input), so that whole stride-2 windows may run past the row's end
// when another row follows; their extra lanes are never stored.
template <typename V>
void directconv_stage_row(const DirectConvRows& p, const float* src, size_t readable,
                          float* dst, size_t len) {
  constexpr size_t W = V::kWidth;
  const size_t sw = p.sw, pl = p.pad_left;
  for (size_t ph = 0; ph < sw; ++ph) {
    // Phase ph holds x columns i = j*sw + ph - pl: j from ceil((pl - ph) / sw) while i < W.
    const size_t j0 = std::min(len, pl > ph ? (pl - ph + sw - 1) / sw : 0);
    const size_t i0 = j0 * sw + ph - pl;
    const size_t n = i0 < p.W ? std::min(len - j0, (p.W - i0 + sw - 1) / sw) : 0;
    float* q = dst + ph * len + j0;
    const float* s = src + i0;
    size_t j = 0;
    if (sw == 1) {
      std::memcpy(q, s, n * sizeof(float));
      j = n;
    } else if (sw == 2) {
      for (; j < n && i0 + 2 * (j + W) <= readable; j += W)
        store_n<V>(q + j, V::load_even(s + 2 * j), n - j);
    }
    for (; j < n; ++j) q[j] = s[j * sw];
  }
}

// The row tables and tap offsets of one output row, shared by its tiles.
struct DirectConvRow {
  const float* const* rows;  // rows[c * kh + ky]: the staged row (phase 0) of that tap row
  const size_t* tap_off;     // tap_off[kx]: where tap kx's columns start in a staged row
  size_t oy;
};

// One register tile: KB channels from k0 (weights `w`, kDirectConvBlock apart per tap) x NV
// vectors from column `col`, its first `cols` columns stored. The accumulators start at the
// bias and never leave registers; ACT is the activation when known at compile time
// (kAnyActivation: read it from p), so that the common ones cost no dispatch per vector.
template <typename V, size_t KB, size_t NV, size_t KW, int ACT>
void directconv_tile(const DirectConvRows& p, const DirectConvRow& row, const float* w,
                     size_t k0, size_t col, size_t cols) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const size_t kw = KW ? KW : p.kw;
  vec acc[KB][NV];
#pragma GCC unroll 8
  for (size_t k = 0; k < KB; ++k) {
    const vec b = p.bias && k0 + k < p.K ? V::set1(p.bias[k0 + k]) : V::zero();
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) acc[k][v] = b;
  }
  const size_t plane = p.oh * p.ow;
  float* out = p.y + k0 * plane + row.oy * p.ow + col;
  // The tile's output lines, asked for now so that their reads-for-ownership overlap the
  // FMAs instead of stalling the stores (the output of a stem is often larger than L2).
#pragma GCC unroll 8
  for (size_t k = 0; k < KB; ++k)
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) __builtin_prefetch(out + k * plane + v * W, 1, 3);
  for (size_t r = 0; r < p.C * p.kh; ++r) {
    const float* in_row = row.rows[r] + col;
#pragma GCC unroll 7
    for (size_t kx = 0; kx < kw; ++kx, w += kDirectConvBlock) {
      const float* s = in_row + row.tap_off[kx];
      vec in[NV];
#pragma GCC unroll 4
      for (size_t v = 0; v < NV; ++v) in[v] = V::load(s + v * W);
#pragma GCC unroll 8
      for (size_t k = 0; k < KB; ++k) {
        const vec wk = V::set1(w[k]);
#pragma GCC unroll 4
        for (size_t v = 0; v < NV; ++v) acc[k][v] = V::fma(wk, in[v], acc[k][v]);
      }
    }
  }
  const Activation act = ACT == kAnyActivation ? p.act : Activation(ACT);
  const float* res = p.residual ? p.residual + (out - p.y) : nullptr;
#pragma GCC unroll 8
  for (size_t k = 0; k < KB; ++k) {
    if (k0 + k >= p.K) break;
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) {
      const size_t at = k * plane + v * W, left = cols - v * W;  // >= 1: NV vectors, no more
      vec u = acc[k][v];
      if (res) u = V::add(u, load_n<V>(res + at, left));
      store_n<V>(out + at, activate<V>(u, act, p.alpha, p.beta), left);
    }
  }
}

// Every tile of one output row for KB channels from k0: whole NV-vector tiles, then the
// fewest vectors that cover the last columns. A one-vector tile has only KB accumulators,
// too few chains to cover the FMA latency, so a row that would end on one (7 vectors: a
// 112-wide ResNet stem row) ends on two two-vector tiles instead (3 + 2 + 2).
template <typename V, size_t KB, size_t NV, size_t KW, int ACT>
void directconv_row(const DirectConvRows& p, const DirectConvRow& row, const float* w,
                    size_t k0) {
  constexpr size_t W = V::kWidth, NC = NV * W;
  size_t whole = p.ow / NC;  // whole tiles
  const size_t rest = p.ow - whole * NC;
  const bool regroup = NV == 3 && whole > 0 && rest > 0 && rest <= W;
  if (regroup) --whole;
  size_t col = 0;
  for (size_t i = 0; i < whole; ++i, col += NC)
    directconv_tile<V, KB, NV, KW, ACT>(p, row, w, k0, col, NC);
  const size_t left = p.ow - col;
  if (left == 0) return;
  if constexpr (NV >= 3) {
    if (regroup) {
      directconv_tile<V, KB, 2, KW, ACT>(p, row, w, k0, col, 2 * W);
      return directconv_tile<V, KB, 2, KW, ACT>(p, row, w, k0, col + 2 * W, left - 2 * W);
    }
    if (left > 2 * W) return directconv_tile<V, KB, 3, KW, ACT>(p, row, w, k0, col, left);
  }
  if constexpr (NV >= 2) {
    if (left > W) return directconv_tile<V, KB, 2, KW, ACT>(p, row, w, k0, col, left);
  }
  directconv_tile<V, KB, 1, KW, ACT>(p, row, w, k0, col, left);
}

using directconv_row_fn = void (*)(const DirectConvRows&, const DirectConvRow&, const float*,
                                   size_t);

// The row function for p's kernel width and activation: 3 and 7 wide (the image stems)
// unrolled; the stems' activations (ResNet's relu, MobileNet's clip and hard-swish, YOLO's
// SiLU) without a per-vector dispatch, which costs more than hard-swish itself.
template <typename V, size_t KB, size_t NV, size_t KW>
directconv_row_fn directconv_row_for_act(Activation act) {
  switch (act) {
    case Activation::none: return directconv_row<V, KB, NV, KW, int(Activation::none)>;
    case Activation::relu: return directconv_row<V, KB, NV, KW, int(Activation::relu)>;
    case Activation::clip: return directconv_row<V, KB, NV, KW, int(Activation::clip)>;
    case Activation::hard_swish:
      return directconv_row<V, KB, NV, KW, int(Activation::hard_swish)>;
    case Activation::silu: return directconv_row<V, KB, NV, KW, int(Activation::silu)>;
    default: return directconv_row<V, KB, NV, KW, kAnyActivation>;
  }
}

template <typename V, size_t KB, size_t NV>
directconv_row_fn directconv_row_for(const DirectConvRows& p) {
  if (p.kw == 3) return directconv_row_for_act<V, KB, NV, 3>(p.act);
  if (p.kw == 7) return directconv_row_for_act<V, KB, NV, 7>(p.act);
  return directconv_row_for_act<V, KB, NV, 0>(p.act);
}

template <typename V, size_t KB, size_t NV>
void directconv_ukernel(const DirectConvRows& p) {
  static_assert(kDirectConvBlock % KB == 0 && NV >= 1 && NV <= 3, "tile shape");
  constexpr size_t W = V::kWidth, NC = NV * W;
  static_assert(NC <= kDirectConvColumnBlock, "a column block must fit the staged slack");
  const size_t len = directconv_phase_floats(p), ring = directconv_ring_rows(p);
  const size_t row_floats = p.sw * len, kdim = p.C * p.kh * p.kw;
  // Padding columns stay zero: staging writes data columns only.
  std::memset(p.scratch, 0, directconv_scratch_floats(p) * sizeof(float));
  const float* zero_row = p.scratch + p.C * ring * row_floats;
  const float* x_end = p.x + p.C * p.H * p.W;
  size_t tap_off[kDirectConvMaxKw];
  for (size_t kx = 0; kx < p.kw; ++kx) {
    const size_t t = kx * p.dw;
    tap_off[kx] = t % p.sw * len + t / p.sw;
  }
  const float* rows[kDirectConvMaxTapRows];
  const directconv_row_fn compute = directconv_row_for<V, KB, NV>(p);
  size_t next = 0;  // first padded row not staged yet
  for (size_t oy = p.oy0; oy < p.oy1; ++oy) {
    const size_t first = oy * p.sh;
    for (size_t r = std::max(next, first); r < first + ring; ++r) {
      if (r < p.pad_top || r >= p.pad_top + p.H) continue;
      for (size_t c = 0; c < p.C; ++c) {
        const float* src = p.x + (c * p.H + r - p.pad_top) * p.W;
        directconv_stage_row<V>(p, src, size_t(x_end - src),
                                p.scratch + (c * ring + r % ring) * row_floats, len);
      }
    }
    next = first + ring;
    for (size_t c = 0; c < p.C; ++c)
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const size_t r = first + ky * p.dh;
        rows[c * p.kh + ky] = r >= p.pad_top && r < p.pad_top + p.H
                                  ? p.scratch + (c * ring + r % ring) * row_floats
                                  : zero_row;
      }
    const DirectConvRow row{rows, tap_off, oy};
    for (size_t k0 = 0; k0 < p.K; k0 += KB)
      compute(p, row, p.w + (k0 / kDirectConvBlock) * kdim * kDirectConvBlock +
                          k0 % kDirectConvBlock, k0);
  }
}

}  // namespace kiln::simd
