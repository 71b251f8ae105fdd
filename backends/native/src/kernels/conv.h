// Single-precision 2-D convolution, NCHW, with the GEMM epilogue fused.
//
//   y[n, k, oy, ox] = act(bias[k] + residual[n, k, oy, ox]
//                         + sum_{c in group(k), ky, kx} w[k, c, ky, kx] * x[n, c, iy, ix])
//   iy = oy * stride_h - pad_top + ky * dilation_h   (zero outside the input), same for ix.
//
// Weights are packed once when a Conv2d is built; `run` is then called per inference.
// Algorithms, chosen per layer by shape unless forced:
//   gemm_1x1   1x1, stride 1, no padding: y[n,g] = W[g] * x[n,g] directly
//   im2col     any shape: the patch matrix is written straight into GEMM panels
//   depthwise  groups == C == K: a per-plane SIMD kernel (kernels/dwconv_ukernel.h)
//   winograd   3x3, stride 1, no dilation, one group: F(4x4, 3x3), 36 GEMMs per tile block
//              (kernels/winograd_ukernel.h); 4x fewer multiplies, more memory traffic
//   direct     one group, few input channels (image stems): output rows straight from the
//              input, output columns in vector lanes (kernels/directconv_ukernel.h)
//   implicit   one group or more, any stride: output channels in vector lanes and pixels in
//              the tile's rows, the input read in place (zero padded once, split into
//              stride phases when strided) through a per-(channel, tap) offset table: no
//              patch matrix; the product comes out pixel-major and is transposed into NCHW,
//              or stored as it is for an NHWC output
//   reference  plain loops (the oracle)
#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/gemm.h"

namespace kiln {

class ThreadPool;

struct Conv2dParams {
  size_t N = 1, C = 0, H = 0, W = 0;  // input: N x C x H x W
  size_t K = 0;                       // output channels
  size_t kh = 1, kw = 1;
  size_t stride_h = 1, stride_w = 1;
  size_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  size_t dilation_h = 1, dilation_w = 1;
  size_t groups = 1;

  // Output height / width; call validate() first.
  size_t out_h() const;
  size_t out_w() const;
  // Throws std::invalid_argument naming the first inconsistent parameter (zero sizes,
  // channels not divisible by groups, dilated kernel larger than the padded input).
  void validate() const;

  bool operator==(const Conv2dParams& o) const;
};

enum class ConvAlgo : int {
  automatic = 0, reference, gemm_1x1, im2col, depthwise, winograd, direct, implicit
};
constexpr ConvAlgo kLastConvAlgo = ConvAlgo::implicit;  // the loop bound of name lookups
const char* conv_algo_name(ConvAlgo algo);

// Where a convolution's activations lie: NCHW planes (the default) or NHWC pixels
// ([N, H, W, C]), chosen apart for the input, the output and the residual. The implicit
// GEMM reads and writes NHWC itself (its tile is pixels x channels); the other algorithms
// run NCHW between a transpose of the NHWC operands at the edges.
struct ConvLayout {
  bool nhwc_in = false, nhwc_out = false, nhwc_residual = false;
  bool any() const { return nhwc_in || nhwc_out || nhwc_residual; }
};

// The algorithm ConvAlgo::automatic picks for p, and the one it picks when the activations
// are handed over in NHWC (the implicit GEMM, unless a shape-specific path wins).
ConvAlgo choose_conv_algo(const Conv2dParams& p, bool nhwc = false);

// A per-input-channel affine (and optional Relu) applied to x before the convolution: an
// inference BatchNormalization (+ Relu) that the executor folded into its consumer.
struct ChannelAffine {
  const float* scale = nullptr;  // C values
  const float* shift = nullptr;  // C values
  bool relu = false;
};

// A convolution's constant weights in the form one algorithm family reads. None of the forms
// depends on the input's size, so the Conv2d of every input shape can share one.
struct PackedConvWeights {
  size_t K = 0, C = 0, kh = 0, kw = 0, groups = 0;  // the weights it was packed from
  std::vector<float> plain;  // reference / depthwise; direct: blocks of output channels
  // GEMM algorithms: one per group; winograd: one per transform point (36).
  std::vector<std::unique_ptr<PackedA>> panels;
  // implicit: the transposed weights [C/groups * kh * kw, K/groups] as B panels, one per group
  std::vector<std::unique_ptr<PackedB>> b_panels;
  size_t bytes() const;
};

// The packed forms of one constant weight tensor, each made on first request and kept:
// gemm_1x1 and im2col read one form (the [K, C/groups * kh * kw] panels), winograd another,
// direct one in blocks of output channels, reference and depthwise a plain copy. A form asked
// for under another grouping of the same values (another matrix) is packed for that caller
// and not kept. Thread safe. The weights must stay at the same address with the same values.
class ConvWeightForms {
 public:
  // pool (may be null) packs a missing form on several threads.
  // taps_outer: the implicit GEMM's form for an NHWC input (reduction ordered (ky, kx, c)).
  std::shared_ptr<const PackedConvWeights> get(ConvAlgo algo, const Conv2dParams& p,
                                               const float* weights, ThreadPool* pool = nullptr,
                                               bool taps_outer = false);
  // Forms packed so far (a test hook: shapes that share a form pack it once).
  size_t packed_count() const;

 private:
  mutable std::mutex mutex_;
  // plain, gemm, winograd, direct, implicit, implicit_taps_outer
  std::shared_ptr<const PackedConvWeights> forms_[6];
};

class Conv2d {
 public:
  // weights: K x (C / groups) x kh x kw, read once (packed, not referenced afterwards);
  // with `forms`, the packed form comes from (and is kept in) it, shared with other shapes;
  // pool (may be null) packs on several threads. nhwc_in: run() will mostly be handed NHWC
  // inputs (the implicit GEMM then orders its weights for them; either layout stays correct).
  // Throws std::invalid_argument for bad params or an algorithm that cannot run them.
  Conv2d(const Conv2dParams& p, const float* weights, ConvAlgo algo = ConvAlgo::automatic,
         ConvWeightForms* forms = nullptr, ThreadPool* pool = nullptr, bool nhwc_in = false);
  ~Conv2d();
  Conv2d(const Conv2d&) = delete;
  Conv2d& operator=(const Conv2d&) = delete;

  // x: N x C x H x W, y: N x K x out_h x out_w (each NHWC instead where `layout` says). The
  // epilogue's bias must be none or per_row (K values, one per output channel); residual, if
  // set, is y's size and may alias y. pool may be null.
  void run(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
           const ChannelAffine* prologue = nullptr, const ConvLayout& layout = {}) const;
  // Whether run() accepts a prologue: the 1x1 GEMM path applies it while packing, the
  // depthwise path while copying each plane into its zero-padded buffer.
  bool takes_prologue() const {
    return (algo_ == ConvAlgo::gemm_1x1 && p_.groups == 1) || algo_ == ConvAlgo::depthwise;
  }

  ConvAlgo algorithm() const { return algo_; }
  const Conv2dParams& params() const { return p_; }
  size_t packed_bytes() const;

 private:
  void run_gemm(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
                const ChannelAffine* prologue) const;
  void run_depthwise(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
                     const ChannelAffine* prologue) const;
  void run_depthwise_nhwc(const float* x, float* y, const Epilogue& ep, ThreadPool* pool) const;
  void run_winograd(const float* x, float* y, const Epilogue& ep, ThreadPool* pool) const;
  void run_direct(const float* x, float* y, const Epilogue& ep, ThreadPool* pool) const;
  void run_implicit(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
                    const ConvLayout& layout) const;
  void run_nchw(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
                const ChannelAffine* prologue) const;

  Conv2dParams p_;
  ConvAlgo algo_;
  std::shared_ptr<const PackedConvWeights> w_;
  std::vector<size_t> offsets_;  // implicit: per (channel, tap), its offset in the input
  std::vector<size_t> offsets_nhwc_;  // the same in an NHWC input
  std::vector<float> taps_major_;  // depthwise: the weights tap by tap (C each), for NHWC
};

// For an executor kernel whose weights are constant but whose input shape is known only at
// run time: one Conv2d per input shape seen, built on first use and reused after; the shapes
// share packed weights (ConvWeightForms). Thread safe. The weights must stay at the same
// address with the same values.
class Conv2dCache {
 public:
  const Conv2d& get(const Conv2dParams& p, const float* weights,
                    ConvAlgo algo = ConvAlgo::automatic);
  size_t size() const;
  // Packed weight forms held: at most one per algorithm family, whatever the shapes seen.
  size_t packed_forms() const { return forms_.packed_count(); }

 private:
  mutable std::mutex mutex_;
  ConvWeightForms forms_;
  std::vector<std::unique_ptr<Conv2d>> convs_;
};

// Whether ConvAlgo::automatic may pick Winograd (on by default). Its results differ from the
// direct sum by ~1e-5 relative (vs ~1e-6 for im2col); turn it off for bit-closer numerics.
void set_winograd_enabled(bool enabled);
// Whether the NHWC choice keeps Winograd where it wins in NCHW (on by default; a measuring
// hook: off, those convs run the implicit GEMM on their NHWC operands instead).
void set_winograd_nhwc(bool enabled);
// Output planes of at most this many pixels run depthwise in the blocked form (channels in
// vector lanes); kDwConvBlockedMaxPixels by default, 0 = always the plane form (a test hook:
// both forms stay reachable on the same shapes). Returns the limit it replaced.
size_t set_dwconv_blocked_max_pixels(size_t pixels);

// Image layout transposes, in blocks of pixels with all their channels, on the pool when given:
// dst[n][c][p] = src[n][p][c] (nhwc_to_nchw) and dst[n][p][c] = src[n][c][p] (nchw_to_nhwc).
void nhwc_to_nchw(const float* src, size_t N, size_t HW, size_t C, float* dst, ThreadPool* pool);
void nchw_to_nhwc(const float* src, size_t N, size_t C, size_t HW, float* dst, ThreadPool* pool);

// Plain loops with the same contract as Conv2d::run: the oracle.
void conv2d_reference(const Conv2dParams& p, const float* x, const float* w, float* y,
                      const Epilogue& ep);

}  // namespace kiln
