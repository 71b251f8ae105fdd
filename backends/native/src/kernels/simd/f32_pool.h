// The max / avg pooling plane microkernel (contract in kernels/pool_ukernel.h), written once
// over a vector traits type V (kernels/<isa>/vec.h): kWidth output columns per vector,
// stride 1 as plain loads, stride 2 as V::load_even; other strides go to the plain kernel.
#pragma once
#include <cstddef>

#include "kernels/simd/lanes.h"
#include "kernels/ukernels.h"

namespace kiln::simd {

template <typename V, int SW, bool MAX>
void pool_plane(const PoolPlane& p) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const vec init = V::set1(MAX ? -__builtin_inff() : 0.0f);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    const float* rows = p.x + oy * p.sh * p.x_stride;
    float* y = p.y + oy * p.ow;
    for (size_t ox = 0; ox < p.ow; ox += W) {
      vec acc = init;
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float* s = row + kx * p.dw;
          const vec v = SW == 1 ? V::load(s) : V::load_even(s);
          acc = MAX ? V::max(acc, v) : V::add(acc, v);
        }
      }
      const size_t left = p.ow - ox;
      if (!MAX)
        acc = V::mul(V::mul(acc, V::set1(p.inv_h[oy])), load_n<V>(p.inv_w + ox, left));
      store_n<V>(y + ox, acc, left);
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
