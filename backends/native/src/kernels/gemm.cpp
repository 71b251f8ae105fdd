// Reference SGEMM: plain C++, always built. The blocked SIMD kernels replace it per ISA and
// are tested against it.
#include "kernels/gemm.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "threadpool.h"

namespace kiln {

namespace {

inline float activate(Activation act, float alpha, float beta, float x) {
  switch (act) {
    case Activation::none: return x;
    case Activation::relu: return x > 0.0f ? x : 0.0f;
    case Activation::leaky_relu: return x >= 0.0f ? x : alpha * x;
    case Activation::clip: return x < alpha ? alpha : (x > beta ? beta : x);
    case Activation::sigmoid: return 1.0f / (1.0f + std::exp(-x));
    case Activation::silu: return x / (1.0f + std::exp(-x));
    case Activation::hard_sigmoid: {
      float y = alpha * x + beta;
      return y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y);
    }
    case Activation::hard_swish: {
      float y = x / 6.0f + 0.5f;
      return x * (y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y));
    }
    case Activation::gelu_erf: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case Activation::gelu_tanh:
      return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case Activation::tanh: return std::tanh(x);
  }
  return x;
}

class PackedBReference final : public PackedB {
 public:
  PackedBReference(size_t k, size_t n) : k_(k), n_(n), data_(k * n) {}
  size_t K() const override { return k_; }
  size_t N() const override { return n_; }
  size_t bytes() const override { return data_.size() * sizeof(float); }
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }

 private:
  size_t k_, n_;
  std::vector<float> data_;
};

void apply_epilogue_row(const Epilogue& ep, size_t i, size_t N, float* c, size_t ldc) {
  for (size_t j = 0; j < N; ++j) {
    float v = c[j];
    switch (ep.bias_kind) {
      case BiasKind::per_row: v += ep.bias[i]; break;
      case BiasKind::per_col: v += ep.bias[j]; break;
      case BiasKind::full: v += ep.bias[i * ldc + j]; break;
      case BiasKind::none: break;
    }
    if (ep.residual) v += ep.residual[i * ldc + j];
    c[j] = activate(ep.act, ep.alpha, ep.beta, v);
  }
}

}  // namespace

void apply_activation(Activation act, float alpha, float beta, float* x, size_t n) {
  if (act == Activation::none) return;
  for (size_t i = 0; i < n; ++i) x[i] = activate(act, alpha, beta, x[i]);
}

void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, const float* A, size_t lda,
           const float* B, size_t ldb, float* C, size_t ldc, const Epilogue& ep,
           ThreadPool* pool) {
  auto rows = [&](size_t i0, size_t i1) {
    std::vector<float> acc(N);
    for (size_t i = i0; i < i1; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (size_t k = 0; k < K; ++k) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        if (trans_b) {
          for (size_t j = 0; j < N; ++j) acc[j] += a * B[j * ldb + k];
        } else {
          const float* b = B + k * ldb;
          for (size_t j = 0; j < N; ++j) acc[j] += a * b[j];
        }
      }
      std::memcpy(C + i * ldc, acc.data(), N * sizeof(float));
      apply_epilogue_row(ep, i, N, C + i * ldc, ldc);
    }
  };
  if (pool) pool->parallel_for(M, 1, rows); else rows(0, M);
}

std::unique_ptr<PackedB> pack_b(bool trans_b, size_t K, size_t N, const float* B, size_t ldb) {
  auto packed = std::make_unique<PackedBReference>(K, N);
  float* dst = packed->data();
  for (size_t k = 0; k < K; ++k)
    for (size_t j = 0; j < N; ++j) dst[k * N + j] = trans_b ? B[j * ldb + k] : B[k * ldb + j];
  return packed;
}

void sgemm_packed(bool trans_a, size_t M, const float* A, size_t lda, const PackedB& B, float* C,
                  size_t ldc, const Epilogue& ep, ThreadPool* pool) {
  const auto& ref = static_cast<const PackedBReference&>(B);
  sgemm(trans_a, false, M, ref.N(), ref.K(), A, lda, ref.data(), ref.N(), C, ldc, ep, pool);
}

}  // namespace kiln
