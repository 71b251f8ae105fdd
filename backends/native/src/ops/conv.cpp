// Conv, kiln::FusedConv and ConvTranspose. 2-D convolutions with constant weights run on
// kiln::Conv2d (algorithm chosen by shape per input geometry, weights packed once per form);
// every other case uses im2col / col2im around kiln::sgemm, with a direct depthwise 2-D path.
// Any spatial rank >= 1.
#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/gemm_driver.h"
#include "ops/activation.h"
#include "ops/common.h"
#include "ops/conv_geom.h"

namespace kiln::ops {
namespace {

// Rows [r0, r1) of the im2col matrix for columns [j0, j1) of one image group.
void im2col(const Geom& g, const float* x, size_t r0, size_t r1, size_t j0, size_t j1,
            float* col) {
  const size_t ncol = j1 - j0;
  if (g.nd == 2) {
    const int64_t H = g.in[0], W = g.in[1], KH = g.k[0], KW = g.k[1], OW = g.out[1];
    for (size_t r = r0; r < r1; ++r) {
      const size_t ch = r / g.kprod;
      const int64_t kh = (r / KW) % KH, kw = r % KW;
      const float* xc = x + ch * g.in_prod;
      float* dst = col + r * ncol;
      int64_t oh = j0 / OW, ow = j0 % OW;
      const int64_t oh_off = kh * g.dil[0] - g.pb[0];
      const int64_t ow_off = kw * g.dil[1] - g.pb[1];
      for (size_t j = 0; j < ncol; ++j) {
        const int64_t ih = oh * g.stride[0] + oh_off;
        const int64_t iw = ow * g.stride[1] + ow_off;
        dst[j] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? xc[ih * W + iw] : 0.0f;
        if (++ow == OW) {
          ow = 0;
          ++oh;
        }
      }
    }
    return;
  }
  std::vector<int64_t> kidx(g.nd), oidx(g.nd);
  for (size_t r = r0; r < r1; ++r) {
    const size_t ch = r / g.kprod;
    size_t rem = r % g.kprod;
    for (size_t d = g.nd; d-- > 0;) {
      kidx[d] = rem % g.k[d];
      rem /= g.k[d];
    }
    const float* xc = x + ch * g.in_prod;
    float* dst = col + r * ncol;
    size_t jrem = j0;
    for (size_t d = g.nd; d-- > 0;) {
      oidx[d] = jrem % g.out[d];
      jrem /= g.out[d];
    }
    for (size_t j = 0; j < ncol; ++j) {
      int64_t off = 0;
      bool inside = true;
      for (size_t d = 0; d < g.nd; ++d) {
        int64_t i = oidx[d] * g.stride[d] - g.pb[d] + kidx[d] * g.dil[d];
        if (i < 0 || i >= g.in[d]) {
          inside = false;
          break;
        }
        off = off * g.in[d] + i;
      }
      dst[j] = inside ? xc[off] : 0.0f;
      for (size_t d = g.nd; d-- > 0;) {
        if (++oidx[d] < g.out[d]) break;
        oidx[d] = 0;
      }
    }
  }
}

// Depthwise 2-D (one filter per channel): direct loops, parallel over images x channels.
void depthwise2d(const Geom& g, const float* x, const float* w, const float* bias,
                 const float* residual, const FusedActivation& fa, float* y, ThreadPool* pool) {
  const int64_t H = g.in[0], W = g.in[1], KH = g.k[0], KW = g.k[1];
  const int64_t OH = g.out[0], OW = g.out[1];
  parallel(pool, g.N * g.C, 1, [&](size_t b, size_t e) {
    for (size_t nc = b; nc < e; ++nc) {
      const size_t ch = nc % g.C;
      const float* xc = x + nc * g.in_prod;
      const float* wc = w + ch * g.kprod;
      float* yc = y + nc * g.out_prod;
      for (int64_t oh = 0; oh < OH; ++oh) {
        for (int64_t ow = 0; ow < OW; ++ow) {
          float acc = bias ? bias[ch] : 0.0f;
          for (int64_t kh = 0; kh < KH; ++kh) {
            const int64_t ih = oh * g.stride[0] - g.pb[0] + kh * g.dil[0];
            if (ih < 0 || ih >= H) continue;
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = ow * g.stride[1] - g.pb[1] + kw * g.dil[1];
              if (iw < 0 || iw >= W) continue;
              acc += xc[ih * W + iw] * wc[kh * KW + kw];
            }
          }
          yc[oh * OW + ow] = acc;
        }
      }
      if (residual) {
        const float* rc = residual + nc * g.out_prod;
        for (size_t i = 0; i < g.out_prod; ++i) yc[i] += rc[i];
      }
      apply_activation(fa.act, fa.alpha, fa.beta, yc, g.out_prod);
    }
  });
}

// x with a per-channel affine (+ Relu) applied, in `buffer`; returns its data. x is NCHW, or
// NHWC (channel fastest) when `nhwc`.
const float* apply_prologue(const ChannelAffine& pro, const Tensor& x, const Geom& g, bool nhwc,
                            std::vector<float>& buffer, ThreadPool* pool) {
  buffer.resize(x.numel());
  const float* px = x.ptr<float>();
  if (nhwc) {
    parallel(pool, g.N * g.in_prod, 64, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i)
        for (size_t ch = 0; ch < g.C; ++ch) {
          const float v = px[i * g.C + ch] * pro.scale[ch] + pro.shift[ch];
          buffer[i * g.C + ch] = pro.relu ? std::max(v, 0.0f) : v;
        }
    });
    return buffer.data();
  }
  parallel(pool, g.N * g.C, 1, [&](size_t b, size_t e) {
    for (size_t nc = b; nc < e; ++nc) {
      const float s = pro.scale[nc % g.C], t = pro.shift[nc % g.C];
      const float* src = px + nc * g.in_prod;
      float* dst = buffer.data() + nc * g.in_prod;
      for (size_t i = 0; i < g.in_prod; ++i) {
        const float v = src[i] * s + t;
        dst[i] = pro.relu ? std::max(v, 0.0f) : v;
      }
    }
  });
  return buffer.data();
}

class ConvKernel final : public Kernel {
 public:
  ConvKernel(const NodeDesc& node, const BuildContext& bc, bool fused)
      : attrs_(read_attrs(node, false)), fused_(fused) {
    if (fused) {
      act_ = parse_activation(node, node.has("activation_alpha") ? "activation_" : "");
      // kiln::FusedConv may hand its activations over in NHWC (compiler/passes/nhwc_layout.py)
      layout_ = {layout_of(node, "kiln_layout_in"), layout_of(node, "kiln_layout_out"),
                 layout_of(node, "kiln_layout_residual")};
    }
    // kiln::FusedConv's prologue (compiler/passes/fuse_conv_prologue.py): a per-channel
    // affine (+ Relu) applied to the input, its scale and shift passed as inputs 4 and 5.
    const std::string prologue = node.attr_s("prologue", "");
    if (!prologue.empty() && prologue != "affine" && prologue != "affine_relu")
      node.fail("prologue must be affine or affine_relu, got " + prologue);
    prologue_ = !prologue.empty();
    prologue_relu_ = prologue == "affine_relu";
    if (const Tensor* w = bc.constant(node, 1))
      if (w->dtype == DType::f32 && (w->rank() == 4 || w->rank() == 3)) weights_ = *w;
  }

  void run(OpContext& c) const override {
    const Tensor& w = c.in(1);
    // Geometry is read from an NCHW view of X: an NHWC X [N, H, W, C] is viewed as NCHW
    // (a copy of the tensor header only then: an NCHW run copies nothing).
    const Tensor& given = c.in(0);
    if (layout_.any() && (given.rank() != 4 || w.rank() != 4))
      c.fail("an NHWC layout (kiln_layout_*) needs a 2-D convolution: X and W of rank 4, got " +
             shape_str(given.shape) + " and " + shape_str(w.shape));
    Tensor viewed;
    if (layout_.nhwc_in) {
      viewed = given;
      viewed.shape = {given.shape[0], given.shape[3], given.shape[1], given.shape[2]};
    }
    const Tensor& x = layout_.nhwc_in ? viewed : given;
    if (x.dtype != DType::f32 || w.dtype != DType::f32) c.fail("X and W must be float32");
    const Geom g = conv_geom(attrs_, x, w, c);
    const Tensor* b = c.input(2);
    if (b) {
      if (b->dtype != DType::f32) c.fail("B must be float32");
      if (b->numel() != g.M || b->rank() != 1)
        c.fail("B " + shape_str(b->shape) + " must have shape [" + std::to_string(g.M) + "]");
    }
    Shape oshape = {static_cast<int64_t>(g.N), static_cast<int64_t>(g.M)};
    oshape.insert(oshape.end(), g.out.begin(), g.out.end());
    auto nhwc_of = [](const Shape& s) { return Shape{s[0], s[2], s[3], s[1]}; };
    const Tensor* res = fused_ ? c.input(3) : nullptr;
    if (res) {
      const Shape want = layout_.nhwc_residual ? nhwc_of(oshape) : oshape;
      if (res->dtype != DType::f32) c.fail("residual must be float32");
      if (res->shape != want)
        c.fail("residual " + shape_str(res->shape) + " must have the output shape " +
               shape_str(want) + (layout_.nhwc_residual ? " (NHWC)" : ""));
    }
    Tensor& y = c.output(0, DType::f32, layout_.nhwc_out ? nhwc_of(oshape) : oshape);
    if (y.numel() == 0) return;
    const float* px = x.ptr<float>();
    const float* pw = w.ptr<float>();
    const float* pb = b ? b->ptr<float>() : nullptr;
    const float* pr = res ? res->ptr<float>() : nullptr;
    float* py = y.ptr<float>();
    ChannelAffine pro;
    std::vector<float> x_affine;  // x with the prologue applied, when the conv cannot fuse it
    if (prologue_) {
      const Tensor& s = c.in(4);
      const Tensor& t = c.in(5);
      if (s.dtype != DType::f32 || t.dtype != DType::f32 || s.numel() != g.C ||
          t.numel() != g.C)
        c.fail("the prologue's scale and shift must be " +
               std::to_string(g.C) + " float32 values");
      pro = {s.ptr<float>(), t.ptr<float>(), prologue_relu_};
    }

    // 1-D convs (NCW) run as 2-D ones of height 1: the same memory, and the batch of short
    // windows a VAD or audio model convolves gets Conv2d's algorithms instead of one small
    // GEMM per image (Silero VAD v6's convs: 7.6 ms -> about a tenth of that).
    if ((g.nd == 2 || (g.nd == 1 && !layout_.any())) && weights_.data == w.data) {
      const std::shared_ptr<Conv2d> conv = packed_for(g, c);
      const bool fuse_prologue = prologue_ && conv->takes_prologue();
      if (prologue_ && !fuse_prologue)
        px = apply_prologue(pro, x, g, layout_.nhwc_in, x_affine, c.pool);
      Epilogue ep;
      if (pb) {
        ep.bias_kind = BiasKind::per_row;
        ep.bias = pb;
      }
      ep.residual = pr;
      ep.act = act_.act;
      ep.alpha = act_.alpha;
      ep.beta = act_.beta;
      conv->run(px, py, ep, c.pool, fuse_prologue ? &pro : nullptr, layout_);
      return;
    }
    if (prologue_) px = apply_prologue(pro, x, g, layout_.nhwc_in, x_affine, c.pool);
    // Weights computed at run time: the paths below run NCHW, NHWC operands permuted.
    std::vector<float> x_nchw, r_nchw, y_nchw;
    if (layout_.nhwc_in) {
      x_nchw.resize(g.N * g.in_prod * g.C);
      nhwc_to_nchw(px, g.N, g.in_prod, g.C, x_nchw.data(), c.pool);
      px = x_nchw.data();
    }
    if (pr && layout_.nhwc_residual) {
      r_nchw.resize(g.N * g.out_prod * g.M);
      nhwc_to_nchw(pr, g.N, g.out_prod, g.M, r_nchw.data(), c.pool);
      pr = r_nchw.data();
    }
    if (layout_.nhwc_out) {
      y_nchw.resize(y.numel());
      py = y_nchw.data();
    }
    run_nchw(g, px, pw, pb, pr, py, c);
    if (layout_.nhwc_out) nchw_to_nhwc(py, g.N, g.M, g.out_prod, y.ptr<float>(), c.pool);
  }

 private:
  // The convolutions whose weights are not constant (or not 2-D), all tensors NCHW.
  void run_nchw(const Geom& g, const float* px, const float* pw, const float* pb,
                const float* pr, float* py, OpContext& c) const {
    if (g.nd == 2 && g.G == g.C && g.M == g.C && g.Cg == 1) {
      depthwise2d(g, px, pw, pb, pr, act_, py, c.pool);
      return;
    }
    const size_t K = g.Cg * g.kprod;
    bool pointwise = g.kprod == 1;
    for (size_t d = 0; d < g.nd; ++d)
      pointwise = pointwise && g.stride[d] == 1 && g.pb[d] == 0 && g.pe[d] == 0;
    const size_t tile = pointwise ? g.out_prod
                                  : std::max<size_t>(64, std::min(g.out_prod, (size_t(1) << 21) / std::max<size_t>(K, 1)));
    std::vector<float> col(pointwise ? 0 : K * std::min(tile, g.out_prod));
    for (size_t n = 0; n < g.N; ++n) {
      for (size_t gi = 0; gi < g.G; ++gi) {
        const float* xg = px + (n * g.C + gi * g.Cg) * g.in_prod;
        const float* wg = pw + gi * g.Mg * K;
        const size_t ybase = (n * g.M + gi * g.Mg) * g.out_prod;
        for (size_t j0 = 0; j0 < g.out_prod; j0 += tile) {
          const size_t j1 = std::min(g.out_prod, j0 + tile);
          Epilogue ep;
          if (pb) {
            ep.bias_kind = BiasKind::per_row;
            ep.bias = pb + gi * g.Mg;
          }
          ep.residual = pr ? pr + ybase + j0 : nullptr;
          ep.act = act_.act;
          ep.alpha = act_.alpha;
          ep.beta = act_.beta;
          const float* bmat;
          size_t ldb;
          if (pointwise) {
            bmat = xg;
            ldb = g.in_prod;
          } else {
            const size_t ncol = j1 - j0;
            parallel(c.pool, K, 16, [&](size_t r0, size_t r1) {
              im2col(g, xg, r0, r1, j0, j1, col.data());
            });
            bmat = col.data();
            ldb = ncol;
          }
          sgemm(false, false, g.Mg, j1 - j0, K, wg, K, bmat, ldb, py + ybase + j0, g.out_prod,
                ep, c.pool);
        }
      }
    }
  }

  using Key = std::tuple<size_t, size_t, size_t, int64_t, int64_t, int64_t, int64_t>;

  // The convolution for this input geometry, built on first use (weights constant); its
  // packed weights come from forms_, so a new input size packs nothing when its algorithm
  // reads a form another size already packed.
  // A 1-D geometry reads as a 2-D one of height 1 (kernel, stride, pads 1 / 0 on the
  // height axis).
  std::shared_ptr<Conv2d> packed_for(const Geom& g, OpContext& c) const {
    const bool one_d = g.nd == 1;
    auto dim = [&](const std::vector<int64_t>& v, size_t d, int64_t height) {
      return static_cast<size_t>(one_d ? (d == 0 ? height : v[0]) : v[d]);
    };
    Conv2dParams p;
    p.N = g.N;
    p.C = g.C;
    p.H = dim(g.in, 0, 1);
    p.W = dim(g.in, 1, 1);
    p.K = g.M;
    p.kh = dim(g.k, 0, 1);
    p.kw = dim(g.k, 1, 1);
    p.stride_h = dim(g.stride, 0, 1);
    p.stride_w = dim(g.stride, 1, 1);
    p.pad_top = dim(g.pb, 0, 0);
    p.pad_left = dim(g.pb, 1, 0);
    p.pad_bottom = dim(g.pe, 0, 0);
    p.pad_right = dim(g.pe, 1, 0);
    p.dilation_h = dim(g.dil, 0, 1);
    p.dilation_w = dim(g.dil, 1, 1);
    p.groups = g.G;
    const Key key{g.N, p.H, p.W, int64_t(p.pad_top), int64_t(p.pad_left), int64_t(p.pad_bottom),
                  int64_t(p.pad_right)};
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = packed_.find(key);
    if (it != packed_.end()) return it->second;
    if (packed_.size() >= 8) packed_.clear();  // bound the cache across many input shapes
    std::shared_ptr<Conv2d> conv;
    try {
      conv = std::make_shared<Conv2d>(p, weights_.ptr<float>(),
                                      choose_conv_algo(p, layout_.any()), &forms_, c.pool,
                                      layout_.nhwc_in);
    } catch (const std::invalid_argument& e) {
      c.fail(e.what());
    }
    packed_[key] = conv;
    return conv;
  }

  ConvAttrs attrs_;
  bool fused_;
  FusedActivation act_;
  ConvLayout layout_;  // FusedConv: which of X, Y and the residual are NHWC
  bool prologue_ = false, prologue_relu_ = false;
  Tensor weights_;  // the constant W (shares the plan's buffer), or empty
  mutable std::mutex mutex_;
  mutable ConvWeightForms forms_;
  mutable std::map<Key, std::shared_ptr<Conv2d>> packed_;
};

// transpose_planes when the kernel equals the stride (no padding, no dilation; the FPN-style
// 2x2 stride-2 upsampling): the taps of neighbouring pixels never overlap, so every output
// pixel is one GEMM value. The bias rides in the GEMM epilogue (per (m, ky, kx) row) and each
// output row is written once, its kx columns interleaved, instead of a bias fill followed
// by a read-modify-write scatter.
void transpose_planes_one_tap(const Geom& g, const float* xg, const float* wg,
                              const float* bias, float* yg, ThreadPool* pool) {
  const size_t H = g.in[0], W = g.in[1], OW = g.out[1];
  const size_t kh = g.k[0], kw = g.k[1];
  const size_t rows = g.Mg * g.kprod, out_prod = g.out_prod;
  // Bands of input rows small enough for their columns to stay in cache. With several
  // bands the pool takes whole bands (each thread its GEMM and its output rows, one fork and
  // join per call), the band count rounded up to a multiple of the threads; one band splits
  // its GEMM and its rows instead.
  const size_t fit = std::max<size_t>(1, (size_t(1) << 17) / (rows * W));  // rows a band
  size_t bands = (H + fit - 1) / fit;
  const size_t threads = pool ? pool->size() : 1;
  if (bands > 1 && threads > 1) bands = std::min(H, (bands + threads - 1) / threads * threads);
  const size_t band = (H + bands - 1) / bands;
  std::vector<float> row_bias;
  Epilogue ep;
  if (bias) {
    row_bias.resize(rows);
    for (size_t r = 0; r < rows; ++r) row_bias[r] = bias[r / g.kprod];
    ep.bias = row_bias.data();
    ep.bias_kind = BiasKind::per_row;
  }
  // Output rows (m, ky, iy) for iy in [iy0, iy1), tasks [t0, t1) of that band's
  // Mg * kh * (iy1 - iy0): y[m, iy * kh + ky, ix * kw + kx] = col[m, ky, kx][iy, ix].
  auto scatter = [&](const float* col, size_t iy0, size_t iy1, size_t t0, size_t t1) {
    const size_t cols = (iy1 - iy0) * W;
    for (size_t t = t0; t < t1; ++t) {
      const size_t iy = iy0 + t % (iy1 - iy0), ky = t / (iy1 - iy0) % kh;
      const size_t m = t / ((iy1 - iy0) * kh);
      float* yrow = yg + m * out_prod + (iy * kh + ky) * OW;
      const float* src = col + (m * kh + ky) * kw * cols + (iy - iy0) * W;
      if (kw == 2) {
        const float* s0 = src;
        const float* s1 = src + cols;
        for (size_t ix = 0; ix < W; ++ix) {
          yrow[2 * ix] = s0[ix];
          yrow[2 * ix + 1] = s1[ix];
        }
      } else {
        for (size_t kx = 0; kx < kw; ++kx)
          for (size_t ix = 0; ix < W; ++ix) yrow[ix * kw + kx] = src[kx * cols + ix];
      }
    }
  };
  auto gemm = [&](float* col, size_t iy0, size_t iy1, ThreadPool* split) {
    const size_t cols = (iy1 - iy0) * W;
    sgemm(true, false, rows, cols, g.Cg, wg, rows, xg + iy0 * W, g.in_prod, col, cols, ep,
          split);
  };
  if (bands == 1) {
    std::vector<float> col(rows * H * W);
    gemm(col.data(), 0, H, pool);
    const size_t tasks = g.Mg * kh * H;
    parallel(pool, tasks, 8, [&](size_t t0, size_t t1) { scatter(col.data(), 0, H, t0, t1); },
             tasks * kw * W);
    return;
  }
  parallel(pool, bands, 1, [&](size_t b0, size_t b1) {
    // the running thread's own column buffer, however the pool splits the bands
    float* col = gemm_scratch(kScratchConv, rows * band * W);
    for (size_t b = b0; b < b1; ++b) {
      const size_t iy0 = b * band, iy1 = std::min(H, iy0 + band);
      if (iy0 >= iy1) continue;
      gemm(col, iy0, iy1, nullptr);
      scatter(col, iy0, iy1, 0, g.Mg * kh * (iy1 - iy0));
    }
  }, 2 * rows * H * W * g.Cg);
}

// A 2-D ConvTranspose of one (image, group), in bands of input rows so that the GEMM's
// columns (rows (m, ky, kx) x the band's pixels) stay in cache: col = W^T x_band, then col2im
// adds each column into the output planes, split across the pool by output channel (each
// writes only its own plane). Planes start at their bias: all at once when kernel taps of
// neighbouring input rows overlap, else band by band (each output row then has one band).
// pw: W^T of this group packed once (a constant W), or null (packed per band from wg).
void transpose_planes(const Geom& g, const float* xg, const float* wg, const PackedA* pw,
                      const float* bias, float* yg, ThreadPool* pool) {
  const int64_t H = g.in[0], W = g.in[1], OH = g.out[0], OW = g.out[1];
  const int64_t kh = g.k[0], kw = g.k[1], sh = g.stride[0], sw = g.stride[1];
  const int64_t dh = g.dil[0], pt = g.pb[0];
  const size_t rows = g.Mg * g.kprod, out_prod = g.out_prod;
  // Bands of input rows whose columns (rows x band pixels) stay in L2; with W packed once,
  // bands up to 8x that: every band streams the packed W^T again, which outweighs the
  // columns once W^T is the larger (384 -> 256 at 16x16, 4x4 stride 2: 6 MB).
  const int64_t band_floats = pw && rows * g.Cg > (size_t(1) << 20) ? int64_t(1) << 20
                                                                    : int64_t(1) << 17;
  const int64_t band = std::max<int64_t>(1, band_floats / static_cast<int64_t>(rows * W));
  const bool disjoint = (kh - 1) * dh < sh;
  auto fill = [&](int64_t oy0, int64_t oy1) {
    oy0 = std::clamp<int64_t>(oy0, 0, OH);
    oy1 = std::clamp<int64_t>(oy1, 0, OH);
    if (oy1 <= oy0) return;
    parallel(pool, g.Mg, 1, [&](size_t m0, size_t m1) {
      for (size_t m = m0; m < m1; ++m)
        std::fill(yg + m * out_prod + oy0 * OW, yg + m * out_prod + oy1 * OW,
                  bias ? bias[m] : 0.0f);
    }, g.Mg * (oy1 - oy0) * OW);
  };
  if (!disjoint) fill(0, OH);
  std::vector<float> col(rows * std::min(band, H) * W);
  for (int64_t iy0 = 0; iy0 < H; iy0 += band) {
    const int64_t iy1 = std::min(H, iy0 + band), cols = (iy1 - iy0) * W;
    if (pw)
      sgemm_packed_a(*pw, false, static_cast<size_t>(cols), xg + iy0 * W, g.in_prod, col.data(),
                     static_cast<size_t>(cols), Epilogue(), pool);
    else
      sgemm(true, false, rows, cols, g.Cg, wg, rows, xg + iy0 * W, g.in_prod, col.data(), cols,
            Epilogue(), pool);
    // Output rows this band starts (disjoint taps): from its first row to the next band's.
    if (disjoint) fill(iy0 == 0 ? 0 : iy0 * sh - pt, iy1 == H ? OH : iy1 * sh - pt);
    parallel(pool, g.Mg, 1, [&](size_t m0, size_t m1) {
      for (size_t m = m0; m < m1; ++m) {
        float* ym = yg + m * out_prod;
        for (int64_t ky = 0; ky < kh; ++ky)
          for (int64_t kx = 0; kx < kw; ++kx) {
            const float* src = col.data() + ((m * kh + ky) * kw + kx) * cols;
            const int64_t oy0 = ky * dh - pt, ox0 = kx * g.dil[1] - g.pb[1];
            // input columns whose output column ix * sw + ox0 lies in [0, OW)
            const int64_t ix_lo = ox0 < 0 ? (-ox0 + sw - 1) / sw : 0;
            const int64_t ix_hi = OW - 1 - ox0 < 0 ? 0 : std::min(W, (OW - 1 - ox0) / sw + 1);
            for (int64_t iy = iy0; iy < iy1; ++iy) {
              const int64_t oy = iy * sh + oy0;
              if (oy < 0 || oy >= OH) continue;
              const float* srow = src + (iy - iy0) * W;
              float* yrow = ym + oy * OW;
              if (sw == 1) {
                float* dst = yrow + (ix_lo + ox0);
                for (int64_t ix = ix_lo; ix < ix_hi; ++ix) dst[ix - ix_lo] += srow[ix];
              } else {
                for (int64_t ix = ix_lo; ix < ix_hi; ++ix) yrow[ix * sw + ox0] += srow[ix];
              }
            }
          }
      }
    }, rows * cols);
  }
}

class ConvTransposeKernel final : public Kernel {
 public:
  // A constant 2-D W has each group's W^T packed once here (it was packed again for every
  // band of every call: 384 -> 256 at 16x16, 4x4 stride 2, one thread 15.1 ms, onnxruntime
  // 8.0).
  ConvTransposeKernel(const NodeDesc& node, const BuildContext& bc)
      : attrs_(read_attrs(node, true)) {
    const Tensor* w = bc.constant(node, 1);
    const int64_t G = node.attr_i("group", 1);
    if (!w || w->dtype != DType::f32 || w->rank() != 4 || G < 1 || w->shape[0] % G) return;
    const size_t Cg = static_cast<size_t>(w->shape[0] / G);
    const size_t rows = static_cast<size_t>(w->shape[1] * w->shape[2] * w->shape[3]);
    if (Cg == 0 || rows == 0) return;
    for (int64_t gi = 0; gi < G; ++gi)
      packed_w_.push_back(pack_a(true, rows, Cg, w->ptr<float>() + gi * Cg * rows, rows));
    // The raw W is read again only by the one-tap scatter (kernel == stride in both dims);
    // otherwise the plan may drop its bytes.
    const std::vector<int64_t> strides = node.attr_ints("strides", {1, 1});
    raw_w_read_ = strides.size() == 2 && w->shape[2] == strides[0] && w->shape[3] == strides[1];
  }

  bool reads_constant(size_t i) const override {
    return i != 1 || packed_w_.empty() || raw_w_read_;
  }

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    const Tensor& w = c.in(1);
    if (x.dtype != DType::f32 || w.dtype != DType::f32) c.fail("X and W must be float32");
    Geom g;
    common_geom(attrs_, x, w, c, g);
    if (static_cast<size_t>(w.shape[0]) != g.C)
      c.fail("W " + shape_str(w.shape) + " expects " + std::to_string(w.shape[0]) +
             " input channels, X has " + std::to_string(g.C));
    if (g.C % g.G) c.fail("input channels are not divisible by group");
    g.Cg = g.C / g.G;
    g.Mg = w.shape[1];
    g.M = g.Mg * g.G;
    std::vector<int64_t> opad = attrs_.output_padding;
    if (opad.empty()) opad.assign(g.nd, 0);
    if (opad.size() != g.nd) c.fail("output_padding must have one value per spatial dim");
    g.pb.assign(g.nd, 0);
    g.pe.assign(g.nd, 0);
    g.out.resize(g.nd);
    const auto& oshape_attr = attrs_.output_shape;
    const bool same = attrs_.auto_pad == "SAME_UPPER" || attrs_.auto_pad == "SAME_LOWER";
    if (!oshape_attr.empty() && oshape_attr.size() != g.nd && oshape_attr.size() != g.nd + 2)
      c.fail("output_shape must list the spatial dims");
    for (size_t d = 0; d < g.nd; ++d) {
      const int64_t span = (g.k[d] - 1) * g.dil[d] + 1;
      const int64_t full = g.stride[d] * (g.in[d] - 1) + opad[d] + span;
      if (!oshape_attr.empty() || same) {
        int64_t target = !oshape_attr.empty()
                             ? oshape_attr[oshape_attr.size() - g.nd + d]
                             : g.in[d] * g.stride[d];
        int64_t total = full - target;
        if (total < 0) total = 0;
        if (attrs_.auto_pad == "SAME_UPPER") {
          g.pb[d] = total / 2;
          g.pe[d] = total - total / 2;
        } else {
          g.pb[d] = total - total / 2;
          g.pe[d] = total / 2;
        }
        g.out[d] = target;
      } else {
        if (!attrs_.pads.empty() && attrs_.auto_pad == "NOTSET") {
          g.pb[d] = attrs_.pads[d];
          g.pe[d] = attrs_.pads[d + g.nd];
        }
        g.out[d] = full - g.pb[d] - g.pe[d];
      }
      if (g.out[d] < 1) c.fail("output spatial dim " + std::to_string(d) + " would be empty");
    }
    for (size_t d = 0; d < g.nd; ++d) {
      g.kprod *= g.k[d];
      g.in_prod *= g.in[d];
      g.out_prod *= g.out[d];
    }
    const Tensor* b = c.input(2);
    if (b && (b->dtype != DType::f32 || b->numel() != g.M))
      c.fail("B must be float32 with " + std::to_string(g.M) + " values");
    Shape oshape = {static_cast<int64_t>(g.N), static_cast<int64_t>(g.M)};
    oshape.insert(oshape.end(), g.out.begin(), g.out.end());
    Tensor& y = c.output(0, DType::f32, oshape);
    float* py = y.ptr<float>();
    const bool planar = g.nd == 2;  // 2-D: scattered per output channel, bias included
    // Kernel == stride, no padding or dilation: every output pixel has exactly one tap.
    const bool one_tap = planar && g.k[0] == g.stride[0] && g.k[1] == g.stride[1] &&
                         g.dil[0] == 1 && g.dil[1] == 1 && g.pb[0] == 0 && g.pb[1] == 0 &&
                         g.out[0] == g.in[0] * g.stride[0] && g.out[1] == g.in[1] * g.stride[1];
    if (!planar) std::fill(py, py + y.numel(), 0.0f);
    const size_t rows = g.Mg * g.kprod;
    std::vector<float> col(planar ? 0 : rows * g.in_prod);
    std::vector<int64_t> kidx(g.nd), iidx(g.nd);
    for (size_t n = 0; n < g.N; ++n) {
      for (size_t gi = 0; gi < g.G; ++gi) {
        const float* xg = x.ptr<float>() + (n * g.C + gi * g.Cg) * g.in_prod;
        // (no bytes once the plan dropped a packed W's: only the one-tap path reads them)
        const float* wg = w.data ? w.ptr<float>() + gi * g.Cg * rows : nullptr;
        float* yg = py + (n * g.M + gi * g.Mg) * g.out_prod;
        if (planar) {
          const float* bg = b ? b->ptr<float>() + gi * g.Mg : nullptr;
          const bool packed = packed_w_.size() == g.G && packed_w_[gi]->M() == rows &&
                              packed_w_[gi]->K() == g.Cg;
          if (!wg && (one_tap || !packed)) c.fail("the weights' bytes were released");
          if (one_tap) transpose_planes_one_tap(g, xg, wg, bg, yg, c.pool);
          else transpose_planes(g, xg, wg, packed ? packed_w_[gi].get() : nullptr, bg, yg,
                                c.pool);
          continue;
        }
        sgemm(true, false, rows, g.in_prod, g.Cg, wg, rows, xg, g.in_prod, col.data(),
              g.in_prod, Epilogue(), c.pool);
        for (size_t r = 0; r < rows; ++r) {
          const size_t m = r / g.kprod;
          size_t rem = r % g.kprod;
          for (size_t d = g.nd; d-- > 0;) {
            kidx[d] = rem % g.k[d];
            rem /= g.k[d];
          }
          std::fill(iidx.begin(), iidx.end(), 0);
          const float* src = col.data() + r * g.in_prod;
          float* ym = yg + m * g.out_prod;
          for (size_t i = 0; i < g.in_prod; ++i) {
            int64_t off = 0;
            bool inside = true;
            for (size_t d = 0; d < g.nd; ++d) {
              int64_t o = iidx[d] * g.stride[d] - g.pb[d] + kidx[d] * g.dil[d];
              if (o < 0 || o >= g.out[d]) {
                inside = false;
                break;
              }
              off = off * g.out[d] + o;
            }
            if (inside) ym[off] += src[i];
            for (size_t d = g.nd; d-- > 0;) {
              if (++iidx[d] < g.in[d]) break;
              iidx[d] = 0;
            }
          }
        }
      }
    }
    if (b && !planar) {
      for (size_t n = 0; n < g.N; ++n)
        for (size_t m = 0; m < g.M; ++m) {
          float* ym = py + (n * g.M + m) * g.out_prod;
          const float bv = b->ptr<float>()[m];
          for (size_t i = 0; i < g.out_prod; ++i) ym[i] += bv;
        }
    }
  }

 private:
  ConvAttrs attrs_;
  std::vector<std::unique_ptr<PackedA>> packed_w_;  // per group, W^T (a constant W)
  bool raw_w_read_ = true;  // the one-tap path may read the raw W (see reads_constant)
};

KernelFactory conv_factory(bool fused) {
  return [fused](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
    return std::make_unique<ConvKernel>(node, bc, fused);
  };
}

KILN_REGISTER_OP("", "Conv", conv_factory(false));
KILN_REGISTER_OP("kiln", "FusedConv", conv_factory(true));
KILN_REGISTER_OP("", "ConvTranspose",
                 [](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
                   return std::make_unique<ConvTransposeKernel>(node, bc);
                 });

}  // namespace
}  // namespace kiln::ops
