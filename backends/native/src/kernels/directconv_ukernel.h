// The contract of the direct convolution kernels (kernels/simd/f32_directconv.h and
// generic/f32_directconv.cpp): a convolution of one image and one group read straight from
// the NCHW input, no patch matrix, for layers with few input channels (image stems), where
// the im2col GEMM's reduction (C * kh * kw, 27 for a 3x3 RGB stem) is too short to amortize
// its tile loads and stores and the output channels pad its row panels.
//
//   y[k, oy, ox] = act(bias[k] + residual[k, oy, ox]
//                      + sum_{c, ky, kx} w[k, c, ky, kx] * x[c, oy*sh + ky*dh - pad_top,
//                                                         ox*sw + kx*dw - pad_left])
// for output rows [oy0, oy1) and every output channel k < K (x zero outside the plane).
//
// Output columns go in vector lanes and each tap's weight is broadcast: the SIMD kernels
// stage every input row they read once, zero padded and split into sw phases, so that the
// columns ox*sw + t of a tap offset t are one contiguous run of phase t % sw (at t / sw):
//   phase p of padded row r, element j = x[c, r - pad_top, j*sw + p - pad_left] (or 0).
#pragma once
#include <cstddef>

#include "kernels/gemm.h"

namespace kiln {

// Weights are packed in blocks of this many output channels, tap-major inside a block:
//   w[(b * C*kh*kw + (c*kh + ky)*kw + kx) * kDirectConvBlock + j] = W[b*block + j, c, ky, kx]
// (0 for channels past K), so one tap's weights for a block are adjacent.
constexpr size_t kDirectConvBlock = 8;
// Output columns a staged phase holds past round_up(ow, this): whole vector blocks of every
// ISA's kernel read there (lanes that are never stored).
constexpr size_t kDirectConvColumnBlock = 64;

// Kernel preconditions: C * kh <= kDirectConvMaxTapRows, kw <= kDirectConvMaxKw.
constexpr size_t kDirectConvMaxTapRows = 64;
constexpr size_t kDirectConvMaxKw = 16;

struct DirectConvRows {
  const float* x;  // C x H x W, one image
  size_t C, H, W;
  const float* w;  // packed as above
  size_t K, kh, kw, sh, sw, dh, dw, pad_top, pad_left;
  size_t oh, ow;
  size_t oy0, oy1;         // output rows this call computes
  const float* bias;       // K values, or nullptr
  const float* residual;   // K x oh x ow, or nullptr; may alias y
  float* y;                // K x oh x ow
  Activation act;
  float alpha, beta;
  float* scratch;  // directconv_scratch_floats(*this) floats, any contents
};

// Floats of one phase of a staged row: every column a tap reads, for whole column blocks.
inline size_t directconv_phase_floats(const DirectConvRows& p) {
  const size_t cols = (p.ow + kDirectConvColumnBlock - 1) / kDirectConvColumnBlock *
                      kDirectConvColumnBlock;
  return (cols + (p.kw - 1) * p.dw / p.sw + 1 + 15) / 16 * 16;
}
// Staged rows kept per input channel: the vertical window of one output row.
inline size_t directconv_ring_rows(const DirectConvRows& p) { return (p.kh - 1) * p.dh + 1; }
// The ring of every channel plus one zero row.
inline size_t directconv_scratch_floats(const DirectConvRows& p) {
  return (p.C * directconv_ring_rows(p) + 1) * p.sw * directconv_phase_floats(p);
}

using directconv_fn = void (*)(const DirectConvRows& p);

}  // namespace kiln
