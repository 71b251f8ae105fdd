// The SGEMM tile microkernel (contract in kernels/gemm_ukernel.h) and the peak-FMA probe,
// written once over a vector traits type V (kernels/<isa>/vec.h) and instantiated by each
// ISA's translation unit under its own flags (kernels/simd/define_ukernels.h).
// An MR x NR tile keeps MR x NR/kWidth accumulators in registers, NR/kWidth B vectors and one
// broadcast A value live per k step; rows beyond m (edge tiles) are compiled out, one
// instantiation per row count.
#pragma once
#include <cstddef>
#include <utility>

#include "kernels/gemm_ukernel.h"
#include "kernels/simd/vmath.h"

namespace kiln::simd {

// The stores of one tile: m rows of NV vectors from acc (the accumulators, spilled once after
// the K loop so that the loop itself never takes their address and they stay in registers),
// plus the existing C (a later K block) and, on the last K block, the epilogue. ACT is the
// activation when the caller knows it at compile time (kAnyActivation: read it from the
// epilogue), so that the common ones cost no dispatch per vector.
inline constexpr int kAnyActivation = -1;

template <typename V, size_t NV, int ACT>
void gemm_store_rows(const float* acc, int m, const GemmTile& t) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth, NR = NV * W;
  const bool full = t.n == NR;
  typename V::tail tails[NV];
  for (size_t v = 0; v < NV; ++v) tails[v] = V::tail_of(t.n > v * W ? t.n - v * W : 0);
  auto load = [&](const float* p, size_t v) {
    return full ? V::load(p) : V::load_tail(p, tails[v]);
  };
  const Epilogue& ep = *t.ep;
  const BiasKind bias_kind = t.last ? ep.bias_kind : BiasKind::none;
  const float* residual = t.last ? ep.residual : nullptr;
  const Activation act = ACT == kAnyActivation ? ep.act : Activation(ACT);
  vec bias_c[NV];
  for (size_t v = 0; v < NV; ++v)
    bias_c[v] = bias_kind == BiasKind::per_col ? load(ep.bias + t.col0 + v * W, v) : V::zero();
  for (int r = 0; r < m; ++r) {
    float* c = t.c + r * t.ldc;
    const size_t row = t.row0 + r;
    const size_t at = row * t.ldc + t.col0;  // offset of this row in the epilogue operands
    const vec bias_r = bias_kind == BiasKind::per_row ? V::set1(ep.bias[row]) : V::zero();
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) {
      const size_t j = v * W;
      vec x = V::load_aligned(acc + r * NR + j);
      if (t.accumulate) x = V::add(x, load(c + j, v));
      if (t.last) {
        switch (bias_kind) {
          case BiasKind::per_row: x = V::add(x, bias_r); break;
          case BiasKind::per_col: x = V::add(x, bias_c[v]); break;
          case BiasKind::full: x = V::add(x, load(ep.bias + at + j, v)); break;
          case BiasKind::none: break;
        }
        if (residual) x = V::add(x, load(residual + at + j, v));
        x = activate<V>(x, act, ep.alpha, ep.beta);
      }
      if (full) V::store(c + j, x);
      else V::store_tail(c + j, x, tails[v]);
    }
  }
}

// The tile's stores, dispatched once per tile on the activation.
template <typename V, size_t NV>
void gemm_store_tile(const float* acc, int m, const GemmTile& t) {
  switch (t.last ? t.ep->act : Activation::none) {
    case Activation::none: return gemm_store_rows<V, NV, int(Activation::none)>(acc, m, t);
    case Activation::relu: return gemm_store_rows<V, NV, int(Activation::relu)>(acc, m, t);
    case Activation::clip: return gemm_store_rows<V, NV, int(Activation::clip)>(acc, m, t);
    // the mobile convnets' activations (hard-swish, SiLU): a switch per vector cost 2-5% of a
    // 1x1 conv with few input channels
    case Activation::hard_swish:
      return gemm_store_rows<V, NV, int(Activation::hard_swish)>(acc, m, t);
    case Activation::silu: return gemm_store_rows<V, NV, int(Activation::silu)>(acc, m, t);
    default: return gemm_store_rows<V, NV, kAnyActivation>(acc, m, t);
  }
}

// B prefetch distance in k steps, when the B micro-panel streams from L2.
inline constexpr size_t kGemmBPrefetchSteps = 16;
// Floats per cache line: the B prefetch touches every line of a k group (NR floats).
inline constexpr size_t kCacheLineFloats = 16;

// PF: prefetch distance into A in k steps (0 = none); worth it when A streams from memory.
// PB: prefetch every cache line of the B group kGemmBPrefetchSteps k steps ahead; worth it
// when the B micro-panel streams from L2, a cost (load-port slots) when it sits in L1.
// Measured on the Xeon (one thread): prefetching only the first of the two lines of a
// 32-float group 8 steps ahead, a copy of this loop over a 1024^3 product reached 75% of the
// FMA peak, with both lines 16 steps ahead 80-84%; in kiln, 2048^3 gained 4-7%, 1024^3 less
// than the machine's noise.
// PNV: vectors in a panel's k group (its width, the default B stride); NV <= PNV: vectors
// computed (fewer for a narrow last panel, whose other columns are padding).
// AO: A read in place through t.a_offsets (k group k at a + a_offsets[k]) instead of from a
// packed panel: 1 with consecutive rows, 2 with rows t.a_stride floats apart (NHWC pixels).
template <typename V, size_t MR, size_t PNV, size_t NV, size_t PF, bool PB, int AO, int M>
void gemm_tile(size_t kc, const float* a, const float* b, const GemmTile& t) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth, NR = NV * W;
  constexpr size_t kLines = (NR + kCacheLineFloats - 1) / kCacheLineFloats;
  const size_t bs = t.b_stride ? t.b_stride : PNV * W;
  const size_t b_ahead = kGemmBPrefetchSteps * bs;
  const size_t rs = AO == 2 ? t.a_stride : 1;
  // Strided rows: the row of r is reached from one of a few bases (every third row) by an
  // addressing-mode scale of the stride (x1, x2), so a k step adds MR / 3 offsets to its
  // row start instead of MR - 1 in a chain (integer adds that compete with the FMA ports).
  const size_t third = 3 * rs;
  vec c[M][NV];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) c[r][v] = V::zero();
  for (size_t k = 0; k < kc; ++k) {
    vec bv[NV];
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) bv[v] = V::load(b + v * W);
    if (PB) {
#pragma GCC unroll 4
      for (size_t l = 0; l < kLines; ++l) __builtin_prefetch(b + b_ahead + l * kCacheLineFloats);
    }
    if (PF) __builtin_prefetch(a + PF * MR);
    const float* ak = AO ? a + t.a_offsets[k] : a;
    // Strided rows: keep ak a pointer, so that rows are addressed as ak + (x1|x2) * stride
    // (otherwise the compiler folds the offset into every row's address, one add per row).
    if constexpr (AO == 2) __asm__("" : "+r"(ak));
#pragma GCC unroll 16
    for (int r = 0; r < M; ++r) {
      const vec av = V::broadcast(AO == 2 ? ak + size_t(r / 3) * third + size_t(r % 3) * rs
                                          : ak + r);
#pragma GCC unroll 4
      for (size_t v = 0; v < NV; ++v) c[r][v] = V::fma(av, bv[v], c[r][v]);
    }
    if (!AO) a += MR;
    b += bs;
  }
  alignas(64) float acc[M * NR];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (size_t v = 0; v < NV; ++v) V::store_aligned(acc + r * NR + v * W, c[r][v]);
  gemm_store_tile<V, NV>(acc, M, t);
}

using gemm_tile_fn = void (*)(size_t, const float*, const float*, const GemmTile&);

template <typename V, size_t MR, size_t PNV, size_t NV, size_t PF, bool PB, int AO,
          size_t... R>
constexpr gemm_tile_fn gemm_tiles[MR + 1] = {
    nullptr, gemm_tile<V, MR, PNV, NV, PF, PB, AO, int(R) + 1>...};

// The tiles for 1..MR rows, with the A prefetch when the driver says A streams from memory
// and the ISA has a distance for it, and the B prefetch when the driver says the B
// micro-panel does not stay in L1. A read in place (a_offsets) is an L2-resident input: no
// A prefetch.
template <typename V, size_t MR, size_t PNV, size_t NV, size_t... R>
const gemm_tile_fn* gemm_tile_table(const GemmTile& t, std::index_sequence<R...>) {
  constexpr size_t PF = V::kGemmStreamPrefetch;
  if (t.a_offsets && t.a_stride != 1)
    return t.stream_b ? gemm_tiles<V, MR, PNV, NV, 0, true, 2, R...>
                      : gemm_tiles<V, MR, PNV, NV, 0, false, 2, R...>;
  if (t.a_offsets)
    return t.stream_b ? gemm_tiles<V, MR, PNV, NV, 0, true, 1, R...>
                      : gemm_tiles<V, MR, PNV, NV, 0, false, 1, R...>;
  if (PF && t.stream_a)
    return t.stream_b ? gemm_tiles<V, MR, PNV, NV, PF, true, 0, R...>
                      : gemm_tiles<V, MR, PNV, NV, PF, false, 0, R...>;
  return t.stream_b ? gemm_tiles<V, MR, PNV, NV, 0, true, 0, R...>
                    : gemm_tiles<V, MR, PNV, NV, 0, false, 0, R...>;
}

// The MR x NR microkernel: the tile for m rows; a last panel of at most NR / 2 columns
// computes only its first half (ResNet's 14x14 maps: 196 = 6 x 32 + 4 columns).
template <typename V, size_t MR, size_t NR>
void gemm_ukernel(size_t m, size_t kc, const float* a, const float* b, const GemmTile& t) {
  static_assert(NR % V::kWidth == 0, "NR is whole vectors");
  constexpr size_t NV = NR / V::kWidth, NH = NV / 2;
  constexpr auto rows = std::make_index_sequence<MR>{};
  if constexpr (NH > 0) {
    if (t.n <= NH * V::kWidth) return gemm_tile_table<V, MR, NV, NH>(t, rows)[m](kc, a, b, t);
  }
  gemm_tile_table<V, MR, NV, NV>(t, rows)[m](kc, a, b, t);
}

// kFmaChains independent FMA chains (enough to cover FMA latency x throughput); returns
// the flops done.
template <typename V>
double fma_probe(size_t iters) {
  using vec = typename V::vec;
  constexpr int C = V::kFmaChains;
  vec acc[C];
  for (int i = 0; i < C; ++i) acc[i] = V::set1(float(i));
  const vec m = V::set1(0.999999f), c = V::set1(1e-7f);
  for (size_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < C; ++i) acc[i] = V::fma(acc[i], m, c);
  }
  vec s = acc[0];
  for (int i = 1; i < C; ++i) s = V::add(s, acc[i]);
  volatile float sink = V::lane0(s);
  (void)sink;
  return 2.0 * C * V::kWidth * double(iters);
}

}  // namespace kiln::simd
