// Plain C++ pooling of one plane (contract in kernels/pool_ukernel.h).
#include <algorithm>
#include <limits>

#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_pool_ukernel__generic(const PoolPlane& p) {
  const bool max = p.kind == PoolKind::max;
  for (size_t oy = 0; oy < p.oh; ++oy)
    for (size_t ox = 0; ox < p.ow; ++ox) {
      float acc = max ? -std::numeric_limits<float>::infinity() : 0.0f;
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const size_t iy = oy * p.sh + ky * p.dh;
        if (iy < p.pad_top || iy - p.pad_top >= p.in_h) continue;
        const float* row = p.x + (iy - p.pad_top) * p.in_w;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const size_t ix = ox * p.sw + kx * p.dw;
          if (ix < p.pad_left || ix - p.pad_left >= p.in_w) continue;
          const float v = row[ix - p.pad_left];
          acc = max ? std::max(acc, v) : acc + v;
        }
      }
      p.y[oy * p.ow + ox] = max ? acc : acc * p.inv_h[oy] * p.inv_w[ox];
    }
}

}  // namespace kiln
