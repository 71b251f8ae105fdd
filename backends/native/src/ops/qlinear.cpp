// kiln::QGemm and kiln::QConv: a quantized MatMul / Gemm / Conv as one integer kernel. The
// native lowering (backends/native/int8_fusion.py) builds them from QDQ and MatMulInteger
// graphs: u8 activations times constant s8 weights (symmetric, per output channel or per
// tensor), summed in int32 on the u8 x s8 GEMM, then one epilogue per tile:
//   y = (acc - a_zero * colsum(w)) * a_scale * w_scale + bias, optional Relu,
// written as float, or requantized to u8 when the graph quantizes the result again.
// Inputs: 0 A (u8), 1 W (s8, constant), 2 a_scale, 3 a_zero (u8, optional), 4 w_scale,
// 5 bias (f32, optional), 6 y_scale (optional), 7 y_zero (u8, optional).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/int8_gemm.h"
#include "ops/common.h"
#include "ops/conv_geom.h"

namespace kiln::ops {
namespace {

const Tensor* optional_input(OpContext& c, size_t i) {
  return i < c.n_inputs() ? c.input(i) : nullptr;
}

float scalar_f32(const Tensor& t, const char* what, OpContext& c) {
  if (t.dtype != DType::f32 || t.numel() != 1)
    c.fail(std::string(what) + " must be one float32 value, got " +
           std::string(dtype_name(t.dtype)) + " " + shape_str(t.shape));
  return t.ptr<float>()[0];
}

int32_t scalar_u8(const Tensor* t, const char* what, OpContext& c) {
  if (!t) return 0;
  if (t->dtype != DType::u8 || t->numel() != 1)
    c.fail(std::string(what) + " must be one uint8 value, got " +
           std::string(dtype_name(t->dtype)) + " " + shape_str(t->shape));
  return t->ptr<uint8_t>()[0];
}

// Per output channel: y = acc * mult[j] + offset[j], then the activation and the output type.
struct Requant {
  std::vector<float> mult, offset;
  bool relu = false;
  bool to_u8 = false;
  float y_scale = 1.0f, y_zero = 0.0f;

  Requant(OpContext& c, const PackedInt8B& w, bool relu_) : relu(relu_) {
    const size_t N = w.N;
    const float a_scale = scalar_f32(c.in(2), "a_scale", c);
    const int32_t a_zero = scalar_u8(optional_input(c, 3), "a_zero_point", c);
    const Tensor& ws = c.in(4);
    if (ws.dtype != DType::f32 || (ws.numel() != 1 && ws.numel() != N))
      c.fail("w_scale must be float32 with 1 or " + std::to_string(N) + " values, got " +
             std::string(dtype_name(ws.dtype)) + " " + shape_str(ws.shape));
    const Tensor* bias = optional_input(c, 5);
    if (bias && (bias->dtype != DType::f32 || bias->numel() != N))
      c.fail("bias must be float32 with " + std::to_string(N) + " values, got " +
             std::string(dtype_name(bias->dtype)) + " " + shape_str(bias->shape));
    mult.resize(N);
    offset.resize(N);
    for (size_t j = 0; j < N; ++j) {
      mult[j] = a_scale * ws.ptr<float>()[ws.numel() == 1 ? 0 : j];
      // The a_zero correction folded into the offset: (acc - za * colsum) * m + b.
      offset[j] = (bias ? bias->ptr<float>()[j] : 0.0f) -
                  mult[j] * static_cast<float>(a_zero) * static_cast<float>(w.col_sums[j]);
    }
    if (const Tensor* ys = optional_input(c, 6)) {
      to_u8 = true;
      y_scale = scalar_f32(*ys, "y_scale", c);
      if (!(y_scale > 0.0f) || !std::isfinite(y_scale))
        c.fail("y_scale must be positive and finite, got " + std::to_string(y_scale));
      y_zero = static_cast<float>(scalar_u8(optional_input(c, 7), "y_zero_point", c));
      for (size_t j = 0; j < N; ++j) {
        mult[j] /= y_scale;
        offset[j] /= y_scale;
      }
    }
  }

  // The row kernel's parameters; a u8 output folds 1 / y_scale into mult and offset
  // (relu(v) / s = relu(v / s) for s > 0).
  Int8RowParams params() const {
    return {mult.data(), offset.data(), relu, relu ? 0.0f : -y_zero, 255.0f - y_zero, y_zero};
  }
};

void check_constant_weights(const NodeDesc& node, const Tensor* w, size_t rank) {
  if (!w) node.fail("the int8 weights (input 1) must be a constant");
  if (w->dtype != DType::i8 || w->rank() != rank)
    node.fail("the weights must be int8 of rank " + std::to_string(rank) + ", got " +
              std::string(dtype_name(w->dtype)) + " " + shape_str(w->shape));
  for (int64_t d : w->shape)
    if (d < 1) node.fail("the weights have an empty dim: " + shape_str(w->shape));
}

bool relu_of(const NodeDesc& node) {
  const std::string act = node.attr_s("activation", "");
  if (!act.empty() && act != "Relu")
    node.fail("activation '" + act + "' is not supported on int8 (only Relu)");
  return act == "Relu";
}

// Tile rows are output pixels i0.. (image i / P, pixel i % P), columns channels j0..; NCHW
// holds each channel's pixels contiguously, so runs of rows inside one image copy as runs.
template <typename T>
void scatter_nchw(const T* tile, size_t ld, size_t i0, size_t rows, size_t j0, size_t cols,
                  size_t P, size_t channels, T* y) {
  for (size_t r = 0; r < rows;) {
    const size_t i = i0 + r, n = i / P, p = i % P;
    const size_t run = std::min(rows - r, P - p);
    for (size_t j = 0; j < cols; ++j) {
      T* dst = y + (n * channels + j0 + j) * P + p;
      const T* src = tile + r * ld + j;
      for (size_t t = 0; t < run; ++t) dst[t] = src[t * ld];
    }
    r += run;
  }
}

// A [..., K] (u8) x W [K, N] (s8) -> Y [..., N].
class QGemmKernel final : public Kernel {
 public:
  QGemmKernel(const NodeDesc& node, const BuildContext& bc) : relu_(relu_of(node)) {
    const Tensor* w = bc.constant(node, 1);
    check_constant_weights(node, w, 2);
    packed_ = std::make_shared<PackedInt8B>(
        pack_int8_b(w->ptr<int8_t>(), w->shape[0], w->shape[1], w->shape[1]));
  }

  void run(OpContext& c) const override {
    const Tensor& a = c.in(0);
    const PackedInt8B& w = *packed_;
    if (a.dtype != DType::u8) c.fail("A must be uint8, got " + std::string(dtype_name(a.dtype)));
    if (a.rank() < 1 || static_cast<size_t>(a.shape.back()) != w.K)
      c.fail("A " + shape_str(a.shape) + " does not end in the weights' K = " +
             std::to_string(w.K));
    const Requant rq(c, w, relu_);
    const size_t M = a.numel() / w.K, N = w.N;
    Shape oshape(a.shape.begin(), a.shape.end() - 1);
    oshape.push_back(static_cast<int64_t>(N));
    Tensor& y = c.output(0, rq.to_u8 ? DType::u8 : DType::f32, oshape);
    Int8GemmIO io;
    io.fill = int8_rows_of(a.ptr<uint8_t>(), w.K, w.K, w.Kq);
    const Int8RowKernels rows_out = select_int8_row_kernels();
    const Int8RowParams rp = rq.params();
    io.epilogue = [&](size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                      size_t ld) {
      Int8RowParams p = rp;
      p.mult += j0;
      p.offset += j0;
      for (size_t r = 0; r < rows; ++r) {
        if (rq.to_u8) rows_out.to_u8(cols, acc + r * ld, p, y.ptr<uint8_t>() + (i0 + r) * N + j0);
        else rows_out.to_f32(cols, acc + r * ld, p, y.ptr<float>() + (i0 + r) * N + j0);
      }
    };
    gemm_u8s8_fused(M, w, io, c.pool);
  }

 private:
  bool relu_;
  std::shared_ptr<PackedInt8B> packed_;
};

// 2-D convolution, one group: X [N, C, H, W] (u8) * W [K, C, KH, KW] (s8) -> Y [N, K, OH, OW].
// X is copied to NHWC once so every im2col row is KH * KW runs of C contiguous bytes; the GEMM
// has one row per output pixel and the epilogue writes it back to NCHW.
class QConvKernel final : public Kernel {
 public:
  QConvKernel(const NodeDesc& node, const BuildContext& bc)
      : attrs_(read_attrs(node, false)), relu_(relu_of(node)) {
    if (attrs_.group != 1) node.fail("int8 convolution supports group 1 only");
    const Tensor* w = bc.constant(node, 1);
    check_constant_weights(node, w, 4);
    const size_t K = w->shape[0], C = w->shape[1], KH = w->shape[2], KW = w->shape[3];
    // GEMM B [(kh, kw, c), k]: the im2col row order of an NHWC input
    std::vector<int8_t> b(KH * KW * C * K);
    const int8_t* pw = w->ptr<int8_t>();
    for (size_t k = 0; k < K; ++k)
      for (size_t ch = 0; ch < C; ++ch)
        for (size_t kh = 0; kh < KH; ++kh)
          for (size_t kw = 0; kw < KW; ++kw)
            b[((kh * KW + kw) * C + ch) * K + k] = pw[((k * C + ch) * KH + kh) * KW + kw];
    packed_ = std::make_shared<PackedInt8B>(pack_int8_b(b.data(), KH * KW * C, K, K));
  }

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    const Tensor& w = c.in(1);
    if (x.dtype != DType::u8) c.fail("X must be uint8, got " + std::string(dtype_name(x.dtype)));
    if (x.rank() != 4) c.fail("int8 convolution is 2-D: X must be [N, C, H, W], got " +
                              shape_str(x.shape));
    const Geom g = conv_geom(attrs_, x, w, c);
    const PackedInt8B& pw = *packed_;
    const Requant rq(c, pw, relu_);
    const size_t C = g.C, H = g.in[0], W = g.in[1], KH = g.k[0], KW = g.k[1];
    const size_t OH = g.out[0], OW = g.out[1], P = OH * OW, Kout = g.M;
    Tensor& y = c.output(0, rq.to_u8 ? DType::u8 : DType::f32,
                         {x.shape[0], static_cast<int64_t>(Kout), static_cast<int64_t>(OH),
                          static_cast<int64_t>(OW)});
    if (g.N * P == 0) return;
    const uint8_t pad = static_cast<uint8_t>(scalar_u8(optional_input(c, 3), "a_zero_point", c));

    std::vector<uint8_t> nhwc(g.N * H * W * C);
    const uint8_t* px = x.ptr<uint8_t>();
    parallel(c.pool, g.N * H, 4, [&](size_t b, size_t e) {
      for (size_t nh = b; nh < e; ++nh) {
        const size_t n = nh / H, h = nh % H;
        uint8_t* dst = nhwc.data() + nh * W * C;
        for (size_t ch = 0; ch < C; ++ch) {
          const uint8_t* src = px + ((n * C + ch) * H + h) * W;
          for (size_t wi = 0; wi < W; ++wi) dst[wi * C + ch] = src[wi];
        }
      }
    });

    const size_t Kq = pw.Kq, row_bytes = KH * KW * C;
    const bool pointwise = KH == 1 && KW == 1 && g.stride[0] == 1 && g.stride[1] == 1 &&
                           g.pb[0] == 0 && g.pb[1] == 0 && g.pe[0] == 0 && g.pe[1] == 0;
    Int8GemmIO io;
    if (pointwise) {
      io.fill = int8_rows_of(nhwc.data(), C, C, Kq);
    } else {
      io.fill = [&](size_t i0, size_t rows, uint8_t* dst) -> const uint8_t* {
        for (size_t r = 0; r < rows; ++r) {
          const size_t i = i0 + r, n = i / P, p = i % P;
          const int64_t oh = static_cast<int64_t>(p / OW), ow = static_cast<int64_t>(p % OW);
          uint8_t* row = dst + r * Kq;
          for (size_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * g.stride[0] - g.pb[0] + static_cast<int64_t>(kh) * g.dil[0];
            for (size_t kw = 0; kw < KW; ++kw) {
              const int64_t iw =
                  ow * g.stride[1] - g.pb[1] + static_cast<int64_t>(kw) * g.dil[1];
              uint8_t* out = row + (kh * KW + kw) * C;
              if (ih < 0 || ih >= static_cast<int64_t>(H) || iw < 0 ||
                  iw >= static_cast<int64_t>(W))
                std::memset(out, pad, C);  // the zero point is the real zero
              else
                std::memcpy(out, nhwc.data() + ((n * H + ih) * W + iw) * C, C);
            }
          }
          std::memset(row + row_bytes, 0, Kq - row_bytes);
        }
        return dst;
      };
    }
    const Int8RowKernels rows_out = select_int8_row_kernels();
    const Int8RowParams rp = rq.params();
    io.epilogue = [&](size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                      size_t ld) {
      Int8RowParams p = rp;
      p.mult += j0;
      p.offset += j0;
      if (rq.to_u8) {
        thread_local std::vector<uint8_t> tile;
        if (tile.size() < rows * ld) tile.resize(rows * ld);
        for (size_t r = 0; r < rows; ++r) rows_out.to_u8(cols, acc + r * ld, p, &tile[r * ld]);
        scatter_nchw(tile.data(), ld, i0, rows, j0, cols, P, Kout, y.ptr<uint8_t>());
      } else {
        thread_local std::vector<float> tile;
        if (tile.size() < rows * ld) tile.resize(rows * ld);
        for (size_t r = 0; r < rows; ++r) rows_out.to_f32(cols, acc + r * ld, p, &tile[r * ld]);
        scatter_nchw(tile.data(), ld, i0, rows, j0, cols, P, Kout, y.ptr<float>());
      }
    };
    gemm_u8s8_fused(g.N * P, pw, io, c.pool);
  }

 private:
  ConvAttrs attrs_;
  bool relu_;
  std::shared_ptr<PackedInt8B> packed_;
};

template <typename K>
KernelFactory factory_of() {
  return [](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
    return std::unique_ptr<Kernel>(new K(node, bc));
  };
}

}  // namespace

KILN_REGISTER_OP("kiln", "QGemm", factory_of<QGemmKernel>());
KILN_REGISTER_OP("kiln", "QConv", factory_of<QConvKernel>());

}  // namespace kiln::ops
