// Plain C++ elementwise kernels: always built, the oracle for every SIMD variant.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_vrelu_ukernel__generic(size_t n, const float* x, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void kiln_f32_vadd_ukernel__generic(size_t n, const float* a, const float* b, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void kiln_f32_vsoftmax_ukernel__generic(size_t n, const float* x, float* y, double* sum) {
  // Same contract as the SIMD kernels: a NaN or an infinity in the row gives a NaN sum.
  float m = -std::numeric_limits<float>::infinity();
  bool finite = true;
  for (size_t i = 0; i < n; ++i) {
    finite &= std::fabs(x[i]) <= std::numeric_limits<float>::max();
    m = m < x[i] ? x[i] : m;
  }
  if (!finite || n == 0) {
    *sum = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - m);
    total += y[i];
  }
  *sum = total;
  const float inv = static_cast<float>(1.0 / total);
  for (size_t i = 0; i < n; ++i) y[i] *= inv;
}

void kiln_f32_vsoftmax_cols_ukernel__generic(size_t n, size_t len, size_t stride,
                                              const float* x, float* y, bool* finite) {
  // Same contract as the SIMD kernels: a NaN or an infinity in a column clears *finite.
  *finite = true;
  for (size_t i = 0; i < n; ++i) {
    float m = -std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < len; ++j) {
      const float v = x[j * stride + i];
      if (!(std::fabs(v) <= std::numeric_limits<float>::max())) {
        *finite = false;
        return;
      }
      m = m < v ? v : m;
    }
    double total = 0.0;
    for (size_t j = 0; j < len; ++j) {
      y[j * stride + i] = std::exp(x[j * stride + i] - m);
      total += y[j * stride + i];
    }
    const float inv = static_cast<float>(1.0 / total);
    for (size_t j = 0; j < len; ++j) y[j * stride + i] *= inv;
  }
}

void kiln_f32_vaffine_panels_ukernel__generic(size_t n, const float* x, float scale,
                                              float shift, bool relu, float* y, size_t nr,
                                              size_t stride) {
  size_t j = 0;
  for (; j < n; j += nr, y += stride) {
    const size_t cols = std::min(nr, n - j);
    for (size_t q = 0; q < cols; ++q) {
      const float v = x[j + q] * scale + shift;
      y[q] = relu ? std::max(v, 0.0f) : v;
    }
    for (size_t q = cols; q < nr; ++q) y[q] = 0.0f;
  }
}

void kiln_f32_vlrn_ukernel__generic(size_t n, const float* const* window, size_t count,
                                    const float* x, float bias, float a, float beta, float* y) {
  for (size_t i = 0; i < n; ++i) {
    float sq = 0.0f;
    for (size_t w = 0; w < count; ++w) sq += window[w][i] * window[w][i];
    const float base = bias + a * sq;
    // beta = 0.75 (AlexNet, GoogLeNet) and 0.5 avoid pow: base^-0.75 = r * sqrt(r) with
    // r = 1 / sqrt(base).
    if (beta == 0.75f) {
      const float r = 1.0f / std::sqrt(base);
      y[i] = x[i] * (r * std::sqrt(r));
    } else if (beta == 0.5f) {
      y[i] = x[i] / std::sqrt(base);
    } else {
      y[i] = x[i] / std::pow(base, beta);
    }
  }
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
      case BinaryOp::prelu: y[i] = x < 0 ? x * z : x; break;
    }
  }
}

}  // namespace kiln
