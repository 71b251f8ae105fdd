// int8 inference ops: QuantizeLinear, DequantizeLinear (per tensor or per axis; uint8 and
// int8 on the SIMD loops, the 16-, 4- and 2-bit integers and the float8 / float4 types on a
// scalar path),
// DynamicQuantizeLinear and MatMulInteger. MatMulInteger with a constant 2-D int8 B runs on
// the u8 x s8 GEMM (AVX-512 VNNI where the CPU has it), B packed once at plan build time; any
// other combination of types and shapes runs on plain loops with the same results.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/int8_gemm.h"
#include "narrow_float.h"
#include "ops/common.h"
#include "ops/conv_geom.h"
#include "ops/element.h"

namespace kiln::ops {
namespace {

bool is_int8(DType t) { return t == DType::u8 || t == DType::i8; }

int32_t int_at(const Tensor& t, size_t i) {
  switch (t.dtype) {
    case DType::u8: return t.ptr<uint8_t>()[i];
    case DType::i8: return t.ptr<int8_t>()[i];
    case DType::i32: return t.ptr<int32_t>()[i];
    default: return 0;
  }
}

// Per-tensor (scale of one value) or per-axis (scale of x.shape[axis] values) parameters:
// returns (outer, channels, inner) so that element (o, ch, i) uses parameter ch.
struct Layout {
  size_t outer = 1, channels = 1, inner = 1;
};

Layout param_layout(const Tensor& x, const Tensor& scale, const Tensor* zero, int64_t axis,
                    OpContext& c) {
  Layout l;
  if (scale.dtype != DType::f32) c.fail("the scale must be float32, got " +
                                        std::string(dtype_name(scale.dtype)));
  if (zero && zero->numel() != scale.numel())
    c.fail("zero point " + shape_str(zero->shape) + " and scale " + shape_str(scale.shape) +
           " must have the same number of values");
  if (scale.numel() == 1 && scale.rank() <= 1) {
    l.inner = x.numel();
    return l;
  }
  if (scale.rank() != 1) c.fail("the scale must be a scalar or 1-D, got " +
                                shape_str(scale.shape) + " (blocked quantization is not "
                                "supported)");
  const size_t ax = norm_axis(axis, x.rank(), c.node);
  if (static_cast<size_t>(x.shape[ax]) != scale.numel())
    c.fail("the scale has " + std::to_string(scale.numel()) + " values but axis " +
           std::to_string(ax) + " of " + shape_str(x.shape) + " has " +
           std::to_string(x.shape[ax]));
  for (size_t d = 0; d < x.rank(); ++d) {
    if (d < ax) l.outer *= x.shape[d];
    if (d > ax) l.inner *= x.shape[d];
  }
  l.channels = scale.numel();
  return l;
}

// The integer range of a quantized type (the float types have none).
bool int_range(DType t, int64_t& lo, int64_t& hi) {
  switch (t) {
    case DType::u8: lo = 0; hi = 255; return true;
    case DType::i8: lo = -128; hi = 127; return true;
    case DType::u16: lo = 0; hi = 65535; return true;
    case DType::i16: lo = -32768; hi = 32767; return true;
    case DType::u4: lo = 0; hi = 15; return true;
    case DType::i4: lo = -8; hi = 7; return true;
    case DType::u2: lo = 0; hi = 3; return true;
    case DType::i2: lo = -2; hi = 1; return true;
    default: return false;
  }
}

bool quantized_type(DType t) {
  int64_t lo, hi;
  return int_range(t, lo, hi) || (is_narrow_float(t) && t != DType::bf16 &&
                                   t != DType::f8e8m0);
}

// The axis of QuantizeLinear / DequantizeLinear; blocked quantization is refused.
int64_t quant_axis(const NodeDesc& node) {
  if (node.attr_i("block_size", 0) != 0) node.fail("blocked quantization is not supported");
  return node.attr_i("axis", 1);
}

// Calls fn(channel, first element, count) over runs of x that share one scale and zero point,
// split across the pool (a per-tensor x is cut into pieces so both cores get some).
template <typename Fn>
void for_each_run(OpContext& c, const Layout& l, Fn&& fn) {
  constexpr size_t kPiece = 1 << 14;
  const size_t pieces = (l.inner + kPiece - 1) / kPiece;
  if (l.inner == 0) return;
  parallel(c.pool, l.outer * l.channels * pieces, 1, [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) {
      const size_t oc = t / pieces, piece = t % pieces;
      const size_t first = oc * l.inner + piece * kPiece;
      fn(oc % l.channels, first, std::min(kPiece, l.inner - piece * kPiece));
    }
  });
}

// y = saturate(round_half_even(x / s) + z) for integer types; y = float8(x / s) (z is 0)
// for the float types, saturating unless `saturate` is 0.
void quantize_scalar(OpContext& c, const Tensor& x, const float* ps, const Tensor* zero,
                     const Layout& l, DType out, bool saturate, Tensor& y) {
  int64_t lo = 0, hi = 0;
  const bool integer = int_range(out, lo, hi);
  const float* px = x.ptr<float>();
  for_each_run(c, l, [&](size_t ch, size_t b, size_t n) {
    for (size_t i = b; i < b + n; ++i) {
      const double v = static_cast<double>(px[i]) / ps[ch];
      if (integer) {
        const int64_t z = zero ? load_int(*zero, ch) : 0;
        const double r = std::nearbyint(v) + static_cast<double>(z);
        const int64_t q = std::isnan(r) ? 0 : static_cast<int64_t>(
            std::min<double>(hi, std::max<double>(lo, r)));
        const uint64_t bits = static_cast<uint64_t>(q);
        switch (dtype_size(out)) {
          case 2: y.ptr<uint16_t>()[i] = static_cast<uint16_t>(bits); break;
          default:
            y.ptr<uint8_t>()[i] = static_cast<uint8_t>(
                (out == DType::i4 || out == DType::u4) ? bits & 0xf
                : (out == DType::i2 || out == DType::u2) ? bits & 0x3 : bits);
        }
      } else {
        const double z = zero ? load(*zero, ch) : 0.0;
        y.ptr<uint8_t>()[i] = static_cast<uint8_t>(narrow_from_double(out, v + z, saturate));
      }
    }
  });
}

KernelFactory quantize_linear() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = quant_axis(node);
    const int64_t to = node.attr_i("output_dtype", 0);
    const bool saturate = node.attr_i("saturate", 1) != 0;
    return std::unique_ptr<Kernel>(new FnKernel([axis, to, saturate](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& scale = c.in(1);
      const Tensor* zero = c.input(2);
      if (x.dtype != DType::f32) c.fail("x must be float32");
      const DType out = zero ? zero->dtype : to ? static_cast<DType>(to) : DType::u8;
      if (!quantized_type(out)) c.fail(std::string("cannot quantize to ") + dtype_name(out));
      const Layout l = param_layout(x, scale, zero, axis, c);
      Tensor& y = c.output(0, out, x.shape);
      if (!is_int8(out)) {
        quantize_scalar(c, x, scale.ptr<float>(), zero, l, out, saturate, y);
        return;
      }
      const float* px = x.ptr<float>();
      const float* ps = scale.ptr<float>();
      const Int8Loops& k = int8_loops();
      for_each_run(c, l, [&](size_t ch, size_t b, size_t n) {
        const float z = static_cast<float>(zero ? int_at(*zero, ch) : 0);
        if (out == DType::u8) k.quantize_u8(n, px + b, ps[ch], z, y.ptr<uint8_t>() + b);
        else k.quantize_s8(n, px + b, ps[ch], z, y.ptr<int8_t>() + b);
      });
    }));
  };
}

KernelFactory dequantize_linear() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = quant_axis(node);
    return std::unique_ptr<Kernel>(new FnKernel([axis](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& scale = c.in(1);
      const Tensor* zero = c.input(2);
      if (!quantized_type(x.dtype) && x.dtype != DType::i32)
        c.fail(std::string("cannot dequantize ") + dtype_name(x.dtype));
      if (zero && zero->dtype != x.dtype)
        c.fail("the zero point must have x's type " + std::string(dtype_name(x.dtype)));
      const Layout l = param_layout(x, scale, zero, axis, c);
      Tensor& y = c.output(0, DType::f32, x.shape);
      const float* ps = scale.ptr<float>();
      float* py = y.ptr<float>();
      const Int8Loops& k = int8_loops();
      for_each_run(c, l, [&](size_t ch, size_t b, size_t n) {
        const int32_t z = zero ? int_at(*zero, ch) : 0;
        if (x.dtype == DType::u8) {
          k.dequantize_u8(n, x.ptr<uint8_t>() + b, ps[ch], z, py + b);
        } else if (x.dtype == DType::i8) {
          k.dequantize_s8(n, x.ptr<int8_t>() + b, ps[ch], z, py + b);
        } else if (x.dtype == DType::i32) {
          const int32_t* px = x.ptr<int32_t>() + b;
          for (size_t i = 0; i < n; ++i) py[b + i] = static_cast<float>(px[i] - z) * ps[ch];
        } else {  // the scalar path: any quantized type, its zero point of the same type
          const double zf = zero ? load(*zero, ch) : 0.0;
          for (size_t i = b; i < b + n; ++i)
            py[i] = static_cast<float>((load(x, i) - zf) * ps[ch]);
        }
      });
    }));
  };
}

// y = saturate(round(x / s) + z) with s = (max(x, 0) - min(x, 0)) / 255, z = round(-min / s).
void dynamic_quantize_linear(OpContext& c) {
  const Tensor& x = c.in(0);
  if (x.dtype != DType::f32) c.fail("x must be float32");
  const float* px = x.ptr<float>();
  const size_t n = x.numel();
  // Range and NaN check per piece (vectorized), then combined.
  const Int8Loops& k = int8_loops();
  constexpr size_t kParts = 16;
  const size_t parts = c.pool && n >= (1 << 15) ? kParts : 1;
  float los[kParts] = {}, his[kParts] = {};
  bool nans[kParts] = {};
  parallel(c.pool, parts, 1, [&](size_t b, size_t e) {
    for (size_t p = b; p < e; ++p) {
      const size_t i0 = n * p / parts, i1 = n * (p + 1) / parts;
      nans[p] = k.range(i1 - i0, px + i0, &los[p], &his[p]);
    }
  });
  float lo = 0.0f, hi = 0.0f;
  for (size_t p = 0; p < parts; ++p) {
    if (nans[p]) c.fail("x holds NaN; it has no quantization range");
    lo = std::min(lo, los[p]);
    hi = std::max(hi, his[p]);
  }
  const DynamicU8 q = dynamic_u8(lo, hi);
  if (!std::isfinite(q.scale))
    c.fail("x holds an infinite value; it has no quantization range");
  Tensor& y = c.output(0, DType::u8, x.shape);
  c.output(1, DType::f32, {}).ptr<float>()[0] = q.scale;
  c.output(2, DType::u8, {}).ptr<uint8_t>()[0] = static_cast<uint8_t>(q.zero);
  uint8_t* py = y.ptr<uint8_t>();
  parallel(c.pool, n, 1 << 14, [&](size_t b, size_t e) {
    k.quantize_u8(e - b, px + b, q.step, static_cast<float>(q.zero), py + b);
  });
}

// MatMulInteger: Y (int32) = (A - a_zero) x (B - b_zero), numpy batch semantics for A; B 2-D
// on the fast path. Zero points: A's a scalar, B's a scalar or one per column.
class MatMulIntegerKernel final : public Kernel {
 public:
  MatMulIntegerKernel(const NodeDesc& node, const BuildContext& bc) {
    const Tensor* b = bc.constant(node, 1);
    if (b && b->dtype == DType::i8 && b->rank() == 2) {
      packed_ = std::make_shared<PackedInt8B>(
          pack_int8_b(b->ptr<int8_t>(), b->shape[0], b->shape[1], b->shape[1]));
      packed_source_ = b->data;
    }
  }

  void run(OpContext& c) const override {
    const Tensor& a = c.in(0);
    const Tensor& b = c.in(1);
    if (!is_int8(a.dtype) || !is_int8(b.dtype))
      c.fail("A and B must be uint8 or int8, got " + std::string(dtype_name(a.dtype)) +
             " and " + std::string(dtype_name(b.dtype)));
    if (a.rank() < 2 || b.rank() != 2)
      c.fail("A must have rank >= 2 and B rank 2, got " + shape_str(a.shape) + " and " +
             shape_str(b.shape) + " (native MatMulInteger)");
    const size_t K = a.shape.back(), N = b.shape[1];
    if (static_cast<size_t>(b.shape[0]) != K)
      c.fail("inner dimensions differ: A " + shape_str(a.shape) + " and B " +
             shape_str(b.shape));
    size_t M = 1;
    for (size_t d = 0; d + 1 < a.rank(); ++d) M *= a.shape[d];
    const Tensor* az = c.input(2);
    const Tensor* bz = c.input(3);
    if (az && (az->numel() != 1 || az->dtype != a.dtype))
      c.fail("a_zero_point must be one value of A's type (per-row zero points are not "
             "supported)");
    if (bz && ((bz->numel() != 1 && bz->numel() != N) || bz->dtype != b.dtype))
      c.fail("b_zero_point must be one value or one per column of B's type, got " +
             shape_str(bz->shape));
    Shape oshape(a.shape.begin(), a.shape.end() - 1);
    oshape.push_back(static_cast<int64_t>(N));
    Tensor& y = c.output(0, DType::i32, oshape);
    if (M == 0 || N == 0) return;
    const int32_t za = az ? int_at(*az, 0) : 0;
    auto zb = [&](size_t j) { return bz ? int_at(*bz, bz->numel() == 1 ? 0 : j) : 0; };
    int32_t* py = y.ptr<int32_t>();
    // The packed constant B (and the u8 A the VNNI product takes): the GEMM, then the
    // zero-point corrections.
    if (packed_ && a.dtype == DType::u8 && b.data == packed_source_ && packed_->K == K &&
        packed_->N == N) {
      // (a - za)(b - zb) = ab - za*colsum(b) - zb*rowsum(a) + K*za*zb, in the epilogue
      const uint8_t* pa = a.ptr<uint8_t>();
      const PackedInt8B& pb = *packed_;
      Int8GemmIO io;
      io.fill = int8_rows_of(pa, K, K, pb.Kq);
      io.epilogue = [&](size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                        size_t ld) {
        for (size_t r = 0; r < rows; ++r) {
          int32_t row_sum = 0;
          if (bz)
            for (size_t k = 0; k < K; ++k) row_sum += pa[(i0 + r) * K + k];
          int32_t* out = py + (i0 + r) * N + j0;
          for (size_t j = 0; j < cols; ++j) {
            const int32_t z = zb(j0 + j);
            out[j] = acc[r * ld + j] - za * pb.col_sums[j0 + j] - z * row_sum +
                     static_cast<int32_t>(K) * za * z;
          }
        }
      };
      gemm_u8s8_fused(M, pb, io, c.pool);
      return;
    }
    // Plain loops: any int8 type combination.
    parallel(c.pool, M, 4, [&](size_t r0, size_t r1) {
      for (size_t i = r0; i < r1; ++i)
        for (size_t j = 0; j < N; ++j) {
          int32_t acc = 0;
          const int32_t z = zb(j);
          for (size_t k = 0; k < K; ++k)
            acc += (int_at(a, i * K + k) - za) * (int_at(b, k * N + j) - z);
          py[i * N + j] = acc;
        }
    });
  }

 private:
  std::shared_ptr<PackedInt8B> packed_;
  const void* packed_source_ = nullptr;
};

KernelFactory matmul_integer() {
  return [](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
    return std::unique_ptr<Kernel>(new MatMulIntegerKernel(node, bc));
  };
}

// ConvInteger: Y (int32) = conv(X - x_zero, W - w_zero), padding contributing 0 (the zero
// point); x_zero one value, w_zero one value or one per output channel. Plain loops over a
// table of input offsets per (output position, kernel position); exact in int32.
KernelFactory conv_integer() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const ConvAttrs attrs = read_attrs(node, false);
    return std::unique_ptr<Kernel>(new FnKernel([attrs](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& w = c.in(1);
      if (!is_int8(x.dtype) || !is_int8(w.dtype))
        c.fail("X and W must be uint8 or int8, got " + std::string(dtype_name(x.dtype)) +
               " and " + std::string(dtype_name(w.dtype)));
      const Geom g = conv_geom(attrs, x, w, c);
      const Tensor* xz = c.input(2);
      const Tensor* wz = c.input(3);
      if (xz && (xz->numel() != 1 || xz->dtype != x.dtype))
        c.fail("x_zero_point must be one value of X's type");
      if (wz && ((wz->numel() != 1 && wz->numel() != g.M) || wz->dtype != w.dtype))
        c.fail("w_zero_point must be one value or one per output channel of W's type, got " +
               shape_str(wz->shape));
      Shape oshape{static_cast<int64_t>(g.N), static_cast<int64_t>(g.M)};
      oshape.insert(oshape.end(), g.out.begin(), g.out.end());
      Tensor& y = c.output(0, DType::i32, oshape);
      if (y.numel() == 0) return;
      // offset[o * kprod + k]: X offset (within one channel plane) read by output position o
      // at kernel position k, or -1 when it falls in the padding.
      std::vector<int64_t> offset(g.out_prod * g.kprod);
      std::vector<int64_t> oi(g.nd), ki(g.nd);
      for (size_t o = 0; o < g.out_prod; ++o) {
        size_t rest = o;
        for (size_t d = g.nd; d-- > 0;) {
          oi[d] = static_cast<int64_t>(rest % g.out[d]);
          rest /= g.out[d];
        }
        for (size_t kk = 0; kk < g.kprod; ++kk) {
          size_t krest = kk;
          int64_t off = 0;
          bool inside = true;
          for (size_t d = g.nd; d-- > 0;) {
            ki[d] = static_cast<int64_t>(krest % g.k[d]);
            krest /= g.k[d];
          }
          for (size_t d = 0; d < g.nd; ++d) {
            const int64_t pos = oi[d] * g.stride[d] + ki[d] * g.dil[d] - g.pb[d];
            if (pos < 0 || pos >= g.in[d]) inside = false;
            off = off * g.in[d] + pos;
          }
          offset[o * g.kprod + kk] = inside ? off : -1;
        }
      }
      const int32_t zx = xz ? int_at(*xz, 0) : 0;
      int32_t* py = y.ptr<int32_t>();
      parallel(c.pool, g.N * g.M, 1, [&](size_t b, size_t e) {
        for (size_t nm = b; nm < e; ++nm) {
          const size_t n = nm / g.M, m = nm % g.M, grp = m / g.Mg;
          const int32_t zw = wz ? int_at(*wz, wz->numel() == 1 ? 0 : m) : 0;
          int32_t* out = py + nm * g.out_prod;
          std::fill(out, out + g.out_prod, 0);
          for (size_t ci = 0; ci < g.Cg; ++ci) {
            const size_t ch = grp * g.Cg + ci;
            const size_t xbase = (n * g.C + ch) * g.in_prod;
            const size_t wbase = (m * g.Cg + ci) * g.kprod;
            for (size_t o = 0; o < g.out_prod; ++o) {
              int32_t acc = 0;
              const int64_t* offs = offset.data() + o * g.kprod;
              for (size_t kk = 0; kk < g.kprod; ++kk) {
                if (offs[kk] < 0) continue;
                acc += (int_at(x, xbase + offs[kk]) - zx) * (int_at(w, wbase + kk) - zw);
              }
              out[o] += acc;
            }
          }
        }
      });
    }));
  };
}

}  // namespace

KILN_REGISTER_OP("", "QuantizeLinear", quantize_linear());
KILN_REGISTER_OP("", "DequantizeLinear", dequantize_linear());
KILN_REGISTER_OP("", "DynamicQuantizeLinear", simple_kernel(dynamic_quantize_linear));
KILN_REGISTER_OP("", "MatMulInteger", matmul_integer());
KILN_REGISTER_OP("", "ConvInteger", conv_integer());

}  // namespace kiln::ops
