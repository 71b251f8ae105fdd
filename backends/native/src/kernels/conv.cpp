// Convolution drivers: parameter checks, algorithm choice, im2col into GEMM panels, the
// depthwise plane loop and the reference loops.
#include "kernels/conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "kernels/gemm_driver.h"
#include "kernels/ukernels.h"
#include "threadpool.h"

namespace kiln {

namespace {

std::atomic<size_t> g_conv_min_block{0};

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("conv2d: " + what);
}

std::string dims(size_t a, size_t b) { return std::to_string(a) + "x" + std::to_string(b); }

bool is_depthwise(const Conv2dParams& p) {
  return p.groups > 1 && p.groups == p.C && p.K == p.C;
}

bool is_winograd_shape(const Conv2dParams& p) {
  return p.kh == 3 && p.kw == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 &&
         p.dilation_w == 1 && p.groups == 1;
}

std::atomic<bool> g_winograd_enabled{true};
std::atomic<size_t> g_dw_blocked_max_pixels{kDwConvBlockedMaxPixels};
std::atomic<bool> g_winograd_nhwc{true};

// Columns a GEMM computes for `cols`: whole nr-wide panels, a short last one at half width.
double gemm_computed_columns(size_t cols, size_t nr) {
  const size_t tail = cols % nr;
  return double(cols / nr * nr + (tail == 0 ? 0 : tail <= nr / 2 ? nr / 2 : nr));
}

// F(4,3) against the implicit GEMM (the NCHW alternative for 3x3 stride 1), as costs in
// implicit-GEMM multiply-adds:
//   implicit  9 C K P + 45 K P              (P output pixels; the second term its per-pixel
//                                            transpose and epilogue)
//   F(4,3)    1.3 x 36 C K cols(T)          (36 GEMMs over T = 4x4 tiles, columns rounded up
//             + 25 x 36 (C + K) T           to the GEMM's panels; the transforms per element;
//             + 2.8e6                       a fixed cost per call)
// Fitted on this machine's CPU (AMD EPYC Zen 4, one thread, min of 3x3 calls on 40 shapes
// from the light zoo and the real-model corpus, 7x7 to 208x208 maps, 12 to 512 channels);
// it picks the faster of the two on 39 of them at one thread (the 40th, 16 -> 16 at 80x80,
// is within 10%). In the whole models (same process, interleaved, two threads) it
// made ResNet-50 0.95x, DenseNet-121 0.93x, Inception v1 0.98x, a YOLOv8n detector 0.96x and
// the ddddocr detector and recognizer 0.94x / 0.89x the time of the rule it replaced (C and
// K >= 64, at least 16 tiles, 25 unless the F(4,3) weights fit in L2: fitted on a Xeon with
// two 512-bit FMA units, where the GEMM's multiplies are cheaper against the transforms).
// F(4,3) holds 4x the weight bytes of the implicit GEMM (36 vs 9 matrices).
bool winograd_wins(const Conv2dParams& p) {
  if (!g_winograd_enabled.load() || !is_winograd_shape(p)) return false;
  const size_t nr = gemm_kernel(active_isa()).nr;
  const double C = double(p.C), K = double(p.K);
  const double pixels = double(p.N * p.out_h() * p.out_w());
  const size_t tiles = p.N * ((p.out_h() + 3) / 4) * ((p.out_w() + 3) / 4);
  const double implicit = 9.0 * C * K * pixels + 45.0 * K * pixels;
  const double winograd = 1.3 * 36.0 * C * K * gemm_computed_columns(tiles, nr) +
                          25.0 * 36.0 * (C + K) * double(tiles) + 2.8e6;
  return winograd < implicit;
}

// What the direct kernels take (kernels/directconv_ukernel.h): one group and a window that
// fits their row tables.
bool is_direct_shape(const Conv2dParams& p) {
  return p.groups == 1 && p.C * p.kh <= kDirectConvMaxTapRows && p.kw <= kDirectConvMaxKw;
}

// The direct kernel against im2col + GEMM, for few input channels (C <= 4: more would make
// the GEMM's reduction long enough to amortize its tile overhead, while the direct tile's
// broadcasts per FMA stay the same). Both do kdim = C * kh * kw multiply-adds per output
// lane they compute, so their costs are compared per unit of kdim:
//   direct  ~ kDirectLaneCost * round_up(K, 8) * OH * round_up(OW, lanes)
//             (output channels in 8-channel weight blocks, each output row in whole vectors)
//   im2col  ~ round_up(K, mr) * round_up(OH * OW, nr) + kIm2colColumnCost * OH * OW
//             (the GEMM's padded tiles, and writing the patch matrix: a cost per column)
// Fitted on the Xeon (one thread, 3x3 convs of 1, 3 and 4 channels, K 32..512, 7x7..28x28
// maps; AVX-512 and AVX2 alike within ~15%): e.g. 3 -> 512 channels at 28x28 direct 200 us,
// im2col 205 us; at 20x20, where a row fills 20 of 32 lanes, direct 134 us, im2col 99 us;
// 3 -> 32 channels at 14x14 direct 4.0 us, im2col 8.0 us. Image stems (3 -> 16..64 channels
// on 112..400-wide maps) come out 1.3x-1.9x faster direct.
constexpr double kDirectLaneCost = 0.9;
constexpr double kIm2colColumnCost = 14.0;

bool direct_wins(const Conv2dParams& p) {
  if (!is_direct_shape(p) || p.C > 4) return false;
  const DirectConvKernel direct = select_f32_directconv(active_isa());
  if (direct.lanes == 1) return false;  // no SIMD kernel for this ISA
  const GemmKernel& kern = gemm_kernel(active_isa());
  const double oh = double(p.out_h()), ow = double(p.out_w()), cols = oh * ow;
  const double direct_cost = kDirectLaneCost * double(round_up(p.K, kDirectConvBlock)) * oh *
                             double(round_up(p.out_w(), direct.lanes));
  const double gemm_cost = double(round_up(p.K, kern.mr)) *
                               double(round_up(p.out_h() * p.out_w(), kern.nr)) +
                           kIm2colColumnCost * cols;
  return direct_cost <= gemm_cost;
}

// The implicit GEMM (output channels in vector lanes, pixels in rows, the input read in place)
// against the two that put pixels in the lanes. Measured on the Xeon (AVX-512, one thread):
// - kh x kw > 1 at stride 1, where im2col would write a patch matrix kh * kw times the input:
//   implicit wins everywhere measured (3x3 512 -> 512 at 7x7 2360 -> 1950 us, 256 -> 256 at
//   14x14 2010 -> 1780 us, DenseNet's 128 -> 32 at 7x7 125 -> 33 us, Inception's 5x5
//   1.6-2x); so it takes every such conv Winograd does not (winograd_wins).
// - 1x1: the pixel-lane GEMM rounds the columns up to whole (or half) nr-wide panels, so a
//   7x7 map computes 64 columns for 49 (2048 -> 512: 890 -> 740 us implicit) and a 6x6 map
//   48 for 36; on larger maps that waste is under 10%, and the implicit path's transpose
//   and strided input rows lose (1x1 at 28x28: 680 vs 1100 us). Implicit when the padded
//   columns exceed the live ones by more than 15%.
// - kh x kw > 1 at stride 2, read through stride phases: im2col's patch matrix is only
//   kh * kw / 4 times the input there, and the implicit GEMM wins on small output maps only:
//   ResNet-50's 3x3 256 -> 256 at 28 -> 14 0.84x, 512 at 14 -> 7 0.83x, 64 -> 64 at
//   28 -> 14 0.72x, 5x5 64 -> 128 at 28 -> 14 0.73x (min of 40-60 calls, one thread); even
//   at 35 -> 17 (96 -> 384), slower at 56 -> 28 (128: 1.0-1.1x, 256: 1.2x) and with 9216
//   reduction rows (1024 channels at 14 -> 7: 1.0-1.1x). Since product rows skip the
//   padding columns (RowGrid) the 28x28 outputs win too (Zen 4, one thread, in ResNet-50:
//   128 at 56 -> 28 2.53 -> 2.35 ms).
// On several threads the implicit GEMM's NCHW output is computed in bands of output rows,
// each band's pixel-major product (this many bytes at most) made and transposed into the
// planes by one thread (one fork per conv, and each half stays in its own core's L2).
constexpr size_t kImplicitBandBytes = 128 * 1024;
// An implicit-GEMM image (one group) with fewer multiply-adds than this is run whole by one
// thread, the threads taking whole images (Conv2d::run_implicit): about 20 us of one core,
// several fork-and-join round trips.
constexpr size_t kImplicitImageSplitWork = size_t(1) << 21;

constexpr size_t kImplicitStridedMaxPixels = 28 * 28, kImplicitStridedMaxDepth = 512 * 9;
bool implicit_wins(const Conv2dParams& p) {
  if (p.stride_h != 1 || p.stride_w != 1)
    return p.kh * p.kw > 1 && p.out_h() * p.out_w() <= kImplicitStridedMaxPixels &&
           p.C / p.groups * p.kh * p.kw <= kImplicitStridedMaxDepth;
  if (p.kh * p.kw > 1) return true;
  const size_t cols = p.out_h() * p.out_w();
  return gemm_computed_columns(cols, gemm_kernel(active_isa()).nr) > 1.15 * double(cols);
}

// The implicit path's input: the zero-padded planes (HP x WP) split into stride_h x stride_w
// phases of HQ x WQ each, phase (py, px) holding padded rows py, py + sh, ... and columns
// px, px + sw, ... A strided conv then reads each tap's pixels at unit stride, like stride
// 1 (one phase, the padded planes themselves).
struct ImplicitPhases {
  size_t hq, wq, count;  // rows and columns of one phase, phases per channel
  size_t plane() const { return hq * wq; }
  size_t channel() const { return count * hq * wq; }
};

ImplicitPhases implicit_phases(const Conv2dParams& p) {
  const size_t HP = p.H + p.pad_top + p.pad_bottom, WP = p.W + p.pad_left + p.pad_right;
  return {(HP + p.stride_h - 1) / p.stride_h, (WP + p.stride_w - 1) / p.stride_w,
          p.stride_h * p.stride_w};
}

bool is_pointwise(const Conv2dParams& p) {
  return p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
         p.pad_left == 0 && p.pad_bottom == 0 && p.pad_right == 0;
}

// y[k * hw + oy * ow + ox] = c[(oy * wp + ox) * ldc + k] for k in [k0, k1), oy < oh: the
// implicit path's pixel-major product into NCHW planes of hw pixels (oh rows of ow from y on),
// leaving out the wp - ow columns of each product row that fall in the padding. 4 x 4 blocks
// through SSE registers on x86 (this file is built for the baseline ISA).
void transpose_into_planes(const float* c, size_t ldc, size_t oh, size_t ow, size_t wp,
                           size_t k0, size_t k1, float* y, size_t hw) {
  size_t k = k0;
#if defined(__SSE2__)
  for (; k + 4 <= k1; k += 4)
    for (size_t oy = 0; oy < oh; ++oy) {
      const float* s = c + oy * wp * ldc + k;
      float* d = y + k * hw + oy * ow;
      size_t ox = 0;
      for (; ox + 4 <= ow; ox += 4) transpose_4x4(s + ox * ldc, ldc, d + ox, hw);
      for (; ox < ow; ++ox)
        for (size_t j = 0; j < 4; ++j) d[j * hw + ox] = s[ox * ldc + j];
    }
#endif
  for (; k < k1; ++k)
    for (size_t oy = 0; oy < oh; ++oy)
      for (size_t ox = 0; ox < ow; ++ox) y[k * hw + oy * ow + ox] = c[(oy * wp + ox) * ldc + k];
}

// The layout transposes below take blocks of pixels with all their channels, about 32 KiB
// of each layout: the NCHW side is then C runs of sequential pixels, the NHWC side one run,
// and the block stays in L1 between the two. Blocks of 4 channels over every pixel (or of 16
// pixels of every channel) walked each plane in pieces, as many streams as channels, and
// moved 7.8 MB (64 channels at 200 x 152) in 1.2 ms (NHWC -> NCHW) and 3.7 ms (NCHW -> NHWC).
size_t transpose_block_pixels(size_t C) {
  return std::clamp<size_t>(8192 / std::max<size_t>(C, 1) / 4 * 4, 16, 1024);
}

// dst[p][c] = src[c][p] for c < C, p in [p0, p1) (plane stride HW, pixel stride C), or the
// other way round (to_planes), in 4 x 4 blocks.
void transpose_block(const float* src, float* dst, size_t C, size_t HW, size_t p0, size_t p1,
                     bool to_planes) {
  const size_t ps = to_planes ? C : 1, cs = to_planes ? 1 : HW;  // src strides: pixel, channel
  const size_t pd = to_planes ? 1 : C, cd = to_planes ? HW : 1;  // dst strides
  size_t c = 0;
#if defined(__SSE2__)
  // rows of 4 along the source's contiguous axis: 4 pixels of 4 channels (to_planes) or 4
  // channels of 4 pixels, stored along the other axis
  const size_t src_stride = to_planes ? C : HW, dst_stride = to_planes ? HW : C;
  for (; c + 4 <= C; c += 4) {
    size_t p = p0;
    for (; p + 4 <= p1; p += 4)
      transpose_4x4(src + c * cs + p * ps, src_stride, dst + c * cd + p * pd, dst_stride);
    for (; p < p1; ++p)
      for (size_t j = c; j < c + 4; ++j) dst[j * cd + p * pd] = src[j * cs + p * ps];
  }
#endif
  for (; c < C; ++c)
    for (size_t p = p0; p < p1; ++p) dst[c * cd + p * pd] = src[c * cs + p * ps];
}

void transpose_images(const float* src, size_t N, size_t C, size_t HW, float* dst,
                      bool to_planes, ThreadPool* pool) {
  const size_t block = transpose_block_pixels(C), blocks = (HW + block - 1) / block;
  auto run = [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      const size_t n = b / blocks, p0 = b % blocks * block, p1 = std::min(HW, p0 + block);
      transpose_block(src + n * C * HW, dst + n * C * HW, C, HW, p0, p1, to_planes);
    }
  };
  if (pool) pool->parallel_for(N * blocks, 1, run, N * C * HW);
  else run(0, N * blocks);
}

}  // namespace

// dst[n][c][p] = src[n][p][c] for n images of HW pixels of C channels.
void nhwc_to_nchw(const float* src, size_t N, size_t HW, size_t C, float* dst, ThreadPool* pool) {
  transpose_images(src, N, C, HW, dst, true, pool);
}

// dst[n][p][c] = src[n][c][p] for n images of C planes of HW pixels.
void nchw_to_nhwc(const float* src, size_t N, size_t C, size_t HW, float* dst, ThreadPool* pool) {
  transpose_images(src, N, C, HW, dst, false, pool);
}

namespace {

// Runs body(x, y, ep) with the conv's image operands (input, output, residual) all NHWC
// (`nhwc`) or all NCHW: those `layout` hands over in the other layout are transposed at their
// edges, through the edge scratch slots.
template <class Body>
void with_operands_in(bool nhwc, const Conv2dParams& p, const float* x, float* y,
                      const Epilogue& ep, ThreadPool* pool, const ConvLayout& layout,
                      Body&& body) {
  const size_t HW = p.H * p.W, OHW = p.out_h() * p.out_w();
  auto convert = [&](const float* src, size_t C, size_t pixels, ScratchSlot slot) {
    float* t = gemm_scratch(slot, p.N * C * pixels);
    if (nhwc) nchw_to_nhwc(src, p.N, C, pixels, t, pool);
    else nhwc_to_nchw(src, p.N, pixels, C, t, pool);
    return static_cast<const float*>(t);
  };
  if (layout.nhwc_in != nhwc) x = convert(x, p.C, HW, kScratchEdgeIn);
  Epilogue e = ep;
  if (ep.residual && layout.nhwc_residual != nhwc)
    e.residual = convert(ep.residual, p.K, OHW, kScratchEdgeResidual);
  float* out = layout.nhwc_out == nhwc ? y : gemm_scratch(kScratchEdgeOut, p.N * p.K * OHW);
  body(x, out, e);
  if (out == y) return;
  if (nhwc) nhwc_to_nchw(out, p.N, OHW, p.K, y, pool);
  else nchw_to_nhwc(out, p.N, p.K, OHW, y, pool);
}

}  // namespace

ConvAlgo choose_conv_algo(const Conv2dParams& p, bool nhwc) {
  if (is_depthwise(p)) return ConvAlgo::depthwise;
  const bool implicit = implicit_wins(p);
  if (nhwc) {
    // NHWC activations: the implicit GEMM reads and writes them in place; every other
    // algorithm would pay a transpose at each edge.
    if (direct_wins(p)) return ConvAlgo::direct;
    if (winograd_wins(p) && g_winograd_nhwc) return ConvAlgo::winograd;
    return ConvAlgo::implicit;
  }
  return is_pointwise(p) && !implicit ? ConvAlgo::gemm_1x1
         : direct_wins(p)             ? ConvAlgo::direct
         : winograd_wins(p)           ? ConvAlgo::winograd
         : implicit                   ? ConvAlgo::implicit
                                      : ConvAlgo::im2col;
}

void set_conv_min_column_block(size_t columns) { g_conv_min_block = columns; }

void set_winograd_enabled(bool enabled) { g_winograd_enabled = enabled; }
size_t set_dwconv_blocked_max_pixels(size_t pixels) {
  return g_dw_blocked_max_pixels.exchange(pixels);
}

void set_winograd_nhwc(bool enabled) { g_winograd_nhwc = enabled; }

size_t Conv2dParams::out_h() const {
  return (H + pad_top + pad_bottom - ((kh - 1) * dilation_h + 1)) / stride_h + 1;
}

size_t Conv2dParams::out_w() const {
  return (W + pad_left + pad_right - ((kw - 1) * dilation_w + 1)) / stride_w + 1;
}

void Conv2dParams::validate() const {
  if (N == 0 || C == 0 || H == 0 || W == 0)
    bad("input shape N x C x H x W must be non-zero, got " + std::to_string(N) + "x" +
        std::to_string(C) + "x" + dims(H, W));
  if (K == 0) bad("output channels K must be non-zero");
  if (kh == 0 || kw == 0) bad("kernel size must be non-zero, got " + dims(kh, kw));
  if (stride_h == 0 || stride_w == 0) bad("strides must be >= 1, got " + dims(stride_h, stride_w));
  if (dilation_h == 0 || dilation_w == 0)
    bad("dilations must be >= 1, got " + dims(dilation_h, dilation_w));
  if (groups == 0) bad("groups must be >= 1");
  if (C % groups != 0)
    bad("input channels " + std::to_string(C) + " are not divisible by groups " +
        std::to_string(groups));
  if (K % groups != 0)
    bad("output channels " + std::to_string(K) + " are not divisible by groups " +
        std::to_string(groups));
  const size_t ekh = (kh - 1) * dilation_h + 1, ekw = (kw - 1) * dilation_w + 1;
  const size_t ph = H + pad_top + pad_bottom, pw = W + pad_left + pad_right;
  if (ekh > ph || ekw > pw)
    bad("kernel " + dims(ekh, ekw) + " (after dilation) is larger than the padded input " +
        dims(ph, pw));
}

bool Conv2dParams::operator==(const Conv2dParams& o) const {
  return N == o.N && C == o.C && H == o.H && W == o.W && K == o.K && kh == o.kh && kw == o.kw &&
         stride_h == o.stride_h && stride_w == o.stride_w && pad_top == o.pad_top &&
         pad_left == o.pad_left && pad_bottom == o.pad_bottom && pad_right == o.pad_right &&
         dilation_h == o.dilation_h && dilation_w == o.dilation_w && groups == o.groups;
}

const Conv2d& Conv2dCache::get(const Conv2dParams& p, const float* weights, ConvAlgo algo) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& c : convs_)
    if (c->params() == p) return *c;
  convs_.push_back(std::make_unique<Conv2d>(p, weights, algo, &forms_));
  return *convs_.back();
}

size_t Conv2dCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return convs_.size();
}

const char* conv_algo_name(ConvAlgo algo) {
  switch (algo) {
    case ConvAlgo::automatic: return "auto";
    case ConvAlgo::reference: return "reference";
    case ConvAlgo::gemm_1x1: return "gemm_1x1";
    case ConvAlgo::im2col: return "im2col";
    case ConvAlgo::depthwise: return "depthwise";
    case ConvAlgo::winograd: return "winograd";
    case ConvAlgo::direct: return "direct";
    case ConvAlgo::implicit: return "implicit";
  }
  return "?";
}

// ---------------------------------------------------------------- reference

void conv2d_reference(const Conv2dParams& p, const float* x, const float* w, float* y,
                      const Epilogue& ep) {
  p.validate();
  const size_t OH = p.out_h(), OW = p.out_w();
  const size_t Cg = p.C / p.groups, Kg = p.K / p.groups;
  std::vector<float> out(p.N * p.K * OH * OW);
  for (size_t n = 0; n < p.N; ++n)
    for (size_t k = 0; k < p.K; ++k) {
      const size_t g = k / Kg;
      for (size_t oy = 0; oy < OH; ++oy)
        for (size_t ox = 0; ox < OW; ++ox) {
          float acc = 0.0f;
          for (size_t c = 0; c < Cg; ++c)
            for (size_t ky = 0; ky < p.kh; ++ky) {
              const long iy = long(oy * p.stride_h + ky * p.dilation_h) - long(p.pad_top);
              if (iy < 0 || iy >= long(p.H)) continue;
              for (size_t kx = 0; kx < p.kw; ++kx) {
                const long ix = long(ox * p.stride_w + kx * p.dilation_w) - long(p.pad_left);
                if (ix < 0 || ix >= long(p.W)) continue;
                acc += w[((k * Cg + c) * p.kh + ky) * p.kw + kx] *
                       x[((n * p.C + g * Cg + c) * p.H + iy) * p.W + ix];
              }
            }
          const size_t o = ((n * p.K + k) * OH + oy) * OW + ox;
          if (ep.bias_kind == BiasKind::per_row) acc += ep.bias[k];
          if (ep.residual) acc += ep.residual[o];
          out[o] = activation_reference(ep.act, ep.alpha, ep.beta, acc);
        }
    }
  std::memcpy(y, out.data(), out.size() * sizeof(float));
}

// ---------------------------------------------------------------- construction

namespace {

enum class WeightForm {
  plain = 0, gemm = 1, winograd = 2, direct = 3, implicit = 4, implicit_taps_outer = 5
};

// taps_outer: the implicit GEMM reads an NHWC input, its reduction ordered (ky, kx, c) so that
// consecutive k steps read neighbouring channels of the same pixels (the same cache lines).
WeightForm form_of(ConvAlgo algo, bool taps_outer) {
  switch (algo) {
    case ConvAlgo::reference:
    case ConvAlgo::depthwise: return WeightForm::plain;
    case ConvAlgo::winograd: return WeightForm::winograd;
    case ConvAlgo::direct: return WeightForm::direct;
    case ConvAlgo::implicit:
      return taps_outer ? WeightForm::implicit_taps_outer : WeightForm::implicit;
    default: return WeightForm::gemm;
  }
}

// Packs on the pool's threads when one is given: a model's first run packs every layer.
std::shared_ptr<PackedConvWeights> pack_weights(WeightForm form, const Conv2dParams& p,
                                                const float* weights, ThreadPool* pool) {
  auto w = std::make_shared<PackedConvWeights>();
  w->K = p.K;
  w->C = p.C;
  w->kh = p.kh;
  w->kw = p.kw;
  w->groups = p.groups;
  const size_t Cg = p.C / p.groups, Kg = p.K / p.groups;
  const size_t kdim = Cg * p.kh * p.kw;
  switch (form) {
    case WeightForm::winograd: {
      // U[xi][k][c] = (G g[k][c] G^T)[xi], one [K x C] matrix per xi, written straight into
      // its GEMM panels (mr rows of K, c-major within a panel): each panel's filters are
      // gathered in that order (rows past K zero, so U is zero there too) and transformed
      // by the active ISA's kernel.
      const size_t mr = gemm_kernel(active_isa()).mr, C = p.C;
      std::vector<PackedAPanels*> u(36);
      for (size_t xi = 0; xi < 36; ++xi) {
        auto a = std::make_unique<PackedAPanels>(mr, p.K, C);
        u[xi] = a.get();
        w->panels.push_back(std::move(a));
      }
      const wino_weights_fn transform = select_f32_wino43(active_isa()).weights;
      auto panels = [&](size_t p0, size_t p1) {
        std::vector<float> block(C * mr * 9);
        float* rows[36];
        for (size_t pi = p0; pi < p1; ++pi) {
          const size_t k0 = pi * mr, live = std::min(mr, p.K - k0);
          for (size_t c = 0; c < C; ++c)
            for (size_t r = 0; r < mr; ++r) {
              float* d = block.data() + (c * mr + r) * 9;
              if (r < live) std::memcpy(d, weights + ((k0 + r) * C + c) * 9, 9 * sizeof(float));
              else std::fill(d, d + 9, 0.0f);
            }
          for (size_t xi = 0; xi < 36; ++xi) rows[xi] = u[xi]->data() + k0 * C;
          transform(block.data(), C * mr, rows);
        }
      };
      const size_t count = (p.K + mr - 1) / mr;
      if (pool) pool->parallel_for(count, 1, panels, 36 * count * mr * C);
      else panels(0, count);
      for (PackedAPanels* a : u) flush_subnormals(a->data(), a->bytes() / sizeof(float));
      break;
    }
    case WeightForm::direct: {
      // Blocks of kDirectConvBlock output channels, one tap's weights of a block adjacent.
      const size_t B = kDirectConvBlock;
      w->plain.assign(round_up(p.K, B) * kdim, 0.0f);
      for (size_t k = 0; k < p.K; ++k)
        for (size_t t = 0; t < kdim; ++t)
          w->plain[(k / B * kdim + t) * B + k % B] = weights[k * kdim + t];
      flush_subnormals(w->plain.data(), w->plain.size());
      break;
    }
    case WeightForm::plain:
      w->plain.assign(weights, weights + p.K * kdim);
      flush_subnormals(w->plain.data(), w->plain.size());
      break;
    case WeightForm::implicit:
    case WeightForm::implicit_taps_outer: {
      // B[(c, ky, kx)][k] = w[k][c][ky][kx]: the weights transposed, output channels in lanes;
      // taps outer (an NHWC input): B[(ky, kx, c)][k], each filter's taps outside its channels.
      const size_t nr = gemm_kernel(active_isa()).nr, taps = p.kh * p.kw;
      const bool taps_outer = form == WeightForm::implicit_taps_outer;
      std::vector<float> reordered(taps_outer ? Kg * kdim : 0);
      for (size_t g = 0; g < p.groups; ++g) {
        const float* wg = weights + g * Kg * kdim;
        if (taps_outer) {
          for (size_t k = 0; k < Kg; ++k)
            for (size_t c = 0; c < Cg; ++c)
              for (size_t t = 0; t < taps; ++t)
                reordered[k * kdim + t * Cg + c] = wg[k * kdim + c * taps + t];
          wg = reordered.data();
        }
        auto b = std::make_unique<PackedBPanels>(nr, kdim, Kg);
        pack_b_panels(nr, true, kdim, Kg, wg, kdim, b->data(), pool);
        flush_subnormals(b->data(), b->bytes() / sizeof(float));
        w->b_panels.push_back(std::move(b));
      }
      break;
    }
    case WeightForm::gemm: {
      const size_t mr = gemm_kernel(active_isa()).mr;
      for (size_t g = 0; g < p.groups; ++g) {
        auto a = std::make_unique<PackedAPanels>(mr, Kg, kdim);
        pack_a_panels(mr, false, Kg, kdim, weights + g * Kg * kdim, kdim, a->data(), pool);
        flush_subnormals(a->data(), a->bytes() / sizeof(float));
        w->panels.push_back(std::move(a));
      }
      break;
    }
  }
  return w;
}

}  // namespace

size_t PackedConvWeights::bytes() const {
  size_t total = plain.size() * sizeof(float);
  for (const auto& a : panels) total += a->bytes();
  for (const auto& b : b_panels) total += b->bytes();
  return total;
}

std::shared_ptr<const PackedConvWeights> ConvWeightForms::get(ConvAlgo algo,
                                                              const Conv2dParams& p,
                                                              const float* weights,
                                                              ThreadPool* pool,
                                                              bool taps_outer) {
  const WeightForm form = form_of(algo, taps_outer);
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = forms_[static_cast<int>(form)];
  if (!slot) slot = pack_weights(form, p, weights, pool);
  // The same values read under another grouping are another matrix: packed, not kept.
  if (slot->K != p.K || slot->C != p.C || slot->kh != p.kh || slot->kw != p.kw ||
      slot->groups != p.groups)
    return pack_weights(form, p, weights, pool);
  return slot;
}

size_t ConvWeightForms::packed_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (const auto& f : forms_) n += f != nullptr;
  return n;
}

Conv2d::Conv2d(const Conv2dParams& p, const float* weights, ConvAlgo algo,
               ConvWeightForms* forms, ThreadPool* pool, bool nhwc_in)
    : p_(p), algo_(algo) {
  p.validate();
  if (algo_ == ConvAlgo::automatic) algo_ = choose_conv_algo(p);
  if (algo_ == ConvAlgo::depthwise && !is_depthwise(p))
    bad("the depthwise algorithm needs groups == C == K, got groups " + std::to_string(p.groups) +
        ", C " + std::to_string(p.C) + ", K " + std::to_string(p.K));
  if (algo_ == ConvAlgo::gemm_1x1 && !is_pointwise(p))
    bad("the gemm_1x1 algorithm needs a 1x1 kernel, stride 1 and no padding");
  if (algo_ == ConvAlgo::winograd && !is_winograd_shape(p))
    bad("the winograd algorithm needs a 3x3 kernel, stride 1, dilation 1 and one group");
  if (algo_ == ConvAlgo::direct && !is_direct_shape(p))
    bad("the direct algorithm needs one group, C * kh <= " +
        std::to_string(kDirectConvMaxTapRows) + " and kw <= " +
        std::to_string(kDirectConvMaxKw) + ", got groups " + std::to_string(p.groups) +
        ", C " + std::to_string(p.C) + ", kernel " + dims(p.kh, p.kw));
  // An NHWC input is reduced taps outermost (WeightForm::implicit_taps_outer); a 1x1's one
  // tap makes the two orders the same matrix.
  const bool taps_outer = algo_ == ConvAlgo::implicit && nhwc_in && p.kh * p.kw > 1;
  w_ = forms ? forms->get(algo_, p, weights, pool, taps_outer)
             : pack_weights(form_of(algo_, taps_outer), p, weights, pool);
  if (algo_ == ConvAlgo::depthwise) {  // NHWC reads one vector of channels per tap
    const size_t taps = p.kh * p.kw;
    taps_major_.resize(taps * p.C);
    for (size_t c = 0; c < p.C; ++c)
      for (size_t t = 0; t < taps; ++t) taps_major_[t * p.C + c] = w_->plain[c * taps + t];
  }
  if (algo_ == ConvAlgo::implicit) {
    // The zero-padded input split into stride phases (implicit_phases): padded element
    // (c, oy * sh + ky * dh, ox * sw + kx * dw) is offsets_[(c, ky, kx)] + oy * WQ + ox, so
    // the GEMM's row for output pixel (oy, ox) is oy * WQ + ox at any stride. Both tables
    // follow the packed weights' reduction order.
    const ImplicitPhases ph = implicit_phases(p);
    const size_t Cg = p.C / p.groups, taps = p.kh * p.kw;
    for (size_t i = 0; i < Cg * taps; ++i) {
      const size_t c = taps_outer ? i % Cg : i / taps, t = taps_outer ? i / Cg : i % taps;
      const size_t ry = t / p.kw * p.dilation_h, rx = t % p.kw * p.dilation_w;
      const size_t phase = (c * p.stride_h + ry % p.stride_h) * p.stride_w + rx % p.stride_w;
      const size_t pixel = ry / p.stride_h * ph.wq + rx / p.stride_w;
      offsets_.push_back(phase * ph.plane() + pixel);
      // NHWC: the phases hold pixels of C channels; channel c of the group lies at c
      const size_t nhwc_phase = (ry % p.stride_h) * p.stride_w + rx % p.stride_w;
      offsets_nhwc_.push_back((nhwc_phase * ph.plane() + pixel) * p.C + c);
    }
  }
}

Conv2d::~Conv2d() = default;

size_t Conv2d::packed_bytes() const { return w_->bytes(); }

void Conv2d::run(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
                 const ChannelAffine* prologue, const ConvLayout& layout) const {
  if (prologue && !takes_prologue())
    throw std::logic_error("conv: a channel prologue needs the 1x1 GEMM or depthwise path");
  if (ep.bias_kind != BiasKind::none && ep.bias_kind != BiasKind::per_row)
    bad("the bias must be per output channel (BiasKind::per_row)");
  if (!layout.any()) return run_nchw(x, y, ep, pool, prologue);
  if (algo_ == ConvAlgo::implicit) return run_implicit(x, y, ep, pool, layout);
  const size_t HW = p_.H * p_.W, OHW = p_.out_h() * p_.out_w();
  // Depthwise runs the channels-in-lanes kernel on NHWC operands, unless its NHWC operand is
  // only the output and the NCHW input is the larger (a strided conv): the plane kernels then
  // run and the output is the one transposed (32 channels 112x112 -> 56x56: 176 -> ~130 us).
  // Every other algorithm here reads and writes NCHW.
  const bool dw_nhwc = algo_ == ConvAlgo::depthwise && !prologue &&
                       (layout.nhwc_in || (layout.nhwc_out && OHW >= HW));
  with_operands_in(dw_nhwc, p_, x, y, ep, pool, layout,
                   [&](const float* xa, float* ya, const Epilogue& ea) {
                     if (dw_nhwc) run_depthwise_nhwc(xa, ya, ea, pool);
                     else run_nchw(xa, ya, ea, pool, prologue);
                   });
}

void Conv2d::run_nchw(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
                      const ChannelAffine* prologue) const {
  switch (algo_) {
    case ConvAlgo::reference: return conv2d_reference(p_, x, w_->plain.data(), y, ep);
    case ConvAlgo::depthwise: return run_depthwise(x, y, ep, pool, prologue);
    case ConvAlgo::winograd: return run_winograd(x, y, ep, pool);
    case ConvAlgo::direct: return run_direct(x, y, ep, pool);
    case ConvAlgo::implicit: return run_implicit(x, y, ep, pool, ConvLayout{});
    default: return run_gemm(x, y, ep, pool, prologue);
  }
}

// ---------------------------------------------------------------- im2col / 1x1 via GEMM

namespace {

// d[i] = src[2 i] for i < n: the columns of a stride-2 convolution (stems, downsampling
// layers). This file is built for the baseline ISA, so SSE2 / NEON only, and reads never
// pass the last element used.
void gather_even(float* d, const float* src, size_t n) {
  size_t i = 0;
#if defined(__SSE2__)
  // a group of 4 reads src[2i .. 2i + 7]; the last element used is src[2n - 2]
  for (; i + 4 < n; i += 4)
    _mm_storeu_ps(d + i, _mm_shuffle_ps(_mm_loadu_ps(src + 2 * i), _mm_loadu_ps(src + 2 * i + 4),
                                        _MM_SHUFFLE(2, 0, 2, 0)));
#elif defined(__ARM_NEON)
  for (; i + 4 < n; i += 4) vst1q_f32(d + i, vld2q_f32(src + 2 * i).val[0]);
#endif
  for (; i < n; ++i) d[i] = src[2 * i];
}

// Appends `count` values to one row of B panels (width nr, panel stride `panel` floats),
// splitting the run at panel edges; src == nullptr writes zeros, else src[i * step].
struct PanelRowWriter {
  float* row;  // the row's start in panel 0
  size_t nr, panel;
  size_t pn = 0, lane = 0;

  void put(const float* src, size_t step, size_t count) {
    while (count) {
      const size_t take = std::min(count, nr - lane);
      float* d = row + pn * panel + lane;
      if (!src) {
        std::memset(d, 0, take * sizeof(float));
      } else if (step == 1) {
        std::memcpy(d, src, take * sizeof(float));
        src += take;
      } else if (step == 2) {
        gather_even(d, src, take);
        src += take * 2;
      } else {
        for (size_t i = 0; i < take; ++i) d[i] = src[i * step];
        src += take * step;
      }
      count -= take;
      lane += take;
      if (lane == nr) {
        lane = 0;
        ++pn;
      }
    }
  }
};

// y[p * mr + r] = sum over k of panels[(p * K + k) * mr + r] * v[k]: the list's GEMV kernel
// for the panels' tile height, or plain loops for a height the list has no kernel for.
void panels_times_vector(f32_gemv_fn gemv, size_t mr, size_t panels, const float* a,
                         const float* v, size_t K, float* y) {
  if (gemv) return gemv(panels, K, a, v, y);
  for (size_t pi = 0; pi < panels; ++pi, a += K * mr, y += mr) {
    for (size_t r = 0; r < mr; ++r) y[r] = 0.0f;
    for (size_t k = 0; k < K; ++k)
      for (size_t r = 0; r < mr; ++r) y[r] += a[k * mr + r] * v[k];
  }
}

// Rows [r_begin, r_end) of the patch matrix into the B panels (see im2col_panels).
void im2col_rows(const Conv2dParams& p, const float* x, size_t nr, size_t j0, size_t j1,
                 float* dst, size_t r_begin, size_t r_end) {
  const size_t OW = p.out_w();
  const size_t rows = (p.C / p.groups) * p.kh * p.kw;
  const size_t panel = rows * nr;
  const size_t sw = p.stride_w;
  const size_t oy0 = j0 / OW, oy1 = (j1 - 1) / OW;
  for (size_t r = r_begin; r < r_end; ++r) {
    const size_t c = r / (p.kh * p.kw), ky = (r / p.kw) % p.kh, kx = r % p.kw;
    PanelRowWriter out{dst + r * nr, nr, panel};
    const float* plane = x + c * p.H * p.W;
    // Valid output columns: 0 <= ox * sw + x0 < W, with x0 = kx * dw - pad_left.
    const long x0 = long(kx * p.dilation_w) - long(p.pad_left);
    const size_t ox_lo = x0 >= 0 ? 0 : std::min<size_t>(OW, (size_t(-x0) + sw - 1) / sw);
    const long span = long(p.W) - x0;  // ox * sw < span
    const size_t ox_hi = span <= 0 ? 0 : std::min<size_t>(OW, (size_t(span) + sw - 1) / sw);
    for (size_t oy = oy0; oy <= oy1; ++oy) {
      // This row's output columns inside [j0, j1).
      const size_t a = oy == oy0 ? j0 - oy * OW : 0;
      const size_t b = oy == oy1 ? j1 - oy * OW : OW;
      const long iy = long(oy * p.stride_h + ky * p.dilation_h) - long(p.pad_top);
      const size_t lo = std::clamp(ox_lo, a, b), hi = std::clamp(ox_hi, lo, b);
      if (iy < 0 || iy >= long(p.H) || hi == lo) {
        out.put(nullptr, 0, b - a);
        continue;
      }
      const float* src = plane + iy * p.W;
      out.put(nullptr, 0, lo - a);
      out.put(src + long(lo * sw) + x0, sw, hi - lo);
      out.put(nullptr, 0, b - hi);
    }
  }
}

// Writes columns [j0, j1) (j0 a multiple of nr) of the patch matrix of one (n, group) input,
// rows (c, ky, kx) x columns (oy, ox), straight into B panels of width nr
// (kernels/gemm_driver.h); dst holds the panels of that column range only.
void im2col_panels(const Conv2dParams& p, const float* x, size_t Cg, size_t nr, size_t j0,
                   size_t j1, float* dst, ThreadPool* pool) {
  const size_t cols = j1 - j0, rows = Cg * p.kh * p.kw;
  if (cols % nr) std::memset(dst + (cols - 1) / nr * rows * nr, 0, rows * nr * sizeof(float));
  // Rows are independent: split them across the pool when the copy is worth it.
  if (pool && rows * cols >= (1 << 15)) {
    pool->parallel_for(rows, 8, [&](size_t r0, size_t r1) {
      im2col_rows(p, x, nr, j0, j1, dst, r0, r1);
    });
  } else {
    im2col_rows(p, x, nr, j0, j1, dst, 0, rows);
  }
}

}  // namespace

void Conv2d::run_gemm(const float* x, float* y, const Epilogue& ep_in, ThreadPool* pool,
                      const ChannelAffine* prologue) const {
  const size_t OH = p_.out_h(), OW = p_.out_w(), cols = OH * OW;
  const size_t Cg = p_.C / p_.groups, Kg = p_.K / p_.groups;
  const size_t kdim = Cg * p_.kh * p_.kw;
  const GemmKernel& kern = gemm_kernel(active_isa());
  const size_t y_len = p_.N * p_.K * cols;
  Epilogue ep = ep_in;
  // y is written block by block (and over several K blocks)
  ep.residual = residual_apart(ep.residual, y, y_len);
  if (cols == 1 && algo_ == ConvAlgo::gemm_1x1) {
    // One output pixel (a squeeze-excitation conv, a classifier after global pooling): the
    // GEMM would pad the one column to a whole nr-wide panel (32x the multiply-adds), so
    // each weight panel is multiplied by the input vector instead.
    const f32_gemv_fn gemv = select_f32_gemv(active_isa(), kern.mr);
    float* v = gemm_scratch(kScratchConv, Cg);
    for (size_t n = 0; n < p_.N; ++n)
      for (size_t g = 0; g < p_.groups; ++g) {
        const float* xg = x + n * p_.C + g * Cg;
        for (size_t c = 0; c < Cg; ++c) {
          float t = xg[c];
          if (prologue) {
            t = t * prologue->scale[g * Cg + c] + prologue->shift[g * Cg + c];
            if (prologue->relu) t = std::max(t, 0.0f);
          }
          v[c] = t;
        }
        const auto& packed = static_cast<const PackedAPanels&>(*w_->panels[g]);
        const float* panels = packed.panels_for(kern);
        Epilogue eg = ep;
        if (ep.bias_kind == BiasKind::per_row) eg.bias = ep.bias + g * Kg;
        if (ep.residual) eg.residual = ep.residual + n * p_.K + g * Kg;
        float* yg = y + n * p_.K + g * Kg;
        const size_t npanels = (Kg + kern.mr - 1) / kern.mr;
        auto run = [&](size_t p0, size_t p1) {
          constexpr size_t kChunk = 8;  // panels per kernel call: acc holds 8 x mr <= 512
          float acc[kChunk * 64];
          for (size_t c0 = p0; c0 < p1; c0 += kChunk) {
            const size_t c1 = std::min(p1, c0 + kChunk);
            panels_times_vector(gemv, kern.mr, c1 - c0, panels + c0 * kdim * kern.mr, v, kdim,
                                acc);
            for (size_t i = c0 * kern.mr; i < std::min(Kg, c1 * kern.mr); ++i)
              yg[i] = epilogue_value(eg, 1, i, 0, acc[i - c0 * kern.mr]);
          }
        };
        if (pool) pool->parallel_for(npanels, 1, run, Kg * kdim);
        else run(0, npanels);
      }
    return;
  }
  if (p_.N > 1 && p_.groups == 1 && cols < kern.nr && !prologue && !ep.residual &&
      (ep.bias_kind == BiasKind::none || ep.bias_kind == BiasKind::per_row)) {
    // Images of fewer output pixels than a panel is wide (a 1-D conv over a batch of short
    // windows: Silero VAD's 64 windows of 4 steps) would each fill a whole nr-wide panel and
    // pay a GEMM call: their columns are laid side by side into one patch matrix instead,
    // one GEMM over all of them, and the result dealt back to the images (Silero's
    // [64,129,4] * [128,129,3] went 1.9 ms -> 0.4 ms at 1 thread).
    const size_t T = p_.N * cols;
    float* patches = gemm_scratch(kScratchBatch, kdim * cols + kdim * T + Kg * T);
    float* wide = patches + kdim * cols;
    float* out = wide + kdim * T;
    for (size_t n = 0; n < p_.N; ++n) {
      // One image's patch matrix, rows of `cols` (a single panel as wide as the image)...
      im2col_panels(p_, x + n * p_.C * p_.H * p_.W, Cg, cols, 0, cols, patches, nullptr);
      // ... becomes its columns of the wide one.
      for (size_t r = 0; r < kdim; ++r)
        std::memcpy(wide + r * T + n * cols, patches + r * cols, cols * sizeof(float));
    }
    float* bp = gemm_scratch(kScratchConv, round_up(T, kern.nr) * kdim);
    pack_b_panels(kern.nr, false, kdim, T, wide, T, bp, pool);
    const float* ap = static_cast<const PackedAPanels&>(*w_->panels[0]).panels_for(kern);
    gemm_packed_core(kern, Kg, T, kdim, ap, bp, out, T, ep, pool);
    for (size_t n = 0; n < p_.N; ++n)
      for (size_t k = 0; k < Kg; ++k)
        std::memcpy(y + (n * p_.K + k) * cols, out + k * T + n * cols, cols * sizeof(float));
    return;
  }
  // Column blocks whose B panels (kdim x nb) fit in half of L2, built right before use.
  // Each extra block re-reads the weights (Kg x kdim) while blocking saves a round trip of
  // the patch matrix (kdim x cols) through L3: worth it while nb > Kg / 2.
  size_t nb = cache_sizes().l2 / 2 / (kdim * sizeof(float)) / kern.nr * kern.nr;
  nb = std::max({nb, Kg / 2, g_conv_min_block.load(), kern.nr});
  nb = even_block(cols, std::min(round_up(nb, kern.nr), round_up(cols, kern.nr)), kern.nr);
  const size_t threads = pool ? pool->size() : 1;
  const size_t col_panels = (cols + kern.nr - 1) / kern.nr;
  size_t blocks = (cols + nb - 1) / nb;
  // Several blocks run whole on the threads, so their count is raised to a multiple of the
  // threads (7 blocks on 2 threads would leave one running the 7th alone) and blocks are
  // dealt out by micro-panels, equal to one panel.
  // Groups are independent GEMMs too: with several, whole (image, group, block) tasks go to
  // the threads (one fork and join per call) rather than each small group GEMM being split
  // across the pool; blocks are raised until the task count is a multiple of the threads
  // (ShuffleNet's 3-group 1x1 convs: 3 groups x 2 blocks on 2 threads).
  const size_t grouped = p_.groups > 1 ? p_.N * p_.groups : 1;
  if (threads > 1 && grouped * blocks >= threads)
    for (size_t b = blocks; b <= std::min(col_panels, blocks + threads - 1); ++b)
      if (grouped * b % threads == 0) {
        blocks = b;
        break;
      }
  // A 1x1 input that sits in L2 (the previous layer's output, usually) is read in place by
  // the microkernel, row by row with a stride; a larger one comes from L3 or memory, where
  // the sequential copy into panels streams better than those strided rows. In place, every
  // row panel of the weights walks the strided rows again, while the copy is paid once:
  // measured here (Xeon, one thread), in place wins up to ~8 row panels (64 channels at
  // 56x56: 148 vs 136 GFLOP/s; 32 at 27x27: 156 vs 126) and ties or loses beyond (256 at
  // 56x56: 143 vs 155; 1000 at 13x13: 151 vs 158).
  // With at most three row panels the strided rows are walked at most three times, which
  // beats the copy from L3 too (Zen 4, one thread: 64 -> 16 at 55x55 91 -> 73 us, 128 -> 16
  // at 55x55 184 -> 139, 256 -> 32 at 27x27 131 -> 112), up to inputs of about 4 x L2; from
  // memory, as many strided streams as input channels starve the loads (16 -> 32 at 400x304,
  // a 7.8 MB input: 4170 us in place, 2610 copied; 128 -> 16 at 200x152: 5490 vs 3130;
  // 128 -> 16 at 100x76, 3.9 MB: 367 vs 424).
  const size_t input_bytes = Cg * p_.H * p_.W * sizeof(float);
  const bool b_in_place = algo_ == ConvAlgo::gemm_1x1 && !prologue && Kg <= 8 * kern.mr &&
                          (Kg <= 3 * kern.mr ? input_bytes <= 4 * cache_sizes().l2
                                             : input_bytes <= cache_sizes().l2 / 2);
  const bool across_blocks =
      threads > 1 && grouped * blocks >= threads && grouped * blocks % threads == 0;
  // Weight panels per group; when they were packed for another ISA's tile (set_isa_cap
  // after construction) they are converted block by block into scratch instead.
  std::vector<const float*> a_panels;
  if (static_cast<const PackedAPanels&>(*w_->panels[0]).mr() == kern.mr)
    for (size_t g = 0; g < p_.groups; ++g)
      a_panels.push_back(static_cast<const PackedAPanels&>(*w_->panels[g]).panels_for(kern));
  auto block = [&](size_t n, size_t g, size_t bi, ThreadPool* inner) {
    const size_t j0 = bi * col_panels / blocks * kern.nr;
    const size_t j1 = std::min(cols, (bi + 1) * col_panels / blocks * kern.nr);
    const float* xg = x + (n * p_.C + g * Cg) * p_.H * p_.W;
    Epilogue eg = ep;
    if (ep.bias_kind == BiasKind::per_row) eg.bias = ep.bias + g * Kg;
    if (ep.residual) eg.residual = ep.residual + (n * p_.K + g * Kg) * cols + j0;
    const float* ap = a_panels.empty()
        ? static_cast<const PackedAPanels&>(*w_->panels[g]).panels_for(kern) : a_panels[g];
    float* yg = y + (n * p_.K + g * Kg) * cols + j0;
    if (b_in_place) {
      // The input rows are already the GEMM's B (C x cols, row-major): the microkernel reads
      // them in place, which saves a copy of the whole input per call.
      gemm_in_place_b_core(kern, Kg, j1 - j0, kdim, ap, xg + j0, cols, yg, cols, eg, inner);
      return;
    }
    float* bp = gemm_scratch(kScratchConv, round_up(j1 - j0, kern.nr) * kdim);
    if (prologue)
      pack_b_panels_affine(kern.nr, Cg, j1 - j0, xg + j0, cols, prologue->scale,
                           prologue->shift, prologue->relu, bp, inner);
    else if (algo_ == ConvAlgo::gemm_1x1)
      pack_b_panels(kern.nr, false, Cg, j1 - j0, xg + j0, cols, bp, inner);
    else
      im2col_panels(p_, xg, Cg, kern.nr, j0, j1, bp, inner);
    gemm_packed_core(kern, Kg, j1 - j0, kdim, ap, bp, yg, cols, eg, inner);
  };
  const size_t per_image = p_.groups * blocks;
  if (across_blocks && !a_panels.empty()) {
    pool->parallel_for(p_.N * per_image, 1, [&](size_t t0, size_t t1) {
      for (size_t t = t0; t < t1; ++t)
        block(t / per_image, (t / blocks) % p_.groups, t % blocks, nullptr);
    });
  } else {
    for (size_t t = 0; t < p_.N * per_image; ++t)
      block(t / per_image, (t / blocks) % p_.groups, t % blocks, pool);
  }
}

// ---------------------------------------------------------------- depthwise

namespace {

// The window and epilogue fields the depthwise and direct kernels' argument structs share
// (same names in both): kernel size, strides, dilations, leading pads, output size and the
// fused activation.
template <class Shape>
void set_window(Shape& s, const Conv2dParams& p, const Epilogue& ep) {
  s.kh = p.kh;
  s.kw = p.kw;
  s.sh = p.stride_h;
  s.sw = p.stride_w;
  s.dh = p.dilation_h;
  s.dw = p.dilation_w;
  s.pad_top = p.pad_top;
  s.pad_left = p.pad_left;
  s.oh = p.out_h();
  s.ow = p.out_w();
  s.act = ep.act;
  s.alpha = ep.alpha;
  s.beta = ep.beta;
}

}  // namespace

void Conv2d::run_depthwise(const float* x, float* y, const Epilogue& ep, ThreadPool* pool,
                           const ChannelAffine* prologue) const {
  const size_t OH = p_.out_h(), OW = p_.out_w();
  const dwconv_plane_fn kernel = select_f32_dwconv(active_isa());
  const size_t taps = p_.kh * p_.kw;
  DwConvPlane shape{};
  set_window(shape, p_, ep);
  shape.in_h = p_.H;
  shape.in_w = p_.W;
  shape.has_prologue = prologue != nullptr;
  shape.in_relu = prologue && prologue->relu;
  // Channels in lanes, kDwConvBlockChannels a call: small output planes, at the strides and
  // tap counts the SIMD kernels take (others go to the generic one), and only while the padded
  // input copy stays small (a stride far above the kernel would stage rows nothing reads).
  if (OH * OW <= g_dw_blocked_max_pixels.load(std::memory_order_relaxed) &&
      (p_.stride_w == 1 || p_.stride_w == 2) && taps <= 64 &&
      dwconv_padded_rows(shape) * dwconv_cols(shape) <= kDwConvBlockedMaxPadded) {
    const size_t per_image = (p_.C + kDwConvBlockChannels - 1) / kDwConvBlockChannels;
    const size_t floats = dwconv_block_scratch_floats(shape);
    auto blocks = [&](size_t b0, size_t b1) {
      float* rows = gemm_scratch(kScratchConv, floats);
      for (size_t b = b0; b < b1; ++b) {
        const size_t n = b / per_image, c0 = b % per_image * kDwConvBlockChannels;
        DwConvPlane block = shape;
        block.channels = std::min(kDwConvBlockChannels, p_.C - c0);
        block.x = x + (n * p_.C + c0) * p_.H * p_.W;
        block.y = y + (n * p_.C + c0) * OH * OW;
        block.residual = ep.residual ? ep.residual + (n * p_.C + c0) * OH * OW : nullptr;
        block.w = w_->plain.data() + c0 * taps;
        block.biases = ep.bias_kind == BiasKind::per_row ? ep.bias + c0 : nullptr;
        block.in_scales = prologue ? prologue->scale + c0 : nullptr;
        block.in_shifts = prologue ? prologue->shift + c0 : nullptr;
        block.rows = rows;
        kernel(block);
      }
    };
    const size_t count = p_.N * per_image;
    if (pool) pool->parallel_for(count, 1, blocks, p_.N * p_.C * (p_.H * p_.W + OH * OW * taps));
    else blocks(0, count);
    return;
  }
  const size_t scratch = dwconv_scratch_floats(shape);
  auto run = [&](size_t i0, size_t i1) {
    // Zero once: the kernels write only data columns of it, the same ones for every plane.
    float* rows = gemm_scratch(kScratchConv, scratch);
    std::memset(rows, 0, scratch * sizeof(float));
    for (size_t i = i0; i < i1; ++i) {
      const size_t c = i % p_.C;
      DwConvPlane plane = shape;
      plane.x = x + i * p_.H * p_.W;
      plane.w = w_->plain.data() + c * taps;
      plane.y = y + i * OH * OW;
      plane.residual = ep.residual ? ep.residual + i * OH * OW : nullptr;
      plane.bias = ep.bias_kind == BiasKind::per_row ? ep.bias[c] : 0.0f;
      plane.rows = rows;
      if (prologue) {
        plane.in_scale = prologue->scale[c];
        plane.in_shift = prologue->shift[c];
      }
      kernel(plane);
    }
  };
  const size_t planes = p_.N * p_.C;
  if (pool) pool->parallel_for(planes, 1, run, planes * (p_.H * p_.W + OH * OW * taps));
  else run(0, planes);
}

// Depthwise on NHWC images (input, output and residual), the channels in vector lanes, the
// pixels read in place. Threads take output rows.
void Conv2d::run_depthwise_nhwc(const float* x, float* out, const Epilogue& ep,
                                ThreadPool* pool) const {
  const size_t C = p_.C, HW = p_.H * p_.W, OH = p_.out_h(), OW = p_.out_w();
  const float* residual = ep.residual;  // it may alias out: each pixel reads it, then writes
  DwConvPlane shape{};
  set_window(shape, p_, ep);
  shape.in_h = p_.H;
  shape.in_w = p_.W;
  shape.nhwc_stride = C;
  shape.channels = C;
  shape.w = taps_major_.data();
  shape.biases = ep.bias_kind == BiasKind::per_row ? ep.bias : nullptr;
  const dwconv_plane_fn kernel = select_f32_dwconv(active_isa());
  auto rows = [&](size_t r0, size_t r1) {  // output rows of every image; may span images
    while (r0 < r1) {
      const size_t n = r0 / OH, oy0 = r0 % OH, oy1 = std::min(OH, oy0 + (r1 - r0));
      DwConvPlane part = shape;
      part.x = x + n * HW * C;
      part.y = out + n * OH * OW * C;
      part.residual = residual ? residual + n * OH * OW * C : nullptr;
      part.oy0 = oy0;
      part.oy1 = oy1;
      kernel(part);
      r0 += oy1 - oy0;
    }
  };
  const size_t count = p_.N * OH;
  if (pool) pool->parallel_for(count, 1, rows, count * OW * C * p_.kh * p_.kw);
  else rows(0, count);
}

// ---------------------------------------------------------------- direct (few channels)

void Conv2d::run_direct(const float* x, float* y, const Epilogue& ep, ThreadPool* pool) const {
  const size_t OH = p_.out_h(), OW = p_.out_w();
  const directconv_fn kernel = select_f32_directconv(active_isa()).fn;
  DirectConvRows shape{};
  set_window(shape, p_, ep);
  shape.C = p_.C;
  shape.H = p_.H;
  shape.W = p_.W;
  shape.w = w_->plain.data();
  shape.K = p_.K;
  shape.bias = ep.bias_kind == BiasKind::per_row ? ep.bias : nullptr;
  const size_t scratch = directconv_scratch_floats(shape);
  const size_t in_image = p_.C * p_.H * p_.W, out_image = p_.K * OH * OW;
  // Output rows of every image; a range of them may span images.
  auto run = [&](size_t r0, size_t r1) {
    float* rows = gemm_scratch(kScratchConv, scratch);
    while (r0 < r1) {
      const size_t n = r0 / OH, oy0 = r0 % OH, oy1 = std::min(OH, oy0 + (r1 - r0));
      DirectConvRows part = shape;
      part.x = x + n * in_image;
      part.y = y + n * out_image;
      part.residual = ep.residual ? ep.residual + n * out_image : nullptr;
      part.oy0 = oy0;
      part.oy1 = oy1;
      part.scratch = rows;
      kernel(part);
      r0 += oy1 - oy0;
    }
  };
  const size_t rows = p_.N * OH;
  if (pool) pool->parallel_for(rows, 1, run, rows * OW * p_.K * p_.C * p_.kh * p_.kw);
  else run(0, rows);
}

// ---------------------------------------------------------------- implicit GEMM

void Conv2d::run_implicit(const float* x, float* y, const Epilogue& ep_in, ThreadPool* pool,
                          const ConvLayout& layout) const {
  const size_t OH = p_.out_h(), OW = p_.out_w(), HW = OH * OW;
  const size_t C = p_.C, K = p_.K, Cg = C / p_.groups, Kg = K / p_.groups;
  const size_t kdim = Cg * p_.kh * p_.kw;
  const GemmKernel& kern = gemm_kernel(active_isa());
  const ImplicitPhases ph = implicit_phases(p_);
  const size_t WQ = ph.wq, chan = ph.channel();
  // Product rows oy * WQ + ox; the last row's padding columns are not computed. The furthest
  // read, offsets_.back() + rows - 1, lies in the group's last channel.
  const size_t rows = (OH - 1) * WQ + OW;
  const float* xp = x;
  if (ph.count > 1 || chan != p_.H * p_.W) {
    float* phased = gemm_scratch(kScratchPad, p_.N * p_.C * chan);
    const size_t sh = p_.stride_h, sw = p_.stride_w;
    if (layout.nhwc_in) {
      // Phase rows of WQ pixels of C channels: image n, phase (py, px), row r. A phase no tap
      // reads (a 1x1 at stride 2 reads one of four) is left unwritten.
      std::vector<char> read(ph.count, 0);
      for (size_t ky = 0; ky < p_.kh; ++ky)
        for (size_t kx = 0; kx < p_.kw; ++kx)
          read[(ky * p_.dilation_h % sh) * sw + kx * p_.dilation_w % sw] = 1;
      auto split = [&](size_t i0, size_t i1) {
        for (size_t i = i0; i < i1; ++i) {
          const size_t n = i / (ph.count * ph.hq), phase = i / ph.hq % ph.count;
          if (!read[phase]) continue;
          const size_t r = i % ph.hq, py = phase / sw, px = phase % sw;
          float* d_row = phased + i * WQ * C;
          const size_t prow = py + r * sh;
          if (prow < p_.pad_top || prow - p_.pad_top >= p_.H) {
            std::memset(d_row, 0, WQ * C * sizeof(float));
            continue;
          }
          const float* s_row = x + (n * p_.H + prow - p_.pad_top) * p_.W * C;
          for (size_t j = 0; j < WQ; ++j) {
            const size_t pcol = px + j * sw;
            float* d = d_row + j * C;
            if (pcol < p_.pad_left || pcol - p_.pad_left >= p_.W)
              std::memset(d, 0, C * sizeof(float));
            else
              std::memcpy(d, s_row + (pcol - p_.pad_left) * C, C * sizeof(float));
          }
        }
      };
      const size_t items = p_.N * ph.count * ph.hq;
      if (pool) pool->parallel_for(items, 1, split, p_.N * p_.C * chan);
      else split(0, items);
    } else {
      auto split = [&](size_t i0, size_t i1) {
        for (size_t i = i0; i < i1; ++i) {
          std::memset(phased + i * chan, 0, chan * sizeof(float));
          const float* src = x + i * p_.H * p_.W;
          for (size_t py = 0; py < sh; ++py)
            for (size_t px = 0; px < sw; ++px) {
              float* dst = phased + i * chan + (py * sw + px) * ph.plane();
              // Phase column j is padded column px + j * sw, input column px + j * sw - pad_left.
              size_t j0 = 0;
              while (j0 < WQ && px + j0 * sw < p_.pad_left) ++j0;
              for (size_t r = 0; r < ph.hq; ++r) {
                const size_t prow = py + r * sh;
                if (prow < p_.pad_top || prow - p_.pad_top >= p_.H) continue;
                const float* s_row = src + (prow - p_.pad_top) * p_.W;
                float* d_row = dst + r * WQ;
                if (sw == 1) {
                  std::memcpy(d_row + p_.pad_left, s_row, p_.W * sizeof(float));
                  continue;
                }
                for (size_t j = j0, ix = px + j0 * sw - p_.pad_left; j < WQ && ix < p_.W;
                     ++j, ix += sw)
                  d_row[j] = s_row[ix];
              }
            }
        }
      };
      if (pool) pool->parallel_for(p_.N * p_.C, 1, split, p_.N * p_.C * chan);
      else split(0, p_.N * p_.C);
    }
    xp = phased;
  }
  const size_t y_len = p_.N * K * HW;
  // The product's rows are the output's pixels when no padding column lies between them.
  const bool direct_rows = WQ == OW;
  Epilogue ep = ep_in;
  bool res_nhwc = layout.nhwc_residual;
  if (ep.residual) {
    // The residual joins the product in NHWC (in the microkernel, or in the row copy of an
    // NHWC output) or after the transpose into NCHW planes; moved to that layout if need be.
    const bool want_nhwc = layout.nhwc_out || (res_nhwc && p_.groups == 1 && direct_rows);
    if (want_nhwc != res_nhwc) {
      float* moved = gemm_scratch(kScratchEdgeResidual, y_len);
      if (want_nhwc) nchw_to_nhwc(ep.residual, p_.N, K, HW, moved, pool);
      else nhwc_to_nchw(ep.residual, p_.N, HW, K, moved, pool);
      ep.residual = moved;
      res_nhwc = want_nhwc;
    } else {
      ep.residual = residual_apart(ep.residual, y, y_len);  // y is written before it is added
    }
  }
  const size_t a_stride = layout.nhwc_in ? C : 1;
  const size_t* offsets = layout.nhwc_in ? offsets_nhwc_.data() : offsets_.data();
  // A 1x1 whose product has more than two column panels: read in place, every column panel
  // walks A again (Cg planes of NCHW, or pixel rows C apart of NHWC: a line a row per k
  // step); packed once into row panels, A is walked once and read sequentially. Only while
  // the packed copy stays in L2: a larger one is written to memory and read back.
  const bool pack_a = kdim == Cg && ph.count == 1 && Kg > 2 * kern.nr &&
                      round_up(rows, kern.mr) * kdim * sizeof(float) <= cache_sizes().l2;
  // Product rows: output row oy's pixels from product row oy * P on. P = WQ maps product rows
  // onto A's padded rows one to one, computing a row for each padding column between two
  // output rows; P = OW rounded up to whole tiles computes the OW rows of each output row
  // only, in tiles that end at the row's end (RowGrid): 14x14 in 16-wide padded rows 196 rows
  // instead of 222 (whole tiles), 7x7 in 9-wide rows 49 instead of 61 (tiles of 7, which
  // cost about half a full one). Chosen by tile cost, a tile of m rows counted as
  // max(m, mr / 4) rows (its B loads and stores).
  const size_t mr = kern.mr, tile_cols = round_up(OW, mr);
  auto row_cost = [&](size_t m) { return std::max(m, mr / 4); };
  const size_t grid_cost = OH * ((OW / mr) * mr + (OW % mr ? row_cost(OW % mr) : 0));
  const size_t P = !pack_a && !direct_rows && grid_cost < round_up(rows, mr) ? tile_cols : WQ;
  const RowGrid grid = P == WQ ? RowGrid{} : RowGrid{P, WQ, OW};
  const size_t prows = (OH - 1) * P + OW;
  // The product of m rows of A from a_at on with the weight panels bp (all Kg columns) into c
  // (row pitch ldc).
  auto product_rows = [&](size_t m, const float* a_at, const float* bp, float* c, size_t ldc,
                          const Epilogue& e, ThreadPool* tp) {
    if (!pack_a) {
      gemm_in_place_a_core(kern, m, Kg, kdim, a_at, offsets, a_stride, bp, c, ldc, e, tp, grid);
      return;
    }
    float* ap = gemm_scratch(kScratchA, round_up(m, kern.mr) * kdim);
    pack_a_panels(kern.mr, !layout.nhwc_in, m, kdim, a_at, layout.nhwc_in ? C : chan, ap, tp);
    gemm_packed_core(kern, m, Kg, kdim, ap, bp, c, ldc, e, tp);
  };
  // One image (and group) of the product; tp: the pool its products and copies split across
  // (null: this thread alone).
  auto run_image = [&](size_t n, size_t g, ThreadPool* tp) {
    const float* a = layout.nhwc_in ? xp + n * C * chan + g * Cg : xp + (n * C + g * Cg) * chan;
    const float* bias = ep.bias_kind == BiasKind::per_row ? ep.bias + g * Kg : nullptr;
    const auto& wb = static_cast<const PackedBPanels&>(*w_->b_panels[g]);
    const float* b_panels = wb.panels_for(kern);
    // The product's columns are output channels: the bias is per column.
    Epilogue kep = ep;
    kep.bias_kind = bias ? BiasKind::per_col : BiasKind::none;
    kep.bias = bias;
    const float* res_nhwc_at = ep.residual && res_nhwc ? ep.residual + n * HW * K + g * Kg
                                                       : nullptr;
    if (layout.nhwc_out && direct_rows) {  // the tile is the output: stored as it is
      kep.residual = res_nhwc_at;
      float* yn = y + n * HW * K + g * Kg;
      product_rows(rows, a, b_panels, yn, K, kep, tp);
      return;
    }
    // Into a scratch product of Kg columns, then copied or transposed into y. The epilogue
    // runs in the microkernel unless a residual joins later (an NCHW one, or one of an NHWC
    // output whose product rows carry padding columns).
    const bool res_later = ep.residual && (!res_nhwc || layout.nhwc_out);
    if (res_later) kep = Epilogue{};
    else kep.residual = res_nhwc_at;
    if (layout.nhwc_out) {
      float* product = gemm_scratch(kScratchConv, prows * Kg);
      product_rows(prows, a, b_panels, product, Kg, kep, tp);
      float* yn = y + n * HW * K + g * Kg;
      auto out = [&](size_t r0, size_t r1) {
        for (size_t oy = r0; oy < r1; ++oy)
          for (size_t ox = 0; ox < OW; ++ox) {
            const float* s = product + (oy * P + ox) * Kg;
            float* d = yn + (oy * OW + ox) * K;
            if (!res_later) {
              std::memcpy(d, s, Kg * sizeof(float));
              continue;
            }
            const float* r = res_nhwc_at + (oy * OW + ox) * K;
            for (size_t k = 0; k < Kg; ++k) d[k] = s[k] + (bias ? bias[k] : 0.0f) + r[k];
            apply_activation(ep.act, ep.alpha, ep.beta, d, Kg);
          }
      };
      if (tp) tp->parallel_for(OH, 1, out, HW * Kg);
      else out(0, OH);
      return;
    }
    float* yg = y + (n * K + g * Kg) * HW;
    const float* res = res_later ? ep.residual + (n * K + g * Kg) * HW : nullptr;
    // Output rows [oy0, oy1) of channels [k0, k1): from their product rows (prod starts at
    // row oy0) into the planes, the residual added after.
    auto out_rows = [&](const float* prod, size_t oy0, size_t oy1, size_t k0, size_t k1) {
      transpose_into_planes(prod, Kg, oy1 - oy0, OW, P, k0, k1, yg + oy0 * OW, HW);
      if (!res) return;
      const size_t span = (oy1 - oy0) * OW;
      for (size_t k = k0; k < k1; ++k) {
        float* yk = yg + k * HW + oy0 * OW;
        const float* rk = res + k * HW + oy0 * OW;
        const float bk = bias ? bias[k] : 0.0f;
        for (size_t i = 0; i < span; ++i) yk[i] += bk + rk[i];
        apply_activation(ep.act, ep.alpha, ep.beta, yk, span);
      }
    };
    // On several threads: bands of output rows, each computed into a product that stays in
    // the L2 of the thread that made it and transposes it (one fork instead of two; split
    // apart, half the product crossed to the other core). SqueezeNet on 2 threads (its 3x3
    // convs, all implicit): conv time 3.34 -> 3.06 ms, three interleaved pairs. One thread
    // keeps the whole product (it fits in L2 there; bands of 128 KiB measured 6% slower on
    // 16 -> 64 at 55x55 for the tile rows wasted at each band's end).
    const size_t threads = tp ? tp->size() : 1;
    const size_t band_rows =
        std::max<size_t>(1, kImplicitBandBytes / (P * Kg * sizeof(float)));
    const size_t bands =
        std::min(OH, round_up(std::max((OH + band_rows - 1) / band_rows, threads), threads));
    auto band = [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) {
        const size_t oy0 = b * OH / bands, oy1 = (b + 1) * OH / bands;
        if (oy0 == oy1) continue;
        const size_t band_len = (oy1 - oy0 - 1) * P + OW;
        float* prod = gemm_scratch(kScratchConv, band_len * Kg);
        product_rows(band_len, a + oy0 * WQ * a_stride, b_panels, prod, Kg, kep,
                     nullptr);
        out_rows(prod, oy0, oy1, 0, Kg);
      }
    };
    // Not for an NHWC residual joining in the microkernel (indexed by whole-product rows),
    // nor for weights that would come from L3 again for every band.
    const bool banded = threads > 1 && bands > 1 && !kep.residual &&
                        kdim * Kg * sizeof(float) <= cache_sizes().l2 / 2;
    if (banded) {
      tp->parallel_for(bands, 1, band, rows * Kg * kdim);
      return;
    }
    float* product = gemm_scratch(kScratchConv, prows * Kg);
    product_rows(prows, a, b_panels, product, Kg, kep, tp);
    auto planes = [&](size_t b0, size_t b1) {
      out_rows(product, 0, OH, b0 * 4, std::min(Kg, b1 * 4));
    };
    const size_t blocks = (Kg + 3) / 4;
    if (tp) tp->parallel_for(blocks, 1, planes, Kg * HW);
    else planes(0, blocks);
  };
  // Images too small to split go whole to the threads, each thread its own images: split
  // inside, every image paid a fork and a join for a few microseconds of products
  // (Silero VAD's 64 windows of 4 pixels, [64,129,4] * [128,129,3]: 2 threads 321-337 us
  // against 299 on one).
  const size_t items = p_.N * p_.groups, threads = pool ? pool->size() : 1;
  const size_t image_work = prows * Kg * kdim;
  if (threads > 1 && items >= threads && image_work < kImplicitImageSplitWork) {
    pool->parallel_for(items, 1, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) run_image(i / p_.groups, i % p_.groups, nullptr);
    }, items * image_work);
    return;
  }
  for (size_t n = 0; n < p_.N; ++n)
    for (size_t g = 0; g < p_.groups; ++g) run_image(n, g, pool);
}

// ---------------------------------------------------------------- winograd F(4x4, 3x3)

void Conv2d::run_winograd(const float* x, float* y, const Epilogue& ep, ThreadPool* pool) const {
  const size_t N = p_.N, C = p_.C, K = p_.K, OH = p_.out_h(), OW = p_.out_w();
  const size_t th = (OH + 3) / 4, tw = (OW + 3) / 4, per_image = th * tw, tiles = N * per_image;
  const GemmKernel& kern = gemm_kernel(active_isa());
  const WinogradKernels wk = select_f32_wino43(active_isa());
  const size_t T = wk.tiles;
  if (T != kern.nr || T > 32) throw std::logic_error("winograd: transform width != GEMM nr");
  // Zero-padded input covering every tile's 6x6 patch.
  const size_t HP = 4 * th + 2, WP = 4 * tw + 2;
  float* xp = gemm_scratch(kScratchPad, N * C * HP * WP);
  auto pad = [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      float* dst = xp + i * HP * WP;
      std::memset(dst, 0, HP * WP * sizeof(float));
      const float* src = x + i * p_.H * p_.W;
      const size_t rows = std::min(p_.H, HP - p_.pad_top), cols = std::min(p_.W, WP - p_.pad_left);
      for (size_t r = 0; r < rows; ++r)
        std::memcpy(dst + (r + p_.pad_top) * WP + p_.pad_left, src + r * p_.W,
                    cols * sizeof(float));
    }
  };
  if (pool) pool->parallel_for(N * C, 1, pad, N * C * HP * WP); else pad(0, N * C);
  // Weight panels for the active kernel (converted once per call if packed for another).
  std::vector<const float*> a_panels(36);
  AlignedBuffer converted;
  const size_t a_len = round_up(K, kern.mr) * C;
  for (size_t xi = 0; xi < 36; ++xi) {
    const auto& pa = static_cast<const PackedAPanels&>(*w_->panels[xi]);
    a_panels[xi] = pa.panels_for(kern);
    if (pa.mr() != kern.mr) {
      if (converted.size() == 0) converted.resize(36 * a_len);
      std::memcpy(converted.data() + xi * a_len, a_panels[xi], a_len * sizeof(float));
      a_panels[xi] = converted.data() + xi * a_len;
    }
  }
  const float* bias = ep.bias_kind == BiasKind::per_row ? ep.bias : nullptr;
  const size_t blocks = (tiles + T - 1) / T;
  // Relu and Clip are a clamp applied as the outputs are stored; other activations take a
  // pass of their own at the end.
  float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
  const bool clamped = ep.act == Activation::relu || ep.act == Activation::clip;
  if (ep.act == Activation::relu) lo = 0.0f;
  if (ep.act == Activation::clip) lo = ep.alpha, hi = ep.beta;

  // One block of T tiles goes through three stages: gather + input transform per input
  // channel, 36 GEMMs (one per transform position xi), output transform + scatter per output
  // channel. `bp` holds 36 x C x T transformed inputs, `mo` 36 x K x T GEMM outputs.
  struct Block {
    size_t t0, nt, nruns;
    size_t tn[32], ty[32], tx[32], runs[33];
  };
  auto describe = [&](size_t b, Block& blk) {
    blk.t0 = b * T;
    blk.nt = std::min(T, tiles - blk.t0);
    for (size_t t = 0; t < blk.nt; ++t) {
      const size_t id = blk.t0 + t;
      blk.tn[t] = id / per_image;
      blk.ty[t] = (id % per_image) / tw;
      blk.tx[t] = id % tw;
    }
    // Runs of tiles adjacent in one tile row: gathered with one strided copy each.
    blk.nruns = 0;
    for (size_t t = 0; t < blk.nt; ++t)
      if (t == 0 || blk.tx[t] == 0) blk.runs[blk.nruns++] = t;
    blk.runs[blk.nruns] = blk.nt;
  };
  auto transform_in = [&](const Block& blk, size_t c0, size_t c1, float* bp) {
    alignas(64) float d[36 * 32];
    if (blk.nt < T)
      for (size_t e = 0; e < 36; ++e)
        std::memset(d + e * T + blk.nt, 0, (T - blk.nt) * sizeof(float));
    for (size_t c = c0; c < c1; ++c) {
      for (size_t q = 0; q < blk.nruns; ++q) {
        const size_t t = blk.runs[q];
        const float* src = xp + ((blk.tn[t] * C + c) * HP + 4 * blk.ty[t]) * WP + 4 * blk.tx[t];
        wk.gather(src, WP, blk.runs[q + 1] - t, d + t);
      }
      wk.input(d, bp + c * T, C * T);
    }
  };
  auto multiply = [&](const Block& blk, size_t x0, size_t x1, const float* bp, float* mo) {
    const Epilogue none;
    for (size_t xi = x0; xi < x1; ++xi)
      gemm_packed_core(kern, K, blk.nt, C, a_panels[xi], bp + xi * C * T, mo + xi * K * T, T,
                       none, nullptr);
  };
  auto transform_out = [&](const Block& blk, size_t k0, size_t k1, const float* mo) {
    alignas(64) float yt[16 * 32];
    for (size_t k = k0; k < k1; ++k) {
      wk.output(mo + k * T, K * T, yt);
      const float bk = bias ? bias[k] : 0.0f;
      for (size_t q = 0; q < blk.nruns; ++q) {
        const size_t t = blk.runs[q], n = blk.runs[q + 1] - t;
        const size_t oy = 4 * blk.ty[t], ox = 4 * blk.tx[t];
        const size_t plane = (blk.tn[t] * K + k) * OH * OW;
        const float* res = ep.residual ? ep.residual + plane + oy * OW + ox : nullptr;
        const size_t rows = std::min<size_t>(4, OH - oy);
        // The run's last tile may stick out of the right edge: whole tiles go through the
        // vector scatter, a partial one element by element.
        const size_t whole = std::min(n, (OW - ox) / 4);
        if (whole)
          wk.scatter(yt + t, whole, rows, bk, res, y + plane + oy * OW + ox, OW, lo, hi);
        for (size_t u = t + whole; u < t + n; ++u) {
          const size_t ux = 4 * blk.tx[u], cols = std::min<size_t>(4, OW - ux);
          for (size_t i = 0; i < rows; ++i)
            for (size_t j = 0; j < cols; ++j) {
              const size_t pos = plane + (oy + i) * OW + ux + j;
              const float v =
                  yt[(i * 4 + j) * T + u] + bk + (ep.residual ? ep.residual[pos] : 0.0f);
              y[pos] = clamped ? wino43::wino_clamp<true>(v, lo, hi) : v;
            }
        }
      }
    }
  };
  // Blocks [b0, b1), each through its three stages; `each(n, f)` runs one stage's f over
  // [0, n), whole on this thread or split across the pool.
  auto blocks_through = [&](size_t b0, size_t b1, auto&& each) {
    float* ws = gemm_scratch(kScratchConv, 36 * C * T + 36 * K * T);
    float* bp = ws;
    float* mo = ws + 36 * C * T;
    Block blk;
    for (size_t b = b0; b < b1; ++b) {
      describe(b, blk);
      each(C, [&](size_t c0, size_t c1) { transform_in(blk, c0, c1, bp); });
      each(36, [&](size_t x0, size_t x1) { multiply(blk, x0, x1, bp, mo); });
      each(K, [&](size_t k0, size_t k1) { transform_out(blk, k0, k1, mo); });
    }
  };
  auto run = [&](size_t b0, size_t b1) {
    blocks_through(b0, b1, [](size_t n, auto&& f) { f(0, n); });
  };
  const size_t threads = pool ? pool->size() : 1;
  if (threads > 1 && blocks < 8 * threads) {
    // Few blocks (small maps): handed out one by one they would leave a thread running the
    // last alone (7 blocks on 2 threads: 4 + 3). So a multiple of the threads runs whole,
    // an equal share per thread in one fork, and every stage of each remaining block (fewer
    // than the threads) is split across the threads, three forks each.
    const size_t whole = blocks / threads * threads;
    if (whole)
      pool->parallel_for(threads, 1, [&](size_t c0, size_t c1) {
        for (size_t c = c0; c < c1; ++c) run(c * whole / threads, (c + 1) * whole / threads);
      });
    blocks_through(whole, blocks, [&](size_t n, auto&& f) { pool->parallel_for(n, 1, f); });
  } else {
    if (pool) pool->parallel_for(blocks, 1, run); else run(0, blocks);
  }
  if (ep.act != Activation::none && !clamped) {
    auto act = [&](size_t i0, size_t i1) {
      apply_activation(ep.act, ep.alpha, ep.beta, y + i0 * OH * OW, (i1 - i0) * OH * OW);
    };
    if (pool) pool->parallel_for(N * K, 1, act); else act(0, N * K);
  }
}

}  // namespace kiln
