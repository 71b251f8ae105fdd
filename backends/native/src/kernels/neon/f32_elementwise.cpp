// NEON elementwise kernels: ReLU, add, and the strided binary op (vbinop_simd.h over V128).
#include <arm_neon.h>

#include "kernels/neon/vec.h"
#include "kernels/ukernels.h"
#include "kernels/vbinop_simd.h"

namespace kiln {

void kiln_f32_vrelu_ukernel__neon_x8(size_t n, const float* x, float* y) {
  const float32x4_t zero = vdupq_n_f32(0.0f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vst1q_f32(y + i, vmaxq_f32(vld1q_f32(x + i), zero));
    vst1q_f32(y + i + 4, vmaxq_f32(vld1q_f32(x + i + 4), zero));
  }
  for (; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void kiln_f32_vadd_ukernel__neon_x8(size_t n, const float* a, const float* b, float* y) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vst1q_f32(y + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
    vst1q_f32(y + i + 4, vaddq_f32(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4)));
  }
  for (; i < n; ++i) y[i] = a[i] + b[i];
}

void kiln_f32_vbinop_ukernel__neon_x8(size_t n, const float* a, size_t sa, const float* b,
                                      size_t sb, float* y, BinaryOp op) {
  vbinop::run<neon::V128>(n, a, sa, b, sb, y, op);
}

}  // namespace kiln
