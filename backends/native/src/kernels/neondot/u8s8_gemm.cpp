// u8 x s8 -> s32 microkernel for aarch64 with the dot-product extension (armv8.2-a+dotprod).
// sdot multiplies signed by signed, so A is shifted into s8 (a - 128, a flip of the top bit)
// and the shift is put back exactly: sum a*b = sum (a-128)*b + 128 * sum b, with sum b taken
// by a second sdot against ones while the B vectors are in registers. Four rows x 16 columns
// at a time: each B vector holds 4 columns x 4 k, one sdot per row adds the 4 k products.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/int8_gemm.h"

namespace kiln {

void kiln_u8s8_gemm_ukernel__neondot(size_t rows, size_t nseg, size_t seg_len,
                                     const uint8_t* const* a, const int8_t* b, int32_t* c,
                                     size_t ldc, size_t cols) {
  const int8x16_t ones = vdupq_n_s8(1);
  for (size_t j0 = 0; j0 < cols; j0 += 16) {
    for (size_t r0 = 0; r0 < rows; r0 += 4) {
      const size_t nr = std::min<size_t>(4, rows - r0);
      int32x4_t acc[4][4], bsum[4];
      for (int t = 0; t < 4; ++t) {
        bsum[t] = vdupq_n_s32(0);
        for (int r = 0; r < 4; ++r) acc[r][t] = vdupq_n_s32(0);
      }
      const int8_t* bs = b;
      for (size_t s = 0; s < nseg; ++s, bs += seg_len * kInt8Nr) {
        const uint8_t* ar[4];
        for (size_t r = 0; r < 4; ++r) ar[r] = a[(r0 + std::min(r, nr - 1)) * nseg + s];
        for (size_t q = 0; q < seg_len; q += 4) {
          const int8_t* bq = bs + q * kInt8Nr + j0 * 4;  // 16 columns x 4 k
          int8x16_t bv[4];
          for (int t = 0; t < 4; ++t) {
            bv[t] = vld1q_s8(bq + 16 * t);
            bsum[t] = vdotq_s32(bsum[t], bv[t], ones);
          }
          for (int r = 0; r < 4; ++r) {
            uint32_t quad;
            std::memcpy(&quad, ar[r] + q, 4);
            const int8x16_t av = vreinterpretq_s8_u32(vdupq_n_u32(quad ^ 0x80808080u));
            for (int t = 0; t < 4; ++t) acc[r][t] = vdotq_s32(acc[r][t], bv[t], av);
          }
        }
      }
      const size_t n = std::min<size_t>(16, cols - j0);
      for (size_t r = 0; r < nr; ++r) {
        int32_t out[16];
        for (int t = 0; t < 4; ++t)
          vst1q_s32(out + 4 * t, vmlaq_n_s32(acc[r][t], bsum[t], 128));
        std::memcpy(c + (r0 + r) * ldc + j0, out, n * sizeof(int32_t));
      }
    }
  }
}

}  // namespace kiln
