// The elementwise microkernels (ReLU, add, in-place activation, the strided binary op),
// written once over a vector traits type V (kernels/<isa>/vec.h) and instantiated by each
// ISA's translation unit under its own flags (kernels/simd/define_ukernels.h). Tails of
// n < kWidth lanes use V's tail loads and stores.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "kernels/simd/lanes.h"
#include "kernels/simd/vmath.h"
#include "kernels/ukernels.h"

namespace kiln::simd {

// y = op(x) over n floats, two vectors a step.
template <typename V, typename Op>
inline void map1(size_t n, const float* x, float* y, Op op) {
  constexpr size_t W = V::kWidth;
  size_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    V::store(y + i, op(V::load(x + i)));
    V::store(y + i + W, op(V::load(x + i + W)));
  }
  for (; i + W <= n; i += W) V::store(y + i, op(V::load(x + i)));
  if (i < n) {
    const typename V::tail m = V::tail_of(n - i);
    V::store_tail(y + i, op(V::load_tail(x + i, m)), m);
  }
}

template <typename V>
void vrelu_ukernel(size_t n, const float* x, float* y) {
  const typename V::vec zero = V::zero();
  map1<V>(n, x, y, [zero](typename V::vec v) { return V::max(v, zero); });
}

template <typename V>
void vact_ukernel(size_t n, float* x, Activation act, float alpha, float beta) {
  constexpr size_t W = V::kWidth;
  size_t i = 0;
  for (; i + W <= n; i += W) V::store(x + i, activate<V>(V::load(x + i), act, alpha, beta));
  if (i < n) store_n<V>(x + i, activate<V>(load_n<V>(x + i, n - i), act, alpha, beta), n - i);
}

// One row through a per-row affine into B panels (contract in kernels/ukernels.h): whole
// vectors of a panel straight from the row, no staging copy. mul then add, not an FMA, so
// every ISA rounds as the generic kernel does; max(0, v) keeps a NaN as std::max(v, 0) does.
template <typename V, bool RELU>
void vaffine_panels(size_t n, const float* x, float scale, float shift, float* y, size_t nr,
                    size_t stride) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const vec s = V::set1(scale), t = V::set1(shift), zero = V::zero();
  auto f = [&](vec v) {
    v = V::add(V::mul(v, s), t);
    return RELU ? V::max(zero, v) : v;
  };
  size_t j = 0;
  for (; j + nr <= n; j += nr, y += stride)
    for (size_t q = 0; q < nr; q += W) V::store(y + q, f(V::load(x + j + q)));
  for (size_t q = 0; j < n && q < nr; q += W) {
    const size_t left = j + q < n ? n - j - q : 0;
    V::store(y + q, zero);
    if (left) store_n<V>(y + q, f(load_n<V>(x + j + q, left)), left);
  }
}

template <typename V>
void vaffine_panels_ukernel(size_t n, const float* x, float scale, float shift, bool relu,
                            float* y, size_t nr, size_t stride) {
  if (nr % V::kWidth)
    return kiln_f32_vaffine_panels_ukernel__generic(n, x, scale, shift, relu, y, nr, stride);
  if (relu) vaffine_panels<V, true>(n, x, scale, shift, y, nr, stride);
  else vaffine_panels<V, false>(n, x, scale, shift, y, nr, stride);
}

// LRN over one plane (contract in kernels/ukernels.h): the window's squares summed lane-wise
// in the generic kernel's order (each square rounded, then added), then the generic kernel's
// operations for beta = 0.75 and 0.5; other betas need pow and go to the generic kernel.
template <typename V>
void vlrn_ukernel(size_t n, const float* const* window, size_t count, const float* x,
                  float bias, float a, float beta, float* y) {
  using vec = typename V::vec;
  if (beta != 0.75f && beta != 0.5f)
    return kiln_f32_vlrn_ukernel__generic(n, window, count, x, bias, a, beta, y);
  constexpr size_t W = V::kWidth;
  const vec vb = V::set1(bias), va = V::set1(a), one = V::set1(1.0f);
  const bool three_quarters = beta == 0.75f;
  auto lrn = [&](size_t i, size_t m) {
    vec sq = V::zero();
    for (size_t w = 0; w < count; ++w) {
      const vec v = load_n<V>(window[w] + i, m);
      sq = V::add(sq, V::mul(v, v));
    }
    const vec base = V::add(vb, V::mul(va, sq)), xv = load_n<V>(x + i, m);
    if (!three_quarters) return V::div(xv, V::sqrt(base));
    const vec r = V::div(one, V::sqrt(base));
    return V::mul(xv, V::mul(r, V::sqrt(r)));
  };
  size_t i = 0;
  for (; i + W <= n; i += W) V::store(y + i, lrn(i, W));
  if (i < n) store_n<V>(y + i, lrn(i, n - i), n - i);
}

// Softmax down the columns of a len x n block (rows `stride` floats apart), kWidth columns
// per vector: max down the column, exp(x - max) with its sum, scale. Each row of the block
// is read as contiguous vectors, so a softmax over a non-last axis (YOLOv8's DFL: 16 bins
// over 4 x 8400 columns) needs no transposes. As in the row kernel, d * 0 is NaN where
// d = x - max is NaN or infinite; such a column clears *finite.
template <typename V>
void vsoftmax_cols_ukernel(size_t n, size_t len, size_t stride, const float* x, float* y,
                           bool* finite) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const vec zero = V::zero(), one = V::set1(1.0f);
  vec bad = zero;
  for (size_t i = 0; i < n; i += W) {
    const size_t w = std::min(W, n - i);
    auto load = [&](const float* p) { return w == W ? V::load(p) : load_n<V>(p, w); };
    auto store = [&](float* p, vec v) {
      if (w == W) V::store(p, v);
      else store_n<V>(p, v, w);
    };
    vec m = load(x + i);
    for (size_t j = 1; j < len; ++j) m = V::max(m, load(x + j * stride + i));
    vec s = zero;
    for (size_t j = 0; j < len; ++j) {
      const vec d = V::sub(load(x + j * stride + i), m);
      bad = V::add(bad, V::mul(d, zero));
      const vec e = exp<V>(d);
      store(y + j * stride + i, e);
      s = V::add(s, e);
    }
    const vec inv = V::div(one, s);
    for (size_t j = 0; j < len; ++j) {
      float* row = y + j * stride + i;
      store(row, V::mul(load(row), inv));
    }
  }
  float flags[W];
  V::store(flags, bad);
  *finite = true;
  for (size_t l = 0; l < W; ++l) *finite = *finite && flags[l] == 0.0f;
}

// Softmax of a contiguous row in three passes: max, exp(x - max) with its sum, scale. The
// vector exp clamps its input, so a NaN or an infinity would come out as a number: a row
// holding one reports a NaN sum instead (the caller's exact loop then gives what the other
// engines give).
template <typename V>
void vsoftmax_ukernel(size_t n, const float* x, float* y, double* sum) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const size_t whole = n / W * W;
  float m = -std::numeric_limits<float>::infinity();
  if (whole) {
    vec m0 = V::load(x), m1 = m0;
    size_t i = W;
    for (; i + 2 * W <= whole; i += 2 * W) {
      m0 = V::max(m0, V::load(x + i));
      m1 = V::max(m1, V::load(x + i + W));
    }
    if (i < whole) m0 = V::max(m0, V::load(x + i));
    float lanes[W];
    V::store(lanes, V::max(m0, m1));
    for (size_t l = 0; l < W; ++l) m = m < lanes[l] ? lanes[l] : m;
  }
  for (size_t i = whole; i < n; ++i) m = m < x[i] ? x[i] : m;
  if (!(std::fabs(m) <= std::numeric_limits<float>::max())) {  // +inf, all -inf, NaN
    *sum = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  const vec mv = V::set1(m), zero = V::zero();
  vec s0 = zero, s1 = zero, bad = zero;  // bad: d * 0 is NaN where d is NaN or infinite
  size_t i = 0;
  for (; i + 2 * W <= whole; i += 2 * W) {
    const vec d0 = V::sub(V::load(x + i), mv), d1 = V::sub(V::load(x + i + W), mv);
    bad = V::add(bad, V::add(V::mul(d0, zero), V::mul(d1, zero)));
    const vec e0 = exp<V>(d0), e1 = exp<V>(d1);
    V::store(y + i, e0);
    V::store(y + i + W, e1);
    s0 = V::add(s0, e0);
    s1 = V::add(s1, e1);
  }
  for (; i < whole; i += W) {
    const vec d = V::sub(V::load(x + i), mv);
    bad = V::add(bad, V::mul(d, zero));
    const vec e = exp<V>(d);
    V::store(y + i, e);
    s0 = V::add(s0, e);
  }
  float lanes[W], flags[W];
  V::store(lanes, V::add(s0, s1));
  V::store(flags, bad);
  double total = 0.0, flag = 0.0;
  for (size_t l = 0; l < W; ++l) {
    total += lanes[l];
    flag += flags[l];
  }
  for (size_t k = i; k < n; ++k) flag += double(x[k] - m) * 0.0;
  if (flag != 0.0) {
    *sum = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  if (i < n) {
    const typename V::tail t = V::tail_of(n - i);
    V::store_tail(y + i, exp<V>(V::sub(V::load_tail(x + i, t), mv)), t);
    for (; i < n; ++i) total += y[i];
  }
  *sum = total;
  const vec inv = V::set1(static_cast<float>(1.0 / total));
  for (i = 0; i + W <= n; i += W) V::store(y + i, V::mul(V::load(y + i), inv));
  if (i < n) {
    const typename V::tail t = V::tail_of(n - i);
    V::store_tail(y + i, V::mul(V::load_tail(y + i, t), inv), t);
  }
}

namespace vbinop {

template <typename V, BinaryOp Op>
inline typename V::vec apply(typename V::vec a, typename V::vec b) {
  if constexpr (Op == BinaryOp::add) return V::add(a, b);
  else if constexpr (Op == BinaryOp::sub) return V::sub(a, b);
  else if constexpr (Op == BinaryOp::mul) return V::mul(a, b);
  else if constexpr (Op == BinaryOp::div) return V::div(a, b);
  else return V::select(V::lt(a, V::zero()), V::mul(a, b), a);
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
    const typename V::tail m = V::tail_of(n - i);
    V::store_tail(y + i, apply<V, Op>(SA ? V::load_tail(a + i, m) : av,
                                      SB ? V::load_tail(b + i, m) : bv), m);
  }
}

template <typename V, BinaryOp Op>
void strided(size_t n, const float* a, size_t sa, const float* b, size_t sb, float* y) {
  if (sa && sb) rows<V, Op, true, true>(n, a, b, y);
  else if (sa) rows<V, Op, true, false>(n, a, b, y);
  else if (sb) rows<V, Op, false, true>(n, a, b, y);
  else rows<V, Op, false, false>(n, a, b, y);
}

}  // namespace vbinop

// y[i] = a[i * sa] op b[i * sb], sa, sb in {0, 1}; a and b's unit strides walk rows.
template <typename V>
void vbinop_ukernel(size_t n, const float* a, size_t sa, const float* b, size_t sb, float* y,
                    BinaryOp op) {
  if (n == 0) return;
  switch (op) {
    case BinaryOp::add: return vbinop::strided<V, BinaryOp::add>(n, a, sa, b, sb, y);
    case BinaryOp::sub: return vbinop::strided<V, BinaryOp::sub>(n, a, sa, b, sb, y);
    case BinaryOp::mul: return vbinop::strided<V, BinaryOp::mul>(n, a, sa, b, sb, y);
    case BinaryOp::div: return vbinop::strided<V, BinaryOp::div>(n, a, sa, b, sb, y);
    case BinaryOp::prelu: return vbinop::strided<V, BinaryOp::prelu>(n, a, sa, b, sb, y);
  }
}

// y = a + b: the binary op with both operands walking rows.
template <typename V>
void vadd_ukernel(size_t n, const float* a, const float* b, float* y) {
  if (n) vbinop::rows<V, BinaryOp::add, true, true>(n, a, b, y);
}

}  // namespace kiln::simd
