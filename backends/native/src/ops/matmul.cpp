// Gemm, kiln::FusedGemm and MatMul on kiln::sgemm; constant B operands are packed once at
// plan build time (kiln::pack_b) and multiplied with kiln::sgemm_packed.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/gemm.h"
#include "ops/activation.h"
#include "ops/common.h"

namespace kiln::ops {
namespace {

// Gemm / FusedGemm: Y = act(alpha * op(A) op(B) + beta * C + residual).
// FusedGemm also accepts A of rank > 2 (MatMul semantics: leading dims flattened, transA=0).
class GemmKernel final : public Kernel {
 public:
  GemmKernel(const NodeDesc& node, const BuildContext& bc, bool fused) : fused_(fused) {
    trans_a_ = node.attr_i("transA", 0) != 0;
    trans_b_ = node.attr_i("transB", 0) != 0;
    alpha_ = node.attr_f("alpha", 1.0f);
    beta_ = node.attr_f("beta", 1.0f);
    if (fused) act_ = parse_activation(node, "activation_");
    const Tensor* b = bc.constant(node, 1);
    if (b && b->dtype == DType::f32 && b->rank() == 2) {
      const size_t K = trans_b_ ? b->shape[1] : b->shape[0];
      const size_t N = trans_b_ ? b->shape[0] : b->shape[1];
      packed_ = bc.packed_b(node, 1, trans_b_, K, N);
    }
  }

  // A packed constant B is multiplied from its packed copy only (its K and N match).
  bool reads_constant(size_t i) const override { return i != 1 || !packed_; }

  void run(OpContext& c) const override {
    const Tensor& a = c.in(0);
    const Tensor& b = c.in(1);
    if (a.dtype != DType::f32 || b.dtype != DType::f32) c.fail("A and B must be float32");
    if (b.rank() != 2) c.fail("B must be 2-D, got " + shape_str(b.shape));
    if (a.rank() < 2 || (a.rank() > 2 && (!fused_ || trans_a_)))
      c.fail("A must be 2-D, got " + shape_str(a.shape));
    size_t M, K;
    if (a.rank() == 2) {
      M = trans_a_ ? a.shape[1] : a.shape[0];
      K = trans_a_ ? a.shape[0] : a.shape[1];
    } else {
      K = a.shape.back();
      M = a.numel() / std::max<size_t>(K, 1);
      if (K == 0) M = 1;
      for (size_t i = 0; i + 1 < a.rank(); ++i) if (a.shape[i] == 0) M = 0;
    }
    const size_t KB = trans_b_ ? b.shape[1] : b.shape[0];
    const size_t N = trans_b_ ? b.shape[0] : b.shape[1];
    if (K != KB)
      c.fail("inner dimensions differ: A " + shape_str(a.shape) + " and B " + shape_str(b.shape) +
             (trans_a_ ? " (transA)" : "") + (trans_b_ ? " (transB)" : ""));
    Shape oshape;
    if (a.rank() == 2) {
      oshape = {static_cast<int64_t>(M), static_cast<int64_t>(N)};
    } else {
      oshape.assign(a.shape.begin(), a.shape.end() - 1);
      oshape.push_back(static_cast<int64_t>(N));
    }
    const Tensor* cb = c.input(2);
    if (cb && cb->dtype != DType::f32) c.fail("C must be float32");
    const Tensor* res = fused_ ? c.input(3) : nullptr;
    if (res && (res->dtype != DType::f32 || res->shape != oshape))
      c.fail("residual " + shape_str(res->shape) + " must be float32 with the output shape " +
             shape_str(oshape));
    Tensor& y = c.output(0, DType::f32, oshape);
    if (M == 0 || N == 0) return;
    float* py = y.ptr<float>();

    // Bias: C broadcast (unidirectionally) to [M, N].
    Epilogue ep;
    std::vector<float> bias_buf;
    if (cb && beta_ != 0.0f) {
      const Shape& cs = cb->shape;
      if (cs.size() > 2) c.fail("C must have rank <= 2, got " + shape_str(cs));
      const int64_t cm = cs.size() == 2 ? cs[0] : 1;
      const int64_t cn = cs.empty() ? 1 : cs.back();
      if ((cm != 1 && cm != static_cast<int64_t>(M)) || (cn != 1 && cn != static_cast<int64_t>(N)))
        c.fail("C " + shape_str(cs) + " does not broadcast to [" + std::to_string(M) + ", " +
               std::to_string(N) + "]");
      const float* pc = cb->ptr<float>();
      if (cm == static_cast<int64_t>(M) && cn == static_cast<int64_t>(N) && M > 1 && N > 1) {
        if (beta_ == 1.0f) {
          ep.bias_kind = BiasKind::full;
          ep.bias = pc;
        } else {
          bias_buf.assign(pc, pc + M * N);
          for (float& v : bias_buf) v *= beta_;
          ep.bias_kind = BiasKind::full;
          ep.bias = bias_buf.data();
        }
      } else if (cm == static_cast<int64_t>(M) && cn == 1 && M > 1) {
        bias_buf.assign(pc, pc + M);
        for (float& v : bias_buf) v *= beta_;
        ep.bias_kind = BiasKind::per_row;
        ep.bias = bias_buf.data();
      } else if (beta_ == 1.0f && cn == static_cast<int64_t>(N)) {
        ep.bias_kind = BiasKind::per_col;  // the usual Linear bias: read in place, no copy
        ep.bias = pc;
      } else {
        bias_buf.resize(N);
        for (size_t j = 0; j < N; ++j) bias_buf[j] = beta_ * pc[cn == 1 ? 0 : j];
        ep.bias_kind = BiasKind::per_col;
        ep.bias = bias_buf.data();
      }
    }
    ep.residual = res ? res->ptr<float>() : nullptr;
    ep.act = act_.act;
    ep.alpha = act_.alpha;
    ep.beta = act_.beta;

    const size_t lda = a.rank() == 2 ? a.shape[1] : K;
    const float* pa = a.ptr<float>();
    std::vector<float> scaled;
    if (alpha_ != 1.0f) {
      scaled.assign(pa, pa + a.numel());
      for (float& v : scaled) v *= alpha_;
      pa = scaled.data();
    }
    const bool use_packed = packed_ && c.node.inputs.size() > 1 &&
                            packed_->K() == K && packed_->N() == N;
    if (use_packed) {
      sgemm_packed(trans_a_, M, pa, lda, *packed_, py, N, ep, c.pool);
    } else {
      sgemm(trans_a_, trans_b_, M, N, K, pa, lda, b.ptr<float>(), b.shape[1], py, N, ep, c.pool);
    }
  }

 private:
  bool fused_;
  bool trans_a_ = false, trans_b_ = false;
  float alpha_ = 1.0f, beta_ = 1.0f;
  FusedActivation act_;
  std::shared_ptr<const PackedB> packed_;  // shared by the nodes multiplying this B
};

// MatMul with numpy semantics: 1-D operands promoted, batch dims broadcast.
class MatMulKernel final : public Kernel {
 public:
  MatMulKernel(const NodeDesc& node, const BuildContext& bc) {
    const Tensor* b = bc.constant(node, 1);
    if (b && b->dtype == DType::f32 && b->rank() == 2)
      packed_ = bc.packed_b(node, 1, false, b->shape[0], b->shape[1]);
  }

  // A packed constant B (2-D, so never batch-broadcast) is read from its packed copy only.
  bool reads_constant(size_t i) const override { return i != 1 || !packed_; }

  void run(OpContext& c) const override {
    const Tensor& a = c.in(0);
    const Tensor& b = c.in(1);
    if (a.dtype != DType::f32 || b.dtype != DType::f32) c.fail("A and B must be float32");
    if (a.rank() == 0 || b.rank() == 0) c.fail("operands must have rank >= 1");
    Shape as = a.shape, bs = b.shape;
    const bool a1 = as.size() == 1, b1 = bs.size() == 1;
    if (a1) as.insert(as.begin(), 1);
    if (b1) bs.push_back(1);
    const size_t M = as[as.size() - 2], K = as.back();
    const size_t KB = bs[bs.size() - 2], N = bs.back();
    if (K != KB)
      c.fail("inner dimensions differ: A " + shape_str(a.shape) + " and B " + shape_str(b.shape));
    Shape abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
    Shape batch = broadcast_shapes(abatch, bbatch, c.node);
    Shape oshape = batch;
    if (!a1) oshape.push_back(static_cast<int64_t>(M));
    if (!b1) oshape.push_back(static_cast<int64_t>(N));
    Tensor& y = c.output(0, DType::f32, oshape);
    float* py = y.ptr<float>();
    if (y.numel() == 0) return;
    size_t nbatch = 1;
    for (int64_t d : batch) nbatch *= d;
    const float* pa = a.ptr<float>();
    const float* pb = b.ptr<float>();
    // B shared by every batch: one GEMM over all rows of A when A is not broadcast.
    if (b.rank() == 2 && (abatch.empty() || abatch == batch)) {
      const size_t rows = M * nbatch;
      if (packed_ && packed_->K() == K && packed_->N() == N)
        sgemm_packed(false, rows, pa, K, *packed_, py, N, Epilogue(), c.pool);
      else
        sgemm(false, false, rows, N, K, pa, K, pb, N, py, N, Epilogue(), c.pool);
      return;
    }
    const std::vector<size_t> ast = broadcast_strides(abatch, batch);
    const std::vector<size_t> bst = broadcast_strides(bbatch, batch);
    auto product = [&](size_t i, ThreadPool* pool) {
      size_t aoff = 0, boff = 0;
      for (size_t d = batch.size(), rest = i; d-- > 0;) {
        const size_t at = rest % static_cast<size_t>(batch[d]);
        rest /= static_cast<size_t>(batch[d]);
        aoff += at * ast[d];
        boff += at * bst[d];
      }
      sgemm(false, false, M, N, K, pa + aoff * M * K, K, pb + boff * K * N, N, py + i * M * N,
            N, Epilogue(), pool);
    };
    // At least a product per thread (attention's heads): each thread takes whole products,
    // where splitting each small product would fork and join once per product.
    if (c.pool && c.pool->size() > 1 && nbatch >= c.pool->size()) {
      c.pool->parallel_for(nbatch, 1, [&](size_t b0, size_t b1) {
        for (size_t i = b0; i < b1; ++i) product(i, nullptr);
      }, nbatch * M * N * K);
      return;
    }
    for (size_t i = 0; i < nbatch; ++i) product(i, c.pool);
  }

 private:
  std::shared_ptr<const PackedB> packed_;  // shared by the nodes multiplying this B
};

KILN_REGISTER_OP("", "Gemm",
                 [](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
                   return std::make_unique<GemmKernel>(node, bc, false);
                 });
KILN_REGISTER_OP("kiln", "FusedGemm",
                 [](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
                   return std::make_unique<GemmKernel>(node, bc, true);
                 });
KILN_REGISTER_OP("", "MatMul",
                 [](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
                   return std::make_unique<MatMulKernel>(node, bc);
                 });

}  // namespace
}  // namespace kiln::ops
