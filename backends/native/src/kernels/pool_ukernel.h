// The plane contract of the pooling kernels (kernels/simd/f32_pool.h, generic/f32_pool.cpp).
// `x` is one channel already padded by the driver (-inf for max, 0 for avg; rows of
// `x_stride` floats, kPoolSlack readable floats past the last used column of every row),
// so the kernels have no bounds checks. avg: y = sum * inv_h[oy] * inv_w[ox].
#pragma once
#include <cstddef>

#include "kernels/pool.h"

namespace kiln {

struct PoolPlane {
  const float* x;
  size_t x_stride;
  float* y;
  size_t oh, ow, kh, kw, sh, sw, dh, dw;
  PoolKind kind;
  const float* inv_h;  // avg only: oh reciprocal row counts
  const float* inv_w;  // avg only: ow reciprocal column counts
};

constexpr size_t kPoolSlack = 64;

using pool_plane_fn = void (*)(const PoolPlane& p);

}  // namespace kiln
