// The depthwise convolution plane microkernel (contract in kernels/dwconv_ukernel.h), written
// once over a vector traits type V (kernels/<isa>/vec.h): kWidth output columns per vector,
// stride 1 as plain loads, stride 2 as V::load_even. 3x3 and 5x5 get the tap loops unrolled
// with the taps in registers; other sizes up to 64 taps loop; the rest go to the plain kernel.
// Input rows are staged once each into a small zero-padded ring (L1) as the output rows
// advance, applying the input prologue on the way; rows above or below the plane read a
// zero row.
#pragma once
#include <algorithm>
#include <cstddef>

#include "kernels/simd/lanes.h"
#include "kernels/simd/vmath.h"
#include "kernels/ukernels.h"

namespace kiln::simd {

template <typename V, int SW>
inline typename V::vec dwconv_window(const float* s) {
  return SW == 1 ? V::load(s) : V::load_even(s);
}

// dst[0, n) = prologue(src[0, n)).
template <typename V>
void dwconv_stage_row(const DwConvPlane& p, const float* src, float* dst, size_t n) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  if (!p.has_prologue) {
    size_t i = 0;
    for (; i + W <= n; i += W) V::store(dst + i, V::load(src + i));
    if (i < n) store_n<V>(dst + i, load_n<V>(src + i, n - i), n - i);
    return;
  }
  const vec s = V::set1(p.in_scale), t = V::set1(p.in_shift), zero = V::zero();
  for (size_t i = 0; i < n; i += W) {
    vec u = V::fma(load_n<V>(src + i, n - i), s, t);
    if (p.in_relu) u = V::max(zero, u);
    store_n<V>(dst + i, u, n - i);
  }
}

// Output rows [oy, oy + R) of the plane, R = 1 or 2. in_row lists the padded input rows the
// windows read: kh rows (dh apart) for R = 1; for R = 2 (dh = 1, vertical stride = SW) the
// kh + SW rows from the first window's top. Two rows at once share the loads of the rows
// both windows read and give the FMA pipes two independent accumulator chains: on small
// planes (7 x 7, 14 x 14) a row is one vector, and its taps alone leave the pipes idle.
template <typename V, int KH, int KW, int SW, int R>
inline void dwconv_rows(const DwConvPlane& p, const typename V::vec* w,
                        const float* const* in_row, size_t oy) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const size_t kh = KH ? KH : p.kh, kw = KW ? KW : p.kw;
  const size_t rows_in = kh + (R - 1) * SW;
  const vec bias = V::set1(p.bias);
  for (size_t ox = 0; ox < p.ow; ox += W) {
    vec acc[R][2];  // two chains per row halve the dependent FMA latency
    for (int r = 0; r < R; ++r) acc[r][0] = bias, acc[r][1] = V::zero();
#pragma GCC unroll 7
    for (size_t q = 0; q < rows_in; ++q) {
      const float* row = in_row[q] + ox * SW;
#pragma GCC unroll 5
      for (size_t kx = 0; kx < kw; ++kx) {
        const vec v = dwconv_window<V, SW>(row + kx * p.dw);
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) {
          const size_t ky = q - r * SW;  // this row's tap row (wraps when q < r * SW)
          if (ky >= kh) continue;
          const size_t t = ky * kw + kx;
          acc[r][t % 2] = V::fma(w[t], v, acc[r][t % 2]);
        }
      }
    }
    const size_t left = p.ow - ox;
    for (int r = 0; r < R; ++r) {
      vec a = V::add(acc[r][0], acc[r][1]);
      if (p.residual) a = V::add(a, load_n<V>(p.residual + (oy + r) * p.ow + ox, left));
      store_n<V>(p.y + (oy + r) * p.ow + ox, activate<V>(a, p.act, p.alpha, p.beta), left);
    }
  }
}

// KH, KW > 0: fixed kernel size, tap loops unrolled (two output rows at a time); 0: the
// plane's own size (<= 64 taps), one row at a time.
// WHOLE: the ring holds every padded row (dwconv_ring_rows), so padded row r is slot r.
template <typename V, int KH, int KW, int SW, bool WHOLE>
void dwconv_plane(const DwConvPlane& p) {
  using vec = typename V::vec;
  const size_t kh = KH ? KH : p.kh, kw = KW ? KW : p.kw;
  vec w[KH ? KH * KW : 64];
#pragma GCC unroll 25
  for (size_t i = 0; i < kh * kw; ++i) w[i] = V::set1(p.w[i]);
  const size_t rf = dwconv_row_floats(p), span = (kh - 1) * p.dh + 1;
  const size_t ring = dwconv_ring_rows(p), ahead = ring - span;
  const size_t cols = dwconv_cols(p);
  const size_t n = cols > p.pad_left ? std::min(p.in_w, cols - p.pad_left) : 0;
  const size_t data_end = p.pad_top + p.in_h;  // padded rows [pad_top, data_end) hold data
  const float* zero_row = p.rows + ring * rf;
  // Stride 2 takes two rows at a time: each tap's window is two loads and a permute
  // (load_even), and the shared rows save a third of them (on the Xeon: 5x5 over 128 x 100 x
  // 76, 656 -> 590 us; 5x5 over 256 x 14 x 14, 60 -> 56 us). At stride 1 the second row's
  // accumulators cost more in register spills than they save (50 x 38 x 256: 620 -> 700).
  // The second row's window is staged with the first's: the lookahead (kDwConvLookahead >= 1
  // rows of stride sh) covers it. Dilated windows go one row at a time.
  const bool pairs = KH != 0 && SW == 2 && p.dh == 1 && p.sh == SW && ahead >= p.sh;
  const float* in_row[KH ? KH + 2 : 64];
  // Padded row r lives in ring slot r % ring; base tracks first % ring without a division.
  size_t next = 0, base = 0;  // next: the next padded row to stage
  for (size_t oy = 0; oy < p.oh;) {
    const size_t first = oy * p.sh;
    auto slot = [&](size_t r) {
      const size_t i = base + (r - first);
      return p.rows + (i >= ring ? i - ring : i) * rf;
    };
    // Stage this output row's window and the lookahead's rows (those of the next outputs).
    const size_t stage_end = std::min(first + span + ahead, data_end);
    for (size_t r = std::max({next, first, p.pad_top}); r < stage_end; ++r)
      dwconv_stage_row<V>(p, p.x + (r - p.pad_top) * p.in_w, slot(r) + p.pad_left, n);
    next = std::max(next, stage_end);
    const bool two = pairs && oy + 1 < p.oh;
    const size_t rows_in = two ? kh + p.sh : kh;
    for (size_t q = 0; q < rows_in; ++q) {
      const size_t r = first + q * p.dh;
      in_row[q] = r >= p.pad_top && r < data_end ? (WHOLE ? p.rows + r * rf : slot(r))
                                                 : zero_row;
    }
    if (two) dwconv_rows<V, KH, KW, SW, 2>(p, w, in_row, oy);
    else dwconv_rows<V, KH, KW, SW, 1>(p, w, in_row, oy);
    const size_t step = two ? 2 : 1;
    oy += step;
    base += step * p.sh;
    while (base >= ring) base -= ring;
  }
}

template <typename V, bool WHOLE>
void dwconv_sized(const DwConvPlane& p) {
  const bool s1 = p.sw == 1;
  if (p.kh == 3 && p.kw == 3)
    return s1 ? dwconv_plane<V, 3, 3, 1, WHOLE>(p) : dwconv_plane<V, 3, 3, 2, WHOLE>(p);
  if (p.kh == 5 && p.kw == 5)
    return s1 ? dwconv_plane<V, 5, 5, 1, WHOLE>(p) : dwconv_plane<V, 5, 5, 2, WHOLE>(p);
  if (s1) dwconv_plane<V, 0, 0, 1, WHOLE>(p);
  else dwconv_plane<V, 0, 0, 2, WHOLE>(p);
}

template <typename V>
void dwconv_ukernel(const DwConvPlane& p) {
  if (p.kh * p.kw > 64 || (p.sw != 1 && p.sw != 2)) return kiln_f32_dwconv_ukernel__generic(p);
  if (dwconv_ring_rows(p) == dwconv_padded_rows(p)) return dwconv_sized<V, true>(p);
  dwconv_sized<V, false>(p);
}

}  // namespace kiln::simd
