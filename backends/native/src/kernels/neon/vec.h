// The 128-bit NEON f32 vector as a traits type, the shape the shared kernel templates
// (kernels/simd/) are written against; kernels/avx2/vec.h and kernels/avx512/vec.h have the
// same members. NEON has no masked load or store, so a tail of n < kWidth lanes goes through
// a stack copy. Include only from aarch64 sources.
//   kWidth lanes; kExpMax (exp's input clamp); kGemmStreamPrefetch (A prefetch distance in k
//   steps for streamed A, 0 = none); kFmaChains (the FMA probe's independent chains);
//   vec, mask (a lane predicate), tail (which leading lanes a tail access touches);
//   load / store (unaligned), load_aligned / store_aligned (64-byte aligned), broadcast(p),
//   set1, zero, load_even(p) (lanes 0, 2, 4, ... of 2 kWidth floats: a stride-2 window),
//   tail_of(n) (0 <= n <= kWidth), load_tail (other lanes 0), store_tail,
//   add sub mul div max min abs, fma(a, b, c) = a * b + c, round (to nearest even),
//   scale2(p, n) = p * 2^n (n integral), with_sign_of(mag, s), lt(a, b) -> mask,
//   select(m, if_set, if_clear), lane0, transpose(r) (kWidth vectors: r[i] lane j <-> r[j] lane i).
#pragma once
#include <arm_neon.h>

#include <cstddef>
#include <cstring>

namespace kiln::neon {

struct V128 {
  static constexpr size_t kWidth = 4;
  static constexpr float kExpMax = 88.0f;  // 2^n built by an exponent shift
  static constexpr size_t kGemmStreamPrefetch = 0;
  static constexpr int kFmaChains = 12;
  using vec = float32x4_t;
  using mask = uint32x4_t;
  using tail = size_t;

  static vec load(const float* p) { return vld1q_f32(p); }
  static vec load_aligned(const float* p) { return vld1q_f32(p); }
  static void store(float* p, vec v) { vst1q_f32(p, v); }
  static void store_aligned(float* p, vec v) { vst1q_f32(p, v); }
  static vec broadcast(const float* p) { return vld1q_dup_f32(p); }
  static vec set1(float x) { return vdupq_n_f32(x); }
  static vec zero() { return vdupq_n_f32(0.0f); }
  static vec load_even(const float* p) { return vld2q_f32(p).val[0]; }

  static tail tail_of(size_t n) { return n > kWidth ? kWidth : n; }
  static vec load_tail(const float* p, tail n) {
    if (n == kWidth) return vld1q_f32(p);
    float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    std::memcpy(buf, p, n * sizeof(float));
    return vld1q_f32(buf);
  }
  static void store_tail(float* p, vec v, tail n) {
    if (n == kWidth) return vst1q_f32(p, v);
    float buf[4];
    vst1q_f32(buf, v);
    std::memcpy(p, buf, n * sizeof(float));
  }

  static vec add(vec a, vec b) { return vaddq_f32(a, b); }
  static vec sub(vec a, vec b) { return vsubq_f32(a, b); }
  static vec mul(vec a, vec b) { return vmulq_f32(a, b); }
  static vec div(vec a, vec b) { return vdivq_f32(a, b); }
  static vec sqrt(vec a) { return vsqrtq_f32(a); }
  static vec fma(vec a, vec b, vec c) { return vfmaq_f32(c, a, b); }  // a * b + c
  static vec max(vec a, vec b) { return vmaxq_f32(a, b); }
  static vec min(vec a, vec b) { return vminq_f32(a, b); }
  static vec abs(vec x) { return vabsq_f32(x); }
  static vec round(vec x) { return vrndnq_f32(x); }
  // p * 2^n for integral n with -127 < n < 128.
  static vec scale2(vec p, vec n) {
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
  }
  static vec with_sign_of(vec mag, vec s) { return vbslq_f32(vdupq_n_u32(0x80000000u), s, mag); }
  static mask lt(vec a, vec b) { return vcltq_f32(a, b); }
  static vec select(mask m, vec if_set, vec if_clear) { return vbslq_f32(m, if_set, if_clear); }
  static float lane0(vec v) { return vgetq_lane_f32(v, 0); }
  // r[i] lane j -> r[j] lane i over the 4 vectors.
  static void transpose(vec* r) {
    const float32x4x2_t a = vtrnq_f32(r[0], r[1]), b = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0]));
    r[1] = vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1]));
    r[2] = vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0]));
    r[3] = vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1]));
  }
};

}  // namespace kiln::neon
