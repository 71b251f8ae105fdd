// u8 x s8 -> s32 microkernel for aarch64 with the int8 matrix-multiply extension (i8mm):
// usdot multiplies unsigned A by signed B directly, so no shift or correction is needed.
// Same blocking as the dotprod kernel: four rows x 16 columns, one usdot per row and vector.
// (smmla, the 2x8x2 matrix form, needs a different B packing; not used yet.)
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/int8_gemm.h"

namespace kiln {

void kiln_u8s8_gemm_ukernel__neoni8mm(size_t rows, size_t nseg, size_t seg_len,
                                      const uint8_t* const* a, const int8_t* b, int32_t* c,
                                      size_t ldc, size_t cols) {
  for (size_t j0 = 0; j0 < cols; j0 += 16) {
    for (size_t r0 = 0; r0 < rows; r0 += 4) {
      const size_t nr = std::min<size_t>(4, rows - r0);
      int32x4_t acc[4][4];
      for (auto& row : acc)
        for (auto& v : row) v = vdupq_n_s32(0);
      const int8_t* bs = b;
      for (size_t s = 0; s < nseg; ++s, bs += seg_len * kInt8Nr) {
        const uint8_t* ar[4];
        for (size_t r = 0; r < 4; ++r) ar[r] = a[(r0 + std::min(r, nr - 1)) * nseg + s];
        for (size_t q = 0; q < seg_len; q += 4) {
          const int8_t* bq = bs + q * kInt8Nr + j0 * 4;
          int8x16_t bv[4];
          for (int t = 0; t < 4; ++t) bv[t] = vld1q_s8(bq + 16 * t);
          for (int r = 0; r < 4; ++r) {
            uint32_t quad;
            std::memcpy(&quad, ar[r] + q, 4);
            const uint8x16_t av = vreinterpretq_u8_u32(vdupq_n_u32(quad));
            for (int t = 0; t < 4; ++t) acc[r][t] = vusdotq_s32(acc[r][t], av, bv[t]);
          }
        }
      }
      const size_t n = std::min<size_t>(16, cols - j0);
      for (size_t r = 0; r < nr; ++r) {
        int32_t out[16];
        for (int t = 0; t < 4; ++t) vst1q_s32(out + 4 * t, acc[r][t]);
        std::memcpy(c + (r0 + r) * ldc + j0, out, n * sizeof(int32_t));
      }
    }
  }
}

}  // namespace kiln
