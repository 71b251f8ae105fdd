// NEON pooling of one padded plane: 4 output columns per vector; stride 1 as plain loads,
// stride 2 as a de-interleaving load (ld2).
#include <arm_neon.h>

#include "kernels/neon/vec.h"
#include "kernels/ukernels.h"

namespace kiln {

namespace {

using neon::V128;

template <int SW, bool MAX>
void plane(const PoolPlane& p) {
  for (size_t oy = 0; oy < p.oh; ++oy) {
    const float* rows = p.x + oy * p.sh * p.x_stride;
    float* y = p.y + oy * p.ow;
    for (size_t ox = 0; ox < p.ow; ox += 4) {
      float32x4_t acc = vdupq_n_f32(MAX ? -__builtin_inff() : 0.0f);
      for (size_t ky = 0; ky < p.kh; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
        for (size_t kx = 0; kx < p.kw; ++kx) {
          const float* s = row + kx * p.dw;
          const float32x4_t v = SW == 1 ? V128::load(s) : V128::load_even(s);
          acc = MAX ? vmaxq_f32(acc, v) : vaddq_f32(acc, v);
        }
      }
      const size_t left = p.ow - ox;
      if (!MAX)
        acc = vmulq_f32(vmulq_f32(acc, vdupq_n_f32(p.inv_h[oy])), V128::load_n(p.inv_w + ox, left));
      V128::store_n(y + ox, acc, left);
    }
  }
}

}  // namespace

void kiln_f32_pool_ukernel__neon_x4(const PoolPlane& p) {
  const bool max = p.kind == PoolKind::max;
  if (p.sw == 1) return max ? plane<1, true>(p) : plane<1, false>(p);
  if (p.sw == 2) return max ? plane<2, true>(p) : plane<2, false>(p);
  kiln_f32_pool_ukernel__generic(p);
}

}  // namespace kiln
