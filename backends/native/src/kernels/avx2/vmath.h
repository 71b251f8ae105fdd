// AVX2+FMA activation math (the same approximations as kernels/avx512/vmath.h).
// Include only from files built with AVX2 flags.
#pragma once
#include <immintrin.h>

#include "kernels/gemm.h"

namespace kiln::avx2 {

inline __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
inline __m256 splat(float v) { return _mm256_set1_ps(v); }
inline __m256 zero() { return _mm256_setzero_ps(); }

inline __m256 exp(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, splat(88.0f)), splat(-87.3365447504f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, splat(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = fma(n, splat(-0.693359375f), x);
  r = fma(n, splat(2.12194440e-4f), r);
  __m256 p = splat(1.0f / 720);
  p = fma(p, r, splat(1.0f / 120));
  p = fma(p, r, splat(1.0f / 24));
  p = fma(p, r, splat(1.0f / 6));
  p = fma(p, r, splat(0.5f));
  p = fma(p, r, splat(1.0f));
  p = fma(p, r, splat(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline __m256 sigmoid(__m256 x) {
  return _mm256_div_ps(splat(1.0f), _mm256_add_ps(splat(1.0f), exp(_mm256_sub_ps(zero(), x))));
}

inline __m256 abs(__m256 x) {
  return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

inline __m256 tanh(__m256 x) {
  const __m256 ax = _mm256_min_ps(abs(x), splat(9.0f));
  const __m256 s = _mm256_mul_ps(x, x);
  __m256 p = splat(-5.70498872745e-3f);
  p = fma(p, s, splat(2.06390887954e-2f));
  p = fma(p, s, splat(-5.37397155531e-2f));
  p = fma(p, s, splat(1.33314422036e-1f));
  p = fma(p, s, splat(-3.33332819422e-1f));
  const __m256 small = fma(_mm256_mul_ps(p, s), x, x);
  const __m256 e = exp(_mm256_add_ps(ax, ax));
  __m256 big = _mm256_sub_ps(splat(1.0f), _mm256_div_ps(splat(2.0f), _mm256_add_ps(e, splat(1.0f))));
  big = _mm256_or_ps(big, _mm256_and_ps(x, splat(-0.0f)));
  return _mm256_blendv_ps(big, small, _mm256_cmp_ps(ax, splat(0.625f), _CMP_LT_OQ));
}

inline __m256 gelu_erf(__m256 x) {
  const __m256 z = _mm256_mul_ps(abs(x), splat(0.70710678118654752f));
  const __m256 t = _mm256_div_ps(splat(1.0f), fma(z, splat(0.5f), splat(1.0f)));
  __m256 p = splat(0.17087277f);
  p = fma(p, t, splat(-0.82215223f));
  p = fma(p, t, splat(1.48851587f));
  p = fma(p, t, splat(-1.13520398f));
  p = fma(p, t, splat(0.27886807f));
  p = fma(p, t, splat(-0.18628806f));
  p = fma(p, t, splat(0.09678418f));
  p = fma(p, t, splat(0.37409196f));
  p = fma(p, t, splat(1.00002368f));
  p = fma(p, t, splat(-1.26551223f));
  p = _mm256_sub_ps(p, _mm256_mul_ps(z, z));
  const __m256 erfc = _mm256_mul_ps(t, exp(p));
  const __m256 neg = _mm256_cmp_ps(x, zero(), _CMP_LT_OQ);
  const __m256 phi2 = _mm256_blendv_ps(_mm256_sub_ps(splat(2.0f), erfc), erfc, neg);
  return _mm256_mul_ps(_mm256_mul_ps(x, splat(0.5f)), phi2);
}

inline __m256 gelu_tanh(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 u = _mm256_mul_ps(fma(x3, splat(0.044715f), x), splat(1.5957691216057308f));
  return _mm256_mul_ps(x, sigmoid(u));
}

inline __m256 clamp01(__m256 v) { return _mm256_min_ps(_mm256_max_ps(v, zero()), splat(1.0f)); }

inline __m256 activate(__m256 x, Activation act, float alpha, float beta) {
  switch (act) {
    case Activation::none: return x;
    case Activation::relu: return _mm256_max_ps(x, zero());
    case Activation::leaky_relu:
      return _mm256_blendv_ps(x, _mm256_mul_ps(x, splat(alpha)),
                              _mm256_cmp_ps(x, zero(), _CMP_LT_OQ));
    case Activation::clip: return _mm256_min_ps(_mm256_max_ps(x, splat(alpha)), splat(beta));
    case Activation::sigmoid: return sigmoid(x);
    case Activation::silu: return _mm256_mul_ps(x, sigmoid(x));
    case Activation::hard_sigmoid: return clamp01(fma(x, splat(alpha), splat(beta)));
    case Activation::hard_swish:
      return _mm256_mul_ps(x, clamp01(fma(x, splat(1.0f / 6.0f), splat(0.5f))));
    case Activation::gelu_erf: return gelu_erf(x);
    case Activation::gelu_tanh: return gelu_tanh(x);
    case Activation::tanh: return tanh(x);
    case Activation::exp: return exp(x);
  }
  return x;
}

// Lane mask for the first n (0..8) lanes, for maskload/maskstore.
inline __m256i tail_mask(size_t n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n > 8 ? 8 : n)), iota);
}

}  // namespace kiln::avx2
