// The narrow floating point element types (bfloat16, the float8 variants, float4 e2m1,
// e8m0) to and from double, with the rounding and overflow rules of ONNX Cast.
#pragma once
#include <cstdint>

#include "tensor.h"

namespace kiln {

bool is_narrow_float(DType t);

// The value of one element's bits.
double narrow_to_double(DType t, uint16_t bits);

// Round to nearest, ties to even. Values beyond the largest finite one (and infinities)
// become that largest value when `saturate`, else infinity where the type has one, else NaN
// (float4 e2m1, which has neither, always saturates). e8m0 follows `e8m0_round`.
enum class E8m0Round { up, down, nearest };
uint16_t narrow_from_double(DType t, double v, bool saturate,
                            E8m0Round e8m0_round = E8m0Round::up);

}  // namespace kiln
