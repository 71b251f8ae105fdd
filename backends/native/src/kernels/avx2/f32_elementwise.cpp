#include <immintrin.h>

#include "kernels/ukernels.h"
#include "kernels/vbinop_simd.h"

namespace kiln {

void kiln_f32_vrelu_ukernel__avx2_x16(size_t n, const float* x, float* y) {
  const __m256 zero = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_ps(y + i, _mm256_max_ps(_mm256_loadu_ps(x + i), zero));
    _mm256_storeu_ps(y + i + 8, _mm256_max_ps(_mm256_loadu_ps(x + i + 8), zero));
  }
  for (; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void kiln_f32_vadd_ukernel__avx2_x16(size_t n, const float* a, const float* b, float* y) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    _mm256_storeu_ps(y + i + 8,
                     _mm256_add_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
  }
  for (; i < n; ++i) y[i] = a[i] + b[i];
}

namespace {
struct V256 {
  static constexpr size_t kWidth = 8;
  using vec = __m256;
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec set1(float x) { return _mm256_set1_ps(x); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static __m256i mask(size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static vec load_tail(const float* p, size_t n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store_tail(float* p, vec v, size_t n) { _mm256_maskstore_ps(p, mask(n), v); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec div(vec a, vec b) { return _mm256_div_ps(a, b); }
};
}  // namespace

void kiln_f32_vbinop_ukernel__avx2_x16(size_t n, const float* a, size_t sa, const float* b,
                                       size_t sb, float* y, BinaryOp op) {
  vbinop::run<V256>(n, a, sa, b, sb, y, op);
}

}  // namespace kiln
