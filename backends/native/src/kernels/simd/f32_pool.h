// The max / avg pooling plane microkernel (contract in kernels/pool_ukernel.h), written once
// over a vector traits type V (kernels/<isa>/vec.h): kWidth output columns per vector,
// stride 1 as plain loads, stride 2 as V::load_even; other strides go to the plain kernel.
#pragma once
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/simd/lanes.h"
#include "kernels/ukernels.h"

namespace kiln::simd {

// Separable: per output row, the kh window rows inside the plane are first reduced into one
// row of padded columns (unit-stride loads, one max/add a tap row; the padding columns take
// the fill), then that row's kw taps per output column (one load, or one load_even at stride
// 2, a tap). A 3x3 stride-2 max takes 6 loads, 3 permutes and 6 maxes per vector of outputs
// where reducing each output's 9 taps directly took 18, 9 and 9; and no padded copy of the
// plane is made (Inception's padded 3x3 stride-1 pools copied every plane first).
template <typename V, int SW, bool MAX>
void pool_plane(const PoolPlane& p) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const float fill = MAX ? -__builtin_inff() : 0.0f;
  const vec init = V::set1(fill);
  // Padded columns an output row's windows read, and the row buffer the column pass reads:
  // up to the last output vector's last tap, two vectors at stride 2.
  const size_t used = (p.ow - 1) * SW + (p.kw - 1) * p.dw + 1;
  const size_t read = ((p.ow + W - 1) / W - 1) * W * SW + (p.kw - 1) * p.dw + W * SW;
  const size_t cols = std::min(p.in_w, used > p.pad_left ? used - p.pad_left : 0);
  // Rows are reduced kRows at a time before their column passes read them back: reading a
  // row right after its (partly masked) stores waits for them to reach L1 (a store cannot be
  // forwarded to the shifted loads of the taps), which cost as much as the pooling on small
  // planes (Inception's 3x3 pools over 13x13: ~40 cycles a row).
  constexpr size_t kRows = 8;
  const size_t len = std::max(used, read);
  thread_local std::vector<float> row_buffer;
  if (row_buffer.size() < kRows * len) row_buffer.resize(kRows * len);
  float* rows = row_buffer.data();
  // padding columns stay the fill; data columns are rewritten
  std::fill(rows, rows + std::min(kRows, p.oh) * len, fill);
  const size_t step = p.dh * p.in_w;
  for (size_t oy0 = 0; oy0 < p.oh; oy0 += kRows) {
    const size_t oy1 = std::min(p.oh, oy0 + kRows);
    for (size_t oy = oy0; oy < oy1; ++oy) {
      // The window's rows inside the plane: taps [ky0, ky1); none when dilation puts every
      // tap in the padding (then the row is all fill).
      const size_t top = oy * p.sh;
      size_t ky0 = 0, ky1 = p.kh;
      while (ky0 < ky1 && top + ky0 * p.dh < p.pad_top) ++ky0;
      while (ky1 > ky0 && top + (ky1 - 1) * p.dh >= p.pad_top + p.in_h) --ky1;
      float* out = rows + (oy - oy0) * len + p.pad_left;
      if (ky0 == ky1) std::fill(out, out + cols, fill);
      const float* in = ky0 < ky1 ? p.x + (top + ky0 * p.dh - p.pad_top) * p.in_w : p.x;
      for (size_t c = 0; ky0 < ky1 && c < cols; c += W) {
        const size_t n = cols - c;
        vec acc = load_n<V>(in + c, n);
        for (size_t ky = ky0 + 1; ky < ky1; ++ky) {
          const vec v = load_n<V>(in + (ky - ky0) * step + c, n);
          acc = MAX ? V::max(acc, v) : V::add(acc, v);
        }
        store_n<V>(out + c, acc, n);
      }
    }
    for (size_t oy = oy0; oy < oy1; ++oy) {
      const float* row = rows + (oy - oy0) * len;
      float* y = p.y + oy * p.ow;
      for (size_t ox = 0; ox < p.ow; ox += W) {
        vec acc = init;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float* s = row + ox * SW + kx * p.dw;
          const vec v = SW == 1 ? V::load(s) : V::load_even(s);
          acc = MAX ? V::max(acc, v) : V::add(acc, v);
        }
        const size_t left = p.ow - ox;
        if (!MAX)
          acc = V::mul(V::mul(acc, V::set1(p.inv_h[oy])), load_n<V>(p.inv_w + ox, left));
        store_n<V>(y + ox, acc, left);
      }
    }
  }
}

template <typename V>
void pool_ukernel(const PoolPlane& p) {
  const bool max = p.kind == PoolKind::max;
  if (p.sw == 1) return max ? pool_plane<V, 1, true>(p) : pool_plane<V, 1, false>(p);
  if (p.sw == 2) return max ? pool_plane<V, 2, true>(p) : pool_plane<V, 2, false>(p);
  kiln_f32_pool_ukernel__generic(p);
}

}  // namespace kiln::simd
