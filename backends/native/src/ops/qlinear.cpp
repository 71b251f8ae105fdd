// kiln::QGemm and kiln::QConv: a quantized MatMul / Gemm / Conv as one integer kernel. The
// native lowering (backends/native/int8_fusion.py) builds them from QDQ and MatMulInteger
// graphs: u8 activations times constant s8 weights (symmetric, per output channel or per
// tensor), summed in int32 on the u8 x s8 GEMM, then one epilogue per tile:
//   y = (acc - a_zero * colsum(w)) * a_scale * w_scale + bias, optional Relu,
// written as float, or requantized to u8 when the graph quantizes the result again.
// Inputs: 0 A (u8), 1 W (s8, constant), 2 a_scale, 3 a_zero (u8, optional), 4 w_scale,
// 5 bias (f32, optional), 6 y_scale (optional), 7 y_zero (u8, optional), 8 table (256 u8,
// optional, with y_scale): a u8 -> u8 map applied to the requantized bytes, the lowering's
// form of DequantizeLinear -> elementwise activation chain -> QuantizeLinear after the layer.
// QConv with group == C is depthwise: a direct NHWC kernel vectorized over channels.
// Also kiln::QMaxPool, DequantizeLinear -> MaxPool -> QuantizeLinear on the bytes.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/int8_gemm.h"
#include "ops/common.h"
#include "ops/conv_geom.h"

namespace kiln::ops {
namespace {

const Tensor* optional_input(OpContext& c, size_t i) {
  return i < c.n_inputs() ? c.input(i) : nullptr;
}

// Input i of a node, or nullptr when it is absent: read from the running context, or from
// the plan's constants when the kernel is built.
using InputOf = std::function<const Tensor*(size_t)>;

InputOf inputs_of(OpContext& c) {
  return [&c](size_t i) { return optional_input(c, i); };
}

// The node's constant inputs at build time; empty when one of inputs [first, last) is
// computed at run time (then the kernel reads them per run).
InputOf constant_inputs_of(const NodeDesc& node, const BuildContext& bc, size_t first,
                           size_t last) {
  for (size_t i = first; i < std::min(last, node.inputs.size()); ++i)
    if (node.inputs[i] >= 0 && !bc.constant(node, i)) return {};
  return [&node, &bc](size_t i) {
    return i < node.inputs.size() && node.inputs[i] >= 0 ? bc.constant(node, i) : nullptr;
  };
}

float scalar_f32(const Tensor& t, const char* what, const NodeDesc& node) {
  if (t.dtype != DType::f32 || t.numel() != 1)
    node.fail(std::string(what) + " must be one float32 value, got " +
              std::string(dtype_name(t.dtype)) + " " + shape_str(t.shape));
  return t.ptr<float>()[0];
}

int32_t scalar_u8(const Tensor* t, const char* what, const NodeDesc& node) {
  if (!t) return 0;
  if (t->dtype != DType::u8 || t->numel() != 1)
    node.fail(std::string(what) + " must be one uint8 value, got " +
              std::string(dtype_name(t->dtype)) + " " + shape_str(t->shape));
  return t->ptr<uint8_t>()[0];
}

// Per output channel: y = acc * mult[j] + offset[j], then the activation and the output type.
struct Requant {
  std::vector<float> mult, offset;
  std::vector<int32_t> acc_offset;  // float32 results: -a_zero * col_sums, exact (see params)
  bool relu = false;
  bool to_u8 = false;
  float y_scale = 1.0f, y_zero = 0.0f;
  bool has_table = false;
  std::array<uint8_t, 256> table_bytes{};  // a copy: a Requant built once outlives its inputs

  // N output channels; col_sums[j]: the sum of channel j's weights (the a_zero correction).
  // Column j is output channel j % channels (a ConvTranspose's columns are its kernel taps
  // times its channels); w_scale and bias have one value per channel. `in` gives inputs
  // 2 .. 8.
  Requant(const NodeDesc& node, const InputOf& in, size_t N, const int32_t* col_sums,
          bool relu_, size_t channels = 0)
      : relu(relu_) {
    const size_t M = channels ? channels : N;
    const Tensor* as = in(2);
    if (!as) node.fail("a_scale (input 2) is missing");
    const float a_scale = scalar_f32(*as, "a_scale", node);
    const int32_t a_zero = scalar_u8(in(3), "a_zero_point", node);
    const Tensor* wsp = in(4);
    if (!wsp) node.fail("w_scale (input 4) is missing");
    const Tensor& ws = *wsp;
    if (ws.dtype != DType::f32 || (ws.numel() != 1 && ws.numel() != M))
      node.fail("w_scale must be float32 with 1 or " + std::to_string(M) + " values, got " +
                std::string(dtype_name(ws.dtype)) + " " + shape_str(ws.shape));
    const Tensor* bias = in(5);
    if (bias && (bias->dtype != DType::f32 || bias->numel() != M))
      node.fail("bias must be float32 with " + std::to_string(M) + " values, got " +
                std::string(dtype_name(bias->dtype)) + " " + shape_str(bias->shape));
    const Tensor* ys = in(6);
    mult.resize(N);
    offset.resize(N);
    if (!ys) acc_offset.resize(N);
    for (size_t j = 0; j < N; ++j) {
      mult[j] = a_scale * ws.ptr<float>()[ws.numel() == 1 ? 0 : j % M];
      // The a_zero correction: float results take it in int32 (acc_offset) as onnxruntime's
      // MatMulInteger -> Cast -> Mul does; u8 results fold it into the offset,
      // (acc - za * colsum) * m + b.
      const float b = bias ? bias->ptr<float>()[j % M] : 0.0f;
      if (ys) {
        offset[j] = b - mult[j] * static_cast<float>(a_zero) * static_cast<float>(col_sums[j]);
      } else {
        offset[j] = b;
        acc_offset[j] = -a_zero * col_sums[j];
      }
    }
    if (ys) {
      to_u8 = true;
      y_scale = scalar_f32(*ys, "y_scale", node);
      if (!(y_scale > 0.0f) || !std::isfinite(y_scale))
        node.fail("y_scale must be positive and finite, got " + std::to_string(y_scale));
      y_zero = static_cast<float>(scalar_u8(in(7), "y_zero_point", node));
      for (size_t j = 0; j < N; ++j) {
        mult[j] /= y_scale;
        offset[j] /= y_scale;
      }
    }
    if (const Tensor* t = in(8)) {
      if (!to_u8) node.fail("a lookup table (input 8) needs a u8 result (y_scale)");
      if (t->dtype != DType::u8 || t->numel() != 256)
        node.fail("the lookup table must be 256 uint8 values, got " +
                  std::string(dtype_name(t->dtype)) + " " + shape_str(t->shape));
      std::memcpy(table_bytes.data(), t->ptr<uint8_t>(), 256);
      has_table = true;
    }
  }

  const uint8_t* table() const { return has_table ? table_bytes.data() : nullptr; }

  size_t N() const { return mult.size(); }

  // The row kernel's parameters; a u8 output folds 1 / y_scale into mult and offset
  // (relu(v) / s = relu(v / s) for s > 0).
  Int8RowParams params() const {
    return {mult.data(), offset.data(), relu, relu ? 0.0f : -y_zero, 255.0f - y_zero, y_zero,
            acc_offset.empty() ? nullptr : acc_offset.data()};
  }
};

// The per-channel parameters repeated over `reps` rows of contiguous products, so one epilogue
// call covers a whole run of rows (a row of a few dozen channels is less work than a call, and
// leaves a vector tail each).
struct RepeatedParams {
  std::vector<float> mult, offset;
  std::vector<int32_t> acc_offset;
  Int8RowParams params;

  RepeatedParams(const Requant& rq, size_t reps)
      : mult(reps * rq.N()), offset(reps * rq.N()),
        acc_offset(rq.acc_offset.empty() ? 0 : reps * rq.N()), params(rq.params()) {
    const size_t n = rq.N();
    for (size_t r = 0; r < reps; ++r) {
      std::memcpy(mult.data() + r * n, rq.mult.data(), n * sizeof(float));
      std::memcpy(offset.data() + r * n, rq.offset.data(), n * sizeof(float));
      if (!acc_offset.empty())
        std::memcpy(acc_offset.data() + r * n, rq.acc_offset.data(), n * sizeof(int32_t));
    }
    params.mult = mult.data();
    params.offset = offset.data();
    params.acc_offset = acc_offset.empty() ? nullptr : acc_offset.data();
  }
  RepeatedParams(const RepeatedParams&) = delete;
  RepeatedParams& operator=(const RepeatedParams&) = delete;
};

// A kernel's requantization. Its inputs (scales, zero points, bias, table) are initializers
// in every graph the lowering writes, so it is built once with the kernel; only when one is
// computed at run time is it rebuilt per run (into the caller's `own` slots).
struct RequantOnce {
  std::shared_ptr<const Requant> rq;
  std::shared_ptr<const RepeatedParams> repeated;
  size_t reps = 1;

  // N, col_sums, relu and channels as Requant's; reps as RepeatedParams' (0: none).
  void build(const NodeDesc& node, const BuildContext& bc, size_t N, const int32_t* col_sums,
             bool relu, size_t channels, size_t reps_) {
    reps = reps_;
    const InputOf in = constant_inputs_of(node, bc, 2, 9);
    if (!in) return;
    auto built = std::make_shared<Requant>(node, in, N, col_sums, relu, channels);
    if (reps) repeated = std::make_shared<RepeatedParams>(*built, reps);
    rq = std::move(built);
  }
  // This run's requantization (built once, or now into `own`).
  const Requant& get(OpContext& c, std::optional<Requant>& own, size_t N,
                     const int32_t* col_sums, bool relu, size_t channels = 0) const {
    return rq ? *rq : own.emplace(c.node, inputs_of(c), N, col_sums, relu, channels);
  }
  const RepeatedParams& get_repeated(const Requant& r,
                                     std::optional<RepeatedParams>& own) const {
    return repeated ? *repeated : own.emplace(r, reps);
  }
};

// Rows of int8 products through the tile kernel (and the byte table) into a row-major
// output: dst is row i0's column j0, stride elements apart; p is shifted to column j0 here.
template <typename T>
void store_rows(const Int8Loops& k, const Requant& rq, Int8RowParams p, size_t j0,
                const int32_t* acc, size_t ld, size_t rows, size_t cols, T* dst, size_t stride) {
  p.mult += j0;
  p.offset += j0;
  if (p.acc_offset) p.acc_offset += j0;
  if constexpr (std::is_same_v<T, uint8_t>)
    k.tile_u8(rows, cols, acc, ld, p, dst, stride, rq.table());
  else
    k.tile_f32(rows, cols, acc, ld, p, dst, stride);
}

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

// Pixels of 4 bytes from C <= 4 channel rows (row stride ss) of W bytes, the missing
// channels `fill`: each pixel one little-endian word, a loop the compiler vectorizes (the 8 x 8
// transpose has no whole block in fewer than 8 rows).
void pixels_of_planes4(const uint8_t* src, size_t ss, size_t C, size_t W, uint8_t fill,
                       uint8_t* __restrict dst) {
  const uint8_t* __restrict r0 = src;
  const uint8_t* __restrict r1 = C > 1 ? src + ss : nullptr;
  const uint8_t* __restrict r2 = C > 2 ? src + 2 * ss : nullptr;
  const uint8_t* __restrict r3 = C > 3 ? src + 3 * ss : nullptr;
  const uint32_t f = fill;
  if (C == 3) {
    for (size_t w = 0; w < W; ++w) {
      const uint32_t v = uint32_t(r0[w]) | uint32_t(r1[w]) << 8 | uint32_t(r2[w]) << 16 | f << 24;
      std::memcpy(dst + 4 * w, &v, 4);
    }
    return;
  }
  for (size_t w = 0; w < W; ++w) {
    const uint32_t v = uint32_t(r0[w]) | uint32_t(r1 ? r1[w] : f) << 8 |
                       uint32_t(r2 ? r2[w] : f) << 16 | uint32_t(r3 ? r3[w] : f) << 24;
    std::memcpy(dst + 4 * w, &v, 4);
  }
}

// Tile rows are output pixels i0.. (image i / P, pixel i % P), columns channels j0..; NCHW
// holds each channel's pixels contiguously, so runs of rows inside one image copy as runs.
template <typename T>
void scatter_nchw(const Int8Loops& k, const T* tile, size_t ld, size_t i0, size_t rows,
                  size_t j0, size_t cols, size_t P, size_t channels, T* y) {
  for (size_t r = 0; r < rows;) {
    const size_t i = i0 + r, n = i / P, p = i % P;
    const size_t run = std::min(rows - r, P - p);
    T* dst = y + (n * channels + j0) * P + p;
    if constexpr (std::is_same_v<T, uint8_t>) {
      k.transpose_u8(tile + r * ld, ld, run, cols, dst, P);
    } else {
      for (size_t j = 0; j < cols; ++j) {
        const T* src = tile + r * ld + j;
        for (size_t t = 0; t < run; ++t) dst[j * P + t] = src[t * ld];
      }
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
    requant_.build(node, bc, packed_->N, packed_->col_sums.data(), relu_, 0, 0);
  }

  void run(OpContext& c) const override {
    const Tensor& a = c.in(0);
    const PackedInt8B& w = *packed_;
    if (a.dtype != DType::u8) c.fail("A must be uint8, got " + std::string(dtype_name(a.dtype)));
    if (a.rank() < 1 || static_cast<size_t>(a.shape.back()) != w.K)
      c.fail("A " + shape_str(a.shape) + " does not end in the weights' K = " +
             std::to_string(w.K));
    std::optional<Requant> own;
    const Requant& rq = requant_.get(c, own, w.N, w.col_sums.data(), relu_);
    const size_t M = a.numel() / w.K, N = w.N;
    Shape oshape(a.shape.begin(), a.shape.end() - 1);
    oshape.push_back(static_cast<int64_t>(N));
    Tensor& y = c.output(0, rq.to_u8 ? DType::u8 : DType::f32, oshape);
    Int8GemmIO io;
    io.fill = int8_rows_of(a.ptr<uint8_t>(), w.K, w.K, w.Kq);
    const Int8Loops& loops = int8_loops();
    const Int8RowParams rp = rq.params();
    io.epilogue = [&](size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                      size_t ld) {
      if (rq.to_u8)
        store_rows(loops, rq, rp, j0, acc, ld, rows, cols, y.ptr<uint8_t>() + i0 * N + j0, N);
      else
        store_rows(loops, rq, rp, j0, acc, ld, rows, cols, y.ptr<float>() + i0 * N + j0, N);
    };
    gemm_u8s8_fused(M, w, io, c.pool);
  }

 private:
  bool relu_;
  std::shared_ptr<PackedInt8B> packed_;
  RequantOnce requant_;
};

// A u8 image's batch, channels, height and width, read in the layout `nhwc` names.
struct U8Image {
  int64_t n, c, h, w;
};

U8Image u8_image(const Tensor& x, bool nhwc, OpContext& c) {
  if (x.dtype != DType::u8 || x.rank() != 4)
    c.fail("X must be uint8 of rank 4, got " + std::string(dtype_name(x.dtype)) + " " +
           shape_str(x.shape));
  const Shape& s = x.shape;
  return nhwc ? U8Image{s[0], s[3], s[1], s[2]} : U8Image{s[0], s[1], s[2], s[3]};
}

// 2-D convolution, one group: X [N, C, H, W] (u8) * W [K, C, KH, KW] (s8) -> Y [N, K, OH, OW].
// Depthwise (group == C == K, W [C, 1, KH, KW]) skips the GEMM: each output pixel sums its
// KH * KW input pixels channel-vector-wise (Int8Loops::dw_u8s8) from the same padded copy.
// The GEMM has one row per output pixel and reads it in place from a zero-point-padded NHWC
// copy of X: each row is KH segments of KW * Cp contiguous bytes (KH * KW segments of Cp
// bytes when the width is dilated), Cp being C rounded up so that a segment is whole k quads
// (the extra channels have zero weights). `kiln_layout_in` / `kiln_layout_out` = "NHWC" say
// the lowering hands a u8 value from one QConv to the next in NHWC (shape [N, H, W, C]), so
// no transposition happens between them; otherwise the epilogue writes NCHW.
class QConvKernel final : public Kernel {
 public:
  QConvKernel(const NodeDesc& node, const BuildContext& bc)
      : attrs_(read_attrs(node, false)), relu_(relu_of(node)),
        nhwc_in_(layout_of(node, "kiln_layout_in")), nhwc_out_(layout_of(node, "kiln_layout_out")) {
    const Tensor* w = bc.constant(node, 1);
    check_constant_weights(node, w, 4);
    const size_t K = w->shape[0], C = w->shape[1], KH = w->shape[2], KW = w->shape[3];
    if (attrs_.group != 1) {
      if (C != 1 || K != static_cast<size_t>(attrs_.group))
        node.fail("grouped int8 convolution is depthwise only (group == channels, one filter "
                  "each): group " + std::to_string(attrs_.group) + ", W " +
                  shape_str(w->shape));
      // taps widened to int16, tap-major: dw_w_[t * K + k]
      const int8_t* pw = w->ptr<int8_t>();
      dw_w_.resize(KH * KW * K);
      dw_sums_.assign(K, 0);
      for (size_t k = 0; k < K; ++k)
        for (size_t t = 0; t < KH * KW; ++t) {
          dw_w_[t * K + k] = pw[k * KH * KW + t];
          dw_sums_[k] += pw[k * KH * KW + t];
        }
      cp_ = K;
      requant_.build(node, bc, K, dw_sums_.data(), relu_, 0, repeats(K));
      // the taps in the order the ISA's kernel reads them, once (stride 1 reads them "flat")
      dw_flat_ = attrs_.strides.size() < 2 || attrs_.strides[1] == 1;
      dw_loops_ = &int8_loops();
      dw_laid_ = dw_loops_->dw_layout(K, KH * KW, dw_flat_, dw_w_.data());
      return;
    }
    dilated_w_ = attrs_.dilations.size() == 2 && attrs_.dilations[1] != 1;
    const size_t segment = dilated_w_ ? C : KW * C;  // contiguous input bytes per segment
    cp_ = segment % 4 == 0 ? C : (C + 3) / 4 * 4;
    const size_t Cp = cp_;
    // GEMM B [(kh, kw, c), k]: the im2col row order of an NHWC input
    std::vector<int8_t> b(KH * KW * Cp * K, 0);
    const int8_t* pw = w->ptr<int8_t>();
    for (size_t k = 0; k < K; ++k)
      for (size_t ch = 0; ch < C; ++ch)
        for (size_t kh = 0; kh < KH; ++kh)
          for (size_t kw = 0; kw < KW; ++kw)
            b[((kh * KW + kw) * Cp + ch) * K + k] = pw[((k * C + ch) * KH + kh) * KW + kw];
    packed_ = std::make_shared<PackedInt8B>(pack_int8_b(b.data(), KH * KW * Cp, K, K));
#if KILN_HAS_X86
    if (amx_int8_ready() && packed_->Kq >= kAmxConvMinK)
      amx_packed_ = std::make_shared<PackedInt8B>(
          pack_int8_b_segments(b.data(), KH * (dilated_w_ ? KW : 1), dilated_w_ ? Cp : KW * Cp,
                               K, K));
#endif
    requant_.build(node, bc, K, packed_->col_sums.data(), relu_, 0, repeats(K));
  }

  void run(OpContext& c) const override {
    const Tensor& xin = c.in(0);
    const Tensor& w = c.in(1);
    if (xin.dtype != DType::u8)
      c.fail("X must be uint8, got " + std::string(dtype_name(xin.dtype)));
    if (xin.rank() != 4)
      c.fail("int8 convolution is 2-D: X must have rank 4, got " + shape_str(xin.shape));
    Tensor x = xin;  // the geometry reads NCHW dims
    if (nhwc_in_) x.shape = {xin.shape[0], xin.shape[3], xin.shape[1], xin.shape[2]};
    const Geom g = conv_geom(attrs_, x, w, c);
    std::optional<Requant> own;
    const Requant& rq =
        packed_ ? requant_.get(c, own, packed_->N, packed_->col_sums.data(), relu_)
                : requant_.get(c, own, dw_sums_.size(), dw_sums_.data(), relu_);
    if (rq.N() != g.M) c.fail("the weights have " + std::to_string(rq.N()) + " filters, the "
                              "geometry " + std::to_string(g.M));
    const size_t C = g.C, H = g.in[0], W = g.in[1], KH = g.k[0], KW = g.k[1];
    const size_t OH = g.out[0], OW = g.out[1], P = OH * OW, Kout = g.M;
    const int64_t n_ = x.shape[0], k_ = static_cast<int64_t>(Kout),
                  oh_ = static_cast<int64_t>(OH), ow_ = static_cast<int64_t>(OW);
    Tensor& y = c.output(0, rq.to_u8 ? DType::u8 : DType::f32,
                         nhwc_out_ ? Shape{n_, oh_, ow_, k_} : Shape{n_, k_, oh_, ow_});
    if (g.N * P == 0) return;
    const uint8_t pad =
        static_cast<uint8_t>(scalar_u8(optional_input(c, 3), "a_zero_point", c.node));

    const size_t Cp = cp_, pt = g.pb[0], pl = g.pb[1];
    const size_t Hp = H + pt + g.pe[0], Wp = W + pl + g.pe[1];

    // X as NHWC with Cp channels and its padding: used as given when it already is, else
    // copied here. Kept by the calling thread across runs: a fresh megabyte per run costs
    // page faults, which the kernel serializes across threads.
    const Int8Loops& loops = int8_loops();
    thread_local std::vector<uint8_t> copied;
    const uint8_t* nhwc = xin.ptr<uint8_t>();
    const uint8_t* nhwc_end = nhwc + xin.numel();
    const bool as_given = Hp == H && Wp == W && Cp == C && (nhwc_in_ || C == 1);
    // a depthwise layer reads NHWC bytes in place and pads its border pixels itself
    const bool dw_in_place = !packed_ && (nhwc_in_ || C == 1);
    const bool amx = amx_packed_ && amx_int8_active();
    if (!as_given && !dw_in_place) {
      const size_t row = Wp * Cp;
      // AMX loads whole 16-row tiles: room for the rows past the last pixel, so they are
      // not copied again
      const size_t slack = amx ? (16 * g.stride[1] + KW) * Cp + 64 : 0;
      if (copied.size() < g.N * Hp * row + slack) copied.resize(g.N * Hp * row + slack);
      nhwc_end = copied.data() + copied.size();
      uint8_t* buf = copied.data();  // a lambda naming `copied` on a worker gets the worker's
      const uint8_t* px = xin.ptr<uint8_t>();
      parallel(c.pool, g.N * Hp, 4, [&](size_t b, size_t e) {
        for (size_t nh = b; nh < e; ++nh) {
          const size_t n = nh / Hp, hp = nh % Hp;
          uint8_t* dst = buf + nh * row;
          // the zero point everywhere first: the padding, and the extra channels (their
          // weights are zero, any value would do)
          std::memset(dst, pad, row);
          if (hp < pt || hp >= pt + H) continue;
          const size_t h = hp - pt;
          dst += pl * Cp;
          if (nhwc_in_ && Cp == C) {
            std::memcpy(dst, px + (n * H + h) * W * C, W * C);
          } else if (nhwc_in_) {
            for (size_t wi = 0; wi < W; ++wi)
              std::memcpy(dst + wi * Cp, px + ((n * H + h) * W + wi) * C, C);
          } else if (Cp == 4) {  // an image's few channels: one 32-bit word per pixel
            pixels_of_planes4(px + (n * C * H + h) * W, H * W, C, W, pad, dst);
          } else {  // channel rows of W bytes -> pixels of Cp bytes
            loops.transpose_u8(px + (n * C * H + h) * W, H * W, C, W, dst, Cp);
          }
        }
      });
      nhwc = buf;
    }

    const Int8RowParams rp = rq.params();
    // A block's products of every channel are one contiguous run when their rows are Kout
    // apart, and so are its NHWC pixels in Y: the per-channel parameters repeated over `reps`
    // pixels let one epilogue call cover up to that many (a pixel's few dozen channels are
    // less work than a call, and leave a vector tail each).
    const size_t reps = requant_.reps;
    std::optional<RepeatedParams> own_run;
    const Int8RowParams& run_p = requant_.get_repeated(rq, own_run).params;
    // Whole rows of products (rows x Kout, contiguous) to dst in the same layout.
    auto store_run = [&](const int32_t* acc, size_t rows, auto* dst) {
      for (size_t r = 0; r < rows; r += reps) {
        const size_t n = std::min(reps, rows - r) * Kout;
        store_rows(loops, rq, run_p, 0, acc + r * Kout, 0, 1, n, dst + r * Kout, 0);
      }
    };
    // Products of output pixels i0.. (rows) and channels j0.. (cols) to Y in its layout.
    auto epilogue = [&](size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                        size_t ld) {
      const bool whole = j0 == 0 && cols == Kout && ld == Kout;
      if (nhwc_out_ && whole) {
        if (rq.to_u8) store_run(acc, rows, y.ptr<uint8_t>() + i0 * Kout);
        else store_run(acc, rows, y.ptr<float>() + i0 * Kout);
        return;
      }
      if (whole) {  // NCHW: the run into a tile, then scattered
        if (rq.to_u8) {
          thread_local std::vector<uint8_t> tile;
          if (tile.size() < rows * ld) tile.resize(rows * ld);
          store_run(acc, rows, tile.data());
          scatter_nchw(loops, tile.data(), ld, i0, rows, j0, cols, P, Kout, y.ptr<uint8_t>());
        } else {
          thread_local std::vector<float> tile;
          if (tile.size() < rows * ld) tile.resize(rows * ld);
          store_run(acc, rows, tile.data());
          scatter_nchw(loops, tile.data(), ld, i0, rows, j0, cols, P, Kout, y.ptr<float>());
        }
        return;
      }
      // NHWC: rows are pixels, the GEMM's own layout; NCHW: through a tile, then scattered
      if (nhwc_out_ && rq.to_u8) {
        uint8_t* dst = y.ptr<uint8_t>() + i0 * Kout + j0;
        store_rows(loops, rq, rp, j0, acc, ld, rows, cols, dst, Kout);
      } else if (nhwc_out_) {
        float* dst = y.ptr<float>() + i0 * Kout + j0;
        store_rows(loops, rq, rp, j0, acc, ld, rows, cols, dst, Kout);
      } else if (rq.to_u8) {
        thread_local std::vector<uint8_t> tile;
        if (tile.size() < rows * ld) tile.resize(rows * ld);
        store_rows(loops, rq, rp, j0, acc, ld, rows, cols, tile.data(), ld);
        scatter_nchw(loops, tile.data(), ld, i0, rows, j0, cols, P, Kout, y.ptr<uint8_t>());
      } else {
        thread_local std::vector<float> tile;
        if (tile.size() < rows * ld) tile.resize(rows * ld);
        store_rows(loops, rq, rp, j0, acc, ld, rows, cols, tile.data(), ld);
        scatter_nchw(loops, tile.data(), ld, i0, rows, j0, cols, P, Kout, y.ptr<float>());
      }
    };
    const size_t sh = g.stride[0], sw = g.stride[1], dh = g.dil[0], dw = g.dil[1];

    if (!packed_) {  // depthwise: one output row per task, all channels of a pixel at once
      const size_t taps = KH * KW;
      const int16_t* taps_w = dw_w_.data();
      // the layout made when the layer was built, where it fits this run's ISA and stride
      const int8_t* laid = &loops == dw_loops_ && !dw_laid_.empty() && (sw == 1) == dw_flat_
                               ? dw_laid_.data() : nullptr;
      if (dw_in_place) {
        const DwGeometry dg{H, W, OW, C, KH, KW, sh, sw, dh, dw, pt, pl};
        parallel(c.pool, g.N * OH, 1, [&](size_t b, size_t e) {
          thread_local std::vector<int32_t> acc;
          if (acc.size() < OW * C) acc.resize(OW * C);
          for (size_t t = b; t < e; ++t) {
            const size_t n = t / OH, oh = t % OH;
            depthwise_row(loops, dg, xin.ptr<uint8_t>() + n * H * W * C, oh, pad, taps_w, laid,
                          acc.data());
            epilogue(n * P + oh * OW, OW, 0, Kout, acc.data(), Kout);
          }
        });
        return;
      }
      parallel(c.pool, g.N * OH, 1, [&](size_t b, size_t e) {
        std::vector<int32_t> acc(OW * Kout);
        std::vector<const uint8_t*> ptrs(taps);
        for (size_t t = b; t < e; ++t) {
          const size_t n = t / OH, oh = t % OH;
          const uint8_t* corner = nhwc + (n * Hp + oh * sh) * Wp * Cp;
          for (size_t kh = 0; kh < KH; ++kh)
            for (size_t kw = 0; kw < KW; ++kw)
              ptrs[kh * KW + kw] = corner + (kh * dh * Wp + kw * dw) * Cp;
          loops.dw_u8s8(Kout, taps, OW, sw * Cp, ptrs.data(), taps_w, laid, acc.data());
          epilogue(n * P + oh * OW, OW, 0, Kout, acc.data(), Kout);
        }
      });
      return;
    }

    const size_t per_row = dilated_w_ ? KW : 1;  // segments per kernel row
    if (amx) {
      // Pixels of one output row are rows sw * Cp bytes apart in every segment; the next
      // output row continues that stride when sh * Wp == OW * sw (a 1 x 1 unpadded layer)
      const bool rows_continue = sh * Wp == OW * sw;
      Int8StridedIO io;
      io.segments = KH * per_row;
      io.seg_len = dilated_w_ ? Cp : KW * Cp;
      io.begin = nhwc;
      io.end = nhwc_end;
      io.run = [=](size_t i, const uint8_t** bases, size_t* lda) -> size_t {
        const size_t n = i / P, oh = i % P / OW, ow = i % OW;
        const uint8_t* corner = nhwc + ((n * Hp + oh * sh) * Wp + ow * sw) * Cp;
        for (size_t kh = 0; kh < KH; ++kh)
          for (size_t kw = 0; kw < per_row; ++kw)
            *bases++ = corner + (kh * dh * Wp + kw * dw) * Cp;
        *lda = sw * Cp;
        return rows_continue ? P - i % P : OW - ow;
      };
      io.epilogue = epilogue;
      gemm_u8s8_amx_strided(g.N * P, *amx_packed_, io, c.pool);
      return;
    }
    const PackedInt8B& pw = *packed_;
    Int8GemmIO io;
    const size_t nseg = KH * per_row;
    io.segments = nseg;
    // Each segment's offset from a pixel's corner, the same for every pixel of this run.
    std::vector<size_t> seg_at(nseg);
    for (size_t kh = 0; kh < KH; ++kh)
      for (size_t kw = 0; kw < per_row; ++kw)
        seg_at[kh * per_row + kw] = (kh * dh * Wp + kw * dw) * Cp;
    io.segment_rows = [=](size_t i0, size_t rows, const uint8_t** ptrs) {
      // the block's first pixel divided out once, then stepped: a division per row costs
      // as much as a small pointwise layer's products
      size_t n = i0 / P, oh = i0 % P / OW, ow = i0 % OW;
      const size_t step = sw * Cp;
      const uint8_t* corner = nhwc + ((n * Hp + oh * sh) * Wp + ow * sw) * Cp;
      for (size_t r = 0; r < rows; ++r) {
        for (size_t s = 0; s < nseg; ++s) *ptrs++ = corner + seg_at[s];
        corner += step;
        if (++ow == OW) {
          ow = 0;
          if (++oh == OH) oh = 0, ++n;
          corner = nhwc + ((n * Hp + oh * sh) * Wp) * Cp;
        }
      }
    };
    io.epilogue = epilogue;
    gemm_u8s8_fused(g.N * P, pw, io, c.pool);
  }

 private:
  ConvAttrs attrs_;
  bool relu_;
  bool nhwc_in_, nhwc_out_;
  bool dilated_w_ = false;  // a dilated width splits kernel rows into KW segments
  size_t cp_ = 0;  // channels as the GEMM reads them (C rounded up to whole k quads)
  std::shared_ptr<PackedInt8B> packed_;  // null for a depthwise convolution
  // The same weights with each segment's K padded to 64 for AMX reading the input in place;
  // null where AMX cannot run or K is small
  std::shared_ptr<PackedInt8B> amx_packed_;
  std::vector<int16_t> dw_w_;            // depthwise taps, tap-major (see the constructor)
  std::vector<int32_t> dw_sums_;         // depthwise: each channel's tap sum
  std::vector<int8_t> dw_laid_;          // depthwise: dw_w_ as dw_loops_->dw_layout wrote it
  const Int8Loops* dw_loops_ = nullptr;
  bool dw_flat_ = true;                  // dw_laid_ is for stride 1
  RequantOnce requant_;

  struct DwGeometry {
    size_t H, W, OW, C, KH, KW, sh, sw, dh, dw, pt, pl;
  };

  // The depthwise products of output row oh of one NHWC image x (H x W x C bytes, unpadded)
  // into acc (OW x C). The pixels whose taps all lie inside the row read x in place; the
  // border pixels read a few columns copied with the zero point around them, and rows above
  // or below the image read a row of the zero point.
  static void depthwise_row(const Int8Loops& loops, const DwGeometry& g, const uint8_t* x,
                            size_t oh, uint8_t pad, const int16_t* w, const int8_t* laid,
                            int32_t* acc) {
    const size_t C = g.C, KH = g.KH, KW = g.KW, taps = KH * KW, step = g.sw * C;
    const int64_t W = static_cast<int64_t>(g.W), pl = static_cast<int64_t>(g.pl);
    const int64_t sw = static_cast<int64_t>(g.sw), span = static_cast<int64_t>((KW - 1) * g.dw);
    thread_local std::vector<uint8_t> pad_row, border;
    thread_local std::vector<const uint8_t*> rows, ptrs;
    rows.resize(KH);
    ptrs.resize(taps);
    bool outside = false;
    for (size_t kh = 0; kh < KH; ++kh) {
      const int64_t ih = static_cast<int64_t>(oh * g.sh + kh * g.dh) - static_cast<int64_t>(g.pt);
      const bool in = ih >= 0 && ih < static_cast<int64_t>(g.H);
      rows[kh] = in ? x + static_cast<size_t>(ih) * g.W * C : nullptr;
      outside |= !in;
    }
    if (outside) {
      if (pad_row.size() < g.W * C) pad_row.resize(g.W * C);
      std::memset(pad_row.data(), pad, g.W * C);
      for (size_t kh = 0; kh < KH; ++kh)
        if (!rows[kh]) rows[kh] = pad_row.data();
    }
    // output pixels [lo, hi) read input columns ow * sw - pl + kw * dw inside [0, W)
    const int64_t OW = static_cast<int64_t>(g.OW);
    const int64_t lo = std::min<int64_t>((pl + sw - 1) / sw, OW);
    const int64_t hi = std::max<int64_t>(W - 1 + pl - span >= 0 ? (W - 1 + pl - span) / sw + 1 : 0,
                                         lo);
    const int64_t inner_hi = std::min(hi, OW);
    if (inner_hi > lo) {
      const size_t first = static_cast<size_t>(lo * sw - pl) * C;
      for (size_t kh = 0; kh < KH; ++kh)
        for (size_t kw = 0; kw < KW; ++kw)
          ptrs[kh * KW + kw] = rows[kh] + first + kw * g.dw * C;
      loops.dw_u8s8(C, taps, static_cast<size_t>(inner_hi - lo), step, ptrs.data(), w, laid,
                    acc + static_cast<size_t>(lo) * C);
    }
    // the border pixels [o0, o1): their input columns c0 .. c1 copied, zero point outside
    const auto edge = [&](int64_t o0, int64_t o1) {
      if (o1 <= o0) return;
      const int64_t c0 = o0 * sw - pl, width = (o1 - 1 - o0) * sw + span + 1;
      if (border.size() < KH * width * C) border.resize(KH * width * C);
      for (size_t kh = 0; kh < KH; ++kh) {
        uint8_t* dst = border.data() + kh * width * C;
        for (int64_t i = 0; i < width; ++i) {
          const int64_t iw = c0 + i;
          if (iw >= 0 && iw < W && rows[kh] != pad_row.data())
            std::memcpy(dst + i * C, rows[kh] + iw * C, C);
          else
            std::memset(dst + i * C, pad, C);
        }
        for (size_t kw = 0; kw < KW; ++kw) ptrs[kh * KW + kw] = dst + kw * g.dw * C;
      }
      loops.dw_u8s8(C, taps, static_cast<size_t>(o1 - o0), step, ptrs.data(), w, laid,
                    acc + static_cast<size_t>(o0) * C);
    };
    edge(0, lo);
    edge(std::max(lo, inner_hi), OW);
  }

  // Pixels per epilogue call: a few thousand values (a GEMM block of 48 or 64 pixels, or a
  // depthwise row), the repeated parameters staying in L1.
  static size_t repeats(size_t channels) {
    return std::min<size_t>(128, std::max<size_t>(1, 4096 / channels));
  }
};

// kiln::QConvTranspose: a quantized ConvTranspose whose kernel equals its stride (no pads,
// dilations, output padding or groups), so each output pixel has exactly one tap: one GEMM
// of the input pixels (rows of C bytes) by W as [C, (ky, kx, m)], each product going to
// output pixel (h * KH + ky, w * KW + kx), channel m. Inputs and epilogue as QConv's, w_scale
// and bias per output channel m; layouts as QConv's. In NHWC (or with one output channel) a
// pixel's products of one kernel row are one run of KW * M values in Y.
class QConvTransposeKernel final : public Kernel {
 public:
  QConvTransposeKernel(const NodeDesc& node, const BuildContext& bc)
      : relu_(relu_of(node)), nhwc_in_(layout_of(node, "kiln_layout_in")),
        nhwc_out_(layout_of(node, "kiln_layout_out")) {
    const Tensor* w = bc.constant(node, 1);
    check_constant_weights(node, w, 4);
    C_ = w->shape[0];
    M_ = w->shape[1];
    KH_ = w->shape[2];
    KW_ = w->shape[3];
    const ConvAttrs a = read_attrs(node, true);
    const auto all = [](const std::vector<int64_t>& v, int64_t x) {
      return std::all_of(v.begin(), v.end(), [x](int64_t e) { return e == x; });
    };
    const std::vector<int64_t> kernel = {static_cast<int64_t>(KH_), static_cast<int64_t>(KW_)};
    // (auto_pad of any kind pads k - stride = 0 here)
    if (a.group != 1 || a.strides != kernel || !all(a.pads, 0) || !all(a.dilations, 1) ||
        !all(a.output_padding, 0) || !a.output_shape.empty() ||
        (!a.kernel_shape.empty() && a.kernel_shape != kernel))
      node.fail("int8 ConvTranspose runs a 2-D kernel equal to its strides, one group, no "
                "pads, dilations, output padding or output shape");
    const int8_t* pw = w->ptr<int8_t>();
    const size_t N = KH_ * KW_ * M_, taps = KH_ * KW_;
    std::vector<int8_t> b(C_ * N);
    for (size_t c = 0; c < C_; ++c)
      for (size_t m = 0; m < M_; ++m)
        for (size_t t = 0; t < taps; ++t) b[c * N + t * M_ + m] = pw[(c * M_ + m) * taps + t];
    packed_ = std::make_shared<PackedInt8B>(pack_int8_b(b.data(), C_, N, N));
    requant_.build(node, bc, N, packed_->col_sums.data(), relu_, M_, kReps);
#if KILN_HAS_X86
    if (amx_int8_ready() && packed_->Kq >= kAmxConvMinK)
      amx_packed_ = std::make_shared<PackedInt8B>(pack_int8_b_segments(b.data(), 1, C_, N, N));
#endif
  }

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    const U8Image im = u8_image(x, nhwc_in_, c);
    const size_t Nb = im.n, C = im.c, H = im.h, W = im.w;
    if (C != C_)
      c.fail("X has " + std::to_string(C) + " channels, the weights " + std::to_string(C_));
    const PackedInt8B& pw = *packed_;
    const size_t M = M_, KH = KH_, KW = KW_, N = pw.N, Kq = pw.Kq;
    std::optional<Requant> own;
    const Requant& rq = requant_.get(c, own, N, pw.col_sums.data(), relu_, M);
    const size_t OH = H * KH, OW = W * KW, P = H * W;
    const int64_t n_ = Nb, m_ = M, oh_ = OH, ow_ = OW;
    Tensor& y = c.output(0, rq.to_u8 ? DType::u8 : DType::f32,
                         nhwc_out_ ? Shape{n_, oh_, ow_, m_} : Shape{n_, m_, oh_, ow_});
    if (Nb * P == 0) return;
    // The input as rows of pixels: in place when NHWC already has whole k quads, else copied
    // (an NCHW image transposed; channels zero padded to Kq, whose weights are zero).
    const uint8_t* rows = x.ptr<uint8_t>();
    const Int8Loops& loops = int8_loops();
    thread_local std::vector<uint8_t> copied;
    if (!nhwc_in_ || Kq != C) {
      if (copied.size() < Nb * P * Kq) copied.resize(Nb * P * Kq);
      uint8_t* buf = copied.data();  // a lambda naming `copied` on a worker gets the worker's
      const uint8_t* px = x.ptr<uint8_t>();
      parallel(c.pool, Nb * H, 4, [&](size_t b, size_t e) {
        for (size_t nh = b; nh < e; ++nh) {
          const size_t n = nh / H, h = nh % H;
          uint8_t* dst = buf + nh * W * Kq;
          if (Kq != C) std::memset(dst, 0, W * Kq);
          if (nhwc_in_) {
            for (size_t wi = 0; wi < W; ++wi)
              std::memcpy(dst + wi * Kq, px + (nh * W + wi) * C, C);
          } else {
            loops.transpose_u8(px + (n * C * H + h) * W, H * W, C, W, dst, Kq);
          }
        }
      });
      rows = buf;
    }
    const Int8RowParams rp = rq.params();
    // The per-column parameters repeated over a block's rows: a whole block (ld == N) is one
    // epilogue call, not one per pixel of a few values (QConv's runs, kInt8Mb / AMX blocks).
    constexpr size_t reps = kReps;
    std::optional<RepeatedParams> own_run;
    const Int8RowParams& run_p = requant_.get_repeated(rq, own_run).params;
    auto products = [&](const int32_t* acc, size_t ld, size_t nrows, size_t j0, size_t cols,
                        auto* tile) {
      if (j0 != 0 || cols != N || ld != N)
        return store_rows(loops, rq, rp, j0, acc, ld, nrows, cols, tile, ld);
      for (size_t r = 0; r < nrows; r += reps)
        store_rows(loops, rq, run_p, 0, acc + r * N, 0, 1, std::min(reps, nrows - r) * N,
                   tile + r * N, 0);
    };
    // Products of input pixels i0.. to Y: with channels innermost (NHWC, or one channel) a
    // kernel row's KW * M values of pixel (n, h, w) are one run from output row h * KH + ky,
    // column w * KW; otherwise each value goes alone.
    const bool runs = nhwc_out_ || M == 1;
    auto place = [&](const auto* tile, size_t ld, size_t i0, size_t nrows, size_t j0,
                     size_t cols, auto* out) {
      // locals, not captures: a u8 store may alias any captured value and force reloads
      const size_t kh = KH, kw = KW, m_ = M, oh = OH, ow = OW, w_ = W, run = kw * m_;
      const bool whole = runs && j0 == 0 && cols == N;
      // the first pixel divided out once, then stepped
      size_t n = i0 / P, h = i0 % P / w_, w = i0 % w_;
      for (size_t r = 0; r < nrows; ++r) {
        const auto* src = tile + r * ld;
        if (whole) {  // a few values a run: a loop, not a call
          for (size_t ky = 0; ky < kh; ++ky) {
            auto* __restrict dst = out + ((n * oh + h * kh + ky) * ow + w * kw) * m_;
            const auto* __restrict from = src + ky * run;
            for (size_t q = 0; q < run; ++q) dst[q] = from[q];
          }
        } else {
          for (size_t jj = 0; jj < cols; ++jj) {
            const size_t j = j0 + jj, m = j % m_, t = j / m_;
            const size_t y_h = h * kh + t / kw, y_w = w * kw + t % kw;
            out[nhwc_out_ ? ((n * oh + y_h) * ow + y_w) * m_ + m
                          : ((n * m_ + m) * oh + y_h) * ow + y_w] = src[jj];
          }
        }
        if (++w == w_) {
          w = 0;
          if (++h == P / w_) h = 0, ++n;
        }
      }
    };
    auto epilogue = [&](size_t i0, size_t nrows, size_t j0, size_t cols, const int32_t* acc,
                        size_t ld) {
      if (rq.to_u8) {
        thread_local std::vector<uint8_t> tile;
        if (tile.size() < nrows * ld) tile.resize(nrows * ld);
        products(acc, ld, nrows, j0, cols, tile.data());
        place(tile.data(), ld, i0, nrows, j0, cols, y.ptr<uint8_t>());
      } else {
        thread_local std::vector<float> tile;
        if (tile.size() < nrows * ld) tile.resize(nrows * ld);
        products(acc, ld, nrows, j0, cols, tile.data());
        place(tile.data(), ld, i0, nrows, j0, cols, y.ptr<float>());
      }
    };
    const size_t M_rows = Nb * P;
    if (amx_packed_ && amx_int8_active()) {  // every row Kq bytes after the one before
      Int8StridedIO io;
      io.seg_len = C;
      io.begin = rows;
      io.end = rows + M_rows * Kq;
      io.run = [=](size_t i, const uint8_t** bases, size_t* lda) -> size_t {
        bases[0] = rows + i * Kq;
        *lda = Kq;
        return M_rows - i;
      };
      io.epilogue = epilogue;
      gemm_u8s8_amx_strided(M_rows, *amx_packed_, io, c.pool);
      return;
    }
    Int8GemmIO io;
    io.fill = int8_rows_of(rows, Kq, Kq, Kq);
    io.epilogue = epilogue;
    gemm_u8s8_fused(M_rows, pw, io, c.pool);
  }

 private:
  bool relu_, nhwc_in_, nhwc_out_;
  size_t C_ = 0, M_ = 0, KH_ = 0, KW_ = 0;
  std::shared_ptr<PackedInt8B> packed_;      // B [C, (ky, kx, m)]
  std::shared_ptr<PackedInt8B> amx_packed_;  // the same, K padded to 64 (null: no AMX)
  RequantOnce requant_;
  static constexpr size_t kReps = 64;  // pixels per epilogue call
};

// kiln::QMaxPool: DequantizeLinear -> MaxPool -> QuantizeLinear on u8 values. Dequantizing
// is increasing (scale > 0), so the max of the dequantized window is the dequantized max: the
// pool runs on the bytes, then one 256-entry table requantizes. Inputs: 0 X (u8), 1 x_scale,
// 2 x_zero, 3 y_scale, 4 y_zero. 2-D, no dilation, floor mode; windows padded with 0, the
// smallest byte, which never wins over a real element. Layouts as in QConv.
class QMaxPoolKernel final : public Kernel {
 public:
  explicit QMaxPoolKernel(const NodeDesc& node)
      : nhwc_in_(layout_of(node, "kiln_layout_in")),
        nhwc_out_(layout_of(node, "kiln_layout_out")),
        kernel_(node.attr_ints("kernel_shape")),
        strides_(node.attr_ints("strides", {1, 1})),
        pads_(node.attr_ints("pads", {0, 0, 0, 0})) {
    if (nhwc_out_ && !nhwc_in_) node.fail("an NHWC result needs an NHWC input");
    if (kernel_.size() != 2 || strides_.size() != 2 || pads_.size() != 4)
      node.fail("int8 max pooling is 2-D: kernel_shape, strides and pads must have 2, 2 and 4 "
                "values");
    for (int64_t v : kernel_) if (v < 1) node.fail("kernel_shape must be >= 1");
    for (int64_t v : strides_) if (v < 1) node.fail("strides must be >= 1");
    for (size_t d = 0; d < 2; ++d)
      if (pads_[d] < 0 || pads_[d + 2] < 0 || pads_[d] >= kernel_[d] || pads_[d + 2] >= kernel_[d])
        node.fail("pads must be >= 0 and smaller than the kernel");
  }

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    const U8Image im = u8_image(x, nhwc_in_, c);
    const size_t N = im.n, C = im.c;
    const int64_t H = im.h, W = im.w;
    const int64_t OH = (H + pads_[0] + pads_[2] - kernel_[0]) / strides_[0] + 1;
    const int64_t OW = (W + pads_[1] + pads_[3] - kernel_[1]) / strides_[1] + 1;
    if (H + pads_[0] + pads_[2] < kernel_[0] || W + pads_[1] + pads_[3] < kernel_[1])
      c.fail("the kernel is larger than the padded input " + shape_str(x.shape));
    const float xs = scalar_f32(c.in(1), "x_scale", c.node);
    const float ys = scalar_f32(c.in(3), "y_scale", c.node);
    const int32_t xz = scalar_u8(optional_input(c, 2), "x_zero_point", c.node);
    const float yz = static_cast<float>(scalar_u8(optional_input(c, 4), "y_zero_point", c.node));
    if (!(ys > 0.0f) || !std::isfinite(ys)) c.fail("y_scale must be positive and finite");
    // pooling the bytes is right only when dequantizing is increasing
    if (!(xs > 0.0f) || !std::isfinite(xs)) c.fail("x_scale must be positive and finite");
    float deq[256];
    uint8_t table[256];
    for (int v = 0; v < 256; ++v) deq[v] = static_cast<float>(v - xz) * xs;
    int8_loops().quantize_u8(256, deq, ys, yz, table);
    const Shape oshape = nhwc_out_ ? Shape{x.shape[0], OH, OW, static_cast<int64_t>(C)}
                                   : Shape{x.shape[0], static_cast<int64_t>(C), OH, OW};
    Tensor& y = c.output(0, DType::u8, oshape);
    const uint8_t* px = x.ptr<uint8_t>();
    uint8_t* py = y.ptr<uint8_t>();
    const int64_t KH = kernel_[0], KW = kernel_[1], SH = strides_[0], SW = strides_[1];
    const int64_t PT = pads_[0], PL = pads_[1];
    if (!nhwc_in_ && !nhwc_out_) {  // plane by plane
      parallel(c.pool, N * C, 1, [&](size_t b, size_t e) {
        for (size_t t = b; t < e; ++t) {
          const uint8_t* plane = px + t * H * W;
          uint8_t* out = py + t * OH * OW;
          for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow) {
              uint8_t best = 0;
              for (int64_t ih = std::max<int64_t>(oh * SH - PT, 0);
                   ih < std::min<int64_t>(oh * SH - PT + KH, H); ++ih)
                for (int64_t iw = std::max<int64_t>(ow * SW - PL, 0);
                     iw < std::min<int64_t>(ow * SW - PL + KW, W); ++iw)
                  best = std::max(best, plane[ih * W + iw]);
              out[oh * OW + ow] = table[best];
            }
        }
      });
      return;
    }
    const PoolGeometry geo{H, W, OH, OW, C, KH, KW, SH, SW, PT, PL};
    parallel(c.pool, N * OH, 1, [&](size_t b, size_t e) {
      std::vector<uint8_t> best(C);
      for (size_t t = b; t < e; ++t) {
        const size_t n = t / OH;
        pool_nhwc_row(geo, px + n * H * W * C, static_cast<int64_t>(t % OH), table, best.data(),
                      py + n * OH * OW * C, nhwc_out_);
      }
    });
  }

 private:
  struct PoolGeometry {
    int64_t H, W, OH, OW;
    size_t C;
    int64_t KH, KW, SH, SW, PT, PL;
  };

  // One output row of an NHWC image: each window position is C contiguous bytes, maxed as
  // vectors. A free function with plain arguments, so no store can alias a bound and the
  // channel loops vectorize.
  static void pool_nhwc_row(const PoolGeometry g, const uint8_t* __restrict xn, int64_t oh,
                            const uint8_t* __restrict table, uint8_t* __restrict best,
                            uint8_t* __restrict yn, bool nhwc_out) {
    const size_t C = g.C;
    for (int64_t ow = 0; ow < g.OW; ++ow) {
      std::memset(best, 0, C);
      for (int64_t ih = std::max<int64_t>(oh * g.SH - g.PT, 0);
           ih < std::min<int64_t>(oh * g.SH - g.PT + g.KH, g.H); ++ih)
        for (int64_t iw = std::max<int64_t>(ow * g.SW - g.PL, 0);
             iw < std::min<int64_t>(ow * g.SW - g.PL + g.KW, g.W); ++iw) {
          const uint8_t* __restrict src = xn + (ih * g.W + iw) * C;
          for (size_t ch = 0; ch < C; ++ch) best[ch] = best[ch] > src[ch] ? best[ch] : src[ch];
        }
      if (nhwc_out) {
        uint8_t* __restrict dst = yn + (oh * g.OW + ow) * C;
        for (size_t ch = 0; ch < C; ++ch) dst[ch] = table[best[ch]];
      } else {  // NCHW: channel planes of OH x OW
        const size_t plane = static_cast<size_t>(g.OH * g.OW);
        uint8_t* dst = yn + oh * g.OW + ow;
        for (size_t ch = 0; ch < C; ++ch) dst[ch * plane] = table[best[ch]];
      }
    }
  }

  bool nhwc_in_, nhwc_out_;
  std::vector<int64_t> kernel_, strides_, pads_;
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
KILN_REGISTER_OP("kiln", "QConvTranspose", factory_of<QConvTransposeKernel>());
KILN_REGISTER_OP("kiln", "QMaxPool",
                 [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
                   return std::unique_ptr<Kernel>(new QMaxPoolKernel(node));
                 });

}  // namespace kiln::ops
