// The plane contract of the depthwise convolution kernels (kernels/simd/f32_dwconv.h and
// generic/f32_dwconv.cpp).
//
// One channel, read straight from its tensor (no padded copy of the plane):
//   u[iy, ix] = in_relu ? max(in_scale * x[iy, ix] + in_shift, 0) : in_scale * x[...] + in_shift
//               inside the in_h x in_w plane, 0 in the padding;
//   y[oy, ox] = act(bias + sum_{ky,kx} w[ky, kx] * u[oy*sh + ky*dh - pad_top,
//                                                   ox*sw + kx*dw - pad_left]
//                   + residual[oy, ox])
// The SIMD kernels stage the input rows they need, zero padded, in `rows` (a ring of a few
// rows, dwconv_scratch_floats(p) floats, in L1), so each input row is read once and the
// taps are loads without bounds checks. `rows` must be all zero before the first plane of a
// shape; kernels write only the data columns of it, so it stays valid for the next planes
// of the same shape.
#pragma once
#include <algorithm>
#include <cstddef>

#include "kernels/gemm.h"

namespace kiln {

struct DwConvPlane {
  const float* x;  // in_h rows of in_w floats
  size_t in_h, in_w, pad_top, pad_left;
  const float* w;  // kh * kw taps
  float* y;
  const float* residual;  // oh * ow, or nullptr
  float bias;
  size_t oh, ow, kh, kw, sh, sw, dh, dw;
  Activation act;
  float alpha, beta;
  float* rows;  // staging scratch, see above
  // The per-channel input affine (a folded BatchNormalization, + Relu) applied to real
  // pixels only, when has_prologue.
  bool has_prologue = false;
  bool in_relu = false;
  float in_scale = 1.0f, in_shift = 0.0f;
  // The blocked form, for small planes: `channels` (1..kDwConvBlockChannels; 0 = the plane
  // form above) consecutive channels in one call, their planes in_h * in_w floats apart in x
  // and oh * ow apart in y and residual, channel c's taps at w + c * kh * kw; bias and
  // prologue per channel from the arrays (null: bias 0, no prologue; `bias`, `in_scale`,
  // `in_shift` and `has_prologue` are then unused; in_relu still says whether the prologue
  // ends in a Relu). `rows` is then dwconv_block_scratch_floats(p) floats, any contents. The
  // SIMD kernels put the channels in vector lanes (a padded pixels x channels copy of the
  // planes): a plane of a few dozen pixels fills few lanes of a row-wise vector, and each
  // plane pays a call and its staging.
  size_t channels = 0;
  const float* biases = nullptr;
  const float* in_scales = nullptr;
  const float* in_shifts = nullptr;
  // The NHWC form (nhwc_stride > 0): x, y and residual are images of pixels nhwc_stride floats
  // apart (the image's channel count), each pointing at the first of `channels` consecutive
  // channels; tap t's weights are at w + t * nhwc_stride (tap-major), the biases per channel
  // (null: 0). Output rows [oy0, oy1) are computed, none of the others touched. No prologue;
  // `rows` is unused. The SIMD kernels put the channels in vector lanes and read the pixels
  // in place: no staging and no transposes, where the NCHW planes pay one or the other.
  size_t nhwc_stride = 0;
  size_t oy0 = 0, oy1 = 0;
};

// Readable floats past the last staged row (>= 2 vectors: the stride-2 window reads two);
// inside the ring a row's overreads land in the next slot, whose values only reach output
// lanes that are never stored.
constexpr size_t kDwConvSlack = 64;

// Padded columns the outputs of one row read.
inline size_t dwconv_cols(const DwConvPlane& p) {
  return (p.ow - 1) * p.sw + (p.kw - 1) * p.dw + 1;
}
// The floats of one staged row: whole 64-byte lines, so that every row starts on one (with
// the scratch aligned) and the first tap's loads never straddle two lines.
inline size_t dwconv_row_floats(const DwConvPlane& p) { return (dwconv_cols(p) + 15) / 16 * 16; }
// Output rows whose input rows are staged ahead of use, so that staging a row and reading it
// overlap with other work instead of following each other.
constexpr size_t kDwConvLookahead = 2;
// A plane whose padded rows fit in this many floats is staged whole before any output row
// (small planes have too little work per row to hide the staging behind).
constexpr size_t kDwConvWholePlaneFloats = 4096;
// Most output rows taken at once on whole staged planes (simd/f32_dwconv.h,
// dwconv_plane_grouped): 8 chains keep two FMA pipes of latency 4 busy.
constexpr size_t kDwConvRowGroup = 8;
// Padded rows the outputs read.
inline size_t dwconv_padded_rows(const DwConvPlane& p) {
  return (p.oh - 1) * p.sh + (p.kh - 1) * p.dh + 1;
}
// Whether the plane kernels stage a plane too large to stage whole a group of output rows at
// a time (simd/f32_dwconv.h): the 5x5 and 7x7 taps at stride 1, whose rows share enough taps
// per window load to pay for restaging the rows two groups share.
inline bool dwconv_stages_groups(const DwConvPlane& p) {
  return p.sh == 1 && p.sw == 1 && p.kh == p.kw && (p.kh == 5 || p.kh == 7);
}
// The staging ring: the vertical window's rows and the lookahead's, or every padded row of a
// small plane, or where dwconv_stages_groups the rows of a group of kDwConvRowGroup output
// rows (staged a group at a time); the zero row comes after it.
inline size_t dwconv_ring_rows(const DwConvPlane& p) {
  const size_t all = dwconv_padded_rows(p);
  if (all * dwconv_row_floats(p) <= kDwConvWholePlaneFloats) return all;
  const size_t group = dwconv_stages_groups(p) ? kDwConvRowGroup + (p.kh - 1) * p.dh : 0;
  return std::min(all, std::max((p.kh - 1) * p.dh + 1 + kDwConvLookahead * p.sh, group));
}
inline size_t dwconv_scratch_floats(const DwConvPlane& p) {
  return (dwconv_ring_rows(p) + 1) * dwconv_row_floats(p) + kDwConvSlack;
}

// Channels per call of the blocked form (the widest vector's lanes; narrower ones take them
// in several passes).
constexpr size_t kDwConvBlockChannels = 16;
// Output planes of at most this many pixels go in the blocked form (conv.cpp). Zen 4, one
// thread, plane form -> blocked: 5x5 over 256 x 14 x 14 at stride 2 60 -> 28 us, over
// 672 x 7 x 7 91 -> 54, over 120 x 20 x 20 64 -> 51; 3x3 over 960 x 7 x 7 93 -> 47, over 96 x
// 40 x 40 at stride 2 60 -> 49; at 28 x 28 outputs a tie (72 channels 40 -> 38 us, 128 at
// stride 1 62 -> 65), and larger planes lose (64 x 56 x 56: 110 -> 126 us).
constexpr size_t kDwConvBlockedMaxPixels = 20 * 20;
// ... and their padded inputs of at most this many pixels (16 channels of them: 256 KiB).
constexpr size_t kDwConvBlockedMaxPadded = 64 * 64;
// The blocked form's scratch: the padded input rows as pixels x channels, and the outputs.
inline size_t dwconv_block_scratch_floats(const DwConvPlane& p) {
  return (dwconv_padded_rows(p) * dwconv_cols(p) + p.oh * p.ow) * kDwConvBlockChannels +
         kDwConvSlack;
}

// The NHWC form's band of output rows: their input rows (every channel) take at most this
// many bytes, so they stay in L2 while each vector of channels walks them.
constexpr size_t kDwConvNhwcBandBytes = 256 * 1024;

using dwconv_plane_fn = void (*)(const DwConvPlane& p);

}  // namespace kiln
