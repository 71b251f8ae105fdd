// The matrix-vector contract of the GEMV kernels (kernels/simd/f32_gemv.h and
// generic/f32_gemv.cpp): packed SGEMM weight panels times one vector, for a convolution or
// Gemm with a single output column (a squeeze-excitation conv, a classifier), where the
// tiled GEMM would pad the one column to a whole nr-wide panel.
//
// `a` holds `panels` consecutive panels of the SGEMM A layout for tile height MR (the list's
// mr of the same ISA): panel p, k in [0, K), row r in [0, MR) at a[(p * K + k) * MR + r].
//   y[p * MR + r] = sum_k a[(p * K + k) * MR + r] * v[k]
// y has room for panels * MR floats (rows past the matrix's last are computed from the zero
// padding of the last panel).
#pragma once
#include <cstddef>

namespace kiln {

using f32_gemv_fn = void (*)(size_t panels, size_t K, const float* a, const float* v, float* y);

}  // namespace kiln
