// The depthwise convolution plane microkernel (contract in kernels/dwconv_ukernel.h), written
// once over a vector traits type V (kernels/<isa>/vec.h): kWidth output columns per vector,
// stride 1 as plain loads, stride 2 as V::load_even. 3x3, 5x5 and 7x7 get the tap loops unrolled
// with the taps in registers; other sizes up to 64 taps loop; the rest go to the plain kernel.
// Input rows are staged once each into a small zero-padded ring (L1) as the output rows
// advance, applying the input prologue on the way; rows above or below the plane read a
// zero row.
#pragma once
#include <algorithm>
#include <cstddef>
#include <utility>

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

// Output rows oy and oy + 1 at once (stride SW both ways, no dilation, fixed KH x KW):
// in_row lists the KH + SW padded input rows from the first window's top. The rows both
// windows read are loaded once, and at stride 2 each load is two loads and a permute
// (load_even): sharing them cuts the permutes by a third (on the Xeon: 5x5 s2 over
// 128 x 100 x 76, 656 -> 590 us; over 256 x 14 x 14, 60 -> 56 us). At stride 1 the second
// row's accumulators cost more in register spills than the shared loads save (5x5 over
// 256 x 50 x 38: 620 -> 700 us), so stride 1 stays one row at a time. Timings: one thread,
// minimum of many runs on a loaded 2-vCPU VM, so +-10%.
template <typename V, int KH, int KW, int SW>
inline void dwconv_row_pair(const DwConvPlane& p, const typename V::vec* w,
                            const float* const* in_row, size_t oy) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const vec bias = V::set1(p.bias);
  for (size_t ox = 0; ox < p.ow; ox += W) {
    vec acc[2][2];  // [row][chain]: two chains per row halve the dependent FMA latency
    acc[0][0] = acc[1][0] = bias;
    acc[0][1] = acc[1][1] = V::zero();
#pragma GCC unroll 9
    for (int q = 0; q < KH + SW; ++q) {
      const float* row = in_row[q] + ox * SW;
#pragma GCC unroll 7
      for (int kx = 0; kx < KW; ++kx) {
        const vec v = dwconv_window<V, SW>(row + kx);
#pragma GCC unroll 2
        for (int r = 0; r < 2; ++r) {
          const int ky = q - r * SW;  // this output row's tap row
          if (ky < 0 || ky >= KH) continue;
          const int t = ky * KW + kx;
          acc[r][t % 2] = V::fma(w[t], v, acc[r][t % 2]);
        }
      }
    }
    const size_t left = p.ow - ox;
    for (size_t r = 0; r < 2; ++r) {
      vec a = V::add(acc[r][0], acc[r][1]);
      if (p.residual) a = V::add(a, load_n<V>(p.residual + (oy + r) * p.ow + ox, left));
      store_n<V>(p.y + (oy + r) * p.ow + ox, activate<V>(a, p.act, p.alpha, p.beta), left);
    }
  }
}

// Output rows of a whole staged plane, stride SW both ways (used at 1), no dilation, R at a
// time, a vector of columns at a time. One row alone is a chain of KH * KW dependent FMAs
// per vector; R rows give R independent chains, and each window load feeds every row whose
// taps cover it (KH + SW * (R - 1) input rows, not KH * R). `window` is the first output
// row's top padded row; rows are rf floats apart.
template <typename V, int KH, int KW, int SW, int R>
inline void dwconv_rows_grouped(const DwConvPlane& p, const typename V::vec* w,
                                const float* window, size_t rf, size_t oy) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  for (size_t ox = 0; ox < p.ow; ox += W) {
    const size_t left = p.ow - ox;
    vec acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = V::set1(p.bias);
    // Every loop here unrolled in full (7x7 groups: 14 rows of 7 taps), so that each row's
    // tap row ky is a constant: left rolled, it was computed and tested per FMA.
#pragma GCC unroll 16
    for (int q = 0; q < KH + SW * (R - 1); ++q) {
      const float* row = window + q * rf + ox * SW;
#pragma GCC unroll 8
      for (int kx = 0; kx < KW; ++kx) {
        const vec v = dwconv_window<V, SW>(row + kx);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const int ky = q - SW * r;  // this output row's tap row
          if (ky < 0 || ky >= KH) continue;
          acc[r] = V::fma(w[ky * KW + kx], v, acc[r]);
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      vec a = acc[r];
      const size_t at = (oy + r) * p.ow + ox;
      if (p.residual) a = V::add(a, load_n<V>(p.residual + at, left));
      store_n<V>(p.y + at, activate<V>(a, p.act, p.alpha, p.beta), left);
    }
  }
}

// A plane in groups of at most kDwConvRowGroup output rows of near-equal size (14 rows:
// 7 + 7, not 8 + 6), so no group is left with a short chain. stage(oy, n) makes the padded
// input rows of output rows [oy, oy + n) readable, rf floats apart, and returns the first.
// Taken by whole staged planes one vector wide, by 5x5 whole planes of 6 rows or more (more
// taps per window load to share), and by 5x5 stride-1 planes too large to stage whole,
// staged a group at a time: one row at a time there, each output vector's taps were 25
// unaligned loads for as many FMAs in two chains (Zen 4, one thread: 5x5 over 128 x 100 x 76
// 1202 -> 692 us in groups; onnxruntime's blocked layout ~580 us).
// On the Xeon, one thread, one row at a time -> groups (a loaded 2-vCPU VM, min of 7 runs):
// 5x5 over 256 x 14 x 14: 65-76 -> 41-43 us; over 512 x 7 x 7: 68-75 -> 45-48 us; over
// 240 x 12 x 80: 202 -> 142-150 us; over 480 x 6 x 80: 202 -> 144-149 us; over 256 x 50 x 38:
// 579-601 -> 385-419 us. Over 480 x 3 x 80 (one group of 3) it lost 95 -> 105 us; 3x3
// planes wider than a vector gained nothing measurable.
template <typename V, int KH, int KW, int SW, typename Stage>
void dwconv_plane_grouped(const DwConvPlane& p, const typename V::vec* w, size_t rf,
                          Stage stage) {
  for (size_t oy = 0; oy < p.oh;) {
    const size_t left = p.oh - oy, groups = (left + kDwConvRowGroup - 1) / kDwConvRowGroup;
    const size_t n = (left + groups - 1) / groups;
    const float* window = stage(oy, n);
    switch (n) {
      case 1: dwconv_rows_grouped<V, KH, KW, SW, 1>(p, w, window, rf, oy); break;
      case 2: dwconv_rows_grouped<V, KH, KW, SW, 2>(p, w, window, rf, oy); break;
      case 3: dwconv_rows_grouped<V, KH, KW, SW, 3>(p, w, window, rf, oy); break;
      case 4: dwconv_rows_grouped<V, KH, KW, SW, 4>(p, w, window, rf, oy); break;
      case 5: dwconv_rows_grouped<V, KH, KW, SW, 5>(p, w, window, rf, oy); break;
      case 6: dwconv_rows_grouped<V, KH, KW, SW, 6>(p, w, window, rf, oy); break;
      case 7: dwconv_rows_grouped<V, KH, KW, SW, 7>(p, w, window, rf, oy); break;
      default: dwconv_rows_grouped<V, KH, KW, SW, 8>(p, w, window, rf, oy); break;
    }
    oy += n;
  }
}

// KH, KW > 0: fixed kernel size, tap loops unrolled; 0: the plane's own size (<= 64 taps).
// WHOLE: the ring holds every padded row (dwconv_ring_rows), so padded row r is slot r and
// the window's rows are plain arithmetic (no per-row pointer table to load).
template <typename V, int KH, int KW, int SW, bool WHOLE>
void dwconv_plane(const DwConvPlane& p) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const size_t kh = KH ? KH : p.kh, kw = KW ? KW : p.kw;
  vec w[KH ? KH * KW : 64];
#pragma GCC unroll 49
  for (size_t i = 0; i < kh * kw; ++i) w[i] = V::set1(p.w[i]);
  const vec bias = V::set1(p.bias);
  const size_t rf = dwconv_row_floats(p), span = (kh - 1) * p.dh + 1;
  const size_t ring = dwconv_ring_rows(p), ahead = ring - span;
  const size_t cols = dwconv_cols(p);
  const size_t n = cols > p.pad_left ? std::min(p.in_w, cols - p.pad_left) : 0;
  const size_t data_end = p.pad_top + p.in_h;  // padded rows [pad_top, data_end) hold data
  const float* zero_row = p.rows + ring * rf;
  const float* in_row[KH ? KH + SW : 64];
  // Stride 2 with the 5x5 taps takes output rows two at a time (dwconv_row_pair): 7 input
  // rows instead of 10 (3x3: 5 instead of 6, not a measurable gain). The second row's window
  // is staged with the first's, the lookahead (kDwConvLookahead rows of stride sh) covering
  // it.
  const bool pairs = p.sh == 2 && p.dh == 1 && p.dw == 1 && ahead >= p.sh;
  const bool unit = p.sh == 1 && p.dh == 1 && p.dw == 1;
  const bool grouped = (p.ow <= W || (KH >= 5 && p.oh >= 6)) && unit;
  // 5x5 only: 3x3 planes of 152-304 columns ran 10-17% slower in groups (Zen 4, one thread;
  // 64 x 200 x 152: 1112 -> 1297 us), their 9 taps too few to pay for restaging the rows
  // two groups share.
  if constexpr (!WHOLE && KH >= 5 && SW == 1) {
    if (unit && dwconv_stages_groups(p) &&
        ring >= kDwConvRowGroup + KH - 1) {  // a group's rows staged from slot 0
      dwconv_plane_grouped<V, KH, KW, SW>(p, w, rf, [&](size_t oy, size_t rows) {
        for (size_t q = 0; q < rows + KH - 1; ++q) {
          const size_t r = oy + q;
          float* dst = p.rows + q * rf + p.pad_left;
          if (r >= p.pad_top && r < data_end)
            dwconv_stage_row<V>(p, p.x + (r - p.pad_top) * p.in_w, dst, n);
          else
            std::fill(dst, dst + n, 0.0f);  // a padding row (the slot may hold data)
        }
        return static_cast<const float*>(p.rows);
      });
      return;
    }
  }
  // Padded row r lives in ring slot r % ring; base tracks first % ring without a division.
  size_t next = 0, base = 0;  // next: the next padded row to stage
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    const float* res = p.residual ? p.residual + oy * p.ow : nullptr;
    const size_t first = oy * p.sh;
    if (oy) {
      base += p.sh;
      while (base >= ring) base -= ring;
    }
    auto slot = [&](size_t r) {
      const size_t i = base + (r - first);
      return p.rows + (i >= ring ? i - ring : i) * rf;
    };
    // Stage this output row's window and the lookahead's rows (those of the next outputs).
    const size_t stage_end = std::min(first + span + ahead, data_end);
    for (size_t r = std::max({next, first, p.pad_top}); r < stage_end; ++r)
      dwconv_stage_row<V>(p, p.x + (r - p.pad_top) * p.in_w, slot(r) + p.pad_left, n);
    next = std::max(next, stage_end);
    // Stride 2 stays with the row pairs: groups of rows measured slower there (5x5 s2 over
    // 256 x 14 x 14: 53 -> 75 us; 3x3 s2 over 128 x 28 x 28: 34 -> 50 us).
    if constexpr (WHOLE && KH > 0 && SW == 1) {
      if (grouped) {  // every row is staged now (the whole plane): all output rows in groups
        dwconv_plane_grouped<V, KH, KW, SW>(p, w, rf, [&](size_t oy, size_t) {
          return static_cast<const float*>(p.rows + oy * SW * rf);
        });
        return;
      }
    }
    if constexpr (KH >= 5 && SW == 2) {
      if (pairs && oy + 1 < p.oh) {
        for (size_t q = 0; q < kh + SW; ++q) {
          const size_t r = first + q;
          in_row[q] = r >= p.pad_top && r < data_end ? slot(r) : zero_row;
        }
        dwconv_row_pair<V, KH, KW, SW>(p, w, in_row, oy);
        ++oy;  // the pair's second row; its ring base, as the loop head does for each row
        base += p.sh;
        while (base >= ring) base -= ring;
        continue;
      }
    }
    if (!WHOLE) {
#pragma GCC unroll 7
      for (size_t ky = 0; ky < kh; ++ky) {
        const size_t r = first + ky * p.dh;
        in_row[ky] = r >= p.pad_top && r < data_end ? slot(r) : zero_row;
      }
    }
    const float* window = p.rows + first * rf;  // WHOLE: the window's first row
    for (size_t ox = 0; ox < p.ow; ox += W) {
      vec acc0 = bias, acc1 = V::zero();  // two chains halve the dependent FMA latency
#pragma GCC unroll 7
      for (size_t ky = 0; ky < kh; ++ky) {
        const float* row = (WHOLE ? window + ky * p.dh * rf : in_row[ky]) + ox * SW;
#pragma GCC unroll 7
        for (size_t kx = 0; kx < kw; ++kx) {
          const vec v = dwconv_window<V, SW>(row + kx * p.dw);
          if ((ky * kw + kx) % 2 == 0) acc0 = V::fma(w[ky * kw + kx], v, acc0);
          else acc1 = V::fma(w[ky * kw + kx], v, acc1);
        }
      }
      vec acc = V::add(acc0, acc1);
      const size_t left = p.ow - ox;
      if (res) acc = V::add(acc, load_n<V>(res + ox, left));
      store_n<V>(y + ox, activate<V>(acc, p.act, p.alpha, p.beta), left);
    }
  }
}

template <typename V, bool WHOLE>
void dwconv_sized(const DwConvPlane& p) {
  const bool s1 = p.sw == 1;
  if (p.kh == 3 && p.kw == 3)
    return s1 ? dwconv_plane<V, 3, 3, 1, WHOLE>(p) : dwconv_plane<V, 3, 3, 2, WHOLE>(p);
  if (p.kh == 5 && p.kw == 5)
    return s1 ? dwconv_plane<V, 5, 5, 1, WHOLE>(p) : dwconv_plane<V, 5, 5, 2, WHOLE>(p);
  // 7x7 (PP-OCRv5/v6's detectors, ConvNeXt-style blocks): on the plane's own size each
  // output vector was one row at a time, 49 taps in two chains, the tap loops left rolled
  // (96 x 80 x 80, one thread, Zen 4: 1826 us; onnxruntime 714).
  if (p.kh == 7 && p.kw == 7)
    return s1 ? dwconv_plane<V, 7, 7, 1, WHOLE>(p) : dwconv_plane<V, 7, 7, 2, WHOLE>(p);
  if (s1) dwconv_plane<V, 0, 0, 1, WHOLE>(p);
  else dwconv_plane<V, 0, 0, 2, WHOLE>(p);
}

// ---- The blocked form (DwConvPlane::channels >= 1): channels in vector lanes.

// One tap row of R windows whose pixels are vectors of channels, ps floats apart (the channels
// in lanes forms: blocked and NHWC): row is the first window's first pixel, w the row's kw
// weight vectors. SW > 0: the stride, fixed, and no dilation: each pixel the R windows read
// is loaded once for every (window, tap) on it ((R - 1) * SW + KW loads instead of R * KW: a
// 5x5 at stride 1, 8 instead of 20). Otherwise each tap loads its R pixels.
template <typename V, int KW, int R, int SW, typename Load>
inline void dwconv_tap_row(const DwConvPlane& p, const float* row, size_t ps,
                           const typename V::vec* w, typename V::vec* acc, Load load) {
  if constexpr (KW > 0 && SW > 0) {
#pragma GCC unroll 16
    for (int j = 0; j < (R - 1) * SW + KW; ++j) {
      const typename V::vec v = load(row + j * ps);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const int kx = j - r * SW;  // window r's tap on pixel j
        if (kx >= 0 && kx < KW) acc[r] = V::fma(w[kx], v, acc[r]);
      }
    }
  } else {
    const size_t kw = KW ? KW : p.kw, step = p.sw * ps;
#pragma GCC unroll 7
    for (size_t kx = 0; kx < kw; ++kx) {
      const float* at = row + kx * p.dw * ps;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r] = V::fma(w[kx], load(at + r * step), acc[r]);
    }
  }
}

// Outputs of R consecutive pixels of output row oy from ox on: R independent FMA chains, each
// tap's weight vector loaded once for all of them. xb: the padded input, wp pixels a row, L
// floats a pixel; yb: the outputs, L floats a pixel. SW: see dwconv_tap_row.
template <typename V, int KH, int KW, int R, int SW>
inline void dwconv_lanes_pixels(const DwConvPlane& p, const typename V::vec* w,
                                typename V::vec bias, const float* xb, size_t wp, size_t oy,
                                size_t ox, float* yb) {
  using vec = typename V::vec;
  constexpr size_t L = V::kWidth;
  const size_t kh = KH ? KH : p.kh, kw = KW ? KW : p.kw;
  vec acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = bias;
  const float* base = xb + (oy * p.sh * wp + ox * p.sw) * L;
#pragma GCC unroll 7
  for (size_t ky = 0; ky < kh; ++ky)
    dwconv_tap_row<V, KW, R, SW>(p, base + ky * p.dh * wp * L, L, w + ky * kw, acc,
                                 [](const float* at) { return V::load(at); });
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) V::store(yb + (oy * p.ow + ox + r) * L, acc[r]);
}

// Channels [c0, c0 + nc) (nc <= L) of a blocked call: their padded planes copied into xb as
// pixels x L lanes (padding and lanes past nc zero, the prologue applied to real pixels), the
// outputs computed into yb the same way, then each channel's column of yb written to its
// plane through the epilogue.
template <typename V, int KH, int KW, int SW>
void dwconv_lanes(const DwConvPlane& p, size_t c0, size_t nc, float* xb, float* yb) {
  using vec = typename V::vec;
  constexpr size_t L = V::kWidth;
  const size_t kh = KH ? KH : p.kh, kw = KW ? KW : p.kw, taps = kh * kw;
  const size_t hp = dwconv_padded_rows(p), wp = dwconv_cols(p);
  const size_t plane_in = p.in_h * p.in_w, plane_out = p.oh * p.ow;
  const size_t data_end = std::min(hp, p.pad_top + p.in_h);
  const size_t cols = wp > p.pad_left ? std::min(p.in_w, wp - p.pad_left) : 0;
  const float* src[L];
  alignas(64) float scale[L], shift[L];
  for (size_t c = 0; c < L; ++c) {
    src[c] = c < nc ? p.x + (c0 + c) * plane_in : nullptr;
    scale[c] = c < nc && p.in_scales ? p.in_scales[c0 + c] : 1.0f;
    shift[c] = c < nc && p.in_shifts ? p.in_shifts[c0 + c] : 0.0f;
  }
  const vec zero = V::zero();
  for (size_t r = 0; r < hp; ++r) {
    float* row = xb + r * wp * L;
    if (r < p.pad_top || r >= data_end) {
      std::fill(row, row + wp * L, 0.0f);
      continue;
    }
    std::fill(row, row + p.pad_left * L, 0.0f);
    std::fill(row + (p.pad_left + cols) * L, row + wp * L, 0.0f);
    float* d = row + p.pad_left * L;
    const size_t iy = r - p.pad_top;
    // L pixels of the row at a time: one vector per channel, transposed into one per pixel
    for (size_t j0 = 0; j0 < cols; j0 += L) {
      const size_t n = std::min(L, cols - j0);
      vec v[L];
      for (size_t c = 0; c < L; ++c) {
        if (c >= nc) {
          v[c] = zero;
          continue;
        }
        v[c] = load_n<V>(src[c] + iy * p.in_w + j0, n);
        if (p.in_scales) {
          v[c] = V::fma(v[c], V::set1(scale[c]), V::set1(shift[c]));
          if (p.in_relu) v[c] = V::max(zero, v[c]);  // NaN stays NaN
        }
      }
      V::transpose(v);
      for (size_t j = 0; j < n; ++j) V::store(d + (j0 + j) * L, v[j]);
    }
  }
  alignas(64) float lanes[L];
  vec w[KH ? KH * KW : 64];
  for (size_t t = 0; t < taps; ++t) {
    for (size_t c = 0; c < L; ++c) lanes[c] = c < nc ? p.w[(c0 + c) * taps + t] : 0.0f;
    w[t] = V::load(lanes);
  }
  for (size_t c = 0; c < L; ++c) lanes[c] = c < nc && p.biases ? p.biases[c0 + c] : 0.0f;
  const vec bias = V::load(lanes);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    size_t ox = 0;
    for (; ox + 4 <= p.ow; ox += 4)
      dwconv_lanes_pixels<V, KH, KW, 4, SW>(p, w, bias, xb, wp, oy, ox, yb);
    for (; ox < p.ow; ++ox) dwconv_lanes_pixels<V, KH, KW, 1, SW>(p, w, bias, xb, wp, oy, ox, yb);
  }
  // L output pixels at a time: one vector per pixel, transposed into one per channel
  for (size_t i = 0; i < plane_out; i += L) {
    const size_t n = std::min(L, plane_out - i);
    vec v[L];
    for (size_t j = 0; j < L; ++j) v[j] = j < n ? V::load(yb + (i + j) * L) : zero;
    V::transpose(v);
    for (size_t c = 0; c < nc; ++c) {
      vec a = v[c];
      const size_t at = (c0 + c) * plane_out + i;
      if (p.residual) a = V::add(a, load_n<V>(p.residual + at, n));
      store_n<V>(p.y + at, activate<V>(a, p.act, p.alpha, p.beta), n);
    }
  }
}

// KH x KW taps at a fixed stride where there is one (1 or 2, no dilation).
template <typename V, int KH, int KW>
void dwconv_lanes_sized(const DwConvPlane& p, size_t c0, size_t nc, float* xb, float* yb) {
  if (p.dw == 1 && p.sw == 1) return dwconv_lanes<V, KH, KW, 1>(p, c0, nc, xb, yb);
  if (p.dw == 1 && p.sw == 2) return dwconv_lanes<V, KH, KW, 2>(p, c0, nc, xb, yb);
  dwconv_lanes<V, KH, KW, 0>(p, c0, nc, xb, yb);
}

template <typename V>
void dwconv_blocked(const DwConvPlane& p) {
  constexpr size_t L = V::kWidth;
  float* xb = p.rows;
  float* yb = p.rows + dwconv_padded_rows(p) * dwconv_cols(p) * kDwConvBlockChannels;
  for (size_t c0 = 0; c0 < p.channels; c0 += L) {
    const size_t nc = std::min(L, p.channels - c0);
    if (p.kh == 3 && p.kw == 3) dwconv_lanes_sized<V, 3, 3>(p, c0, nc, xb, yb);
    else if (p.kh == 5 && p.kw == 5) dwconv_lanes_sized<V, 5, 5>(p, c0, nc, xb, yb);
    else if (p.kh == 7 && p.kw == 7) dwconv_lanes_sized<V, 7, 7>(p, c0, nc, xb, yb);
    else dwconv_lanes<V, 0, 0, 0>(p, c0, nc, xb, yb);
  }
}

// ---- The NHWC form (DwConvPlane::nhwc_stride > 0): channels in vector lanes, read in place.

// The first and one-past-last output columns whose taps all lie inside the image's columns.
inline std::pair<size_t, size_t> dwconv_inner_columns(const DwConvPlane& p) {
  const size_t lo = std::min(p.ow, (p.pad_left + p.sw - 1) / p.sw);
  const long last = long(p.in_w) - 1 + long(p.pad_left) - long((p.kw - 1) * p.dw);
  const size_t hi = last < 0 ? 0 : std::min(p.ow, size_t(last) / p.sw + 1);
  return {lo, std::max(lo, hi)};
}

// Output pixel (oy, ox), channels [c, c + nc): acc plus the residual, through the activation.
template <typename V, bool FULL>
inline void dwconv_nhwc_store(const DwConvPlane& p, typename V::vec acc, size_t c, size_t nc,
                              size_t oy, size_t ox) {
  const size_t at = (oy * p.ow + ox) * p.nhwc_stride + c;
  if (p.residual)
    acc = V::add(acc, FULL ? V::load(p.residual + at) : load_n<V>(p.residual + at, nc));
  acc = activate<V>(acc, p.act, p.alpha, p.beta);
  if (FULL) V::store(p.y + at, acc);
  else store_n<V>(p.y + at, acc, nc);
}

// R output pixels from ox on (every tap column inside the image), channels [c, c + nc)
// (FULL: a whole vector), over the tap rows [ky0, ky1) inside it: R independent FMA chains.
// SW: see dwconv_tap_row.
template <typename V, int KH, int KW, int R, bool FULL, int SW>
inline void dwconv_nhwc_pixels(const DwConvPlane& p, const typename V::vec* w,
                               typename V::vec bias, size_t c, size_t nc, size_t oy, size_t ox,
                               long iy0, size_t ky0, size_t ky1) {
  using vec = typename V::vec;
  const size_t S = p.nhwc_stride, kw = KW ? KW : p.kw;
  vec acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = bias;
  const float* base = p.x + (ox * p.sw - p.pad_left) * S + c;
#pragma GCC unroll 7
  for (size_t ky = ky0; ky < ky1; ++ky)
    dwconv_tap_row<V, KW, R, SW>(p, base + size_t(iy0 + long(ky * p.dh)) * p.in_w * S, S,
                                 w + ky * kw, acc, [&](const float* at) {
                                   return FULL ? V::load(at) : load_n<V>(at, nc);
                                 });
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) dwconv_nhwc_store<V, FULL>(p, acc[r], c, nc, oy, ox + r);
}

// Up to four output pixels from ox on whose taps may fall outside the image's columns (the
// left and right edges): a tap column outside reads a zero vector instead, so the taps keep
// the unrolled loop and the pixels their own FMA chains.
template <typename V, int KH, int KW, bool FULL>
void dwconv_nhwc_edge(const DwConvPlane& p, const typename V::vec* w, typename V::vec bias,
                      size_t c, size_t nc, size_t oy, size_t ox, size_t count, long iy0,
                      size_t ky0, size_t ky1) {
  using vec = typename V::vec;
  alignas(64) static const float zeros[V::kWidth] = {};
  const size_t S = p.nhwc_stride, kw = KW ? KW : p.kw;
  auto load = [&](const float* at) { return FULL ? V::load(at) : load_n<V>(at, nc); };
  long col[4][KW ? KW : 64];  // each pixel's tap columns in floats from the row, -1 outside
  for (size_t r = 0; r < count; ++r)
    for (size_t kx = 0; kx < kw; ++kx) {
      const long ix = long((ox + r) * p.sw + kx * p.dw) - long(p.pad_left);
      col[r][kx] = ix < 0 || ix >= long(p.in_w) ? -1 : ix * long(S);
    }
  vec acc[4] = {bias, bias, bias, bias};
  for (size_t ky = ky0; ky < ky1; ++ky) {
    const float* row = p.x + size_t(iy0 + long(ky * p.dh)) * p.in_w * S + c;
#pragma GCC unroll 7
    for (size_t kx = 0; kx < kw; ++kx) {
      const vec wt = w[ky * kw + kx];
#pragma GCC unroll 4
      for (size_t r = 0; r < 4; ++r)
        if (r < count)
          acc[r] = V::fma(wt, load(col[r][kx] < 0 ? zeros : row + col[r][kx]), acc[r]);
    }
  }
  for (size_t r = 0; r < count; ++r) dwconv_nhwc_store<V, FULL>(p, acc[r], c, nc, oy, ox + r);
}

// Output rows [oy0, oy1), channels [c, c + nc): the taps loaded into registers once, then
// each row's pixels, four at a time between the edges.
template <typename V, int KH, int KW, bool FULL, int SW>
void dwconv_nhwc_rows(const DwConvPlane& p, size_t oy0, size_t oy1, size_t c, size_t nc,
                      size_t lo, size_t hi) {
  using vec = typename V::vec;
  const size_t S = p.nhwc_stride, taps = p.kh * p.kw;
  vec w[KH ? KH * KW : 64];
  for (size_t t = 0; t < taps; ++t) w[t] = FULL ? V::load(p.w + t * S + c)
                                                : load_n<V>(p.w + t * S + c, nc);
  const vec bias = !p.biases ? V::zero() : FULL ? V::load(p.biases + c)
                                                : load_n<V>(p.biases + c, nc);
  for (size_t oy = oy0; oy < oy1; ++oy) {
    // the tap rows inside the image: iy0 + ky * dh in [0, in_h)
    const long iy0 = long(oy * p.sh) - long(p.pad_top);
    const size_t ky0 = iy0 >= 0 ? 0 : std::min(p.kh, size_t(-iy0 + long(p.dh) - 1) / p.dh);
    const long below = long(p.in_h) - iy0;  // rows from iy0 to the image's bottom
    const size_t ky1 = below <= 0 ? 0 : std::min(p.kh, (size_t(below) + p.dh - 1) / p.dh);
    auto edges = [&](size_t from, size_t to) {
      for (size_t ox = from; ox < to; ox += 4)
        dwconv_nhwc_edge<V, KH, KW, FULL>(p, w, bias, c, nc, oy, ox, std::min<size_t>(4, to - ox),
                                          iy0, ky0, ky1);
    };
    edges(0, lo);
    size_t ox = lo;
    for (; ox + 4 <= hi; ox += 4)
      dwconv_nhwc_pixels<V, KH, KW, 4, FULL, SW>(p, w, bias, c, nc, oy, ox, iy0, ky0, ky1);
    switch (hi - ox) {  // the last inner pixels, each in a chain of its own
      case 3: dwconv_nhwc_pixels<V, KH, KW, 3, FULL, SW>(p, w, bias, c, nc, oy, ox, iy0, ky0, ky1);
        break;
      case 2: dwconv_nhwc_pixels<V, KH, KW, 2, FULL, SW>(p, w, bias, c, nc, oy, ox, iy0, ky0, ky1);
        break;
      case 1: dwconv_nhwc_pixels<V, KH, KW, 1, FULL, SW>(p, w, bias, c, nc, oy, ox, iy0, ky0, ky1);
        break;
      default: break;
    }
    edges(hi, p.ow);
  }
}

// A whole vector of channels with KH x KW taps, at a fixed stride where there is one.
template <typename V, int KH, int KW>
void dwconv_nhwc_sized(const DwConvPlane& p, size_t b0, size_t b1, size_t c, size_t nc,
                       size_t lo, size_t hi) {
  if (p.dw == 1 && p.sw == 1) return dwconv_nhwc_rows<V, KH, KW, true, 1>(p, b0, b1, c, nc, lo, hi);
  if (p.dw == 1 && p.sw == 2) return dwconv_nhwc_rows<V, KH, KW, true, 2>(p, b0, b1, c, nc, lo, hi);
  dwconv_nhwc_rows<V, KH, KW, true, 0>(p, b0, b1, c, nc, lo, hi);
}

// Bands of output rows whose input rows fit kDwConvNhwcBandBytes, each band walked by one
// vector of channels after another: the band's input stays in cache for every vector (a
// vector's pass uses one line of each pixel's channels), and the taps stay in registers for a
// whole band. Vectors outermost over a whole large image streamed it from memory once per
// vector (64 channels at 200 x 152: 1640 us against 1000 in NCHW planes); rows outermost
// reloaded the taps every row (25 of them for a 5x5: 256 channels at 14 x 14 70 -> 106 us).
template <typename V>
void dwconv_nhwc(const DwConvPlane& p) {
  constexpr size_t L = V::kWidth;
  const auto [lo, hi] = dwconv_inner_columns(p);
  const size_t row_bytes = p.sh * p.in_w * p.nhwc_stride * sizeof(float);
  const size_t band = std::max<size_t>(1, kDwConvNhwcBandBytes / std::max<size_t>(1, row_bytes));
  for (size_t b0 = p.oy0; b0 < p.oy1; b0 += band) {
    const size_t b1 = std::min(p.oy1, b0 + band);
    for (size_t c = 0; c < p.channels; c += L) {
      const size_t nc = std::min(L, p.channels - c);
      if (nc < L) dwconv_nhwc_rows<V, 0, 0, false, 0>(p, b0, b1, c, nc, lo, hi);
      else if (p.kh == 3 && p.kw == 3) dwconv_nhwc_sized<V, 3, 3>(p, b0, b1, c, nc, lo, hi);
      else if (p.kh == 5 && p.kw == 5) dwconv_nhwc_sized<V, 5, 5>(p, b0, b1, c, nc, lo, hi);
      else if (p.kh == 7 && p.kw == 7) dwconv_nhwc_sized<V, 7, 7>(p, b0, b1, c, nc, lo, hi);
      else dwconv_nhwc_rows<V, 0, 0, true, 0>(p, b0, b1, c, nc, lo, hi);
    }
  }
}

template <typename V>
void dwconv_ukernel(const DwConvPlane& p) {
  if (p.kh * p.kw > 64) return kiln_f32_dwconv_ukernel__generic(p);
  if (p.nhwc_stride) return dwconv_nhwc<V>(p);
  if (p.sw != 1 && p.sw != 2) return kiln_f32_dwconv_ukernel__generic(p);
  if (p.channels) return dwconv_blocked<V>(p);
  if (dwconv_ring_rows(p) == dwconv_padded_rows(p)) return dwconv_sized<V, true>(p);
  dwconv_sized<V, false>(p);
}

}  // namespace kiln::simd
