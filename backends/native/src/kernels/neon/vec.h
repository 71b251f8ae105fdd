// The 128-bit NEON f32 vector as a traits type (the shape vbinop_simd.h and the NEON kernels
// are written against): kWidth lanes, loads / stores, tails of n < kWidth lanes by a stack
// copy (NEON has no masked load or store), arithmetic and the activation epilogue.
// Include only from aarch64 sources.
#pragma once
#include <arm_neon.h>

#include <cstddef>
#include <cstring>

#include "kernels/gemm.h"

namespace kiln::neon {

struct V128 {
  static constexpr size_t kWidth = 4;
  using vec = float32x4_t;
  static vec load(const float* p) { return vld1q_f32(p); }
  static vec set1(float x) { return vdupq_n_f32(x); }
  static vec zero() { return vdupq_n_f32(0.0f); }
  static void store(float* p, vec v) { vst1q_f32(p, v); }
  static vec load_tail(const float* p, size_t n) {
    float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    std::memcpy(buf, p, n * sizeof(float));
    return vld1q_f32(buf);
  }
  static void store_tail(float* p, vec v, size_t n) {
    float buf[4];
    vst1q_f32(buf, v);
    std::memcpy(p, buf, n * sizeof(float));
  }
  // Lanes [0, n) of p, n in 1..kWidth.
  static vec load_n(const float* p, size_t n) { return n >= kWidth ? load(p) : load_tail(p, n); }
  static void store_n(float* p, vec v, size_t n) {
    if (n >= kWidth) store(p, v);
    else store_tail(p, v, n);
  }
  static vec add(vec a, vec b) { return vaddq_f32(a, b); }
  static vec sub(vec a, vec b) { return vsubq_f32(a, b); }
  static vec mul(vec a, vec b) { return vmulq_f32(a, b); }
  static vec div(vec a, vec b) { return vdivq_f32(a, b); }
  static vec fma(vec acc, vec a, vec b) { return vfmaq_f32(acc, a, b); }  // acc + a * b
  static vec max(vec a, vec b) { return vmaxq_f32(a, b); }
  static vec min(vec a, vec b) { return vminq_f32(a, b); }
  // Lanes 0, 2, 4, 6 of the eight floats at p (a stride-2 window).
  static vec load_even(const float* p) { return vld2q_f32(p).val[0]; }
};

}  // namespace kiln::neon
