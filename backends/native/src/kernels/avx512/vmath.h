// AVX-512 activation math, shared by the GEMM epilogue, the depthwise conv and the
// elementwise activation kernel. Include only from files built with AVX-512 flags.
//   exp:  x = n ln2 + r, |r| <= ln2/2, degree-6 Taylor polynomial, scaled by 2^n.
//   tanh: |x| < 0.625 odd polynomial; else sign(x) (1 - 2 / (exp(2|x|) + 1)).
//   erfc: t = 1 / (1 + z/2), erfc(z) = t exp(-z^2 + P(t)) (Chebyshev fit, rel. err ~1e-7).
//   gelu_erf(x) = x/2 erfc(-x/sqrt2);  gelu_tanh(x) = x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)).
#pragma once
#include <immintrin.h>

#include "kernels/gemm.h"

namespace kiln::avx512 {

inline __m512 fma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
inline __m512 splat(float v) { return _mm512_set1_ps(v); }

inline __m512 exp(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, splat(88.3762626647949f)), splat(-87.3365447504f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, splat(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = fma(n, splat(-0.693359375f), x);
  r = fma(n, splat(2.12194440e-4f), r);
  __m512 p = splat(1.0f / 720);
  p = fma(p, r, splat(1.0f / 120));
  p = fma(p, r, splat(1.0f / 24));
  p = fma(p, r, splat(1.0f / 6));
  p = fma(p, r, splat(0.5f));
  p = fma(p, r, splat(1.0f));
  p = fma(p, r, splat(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __m512 sigmoid(__m512 x) {
  return _mm512_div_ps(splat(1.0f), _mm512_add_ps(splat(1.0f), exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 abs(__m512 x) { return _mm512_abs_ps(x); }

inline __m512 tanh(__m512 x) {
  const __m512 ax = _mm512_min_ps(abs(x), splat(9.0f));
  const __m512 s = _mm512_mul_ps(x, x);
  __m512 p = splat(-5.70498872745e-3f);
  p = fma(p, s, splat(2.06390887954e-2f));
  p = fma(p, s, splat(-5.37397155531e-2f));
  p = fma(p, s, splat(1.33314422036e-1f));
  p = fma(p, s, splat(-3.33332819422e-1f));
  const __m512 small = fma(_mm512_mul_ps(p, s), x, x);
  const __m512 e = exp(_mm512_add_ps(ax, ax));
  __m512 big = _mm512_sub_ps(splat(1.0f), _mm512_div_ps(splat(2.0f), _mm512_add_ps(e, splat(1.0f))));
  // copy the sign of x onto big
  big = _mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(big),
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(int(0x80000000u)))));
  const __mmask16 is_small = _mm512_cmp_ps_mask(ax, splat(0.625f), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(is_small, big, small);
}

inline __m512 gelu_erf(__m512 x) {
  const __m512 z = _mm512_mul_ps(abs(x), splat(0.70710678118654752f));
  const __m512 t = _mm512_div_ps(splat(1.0f), fma(z, splat(0.5f), splat(1.0f)));
  __m512 p = splat(0.17087277f);
  p = fma(p, t, splat(-0.82215223f));
  p = fma(p, t, splat(1.48851587f));
  p = fma(p, t, splat(-1.13520398f));
  p = fma(p, t, splat(0.27886807f));
  p = fma(p, t, splat(-0.18628806f));
  p = fma(p, t, splat(0.09678418f));
  p = fma(p, t, splat(0.37409196f));
  p = fma(p, t, splat(1.00002368f));
  p = fma(p, t, splat(-1.26551223f));
  p = _mm512_sub_ps(p, _mm512_mul_ps(z, z));
  const __m512 erfc = _mm512_mul_ps(t, exp(p));  // erfc(|x|/sqrt2)
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 phi2 = _mm512_mask_blend_ps(neg, _mm512_sub_ps(splat(2.0f), erfc), erfc);
  return _mm512_mul_ps(_mm512_mul_ps(x, splat(0.5f)), phi2);
}

inline __m512 gelu_tanh(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 u = _mm512_mul_ps(fma(x3, splat(0.044715f), x), splat(1.5957691216057308f));
  return _mm512_mul_ps(x, sigmoid(u));
}

inline __m512 clamp01(__m512 v) {
  return _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), splat(1.0f));
}

inline __m512 activate(__m512 x, Activation act, float alpha, float beta) {
  switch (act) {
    case Activation::none: return x;
    case Activation::relu: return _mm512_max_ps(x, _mm512_setzero_ps());
    case Activation::leaky_relu: {
      const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
      return _mm512_mask_mul_ps(x, neg, x, splat(alpha));
    }
    case Activation::clip: return _mm512_min_ps(_mm512_max_ps(x, splat(alpha)), splat(beta));
    case Activation::sigmoid: return sigmoid(x);
    case Activation::silu: return _mm512_mul_ps(x, sigmoid(x));
    case Activation::hard_sigmoid: return clamp01(fma(x, splat(alpha), splat(beta)));
    case Activation::hard_swish:
      return _mm512_mul_ps(x, clamp01(fma(x, splat(1.0f / 6.0f), splat(0.5f))));
    case Activation::gelu_erf: return gelu_erf(x);
    case Activation::gelu_tanh: return gelu_tanh(x);
    case Activation::tanh: return tanh(x);
    case Activation::exp: return exp(x);
  }
  return x;
}

inline __mmask16 tail_mask(size_t n) {
  return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1u);
}

}  // namespace kiln::avx512
