// Activation math over a vector traits type V (kernels/<isa>/vec.h), shared by the GEMM
// epilogue, the depthwise conv and the elementwise activation kernel of every SIMD ISA;
// include it from a file built with that ISA's flags. Same approximations on every ISA, so
// the ISAs agree with each other to a few ulps:
//   exp:  x = n ln2 + r, |r| <= ln2/2, degree-6 Taylor polynomial, scaled by 2^n.
//   tanh: |x| < 0.625 odd polynomial; else sign(x) (1 - 2 / (exp(2|x|) + 1)).
//   erfc: t = 1 / (1 + z/2), erfc(z) = t exp(-z^2 + P(t)) (Chebyshev fit, rel. err ~1e-7).
//   erf: |x| < 0.5 its odd Taylor series to x^13 (rel. err < 3e-8); else sign(x) (1 - erfc|x|).
//   gelu_erf(x) = x/2 erfc(-x/sqrt2);  gelu_tanh(x) = x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)).
// Clamps put the constant first: x86's min and max return their second operand when either
// is NaN, so a NaN goes through exp, tanh and erf as a NaN.
#pragma once
#include "kernels/gemm.h"

namespace kiln::simd {

// e^x = p * 2^n: n = round(x / ln2) and p = e^r for the remainder r (|r| <= ln2/2).
template <typename V>
inline typename V::vec exp_mantissa(typename V::vec x, typename V::vec& n) {
  using vec = typename V::vec;
  n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  vec r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  vec p = V::set1(1.0f / 720);
  p = V::fma(p, r, V::set1(1.0f / 120));
  p = V::fma(p, r, V::set1(1.0f / 24));
  p = V::fma(p, r, V::set1(1.0f / 6));
  p = V::fma(p, r, V::set1(0.5f));
  p = V::fma(p, r, V::set1(1.0f));
  return V::fma(p, r, V::set1(1.0f));
}

template <typename V>
inline typename V::vec exp(typename V::vec x) {
  x = V::max(V::set1(-87.3365447504f), V::min(V::set1(V::kExpMax), x));
  typename V::vec n;
  const typename V::vec p = exp_mantissa<V>(x, n);
  return V::scale2(p, n);
}

// exp over float's whole range, for the Exp op: +inf past ln(FLT_MAX), subnormals down to
// 0 below -103.97 (exp above clamps to the normal range, which Softmax and the activations
// never leave). 2^n is applied as two halves, each within every ISA's exponent shift.
template <typename V>
inline typename V::vec exp_full(typename V::vec x) {
  x = V::max(V::set1(-104.0f), V::min(V::set1(89.0f), x));
  typename V::vec n;
  const typename V::vec p = exp_mantissa<V>(x, n);
  const typename V::vec half = V::round(V::mul(n, V::set1(0.5f)));
  return V::scale2(V::scale2(p, half), V::sub(n, half));
}

template <typename V>
inline typename V::vec sigmoid(typename V::vec x) {
  const typename V::vec one = V::set1(1.0f);
  return V::div(one, V::add(one, exp<V>(V::sub(V::zero(), x))));
}

template <typename V>
inline typename V::vec tanh(typename V::vec x) {
  using vec = typename V::vec;
  const vec ax = V::min(V::set1(10.0f), V::abs(x));
  const vec s = V::mul(x, x);
  vec p = V::set1(-5.70498872745e-3f);
  p = V::fma(p, s, V::set1(2.06390887954e-2f));
  p = V::fma(p, s, V::set1(-5.37397155531e-2f));
  p = V::fma(p, s, V::set1(1.33314422036e-1f));
  p = V::fma(p, s, V::set1(-3.33332819422e-1f));
  const vec small = V::fma(V::mul(p, s), x, x);
  const vec e = exp<V>(V::add(ax, ax));
  const vec one = V::set1(1.0f);
  // From |x| = 9.01 on, tanh rounds to 1 in float, but 1 - 2 / (e + 1) to the float below
  // it: saturate there (a quantizer's range after a Tanh must see exactly +-1).
  const vec big = V::select(V::lt(V::set1(9.01f), ax), one,
                            V::sub(one, V::div(V::set1(2.0f), V::add(e, one))));
  return V::select(V::lt(ax, V::set1(0.625f)), small, V::with_sign_of(big, x));
}

// erfc(z) for z >= 0.
template <typename V>
inline typename V::vec erfc_nonneg(typename V::vec z) {
  using vec = typename V::vec;
  const vec t = V::div(V::set1(1.0f), V::fma(z, V::set1(0.5f), V::set1(1.0f)));
  vec p = V::set1(0.17087277f);
  p = V::fma(p, t, V::set1(-0.82215223f));
  p = V::fma(p, t, V::set1(1.48851587f));
  p = V::fma(p, t, V::set1(-1.13520398f));
  p = V::fma(p, t, V::set1(0.27886807f));
  p = V::fma(p, t, V::set1(-0.18628806f));
  p = V::fma(p, t, V::set1(0.09678418f));
  p = V::fma(p, t, V::set1(0.37409196f));
  p = V::fma(p, t, V::set1(1.00002368f));
  p = V::fma(p, t, V::set1(-1.26551223f));
  p = V::sub(p, V::mul(z, z));
  return V::mul(t, exp<V>(p));
}

template <typename V>
inline typename V::vec erf(typename V::vec x) {
  using vec = typename V::vec;
  const vec ax = V::abs(x);
  // 2/sqrt(pi) (x - x^3/3 + x^5/10 - x^7/42 + x^9/216 - x^11/1320 + x^13/9360)
  const vec s = V::mul(x, x);
  vec p = V::set1(1.20553330e-4f);
  p = V::fma(p, s, V::set1(-8.54832702e-4f));
  p = V::fma(p, s, V::set1(5.22397763e-3f));
  p = V::fma(p, s, V::set1(-2.68661706e-2f));
  p = V::fma(p, s, V::set1(1.12837917e-1f));
  p = V::fma(p, s, V::set1(-3.76126389e-1f));
  p = V::fma(p, s, V::set1(1.12837917f));
  const vec small = V::mul(p, x);
  const vec big = V::with_sign_of(V::sub(V::set1(1.0f), erfc_nonneg<V>(ax)), x);
  return V::select(V::lt(ax, V::set1(0.5f)), small, big);
}

template <typename V>
inline typename V::vec gelu_erf(typename V::vec x) {
  using vec = typename V::vec;
  const vec erfc = erfc_nonneg<V>(V::mul(V::abs(x), V::set1(0.70710678118654752f)));
  const vec phi2 = V::select(V::lt(x, V::zero()), erfc, V::sub(V::set1(2.0f), erfc));
  return V::mul(V::mul(x, V::set1(0.5f)), phi2);
}

template <typename V>
inline typename V::vec gelu_tanh(typename V::vec x) {
  using vec = typename V::vec;
  const vec x3 = V::mul(V::mul(x, x), x);
  const vec u = V::mul(V::fma(x3, V::set1(0.044715f), x), V::set1(1.5957691216057308f));
  return V::mul(x, sigmoid<V>(u));
}

template <typename V>
inline typename V::vec clamp01(typename V::vec v) {
  return V::min(V::max(v, V::zero()), V::set1(1.0f));
}

template <typename V>
inline typename V::vec activate(typename V::vec x, Activation act, float alpha, float beta) {
  switch (act) {
    case Activation::none: return x;
    case Activation::relu: return V::max(x, V::zero());
    case Activation::leaky_relu:
      return V::select(V::lt(x, V::zero()), V::mul(x, V::set1(alpha)), x);
    case Activation::clip: return V::min(V::max(x, V::set1(alpha)), V::set1(beta));
    case Activation::sigmoid: return sigmoid<V>(x);
    case Activation::silu: return V::mul(x, sigmoid<V>(x));
    case Activation::hard_sigmoid: return clamp01<V>(V::fma(x, V::set1(alpha), V::set1(beta)));
    case Activation::hard_swish:
      return V::mul(x, clamp01<V>(V::fma(x, V::set1(1.0f / 6.0f), V::set1(0.5f))));
    case Activation::gelu_erf: return gelu_erf<V>(x);
    case Activation::gelu_tanh: return gelu_tanh<V>(x);
    case Activation::tanh: return tanh<V>(x);
    case Activation::exp: return exp_full<V>(x);
    case Activation::erf: return erf<V>(x);
  }
  return x;
}

}  // namespace kiln::simd
