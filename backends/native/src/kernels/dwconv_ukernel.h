// The plane contract of the depthwise convolution kernels (kernels/simd/f32_dwconv.h and
// generic/f32_dwconv.cpp).
//
// One channel: y[oy, ox] = act(bias + sum_{ky,kx} w[ky, kx] * x[oy*sh + ky*dh, ox*sw + kx*dw]
//                              + residual[oy, ox])
// `x` is the channel already zero padded by the driver (rows of `x_stride` floats, with at
// least `x_slack` readable zero floats after the last used column of every row), so the
// kernels have no bounds checks.
#pragma once
#include <cstddef>

#include "kernels/gemm.h"

namespace kiln {

struct DwConvPlane {
  const float* x;
  size_t x_stride;
  const float* w;  // kh * kw taps
  float* y;
  const float* residual;  // oh * ow, or nullptr
  float bias;
  size_t oh, ow, kh, kw, sh, sw, dh, dw;
  Activation act;
  float alpha, beta;
};

// Readable zero floats each padded row must have past its last used column.
constexpr size_t kDwConvSlack = 64;

using dwconv_plane_fn = void (*)(const DwConvPlane& p);

}  // namespace kiln
