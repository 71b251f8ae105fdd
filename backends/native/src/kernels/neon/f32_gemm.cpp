// NEON SGEMM tile kernel, 6x16: 24 q-register accumulators, four B vectors, one A
// broadcast per row (32 vector registers on aarch64). Also the in-place activation and the
// FMA probe for NEON.
#include <arm_neon.h>

#include "kernels/neon/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

using neon::V128;
constexpr size_t MR = 6, NR = 16, NV = NR / V128::kWidth;

// acc: M rows of NR floats, spilled once after the K loop.
template <int M>
void store_tile(const float* acc, const GemmTile& t) {
  const Epilogue& ep = *t.ep;
  // valid lanes of vector v of a row
  size_t lanes[NV];
  for (size_t v = 0; v < NV; ++v)
    lanes[v] = t.n > v * 4 ? (t.n - v * 4 < 4 ? t.n - v * 4 : 4) : 0;
  for (int r = 0; r < M; ++r) {
    float* c = t.c + r * t.ldc;
    const size_t row = t.row0 + r;
    for (size_t v = 0; v < NV && lanes[v]; ++v) {
      const size_t n = lanes[v], j = v * 4;
      float32x4_t x = V128::load(acc + r * NR + j);
      if (t.accumulate) x = vaddq_f32(x, V128::load_n(c + j, n));
      if (t.last) {
        switch (ep.bias_kind) {
          case BiasKind::per_row: x = vaddq_f32(x, vdupq_n_f32(ep.bias[row])); break;
          case BiasKind::per_col: x = vaddq_f32(x, V128::load_n(ep.bias + t.col0 + j, n)); break;
          case BiasKind::full:
            x = vaddq_f32(x, V128::load_n(ep.bias + row * t.ldc + t.col0 + j, n));
            break;
          case BiasKind::none: break;
        }
        if (ep.residual) x = vaddq_f32(x, V128::load_n(ep.residual + row * t.ldc + t.col0 + j, n));
        x = neon::activate(x, ep.act, ep.alpha, ep.beta);
      }
      V128::store_n(c + j, x, n);
    }
  }
}

template <int M>
void tile(size_t kc, const float* a, const float* b, const GemmTile& t) {
  float32x4_t c[M][NV];
#pragma GCC unroll 6
  for (int r = 0; r < M; ++r)
    for (size_t v = 0; v < NV; ++v) c[r][v] = vdupq_n_f32(0.0f);
  for (size_t k = 0; k < kc; ++k) {
    const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8),
                      b3 = vld1q_f32(b + 12);
    __builtin_prefetch(b + 8 * NR);
#pragma GCC unroll 6
    for (int r = 0; r < M; ++r) {
      const float32x4_t av = vld1q_dup_f32(a + r);
      c[r][0] = vfmaq_f32(c[r][0], av, b0);
      c[r][1] = vfmaq_f32(c[r][1], av, b1);
      c[r][2] = vfmaq_f32(c[r][2], av, b2);
      c[r][3] = vfmaq_f32(c[r][3], av, b3);
    }
    a += MR;
    b += NR;
  }
  alignas(64) float acc[M * NR];
#pragma GCC unroll 6
  for (int r = 0; r < M; ++r)
    for (size_t v = 0; v < NV; ++v) vst1q_f32(acc + r * NR + v * 4, c[r][v]);
  store_tile<M>(acc, t);
}

using tile_fn = void (*)(size_t, const float*, const float*, const GemmTile&);
constexpr tile_fn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>,
                                    tile<6>};

}  // namespace

void kiln_f32_gemm_ukernel__neon_6x16(size_t m, size_t kc, const float* a, const float* b,
                                      const GemmTile& t) {
  kTiles[m](kc, a, b, t);
}

void kiln_f32_vact_ukernel__neon_x4(size_t n, float* x, Activation act, float alpha,
                                    float beta) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(x + i, neon::activate(vld1q_f32(x + i), act, alpha, beta));
  if (i < n)
    V128::store_tail(x + i, neon::activate(V128::load_tail(x + i, n - i), act, alpha, beta), n - i);
}

double kiln_f32_fma_probe__neon(size_t iters) {
  float32x4_t acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = vdupq_n_f32(float(i));
  const float32x4_t m = vdupq_n_f32(0.999999f), c = vdupq_n_f32(1e-7f);
  for (size_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = vfmaq_f32(c, acc[i], m);
  }
  float32x4_t s = acc[0];
  for (int i = 1; i < 12; ++i) s = vaddq_f32(s, acc[i]);
  volatile float sink = vaddvq_f32(s);
  (void)sink;
  return 2.0 * 12 * 4 * double(iters);
}

}  // namespace kiln
