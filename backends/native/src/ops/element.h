// One element of any type as a double (load) or, for integer types, an int64 (load_int):
// the scalar reads Cast and the generic quantize paths share.
#pragma once
#include <cstdint>
#include <cstring>

#include "narrow_float.h"
#include "tensor.h"

namespace kiln::ops {

inline float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline int64_t load_int(const Tensor& t, size_t i);

inline double load(const Tensor& t, size_t i) {
  switch (t.dtype) {
    case DType::f32: return t.ptr<float>()[i];
    case DType::f64: return t.ptr<double>()[i];
    case DType::f16: return half_to_float(t.ptr<uint16_t>()[i]);
    case DType::i64: return static_cast<double>(t.ptr<int64_t>()[i]);
    case DType::i32: return t.ptr<int32_t>()[i];
    case DType::i8: return t.ptr<int8_t>()[i];
    case DType::u8: return t.ptr<uint8_t>()[i];
    case DType::i16: return t.ptr<int16_t>()[i];
    case DType::u16: return t.ptr<uint16_t>()[i];
    case DType::u32: return t.ptr<uint32_t>()[i];
    case DType::u64: return static_cast<double>(t.ptr<uint64_t>()[i]);
    case DType::boolean: return t.ptr<uint8_t>()[i] ? 1.0 : 0.0;
    case DType::bf16: return narrow_to_double(t.dtype, t.ptr<uint16_t>()[i]);
    case DType::i4: case DType::u4: case DType::i2: case DType::u2:
      return static_cast<double>(load_int(t, i));
    default:
      if (is_narrow_float(t.dtype)) return narrow_to_double(t.dtype, t.ptr<uint8_t>()[i]);
      return 0.0;
  }
}

inline bool is_int(DType t) {
  return t == DType::i64 || t == DType::i32 || t == DType::i8 || t == DType::u8 ||
         t == DType::i16 || t == DType::u16 || t == DType::u32 || t == DType::u64 ||
         t == DType::boolean || t == DType::i4 || t == DType::u4 || t == DType::i2 ||
         t == DType::u2;
}

// Sign-extends the low `bits` bits of a byte.
inline int64_t sign_extend(uint8_t v, int bits) {
  const int shift = 8 - bits;
  return static_cast<int8_t>(static_cast<uint8_t>(v << shift)) >> shift;
}

inline int64_t load_int(const Tensor& t, size_t i) {
  switch (t.dtype) {
    case DType::i64: return t.ptr<int64_t>()[i];
    case DType::i32: return t.ptr<int32_t>()[i];
    case DType::i8: return t.ptr<int8_t>()[i];
    case DType::u8: return t.ptr<uint8_t>()[i];
    case DType::i16: return t.ptr<int16_t>()[i];
    case DType::u16: return t.ptr<uint16_t>()[i];
    case DType::u32: return t.ptr<uint32_t>()[i];
    case DType::u64: return static_cast<int64_t>(t.ptr<uint64_t>()[i]);
    case DType::boolean: return t.ptr<uint8_t>()[i] ? 1 : 0;
    case DType::i4: return sign_extend(t.ptr<uint8_t>()[i], 4);
    case DType::u4: return t.ptr<uint8_t>()[i] & 0xf;
    case DType::i2: return sign_extend(t.ptr<uint8_t>()[i], 2);
    case DType::u2: return t.ptr<uint8_t>()[i] & 0x3;
    default: return 0;
  }
}

}  // namespace kiln::ops
