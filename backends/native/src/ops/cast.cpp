// Cast and CastLike between every numeric element type and bool, the narrow ones included
// (bfloat16, float8, float4 e2m1, e8m0 via narrow_float.h; int4/uint4/int2/uint2 wrap the
// way ml_dtypes does: floats truncate toward zero, then the low bits are kept).
#include <cmath>
#include <cstring>

#include "narrow_float.h"
#include "ops/common.h"
#include "ops/element.h"

namespace kiln::ops {
namespace {

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) return sign | (absx > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (absx >= 0x477ff000u) return sign | 0x7c00u;  // overflows to infinity
  if (absx < 0x38800000u) {                        // subnormal or zero in half
    float a;
    std::memcpy(&a, &absx, 4);
    const float scaled = a * 16777216.0f;  // 2^24: units of the smallest subnormal
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  // Normal: round to nearest even on the 13 dropped mantissa bits.
  uint32_t mant = absx + 0xc8000fffu + ((absx >> 13) & 1u);
  return sign | static_cast<uint16_t>(mant >> 13);
}

template <typename T>
T float_to_int(double v) {
  if (std::isnan(v)) return 0;
  const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
  const double hi = static_cast<double>(std::numeric_limits<T>::max());
  if (v <= lo) return std::numeric_limits<T>::lowest();
  if (v >= hi) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}

// Integer targets: integers wrap as static_cast does, floats saturate (NaN -> 0).
template <typename T>
void cast_to_int(const Tensor& x, Tensor& y, bool int_src) {
  T* out = y.ptr<T>();
  const size_t n = x.numel();
  for (size_t i = 0; i < n; ++i)
    out[i] = int_src ? static_cast<T>(load_int(x, i)) : float_to_int<T>(load(x, i));
}

// 4- and 2-bit integers: the value's low bits; floats truncate first, NaN and inf give 0.
void cast_to_small_int(const Tensor& x, Tensor& y, bool int_src, int bits) {
  uint8_t* out = y.ptr<uint8_t>();
  const uint8_t mask = static_cast<uint8_t>((1u << bits) - 1);
  for (size_t i = 0, n = x.numel(); i < n; ++i) {
    int64_t v;
    if (int_src) {
      v = load_int(x, i);
    } else {
      const double d = load(x, i);
      v = std::isfinite(d) ? float_to_int<int64_t>(std::trunc(d)) : 0;
    }
    out[i] = static_cast<uint8_t>(v) & mask;
  }
}

void cast_to_narrow_float(const Tensor& x, Tensor& y, bool saturate, E8m0Round round) {
  const size_t n = x.numel();
  if (y.dtype == DType::bf16) {
    for (size_t i = 0; i < n; ++i)
      y.ptr<uint16_t>()[i] = narrow_from_double(y.dtype, load(x, i), saturate, round);
    return;
  }
  for (size_t i = 0; i < n; ++i)
    y.ptr<uint8_t>()[i] =
        static_cast<uint8_t>(narrow_from_double(y.dtype, load(x, i), saturate, round));
}

struct CastOptions {
  bool saturate = true;
  E8m0Round round = E8m0Round::up;
};

void cast_into(const Tensor& x, Tensor& y, OpContext& c, const CastOptions& opt = {}) {
  const size_t n = x.numel();
  if (x.dtype == y.dtype) {
    if (x.nbytes()) std::memcpy(y.data, x.data, x.nbytes());
    return;
  }
  const bool int_src = is_int(x.dtype);
  // To f32 from the types models feed it (int8 GEMM results, masks, token ids, images):
  // a typed loop the compiler vectorizes, split across the pool, instead of loading each
  // element through the source-type switch (a bool mask of 526K elements took 2 ms that
  // way). Values as load() gives them: through double, bool as 0 / 1.
  auto to_f32 = [&](auto* src) {
    float* dst = y.ptr<float>();
    parallel(c.pool, n, 1 << 14, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) dst[i] = static_cast<float>(static_cast<double>(src[i]));
    });
  };
  if (y.dtype == DType::f32) {
    switch (x.dtype) {
      case DType::i32: return to_f32(x.ptr<int32_t>());
      case DType::i64: return to_f32(x.ptr<int64_t>());
      case DType::i8: return to_f32(x.ptr<int8_t>());
      case DType::u8: return to_f32(x.ptr<uint8_t>());
      case DType::f64: return to_f32(x.ptr<double>());
      case DType::boolean: {
        const uint8_t* src = x.ptr<uint8_t>();
        float* dst = y.ptr<float>();
        parallel(c.pool, n, 1 << 14, [&](size_t b, size_t e) {
          for (size_t i = b; i < e; ++i) dst[i] = src[i] ? 1.0f : 0.0f;
        });
        return;
      }
      default: break;
    }
  }
  // The target type is chosen once; each element is then loaded by the source type.
  switch (y.dtype) {
    case DType::f32:
      for (size_t i = 0; i < n; ++i) y.ptr<float>()[i] = static_cast<float>(load(x, i));
      break;
    case DType::f64:
      for (size_t i = 0; i < n; ++i) y.ptr<double>()[i] = load(x, i);
      break;
    case DType::f16:
      for (size_t i = 0; i < n; ++i)
        y.ptr<uint16_t>()[i] = float_to_half(static_cast<float>(load(x, i)));
      break;
    case DType::boolean:
      for (size_t i = 0; i < n; ++i)
        y.ptr<uint8_t>()[i] = int_src ? load_int(x, i) != 0 : load(x, i) != 0;
      break;
    case DType::i64: cast_to_int<int64_t>(x, y, int_src); break;
    case DType::i32: cast_to_int<int32_t>(x, y, int_src); break;
    case DType::i8: cast_to_int<int8_t>(x, y, int_src); break;
    case DType::u8: cast_to_int<uint8_t>(x, y, int_src); break;
    case DType::i16: cast_to_int<int16_t>(x, y, int_src); break;
    case DType::u16: cast_to_int<uint16_t>(x, y, int_src); break;
    case DType::u32: cast_to_int<uint32_t>(x, y, int_src); break;
    case DType::u64: cast_to_int<uint64_t>(x, y, int_src); break;
    case DType::i4: case DType::u4: cast_to_small_int(x, y, int_src, 4); break;
    case DType::i2: case DType::u2: cast_to_small_int(x, y, int_src, 2); break;
    default:
      if (is_narrow_float(y.dtype)) {
        cast_to_narrow_float(x, y, opt.saturate, opt.round);
        break;
      } c.fail(std::string("cannot cast to ") + dtype_name(y.dtype));
  }
}

CastOptions options_of(const NodeDesc& node) {
  CastOptions opt;
  opt.saturate = node.attr_i("saturate", 1) != 0;
  const std::string mode = node.attr_s("round_mode", "up");
  if (mode == "up") opt.round = E8m0Round::up;
  else if (mode == "down") opt.round = E8m0Round::down;
  else if (mode == "nearest") opt.round = E8m0Round::nearest;
  else node.fail("round_mode '" + mode + "' is not one of up, down, nearest");
  return opt;
}

KernelFactory cast() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t to = node.attr_i("to", 0);
    if (!dtype_known(static_cast<int>(to)))
      node.fail("cast target type " + std::to_string(to) + " is not supported");
    const DType dst = static_cast<DType>(to);
    const CastOptions opt = options_of(node);
    return std::unique_ptr<Kernel>(new FnKernel([dst, opt](OpContext& c) {
      const Tensor& x = c.in(0);
      Tensor& y = c.output(0, dst, x.shape);
      cast_into(x, y, c, opt);
    }));
  };
}

KernelFactory cast_like() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const CastOptions opt = options_of(node);
    return std::unique_ptr<Kernel>(new FnKernel([opt](OpContext& c) {
      const Tensor& x = c.in(0);
      Tensor& y = c.output(0, c.in(1).dtype, x.shape);
      cast_into(x, y, c, opt);
    }));
  };
}

// BitCast: the same bytes under another element type of the same width.
KernelFactory bit_cast() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t to = node.attr_i("to", 0);
    if (!dtype_known(static_cast<int>(to)))
      node.fail("bitcast target type " + std::to_string(to) + " is not supported");
    const DType dst = static_cast<DType>(to);
    return std::unique_ptr<Kernel>(new FnKernel([dst](OpContext& c) {
      const Tensor& x = c.in(0);
      if (dtype_size(x.dtype) != dtype_size(dst))
        c.fail(std::string("cannot bitcast ") + dtype_name(x.dtype) + " to " +
               dtype_name(dst) + ": the widths differ");
      Tensor& y = c.output(0, dst, x.shape);
      if (x.nbytes()) std::memcpy(y.data, x.data, x.nbytes());
    }));
  };
}

KILN_REGISTER_OP("", "Cast", cast());
KILN_REGISTER_OP("", "BitCast", bit_cast());
KILN_REGISTER_OP("", "CastLike", cast_like());

}  // namespace
}  // namespace kiln::ops
