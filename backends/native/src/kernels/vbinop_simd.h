// The vbinop microkernel body shared by the SIMD ISAs (included by each ISA's own source file,
// compiled with that ISA's flags). V supplies the vector type and operations:
//   V::kWidth, V::vec, V::load(p), V::set1(x), V::store(p, v),
//   V::load_tail(p, n) / V::store_tail(p, v, n) for the last n < kWidth lanes,
//   V::add/sub/mul/div(a, b).
#pragma once
#include <cstddef>

#include "kernels/ukernels.h"

namespace kiln::vbinop {

template <typename V, BinaryOp Op>
inline typename V::vec apply(typename V::vec a, typename V::vec b) {
  if constexpr (Op == BinaryOp::add) return V::add(a, b);
  else if constexpr (Op == BinaryOp::sub) return V::sub(a, b);
  else if constexpr (Op == BinaryOp::mul) return V::mul(a, b);
  else return V::div(a, b);
}

// SA / SB: whether a / b walk a row (true) or repeat their first element (false).
template <typename V, BinaryOp Op, bool SA, bool SB>
void rows(size_t n, const float* a, const float* b, float* y) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const vec av = V::set1(*a), bv = V::set1(*b);
  size_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const vec y0 = apply<V, Op>(SA ? V::load(a + i) : av, SB ? V::load(b + i) : bv);
    const vec y1 = apply<V, Op>(SA ? V::load(a + i + W) : av, SB ? V::load(b + i + W) : bv);
    V::store(y + i, y0);
    V::store(y + i + W, y1);
  }
  for (; i + W <= n; i += W)
    V::store(y + i, apply<V, Op>(SA ? V::load(a + i) : av, SB ? V::load(b + i) : bv));
  if (i < n) {
    const size_t r = n - i;
    V::store_tail(y + i, apply<V, Op>(SA ? V::load_tail(a + i, r) : av,
                                      SB ? V::load_tail(b + i, r) : bv), r);
  }
}

template <typename V, BinaryOp Op>
void strided(size_t n, const float* a, size_t sa, const float* b, size_t sb, float* y) {
  if (sa && sb) rows<V, Op, true, true>(n, a, b, y);
  else if (sa) rows<V, Op, true, false>(n, a, b, y);
  else if (sb) rows<V, Op, false, true>(n, a, b, y);
  else rows<V, Op, false, false>(n, a, b, y);
}

template <typename V>
void run(size_t n, const float* a, size_t sa, const float* b, size_t sb, float* y,
         BinaryOp op) {
  if (n == 0) return;
  switch (op) {
    case BinaryOp::add: return strided<V, BinaryOp::add>(n, a, sa, b, sb, y);
    case BinaryOp::sub: return strided<V, BinaryOp::sub>(n, a, sa, b, sb, y);
    case BinaryOp::mul: return strided<V, BinaryOp::mul>(n, a, sa, b, sb, y);
    case BinaryOp::div: return strided<V, BinaryOp::div>(n, a, sa, b, sb, y);
  }
}

}  // namespace kiln::vbinop
