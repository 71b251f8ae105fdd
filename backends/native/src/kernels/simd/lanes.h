// Partial-vector loads and stores over a vector traits type V (kernels/<isa>/vec.h): the
// last columns of a row, n < kWidth of them, without reading or writing past them.
#pragma once
#include <cstddef>

namespace kiln::simd {

// Lanes [0, n) of p (n >= 1; n >= kWidth is a whole vector), the others 0.
template <typename V>
inline typename V::vec load_n(const float* p, size_t n) {
  return n >= V::kWidth ? V::load(p) : V::load_tail(p, V::tail_of(n));
}

template <typename V>
inline void store_n(float* p, typename V::vec v, size_t n) {
  if (n >= V::kWidth) V::store(p, v);
  else V::store_tail(p, v, V::tail_of(n));
}

}  // namespace kiln::simd
