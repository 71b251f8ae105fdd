// Plain C++ SGEMM tile kernel (4x16): the fallback on any CPU.
#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_gemm_ukernel__generic_4x16(size_t m, size_t kc, const float* a, const float* b,
                                         const GemmTile& t) {
  constexpr size_t MR = 4, NR = 16;
  const size_t bs = t.b_stride ? t.b_stride : NR;
  float acc[MR][NR] = {};
  for (size_t k = 0; k < kc; ++k, b += bs) {
    // A from a packed panel, or read in place (only the tile's m rows exist there)
    const float* ak = t.a_offsets ? a + t.a_offsets[k] : a + k * MR;
    const size_t rows = t.a_offsets ? m : MR;
    const size_t rs = t.a_offsets ? t.a_stride : 1;
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < NR; ++j) acc[r][j] += ak[r * rs] * b[j];
  }
  for (size_t r = 0; r < m; ++r) {
    float* c = t.c + r * t.ldc;
    for (size_t j = 0; j < t.n; ++j) {
      float v = acc[r][j];
      if (t.accumulate) v += c[j];
      if (t.last) v = epilogue_value(*t.ep, t.ldc, t.row0 + r, t.col0 + j, v);
      c[j] = v;
    }
  }
}

void kiln_f32_vact_ukernel__generic(size_t n, float* x, Activation act, float alpha,
                                    float beta) {
  for (size_t i = 0; i < n; ++i) x[i] = activation_reference(act, alpha, beta, x[i]);
}

double kiln_f32_fma_probe__generic(size_t iters) {
  float acc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const float m = 0.999999f, c = 1e-7f;
  for (size_t i = 0; i < iters; ++i)
    for (float& v : acc) v = v * m + c;
  volatile float sink = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
  (void)sink;
  return 2.0 * 8 * double(iters);
}

}  // namespace kiln
