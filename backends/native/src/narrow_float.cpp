// Narrow floats: a format is (bits, exponent bits, mantissa bits, bias, which codes are
// special). Decoding is the usual (1 + m / 2^M) * 2^(e - bias), or m * 2^(1 - bias - M) for
// e == 0. Encoding searches the table of positive finite values, which grows with the code,
// and rounds to the nearer neighbour; a tie goes to the even code (the even mantissa).
#include "narrow_float.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace kiln {
namespace {

// ieee: all-ones exponent is inf (m == 0) or NaN; fn: only all-ones is NaN, no inf;
// fnuz: the negative-zero code is the one NaN, no -0, no inf; plain: no NaN, no inf.
enum class Special { ieee, fn, fnuz, plain };

struct Format {
  int bits, ebits, mbits, bias;
  Special special;
};

Format format_of(DType t) {
  switch (t) {
    case DType::f8e4m3fn: return {8, 4, 3, 7, Special::fn};
    case DType::f8e4m3fnuz: return {8, 4, 3, 8, Special::fnuz};
    case DType::f8e5m2: return {8, 5, 2, 15, Special::ieee};
    case DType::f8e5m2fnuz: return {8, 5, 2, 16, Special::fnuz};
    default: return {4, 2, 1, 1, Special::plain};  // f4e2m1
  }
}

double decode(const Format& f, uint32_t code) {
  const uint32_t sign_bit = 1u << (f.bits - 1);
  if (f.special == Special::fnuz && code == sign_bit) return std::nan("");
  const uint32_t mag = code & (sign_bit - 1);
  const uint32_t e = mag >> f.mbits, m = mag & ((1u << f.mbits) - 1);
  const uint32_t emax = (1u << f.ebits) - 1, mmax = (1u << f.mbits) - 1;
  double v;
  if (f.special == Special::ieee && e == emax) {
    v = m ? std::nan("") : INFINITY;
  } else if (f.special == Special::fn && e == emax && m == mmax) {
    v = std::nan("");
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.mbits);
  } else {
    v = std::ldexp(static_cast<double>((1u << f.mbits) + m), static_cast<int>(e) - f.bias -
                   f.mbits);
  }
  return (code & sign_bit) ? -v : v;
}

uint32_t max_finite_code(const Format& f) {
  const uint32_t emax = (1u << f.ebits) - 1, mmax = (1u << f.mbits) - 1;
  switch (f.special) {
    case Special::ieee: return ((emax - 1) << f.mbits) | mmax;
    case Special::fn: return ((emax << f.mbits) | mmax) - 1;
    default: return (1u << (f.bits - 1)) - 1;
  }
}

// Positive finite values by code, 0 .. max_finite_code.
const std::vector<double>& table(DType t) {
  static std::vector<double> tables[5];
  static const bool built = [] {
    const DType types[5] = {DType::f8e4m3fn, DType::f8e4m3fnuz, DType::f8e5m2,
                            DType::f8e5m2fnuz, DType::f4e2m1};
    for (int k = 0; k < 5; ++k) {
      const Format f = format_of(types[k]);
      for (uint32_t c = 0; c <= max_finite_code(f); ++c) tables[k].push_back(decode(f, c));
    }
    return true;
  }();
  (void)built;
  switch (t) {
    case DType::f8e4m3fn: return tables[0];
    case DType::f8e4m3fnuz: return tables[1];
    case DType::f8e5m2: return tables[2];
    case DType::f8e5m2fnuz: return tables[3];
    default: return tables[4];
  }
}

uint32_t nan_code(const Format& f, bool negative) {
  const uint32_t sign = negative ? 1u << (f.bits - 1) : 0;
  switch (f.special) {
    case Special::ieee: return sign | (((1u << f.ebits) - 1) << f.mbits) | (1u << (f.mbits - 1));
    case Special::fn: return sign | ((1u << (f.bits - 1)) - 1);
    case Special::fnuz: return 1u << (f.bits - 1);
    default: return 1u << (f.bits - 1);  // e2m1 has no NaN; ml_dtypes writes -0
  }
}

constexpr uint32_t kNan = 0xffffffffu;

// The magnitude code for a value beyond the largest finite one (kNan: the type's NaN).
uint32_t overflow_code(const Format& f, bool saturate) {
  if (saturate || f.special == Special::plain) return max_finite_code(f);
  if (f.special == Special::ieee) return ((1u << f.ebits) - 1) << f.mbits;  // infinity
  return kNan;
}

uint16_t encode(DType t, double v, bool saturate) {
  const Format f = format_of(t);
  const bool negative = std::signbit(v);
  if (std::isnan(v)) return static_cast<uint16_t>(nan_code(f, negative));
  const double a = std::fabs(v);
  const std::vector<double>& vals = table(t);
  const uint32_t top = static_cast<uint32_t>(vals.size() - 1);
  uint32_t mag;
  if (std::isinf(a)) {
    mag = overflow_code(f, saturate);
  } else if (a >= vals[top]) {
    const double half_ulp = (vals[top] - vals[top - 1]) / 2;
    const double excess = a - vals[top];
    const bool keep = excess < half_ulp || (excess == half_ulp && (top & 1u) == 0);
    mag = keep ? top : overflow_code(f, saturate);
  } else {
    uint32_t lo = 0, hi = top;  // vals[lo] <= a < vals[hi]
    while (hi - lo > 1) {
      const uint32_t mid = (lo + hi) / 2;
      (vals[mid] <= a ? lo : hi) = mid;
    }
    const double d_lo = a - vals[lo], d_hi = vals[hi] - a;
    mag = (d_lo < d_hi || (d_lo == d_hi && (lo & 1u) == 0)) ? lo : hi;
  }
  if (mag == kNan) return static_cast<uint16_t>(nan_code(f, negative));
  if (f.special == Special::fnuz && mag == 0) return 0;  // fnuz has no -0
  return static_cast<uint16_t>(mag | (negative ? 1u << (f.bits - 1) : 0));
}

uint16_t bf16_from_float(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if (std::isnan(x)) return static_cast<uint16_t>((b >> 16) | 0x40);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// e8m0 holds 2^(code - 127), 0xff is NaN: the float32 exponent, rounded up, down or to
// nearest on the dropped mantissa.
uint16_t e8m0_from_float(float x, bool saturate, E8m0Round round) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  uint32_t e = (b >> 23) & 0xff;
  if (e == 0xff) return 0xff;
  bool up = false;
  if (round == E8m0Round::up) {
    up = (b & 0x7fffff) != 0;
  } else if (round == E8m0Round::nearest) {
    const bool g = b & 0x400000, r = b & 0x200000, s = b & 0x1fffff;
    up = g && (r || s || e > 0);
  }
  if (up && saturate && e == 0xfe) up = false;
  return static_cast<uint16_t>((e + (up ? 1 : 0)) & 0xff);
}

}  // namespace

bool is_narrow_float(DType t) {
  switch (t) {
    case DType::bf16: case DType::f8e4m3fn: case DType::f8e4m3fnuz: case DType::f8e5m2:
    case DType::f8e5m2fnuz: case DType::f4e2m1: case DType::f8e8m0: return true;
    default: return false;
  }
}

double narrow_to_double(DType t, uint16_t bits) {
  if (t == DType::bf16) {
    const uint32_t b = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  if (t == DType::f8e8m0) return bits == 0xff ? std::nan("") : std::ldexp(1.0, bits - 127);
  return decode(format_of(t), bits);
}

uint16_t narrow_from_double(DType t, double v, bool saturate, E8m0Round e8m0_round) {
  if (t == DType::bf16) return bf16_from_float(static_cast<float>(v));
  if (t == DType::f8e8m0) return e8m0_from_float(static_cast<float>(v), saturate, e8m0_round);
  return encode(t, v, saturate);
}

}  // namespace kiln
