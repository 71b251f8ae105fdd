#include <immintrin.h>

#include "kernels/ukernels.h"
#include "kernels/vbinop_simd.h"

namespace kiln {

void kiln_f32_vrelu_ukernel__avx512_x32(size_t n, const float* x, float* y) {
  const __m512 zero = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm512_storeu_ps(y + i, _mm512_max_ps(_mm512_loadu_ps(x + i), zero));
    _mm512_storeu_ps(y + i + 16, _mm512_max_ps(_mm512_loadu_ps(x + i + 16), zero));
  }
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_max_ps(_mm512_loadu_ps(x + i), zero));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, x + i), zero));
  }
}

void kiln_f32_vadd_ukernel__avx512_x32(size_t n, const float* a, const float* b, float* y) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
  }
}

namespace {
struct V512 {
  static constexpr size_t kWidth = 16;
  using vec = __m512;
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec set1(float x) { return _mm512_set1_ps(x); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static __mmask16 mask(size_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static vec load_tail(const float* p, size_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store_tail(float* p, vec v, size_t n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  // Masked-off tail lanes divide 0 by 0: harmless (never stored, exceptions masked).
  static vec div(vec a, vec b) { return _mm512_div_ps(a, b); }
};
}  // namespace

void kiln_f32_vbinop_ukernel__avx512_x32(size_t n, const float* a, size_t sa, const float* b,
                                         size_t sb, float* y, BinaryOp op) {
  vbinop::run<V512>(n, a, sa, b, sb, y, op);
}

}  // namespace kiln
