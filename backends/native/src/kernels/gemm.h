// Single-precision GEMM: the contract between the executor and the GEMM microkernels.
//
//   C[M,N] = op(A)[M,K] * op(B)[K,N]  (+ bias)  (+ residual)  -> activation
//
// Row-major throughout. lda/ldb/ldc are row strides in elements. The epilogue is applied
// once per output element after the full K reduction, in this order: bias, residual,
// activation. `sgemm` and the packed variants dispatch to the microkernels of
// `active_isa()` (cpu.h); `sgemm_reference` is plain loops, the oracle for all of them.
#pragma once
#include <cstddef>
#include <memory>

#include "cpu.h"

namespace kiln {

class ThreadPool;

enum class Activation : int {
  none = 0,
  relu,
  leaky_relu,   // alpha = negative slope
  clip,         // alpha = min, beta = max
  sigmoid,
  silu,         // x * sigmoid(x)
  hard_sigmoid, // max(0, min(1, alpha * x + beta))
  hard_swish,   // x * max(0, min(1, x / 6 + 0.5))
  gelu_erf,
  gelu_tanh,
  tanh,
  exp,          // not an ONNX activation: Softmax's exponentials (and the Exp op)
  erf,          // the Erf op
};

enum class BiasKind : int { none = 0, per_row, per_col, full };

struct Epilogue {
  BiasKind bias_kind = BiasKind::none;
  const float* bias = nullptr;      // per_row: M values; per_col: N values; full: M x N (ldc)
  const float* residual = nullptr;  // M x N added after bias, row stride ldc; may alias C
  Activation act = Activation::none;
  float alpha = 0.0f;
  float beta = 0.0f;
};

// Applies `act` in place to n values (used by the epilogue and by standalone ops).
// Vectorized for the active ISA; exp/erf/tanh approximations are within ~1e-6 relative.
void apply_activation(Activation act, float alpha, float beta, float* x, size_t n);

// Scalar activation, the oracle of the vectorized ones.
float activation_reference(Activation act, float alpha, float beta, float x);

// C = op(A) * op(B) + epilogue. pool may be null (single thread). Both operands are packed
// into panels inside every call (cost ~ M*K + K*N); for a constant operand pack it once with
// pack_b / pack_a (or use Conv2d / Conv2dCache in conv.h for convolutions).
void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K,
           const float* A, size_t lda, const float* B, size_t ldb,
           float* C, size_t ldc, const Epilogue& ep, ThreadPool* pool);

// Same contract as sgemm, plain loops (no blocking, no SIMD): the test oracle.
void sgemm_reference(bool trans_a, bool trans_b, size_t M, size_t N, size_t K,
                     const float* A, size_t lda, const float* B, size_t ldb,
                     float* C, size_t ldc, const Epilogue& ep, ThreadPool* pool);

// B packed once (constant weights), in the panel layout of the active ISA's kernel.
// If the active ISA changes after packing (set_isa_cap), the packed panels are converted
// on the fly, so results stay correct (only slower).
class PackedB {
 public:
  virtual ~PackedB() = default;
  virtual size_t K() const = 0;
  virtual size_t N() const = 0;
  virtual size_t bytes() const = 0;
};

// Packs op(B)[K,N] for sgemm_packed.
std::unique_ptr<PackedB> pack_b(bool trans_b, size_t K, size_t N, const float* B, size_t ldb);

// C = op(A) * packed + epilogue.
void sgemm_packed(bool trans_a, size_t M, const float* A, size_t lda, const PackedB& B,
                  float* C, size_t ldc, const Epilogue& ep, ThreadPool* pool);

// A packed once: the constant operand of a convolution (weights [K_out, C*kh*kw]).
class PackedA {
 public:
  virtual ~PackedA() = default;
  virtual size_t M() const = 0;
  virtual size_t K() const = 0;
  virtual size_t bytes() const = 0;
};

// Packs op(A)[M,K] for sgemm_packed_a.
std::unique_ptr<PackedA> pack_a(bool trans_a, size_t M, size_t K, const float* A, size_t lda);

// C = packed * op(B) + epilogue.
void sgemm_packed_a(const PackedA& A, bool trans_b, size_t N, const float* B, size_t ldb,
                    float* C, size_t ldc, const Epilogue& ep, ThreadPool* pool);

// Name of the SGEMM microkernel the active ISA uses, e.g. "kiln_f32_gemm_ukernel__avx512_14x32".
const char* sgemm_kernel_name();

}  // namespace kiln
