// The 512-bit AVX-512 f32 vector as a traits type, the shape the shared kernel templates
// (kernels/simd/) are written against; kernels/neon/vec.h lists the members. Tails and
// selects use mask registers. Include only from files built with AVX-512 flags.
#pragma once
#include <immintrin.h>

#include <cstddef>

namespace kiln::avx512 {

struct V512 {
  static constexpr size_t kWidth = 16;
  static constexpr float kExpMax = 88.3762626647949f;  // vscalefps saturates to inf itself
  // Measured: a 128-step A prefetch lifts weight-streaming shapes (M x 49 x 4608) by ~20%
  // and costs ~5% where A stays in L2, so the GEMM driver asks for it only for large A.
  static constexpr size_t kGemmStreamPrefetch = 128;
  static constexpr int kFmaChains = 16;
  using vec = __m512;
  using mask = __mmask16;
  using tail = __mmask16;

  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec load_aligned(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static void store_aligned(float* p, vec v) { _mm512_store_ps(p, v); }
  static vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static vec set1(float x) { return _mm512_set1_ps(x); }
  static vec zero() { return _mm512_setzero_ps(); }
  // Lanes 0, 2, ..., 30 of the 32 floats at p (a stride-2 window).
  static vec load_even(const float* p) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 16));
  }

  // The first n (0..16) lanes; loads leave the other lanes 0, stores leave memory alone.
  static tail tail_of(size_t n) {
    return n >= kWidth ? __mmask16(0xffff) : __mmask16((1u << n) - 1u);
  }
  static vec load_tail(const float* p, tail m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store_tail(float* p, vec v, tail m) { _mm512_mask_storeu_ps(p, m, v); }

  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  // Zeroed tail lanes divide 0 by 0: harmless (never stored, exceptions masked).
  static vec div(vec a, vec b) { return _mm512_div_ps(a, b); }
  static vec sqrt(vec a) { return _mm512_sqrt_ps(a); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
  static vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  static vec min(vec a, vec b) { return _mm512_min_ps(a, b); }
  static vec abs(vec x) { return _mm512_abs_ps(x); }
  static vec round(vec x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static vec scale2(vec p, vec n) { return _mm512_scalef_ps(p, n); }  // p * 2^n
  // |mag| carrying the sign of s (mag >= 0).
  static vec with_sign_of(vec mag, vec s) {
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(mag),
        _mm512_and_si512(_mm512_castps_si512(s), _mm512_set1_epi32(int(0x80000000u)))));
  }
  static mask lt(vec a, vec b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static vec select(mask m, vec if_set, vec if_clear) {
    return _mm512_mask_blend_ps(m, if_clear, if_set);
  }
  static float lane0(vec v) { return _mm512_cvtss_f32(v); }
  // r[i] lane j -> r[j] lane i over the 16 vectors: interleaves within 128-bit lanes, then
  // two rounds of 128-bit lane shuffles.
  static void transpose(vec* r) {
    vec t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
      u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
      u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
      u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      t[i] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0x88);
      t[i + 4] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0xDD);
      t[i + 8] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0x88);
      t[i + 12] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
      r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
      r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
      r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
  }
};

}  // namespace kiln::avx512
