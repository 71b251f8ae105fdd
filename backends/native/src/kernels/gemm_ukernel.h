// The tile contract between the blocked SGEMM driver (gemm.cpp) and the per-ISA
// microkernels (kernels/simd/f32_gemm.h, instantiated per ISA; generic/f32_gemm.cpp).
//
// A microkernel computes one MR x NR tile of C from packed panels:
//   a: kc groups of MR floats (row r of group k is op(A)[row0 + r, k0 + k]), zero padded;
//   b: kc groups of NR floats (lane j of group k is op(B)[k0 + k, col0 + j]), zero padded;
//      group k starts at b + k * b_stride (NR for a packed panel; a row stride when B is
//      read in place, which the driver does only for whole NR-wide column blocks).
//   or, with a_offsets, A read in place: row r of k group k at a + a_offsets[k] + r * a_stride
//      (an implicit-GEMM convolution's output pixels: consecutive floats in an NCHW plane,
//      a_stride = 1, or pixels of an NHWC image, a_stride = its channel count).
// Only the first `m` rows (m <= MR) and `t.n` columns (n <= NR) are stored.
// accumulate: add the existing C tile (a later K block). last: the final K block, so the
// epilogue (bias, residual, activation) is applied before the store.
#pragma once
#include <cstddef>

#include "cpu.h"
#include "kernels/gemm.h"

namespace kiln {

struct GemmTile {
  float* c;
  size_t ldc;
  size_t n;          // valid columns, 1..NR
  size_t row0;       // absolute row / column of the tile in C, for the epilogue operands
  size_t col0;
  bool accumulate;
  bool last;
  const Epilogue* ep;
  bool stream_a = false;  // hint: A is too large for L2 (kernels may prefetch it ahead)
  bool stream_b = true;   // hint: the kc x nr B micro-panel does not stay in L1
  size_t b_stride = 0;    // floats between consecutive k groups of b; 0 = NR (packed)
  const size_t* a_offsets = nullptr;  // per k group: where its rows start, from a; null = packed
  size_t a_stride = 1;                // with a_offsets: floats between consecutive rows of A
};

using sgemm_ukernel_fn = void (*)(size_t m, size_t kc, const float* a, const float* b,
                                  const GemmTile& t);

struct GemmKernel {
  Isa isa;
  size_t mr;
  size_t nr;
  sgemm_ukernel_fn fn;
  const char* name;
};

// The SGEMM microkernel of an ISA (kernels/dispatch.cpp).
const GemmKernel& gemm_kernel(Isa isa);

// Scalar epilogue for one value at absolute (i, j): the shared definition every kernel
// must match (bias, then residual, then activation).
inline float epilogue_value(const Epilogue& ep, size_t ldc, size_t i, size_t j, float v) {
  switch (ep.bias_kind) {
    case BiasKind::per_row: v += ep.bias[i]; break;
    case BiasKind::per_col: v += ep.bias[j]; break;
    case BiasKind::full: v += ep.bias[i * ldc + j]; break;
    case BiasKind::none: break;
  }
  if (ep.residual) v += ep.residual[i * ldc + j];
  return activation_reference(ep.act, ep.alpha, ep.beta, v);
}

}  // namespace kiln
