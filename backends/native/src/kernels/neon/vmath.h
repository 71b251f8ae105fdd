// NEON activation math: the same approximations as kernels/avx2/vmath.h, so every ISA's
// epilogue agrees with the others to a few ulps. Include only from aarch64 sources.
#pragma once
#include <arm_neon.h>

#include "kernels/gemm.h"
#include "kernels/neon/vec.h"

namespace kiln::neon {

inline float32x4_t splat(float v) { return vdupq_n_f32(v); }
// a * b + c, in the argument order of the x86 fma helpers
inline float32x4_t fma(float32x4_t a, float32x4_t b, float32x4_t c) { return vfmaq_f32(c, a, b); }
inline float32x4_t zero() { return vdupq_n_f32(0.0f); }

inline float32x4_t exp(float32x4_t x) {
  x = vmaxq_f32(vminq_f32(x, splat(88.0f)), splat(-87.3365447504f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, splat(1.44269504088896341f)));
  float32x4_t r = fma(n, splat(-0.693359375f), x);
  r = fma(n, splat(2.12194440e-4f), r);
  float32x4_t p = splat(1.0f / 720);
  p = fma(p, r, splat(1.0f / 120));
  p = fma(p, r, splat(1.0f / 24));
  p = fma(p, r, splat(1.0f / 6));
  p = fma(p, r, splat(0.5f));
  p = fma(p, r, splat(1.0f));
  p = fma(p, r, splat(1.0f));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

inline float32x4_t sigmoid(float32x4_t x) {
  return vdivq_f32(splat(1.0f), vaddq_f32(splat(1.0f), exp(vnegq_f32(x))));
}

inline float32x4_t tanh(float32x4_t x) {
  const float32x4_t ax = vminq_f32(vabsq_f32(x), splat(9.0f));
  const float32x4_t s = vmulq_f32(x, x);
  float32x4_t p = splat(-5.70498872745e-3f);
  p = fma(p, s, splat(2.06390887954e-2f));
  p = fma(p, s, splat(-5.37397155531e-2f));
  p = fma(p, s, splat(1.33314422036e-1f));
  p = fma(p, s, splat(-3.33332819422e-1f));
  const float32x4_t small = fma(vmulq_f32(p, s), x, x);
  const float32x4_t e = exp(vaddq_f32(ax, ax));
  float32x4_t big = vsubq_f32(splat(1.0f), vdivq_f32(splat(2.0f), vaddq_f32(e, splat(1.0f))));
  // copy x's sign onto big
  const uint32x4_t sign = vdupq_n_u32(0x80000000u);
  big = vbslq_f32(sign, x, big);
  return vbslq_f32(vcltq_f32(ax, splat(0.625f)), small, big);
}

inline float32x4_t gelu_erf(float32x4_t x) {
  const float32x4_t z = vmulq_f32(vabsq_f32(x), splat(0.70710678118654752f));
  const float32x4_t t = vdivq_f32(splat(1.0f), fma(z, splat(0.5f), splat(1.0f)));
  float32x4_t p = splat(0.17087277f);
  p = fma(p, t, splat(-0.82215223f));
  p = fma(p, t, splat(1.48851587f));
  p = fma(p, t, splat(-1.13520398f));
  p = fma(p, t, splat(0.27886807f));
  p = fma(p, t, splat(-0.18628806f));
  p = fma(p, t, splat(0.09678418f));
  p = fma(p, t, splat(0.37409196f));
  p = fma(p, t, splat(1.00002368f));
  p = fma(p, t, splat(-1.26551223f));
  p = vsubq_f32(p, vmulq_f32(z, z));
  const float32x4_t erfc = vmulq_f32(t, exp(p));
  const float32x4_t phi2 = vbslq_f32(vcltq_f32(x, zero()), erfc, vsubq_f32(splat(2.0f), erfc));
  return vmulq_f32(vmulq_f32(x, splat(0.5f)), phi2);
}

inline float32x4_t gelu_tanh(float32x4_t x) {
  const float32x4_t x3 = vmulq_f32(vmulq_f32(x, x), x);
  const float32x4_t u = vmulq_f32(fma(x3, splat(0.044715f), x), splat(1.5957691216057308f));
  return vmulq_f32(x, sigmoid(u));
}

inline float32x4_t clamp01(float32x4_t v) { return vminq_f32(vmaxq_f32(v, zero()), splat(1.0f)); }

inline float32x4_t activate(float32x4_t x, Activation act, float alpha, float beta) {
  switch (act) {
    case Activation::none: return x;
    case Activation::relu: return vmaxq_f32(x, zero());
    case Activation::leaky_relu:
      return vbslq_f32(vcltq_f32(x, zero()), vmulq_f32(x, splat(alpha)), x);
    case Activation::clip: return vminq_f32(vmaxq_f32(x, splat(alpha)), splat(beta));
    case Activation::sigmoid: return sigmoid(x);
    case Activation::silu: return vmulq_f32(x, sigmoid(x));
    case Activation::hard_sigmoid: return clamp01(fma(x, splat(alpha), splat(beta)));
    case Activation::hard_swish:
      return vmulq_f32(x, clamp01(fma(x, splat(1.0f / 6.0f), splat(0.5f))));
    case Activation::gelu_erf: return gelu_erf(x);
    case Activation::gelu_tanh: return gelu_tanh(x);
    case Activation::tanh: return tanh(x);
    case Activation::exp: return exp(x);
  }
  return x;
}

}  // namespace kiln::neon
