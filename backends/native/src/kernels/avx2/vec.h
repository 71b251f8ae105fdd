// The 256-bit AVX2+FMA f32 vector as a traits type, the shape the shared kernel templates
// (kernels/simd/) are written against; kernels/neon/vec.h lists the members. Tails use
// vmaskmov. Include only from files built with AVX2 flags.
#pragma once
#include <immintrin.h>

#include <cstddef>

namespace kiln::avx2 {

struct V256 {
  static constexpr size_t kWidth = 8;
  static constexpr float kExpMax = 88.0f;        // 2^n built by an exponent shift
  static constexpr size_t kGemmStreamPrefetch = 0;  // A prefetch did not pay on AVX2
  static constexpr int kFmaChains = 12;
  using vec = __m256;
  using mask = __m256;
  using tail = __m256i;

  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec load_aligned(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static void store_aligned(float* p, vec v) { _mm256_store_ps(p, v); }
  static vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static vec set1(float x) { return _mm256_set1_ps(x); }
  static vec zero() { return _mm256_setzero_ps(); }
  // Lanes 0, 2, ..., 14 of the sixteen floats at p (a stride-2 window).
  static vec load_even(const float* p) {
    const __m256 ev = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xd8));
  }

  // The first n (0..8) lanes; loads leave the other lanes 0, stores leave memory alone.
  static tail tail_of(size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n > kWidth ? kWidth : n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static vec load_tail(const float* p, tail m) { return _mm256_maskload_ps(p, m); }
  static void store_tail(float* p, vec v, tail m) { _mm256_maskstore_ps(p, m, v); }

  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec div(vec a, vec b) { return _mm256_div_ps(a, b); }
  static vec sqrt(vec a) { return _mm256_sqrt_ps(a); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }  // a * b + c
  static vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  static vec min(vec a, vec b) { return _mm256_min_ps(a, b); }
  static vec abs(vec x) {
    return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  }
  static vec round(vec x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // p * 2^n for integral n with -127 < n < 128.
  static vec scale2(vec p, vec n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
  }
  // |mag| carrying the sign of s (mag >= 0).
  static vec with_sign_of(vec mag, vec s) {
    return _mm256_or_ps(mag, _mm256_and_ps(s, _mm256_set1_ps(-0.0f)));
  }
  static mask lt(vec a, vec b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static vec select(mask m, vec if_set, vec if_clear) {
    return _mm256_blendv_ps(if_clear, if_set, m);
  }
  static float lane0(vec v) { return _mm256_cvtss_f32(v); }
  // r[i] lane j -> r[j] lane i over the 8 vectors.
  static void transpose(vec* r) {
    vec t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
      r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
  }
};

}  // namespace kiln::avx2
