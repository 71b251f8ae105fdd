// AVX-512 SGEMM tile kernel, 14x32: 28 zmm accumulators, two B vectors and one broadcast A
// value live per step. Rows beyond m (edge tiles) are compiled out by the template.
#include <immintrin.h>

#include "kernels/avx512/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

constexpr size_t MR = 14, NR = 32;

// acc: M rows of NR floats (the accumulators, spilled once after the K loop so that the
// loop itself never takes their address and they stay in registers).
template <int M>
inline void store_tile(const float* acc, const GemmTile& t) {
  using namespace avx512;
  const __mmask16 m0 = tail_mask(t.n), m1 = t.n > 16 ? tail_mask(t.n - 16) : __mmask16(0);
  const Epilogue& ep = *t.ep;
  __m512 bias_c0 = _mm512_setzero_ps(), bias_c1 = _mm512_setzero_ps();
  if (t.last && ep.bias_kind == BiasKind::per_col) {
    bias_c0 = _mm512_maskz_loadu_ps(m0, ep.bias + t.col0);
    bias_c1 = _mm512_maskz_loadu_ps(m1, ep.bias + t.col0 + 16);
  }
  for (int r = 0; r < M; ++r) {
    float* c = t.c + r * t.ldc;
    __m512 v0 = _mm512_load_ps(acc + r * NR), v1 = _mm512_load_ps(acc + r * NR + 16);
    if (t.accumulate) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, c));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    if (t.last) {
      const size_t row = t.row0 + r;
      switch (ep.bias_kind) {
        case BiasKind::per_row: {
          const __m512 b = _mm512_set1_ps(ep.bias[row]);
          v0 = _mm512_add_ps(v0, b);
          v1 = _mm512_add_ps(v1, b);
          break;
        }
        case BiasKind::per_col:
          v0 = _mm512_add_ps(v0, bias_c0);
          v1 = _mm512_add_ps(v1, bias_c1);
          break;
        case BiasKind::full: {
          const float* b = ep.bias + row * t.ldc + t.col0;
          v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, b));
          v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, b + 16));
          break;
        }
        case BiasKind::none: break;
      }
      if (ep.residual) {
        const float* s = ep.residual + row * t.ldc + t.col0;
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, s));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, s + 16));
      }
      v0 = activate(v0, ep.act, ep.alpha, ep.beta);
      v1 = activate(v1, ep.act, ep.alpha, ep.beta);
    }
    if (t.n == NR) {
      _mm512_storeu_ps(c, v0);
      _mm512_storeu_ps(c + 16, v1);
    } else {
      _mm512_mask_storeu_ps(c, m0, v0);
      _mm512_mask_storeu_ps(c + 16, m1, v1);
    }
  }
}

// PF: prefetch distance into A in k steps (0 = none); worth it when A streams from memory.
template <int M, int PF>
void tile(size_t kc, const float* a, const float* b, const GemmTile& t) {
  __m512 c0[M], c1[M];
#pragma GCC unroll 14
  for (int r = 0; r < M; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  for (size_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
    if (PF) _mm_prefetch(reinterpret_cast<const char*>(a + PF * MR), _MM_HINT_T0);
#pragma GCC unroll 14
    for (int r = 0; r < M; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
    a += MR;
    b += NR;
  }
  alignas(64) float acc[M * NR];
#pragma GCC unroll 14
  for (int r = 0; r < M; ++r) {
    _mm512_store_ps(acc + r * NR, c0[r]);
    _mm512_store_ps(acc + r * NR + 16, c1[r]);
  }
  store_tile<M>(acc, t);
}

using tile_fn = void (*)(size_t, const float*, const float*, const GemmTile&);
#define KILN_TILES(PF)                                                                      \
  {nullptr,       tile<1, PF>,  tile<2, PF>,  tile<3, PF>,  tile<4, PF>,  tile<5, PF>,       \
   tile<6, PF>,   tile<7, PF>,  tile<8, PF>,  tile<9, PF>,  tile<10, PF>, tile<11, PF>,      \
   tile<12, PF>,  tile<13, PF>, tile<14, PF>}
// Measured: a 128-step A prefetch lifts weight-streaming shapes (M x 49 x 4608) by ~20% and
// costs ~5% where A stays in L2, so the driver asks for it only for large A.
constexpr tile_fn kTiles[2][MR + 1] = {KILN_TILES(0), KILN_TILES(128)};
#undef KILN_TILES


}  // namespace

void kiln_f32_gemm_ukernel__avx512_14x32(size_t m, size_t kc, const float* a, const float* b,
                                         const GemmTile& t) {
  kTiles[t.stream_a ? 1 : 0][m](kc, a, b, t);
}

void kiln_f32_vact_ukernel__avx512_x16(size_t n, float* x, Activation act, float alpha,
                                       float beta) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, avx512::activate(_mm512_loadu_ps(x + i), act, alpha, beta));
  if (i < n) {
    const __mmask16 m = avx512::tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m,
                          avx512::activate(_mm512_maskz_loadu_ps(m, x + i), act, alpha, beta));
  }
}

double kiln_f32_fma_probe__avx512(size_t iters) {
  // 16 independent chains of 16 lanes: enough to cover FMA latency x throughput.
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (size_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return 2.0 * 16 * 16 * double(iters);
}

}  // namespace kiln
