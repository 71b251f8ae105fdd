// Plain C++ packed-panel GEMV (contract in kernels/gemv_ukernel.h).
#include "kernels/ukernels.h"

namespace kiln {

namespace {

template <size_t MR>
void gemv_panels(size_t panels, size_t K, const float* a, const float* v, float* y) {
  for (size_t pi = 0; pi < panels; ++pi, a += K * MR, y += MR) {
    float sum[MR] = {};
    for (size_t k = 0; k < K; ++k)
      for (size_t r = 0; r < MR; ++r) sum[r] += a[k * MR + r] * v[k];
    for (size_t r = 0; r < MR; ++r) y[r] = sum[r];
  }
}

}  // namespace

void kiln_f32_gemv_ukernel__generic_4(size_t panels, size_t K, const float* a, const float* v,
                                      float* y) {
  gemv_panels<4>(panels, K, a, v, y);
}

void kiln_f32_gemv_ukernel__generic_16(size_t panels, size_t K, const float* a, const float* v,
                                       float* y) {
  gemv_panels<16>(panels, K, a, v, y);
}

}  // namespace kiln
