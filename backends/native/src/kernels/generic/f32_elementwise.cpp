// Plain C++ elementwise kernels: always built, the oracle for every SIMD variant.
#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_vrelu_ukernel__generic(size_t n, const float* x, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void kiln_f32_vadd_ukernel__generic(size_t n, const float* a, const float* b, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void kiln_f32_vbinop_ukernel__generic(size_t n, const float* a, size_t sa, const float* b,
                                      size_t sb, float* y, BinaryOp op) {
  for (size_t i = 0; i < n; ++i) {
    const float x = a[i * sa], z = b[i * sb];
    switch (op) {
      case BinaryOp::add: y[i] = x + z; break;
      case BinaryOp::sub: y[i] = x - z; break;
      case BinaryOp::mul: y[i] = x * z; break;
      case BinaryOp::div: y[i] = x / z; break;
    }
  }
}

}  // namespace kiln
