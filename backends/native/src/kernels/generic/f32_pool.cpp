// Plain C++ pooling of one padded plane.
#include <algorithm>

#include "kernels/ukernels.h"

namespace kiln {

void kiln_f32_pool_ukernel__generic(const PoolPlane& p) {
  for (size_t oy = 0; oy < p.oh; ++oy)
    for (size_t ox = 0; ox < p.ow; ++ox) {
      const float* base = p.x + oy * p.sh * p.x_stride + ox * p.sw;
      float acc = p.kind == PoolKind::max ? base[0] : 0.0f;
      for (size_t ky = 0; ky < p.kh; ++ky)
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float v = base[ky * p.dh * p.x_stride + kx * p.dw];
          acc = p.kind == PoolKind::max ? std::max(acc, v) : acc + v;
        }
      p.y[oy * p.ow + ox] = p.kind == PoolKind::max ? acc : acc * p.inv_h[oy] * p.inv_w[ox];
    }
}

}  // namespace kiln
