// Integer bit operators: BitShift, BitwiseAnd/Or/Xor/Not.
#include <type_traits>

#include "ops/common.h"

namespace kiln::ops {
namespace {

template <typename Fn>
void dispatch_int(DType dt, const NodeDesc& node, Fn&& fn) {
  switch (dt) {
    case DType::i64: fn(int64_t{}); return;
    case DType::i32: fn(int32_t{}); return;
    case DType::i16: fn(int16_t{}); return;
    case DType::i8: fn(int8_t{}); return;
    case DType::u64: fn(uint64_t{}); return;
    case DType::u32: fn(uint32_t{}); return;
    case DType::u16: fn(uint16_t{}); return;
    case DType::u8: fn(uint8_t{}); return;
    default: node.fail(std::string("unsupported element type ") + dtype_name(dt));
  }
}

template <typename T, typename F>
void int_binary(OpContext& c, F f) {
  const Tensor& a = c.in(0);
  const Tensor& b = c.in(1);
  if (a.dtype != b.dtype) c.fail("operand types differ");
  Shape shape = broadcast_shapes(a.shape, b.shape, c.node);
  Tensor& y = c.output(0, a.dtype, shape);
  const std::vector<size_t> st[2] = {broadcast_strides(a.shape, shape),
                                     broadcast_strides(b.shape, shape)};
  const T* pa = a.ptr<T>();
  const T* pb = b.ptr<T>();
  T* py = y.ptr<T>();
  for_each_broadcast<2>(shape, st, [&](size_t o, size_t* offs, size_t n, size_t* ist) {
    for (size_t i = 0; i < n; ++i) py[o + i] = f(pa[offs[0] + i * ist[0]], pb[offs[1] + i * ist[1]]);
  });
}

enum class Bit { and_, or_, xor_ };

KernelFactory bitwise(Bit op) {
  return simple_kernel([op](OpContext& c) {
    dispatch_int(c.in(0).dtype, c.node, [&](auto tag) {
      using T = decltype(tag);
      switch (op) {
        case Bit::and_: int_binary<T>(c, [](T x, T z) { return static_cast<T>(x & z); }); break;
        case Bit::or_: int_binary<T>(c, [](T x, T z) { return static_cast<T>(x | z); }); break;
        case Bit::xor_: int_binary<T>(c, [](T x, T z) { return static_cast<T>(x ^ z); }); break;
      }
    });
  });
}

void bitwise_not(OpContext& c) {
  const Tensor& x = c.in(0);
  Tensor& y = c.output(0, x.dtype, x.shape);
  dispatch_int(x.dtype, c.node, [&](auto tag) {
    using T = decltype(tag);
    for (size_t i = 0; i < x.numel(); ++i) y.ptr<T>()[i] = static_cast<T>(~x.ptr<T>()[i]);
  });
}

KernelFactory bit_shift() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::string dir = node.attr_s("direction", "");
    if (dir != "LEFT" && dir != "RIGHT") node.fail("direction must be LEFT or RIGHT");
    const bool left = dir == "LEFT";
    return std::unique_ptr<Kernel>(new FnKernel([left](OpContext& c) {
      dispatch_int(c.in(0).dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        using U = std::make_unsigned_t<T>;
        constexpr uint64_t bits = sizeof(T) * 8;
        // numpy's shifts: past the width, left gives 0 and right the sign fill; a signed
        // right shift is arithmetic, a left shift works on the two's-complement bits
        int_binary<T>(c, [left](T x, T s) {
          bool negative = false;
          if constexpr (std::is_signed_v<T>) negative = s < 0;
          if (negative || static_cast<uint64_t>(s) >= bits) {
            if constexpr (std::is_signed_v<T>) {
              if (!left && x < 0) return T(-1);
            }
            return T(0);
          }
          if (left) return static_cast<T>(static_cast<U>(static_cast<U>(x) << s));
          return static_cast<T>(x >> s);
        });
      });
    }));
  };
}

KILN_REGISTER_OP("", "BitwiseAnd", bitwise(Bit::and_));
KILN_REGISTER_OP("", "BitwiseOr", bitwise(Bit::or_));
KILN_REGISTER_OP("", "BitwiseXor", bitwise(Bit::xor_));
KILN_REGISTER_OP("", "BitwiseNot", simple_kernel(bitwise_not));
KILN_REGISTER_OP("", "BitShift", bit_shift());

}  // namespace
}  // namespace kiln::ops
