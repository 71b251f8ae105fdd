// The plane contract of the pooling kernels (kernels/simd/f32_pool.h, generic/f32_pool.cpp).
// `x` is one channel as it lies in the tensor (in_h rows of in_w floats); the window of
// output (oy, ox) covers input rows oy * sh + ky * dh - pad_top and columns
// ox * sw + kx * dw - pad_left, and the taps outside the plane count as -inf for max and are
// left out of the sum for avg (whose divisor is in inv_h / inv_w). Kernels read nothing
// outside the plane. avg: y = sum * inv_h[oy] * inv_w[ox].
#pragma once
#include <cstddef>

#include "kernels/pool.h"

namespace kiln {

struct PoolPlane {
  const float* x;
  size_t in_h, in_w, pad_top, pad_left;
  float* y;
  size_t oh, ow, kh, kw, sh, sw, dh, dw;
  PoolKind kind;
  const float* inv_h;  // avg only: oh reciprocal row counts
  const float* inv_w;  // avg only: ow reciprocal column counts
};

using pool_plane_fn = void (*)(const PoolPlane& p);

}  // namespace kiln
