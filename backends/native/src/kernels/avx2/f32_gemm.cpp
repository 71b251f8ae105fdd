// AVX2+FMA SGEMM tile kernel, 6x16: 12 ymm accumulators, two B vectors, one broadcast.
#include <immintrin.h>

#include "kernels/avx2/vmath.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

constexpr size_t MR = 6, NR = 16;

// acc: M rows of NR floats (the accumulators, spilled once after the K loop so that the
// loop itself never takes their address and they stay in registers).
template <int M>
inline void store_tile(const float* acc, const GemmTile& t) {
  using namespace avx2;
  const bool full = t.n == NR;
  const __m256i m0 = tail_mask(t.n), m1 = tail_mask(t.n > 8 ? t.n - 8 : 0);
  auto load = [&](const float* p, const __m256i& m) {
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
  };
  const Epilogue& ep = *t.ep;
  __m256 bias_c0 = zero(), bias_c1 = zero();
  if (t.last && ep.bias_kind == BiasKind::per_col) {
    bias_c0 = load(ep.bias + t.col0, m0);
    bias_c1 = load(ep.bias + t.col0 + 8, m1);
  }
  for (int r = 0; r < M; ++r) {
    float* c = t.c + r * t.ldc;
    __m256 v0 = _mm256_load_ps(acc + r * NR), v1 = _mm256_load_ps(acc + r * NR + 8);
    if (t.accumulate) {
      v0 = _mm256_add_ps(v0, load(c, m0));
      v1 = _mm256_add_ps(v1, load(c + 8, m1));
    }
    if (t.last) {
      const size_t row = t.row0 + r;
      switch (ep.bias_kind) {
        case BiasKind::per_row: {
          const __m256 b = _mm256_set1_ps(ep.bias[row]);
          v0 = _mm256_add_ps(v0, b);
          v1 = _mm256_add_ps(v1, b);
          break;
        }
        case BiasKind::per_col:
          v0 = _mm256_add_ps(v0, bias_c0);
          v1 = _mm256_add_ps(v1, bias_c1);
          break;
        case BiasKind::full: {
          const float* b = ep.bias + row * t.ldc + t.col0;
          v0 = _mm256_add_ps(v0, load(b, m0));
          v1 = _mm256_add_ps(v1, load(b + 8, m1));
          break;
        }
        case BiasKind::none: break;
      }
      if (ep.residual) {
        const float* s = ep.residual + row * t.ldc + t.col0;
        v0 = _mm256_add_ps(v0, load(s, m0));
        v1 = _mm256_add_ps(v1, load(s + 8, m1));
      }
      v0 = activate(v0, ep.act, ep.alpha, ep.beta);
      v1 = activate(v1, ep.act, ep.alpha, ep.beta);
    }
    if (full) {
      _mm256_storeu_ps(c, v0);
      _mm256_storeu_ps(c + 8, v1);
    } else {
      _mm256_maskstore_ps(c, m0, v0);
      _mm256_maskstore_ps(c + 8, m1, v1);
    }
  }
}

template <int M>
void tile(size_t kc, const float* a, const float* b, const GemmTile& t) {
  __m256 c0[M], c1[M];
#pragma GCC unroll 6
  for (int r = 0; r < M; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
  for (size_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 6
    for (int r = 0; r < M; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
    a += MR;
    b += NR;
  }
  alignas(64) float acc[M * NR];
#pragma GCC unroll 6
  for (int r = 0; r < M; ++r) {
    _mm256_store_ps(acc + r * NR, c0[r]);
    _mm256_store_ps(acc + r * NR + 8, c1[r]);
  }
  store_tile<M>(acc, t);
}

using tile_fn = void (*)(size_t, const float*, const float*, const GemmTile&);
constexpr tile_fn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>,
                                    tile<6>};

}  // namespace

void kiln_f32_gemm_ukernel__avx2_6x16(size_t m, size_t kc, const float* a, const float* b,
                                      const GemmTile& t) {
  kTiles[m](kc, a, b, t);
}

void kiln_f32_vact_ukernel__avx2_x8(size_t n, float* x, Activation act, float alpha,
                                    float beta) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, avx2::activate(_mm256_loadu_ps(x + i), act, alpha, beta));
  if (i < n) {
    const __m256i m = avx2::tail_mask(n - i);
    _mm256_maskstore_ps(x + i, m, avx2::activate(_mm256_maskload_ps(x + i, m), act, alpha, beta));
  }
}

double kiln_f32_fma_probe__avx2(size_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (size_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  volatile float sink = out[0] + out[7];
  (void)sink;
  return 2.0 * 12 * 8 * double(iters);
}

}  // namespace kiln
