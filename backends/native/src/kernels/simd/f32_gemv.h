// Packed weight panels times a vector (contract in kernels/gemv_ukernel.h), written once over
// a vector traits type V (kernels/<isa>/vec.h). Each k step of a panel is one MR-float row:
// ceil(MR / kWidth) vectors, the last one masked when MR is not a multiple of the width.
// Four k steps run as independent FMA chains so that the loop is bound by loads, not by
// the FMA latency; the weights stream once, which is all a GEMV can do.
#pragma once
#include <cstddef>

#include "kernels/gemv_ukernel.h"
#include "kernels/simd/lanes.h"

namespace kiln::simd {

template <typename V, size_t MR>
void gemv_panels(size_t panels, size_t K, const float* a, const float* v, float* y) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  constexpr size_t NV = (MR + W - 1) / W;
  constexpr size_t last = MR - (NV - 1) * W;  // lanes used by the last vector of a row
  const auto tail = V::tail_of(last);
  auto row = [&](const float* p, size_t j) {
    return j + 1 < NV || last == W ? V::load(p + j * W) : V::load_tail(p + j * W, tail);
  };
  for (size_t pi = 0; pi < panels; ++pi, a += K * MR, y += MR) {
    vec acc[4][NV];
    for (auto& chain : acc)
      for (auto& s : chain) s = V::zero();
    size_t k = 0;
    for (; k + 4 <= K; k += 4) {
#pragma GCC unroll 4
      for (size_t u = 0; u < 4; ++u) {
        const vec vk = V::set1(v[k + u]);
#pragma GCC unroll 4
        for (size_t j = 0; j < NV; ++j)
          acc[u][j] = V::fma(row(a + (k + u) * MR, j), vk, acc[u][j]);
      }
    }
    for (; k < K; ++k) {
      const vec vk = V::set1(v[k]);
#pragma GCC unroll 4
      for (size_t j = 0; j < NV; ++j) acc[0][j] = V::fma(row(a + k * MR, j), vk, acc[0][j]);
    }
#pragma GCC unroll 4
    for (size_t j = 0; j < NV; ++j) {
      const vec s = V::add(V::add(acc[0][j], acc[1][j]), V::add(acc[2][j], acc[3][j]));
      store_n<V>(y + j * W, s, j + 1 < NV ? W : last);
    }
  }
}

}  // namespace kiln::simd
