// The depthwise convolution plane microkernel (contract in kernels/dwconv_ukernel.h), written
// once over a vector traits type V (kernels/<isa>/vec.h): kWidth output columns per vector,
// stride 1 as plain loads, stride 2 as V::load_even. 3x3 and 5x5 get the tap loops unrolled
// with the taps in registers; other sizes up to 64 taps loop; the rest go to the plain kernel.
#pragma once
#include <cstddef>

#include "kernels/simd/lanes.h"
#include "kernels/simd/vmath.h"
#include "kernels/ukernels.h"

namespace kiln::simd {

template <typename V, int SW>
inline typename V::vec dwconv_window(const float* s) {
  return SW == 1 ? V::load(s) : V::load_even(s);
}

// KH, KW > 0: fixed kernel size, tap loops unrolled; 0: the plane's own size (<= 64 taps).
template <typename V, int KH, int KW, int SW>
void dwconv_plane(const DwConvPlane& p) {
  using vec = typename V::vec;
  constexpr size_t W = V::kWidth;
  const size_t kh = KH ? KH : p.kh, kw = KW ? KW : p.kw;
  vec w[KH ? KH * KW : 64];
#pragma GCC unroll 25
  for (size_t i = 0; i < kh * kw; ++i) w[i] = V::set1(p.w[i]);
  const vec bias = V::set1(p.bias);
  for (size_t oy = 0; oy < p.oh; ++oy) {
    float* y = p.y + oy * p.ow;
    const float* res = p.residual ? p.residual + oy * p.ow : nullptr;
    const float* rows = p.x + oy * p.sh * p.x_stride;
    for (size_t ox = 0; ox < p.ow; ox += W) {
      vec acc0 = bias, acc1 = V::zero();  // two chains halve the dependent FMA latency
#pragma GCC unroll 5
      for (size_t ky = 0; ky < kh; ++ky) {
        const float* row = rows + ky * p.dh * p.x_stride + ox * SW;
#pragma GCC unroll 5
        for (size_t kx = 0; kx < kw; ++kx) {
          const vec v = dwconv_window<V, SW>(row + kx * p.dw);
          if ((ky * kw + kx) % 2 == 0) acc0 = V::fma(w[ky * kw + kx], v, acc0);
          else acc1 = V::fma(w[ky * kw + kx], v, acc1);
        }
      }
      vec acc = V::add(acc0, acc1);
      const size_t left = p.ow - ox;
      if (res) acc = V::add(acc, load_n<V>(res + ox, left));
      store_n<V>(y + ox, activate<V>(acc, p.act, p.alpha, p.beta), left);
    }
  }
}

template <typename V>
void dwconv_ukernel(const DwConvPlane& p) {
  if (p.kh * p.kw > 64 || (p.sw != 1 && p.sw != 2)) return kiln_f32_dwconv_ukernel__generic(p);
  const bool s1 = p.sw == 1;
  if (p.kh == 3 && p.kw == 3) return s1 ? dwconv_plane<V, 3, 3, 1>(p) : dwconv_plane<V, 3, 3, 2>(p);
  if (p.kh == 5 && p.kw == 5) return s1 ? dwconv_plane<V, 5, 5, 1>(p) : dwconv_plane<V, 5, 5, 2>(p);
  if (s1) dwconv_plane<V, 0, 0, 1>(p);
  else dwconv_plane<V, 0, 0, 2>(p);
}

}  // namespace kiln::simd
