// Winograd F(4x4, 3x3) transforms over 16 tiles (the NEON SGEMM's nr), vectorized by the
// compiler for NEON.
#include "kernels/ukernels.h"
#include "kernels/winograd_ukernel.h"

namespace kiln {

void kiln_f32_wino43_input_ukernel__neon_x16(const float* d, float* v, size_t vs) {
  wino43::input<16>(d, v, vs);
}

void kiln_f32_wino43_output_ukernel__neon_x16(const float* m, size_t ms, float* y) {
  wino43::output<16>(m, ms, y);
}

void kiln_f32_wino43_gather_ukernel__neon_x16(const float* src, size_t rs, size_t n, float* d) {
  wino43::gather<16>(src, rs, n, d);
}

void kiln_f32_wino43_scatter_ukernel__neon_x16(const float* y, size_t n, size_t rows,
                                               float bias, const float* res, float* dst,
                                               size_t ds) {
  wino43::scatter<16>(y, n, rows, bias, res, dst, ds);
}

}  // namespace kiln
