// MaxPool (with optional Indices), AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool.
// Any spatial rank >= 1; parallel over images x channels.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/pool.h"
#include "ops/common.h"

namespace kiln::ops {
namespace {

enum class PoolKind { max, avg, lp };

struct PoolAttrs {
  std::string auto_pad;
  std::vector<int64_t> kernel, pads, strides, dilations;
  bool ceil_mode = false;
  bool count_include_pad = false;
  int64_t storage_order = 0;
  int64_t p = 2;
};

PoolAttrs read_pool_attrs(const NodeDesc& node, PoolKind kind) {
  PoolAttrs a;
  a.auto_pad = read_auto_pad(node);
  a.kernel = node.attr_ints("kernel_shape");
  if (a.kernel.empty()) node.fail("kernel_shape is required");
  for (int64_t k : a.kernel) if (k < 1) node.fail("kernel_shape values must be >= 1");
  a.pads = node.attr_ints("pads");
  a.strides = node.attr_ints("strides");
  a.dilations = node.attr_ints("dilations");
  for (int64_t v : a.pads) if (v < 0) node.fail("pads must be >= 0");
  for (int64_t v : a.strides) if (v < 1) node.fail("strides must be >= 1");
  for (int64_t v : a.dilations) if (v < 1) node.fail("dilations must be >= 1");
  const size_t nd = a.kernel.size();
  if (!a.pads.empty() && a.pads.size() != 2 * nd) node.fail("pads must have 2 values per dim");
  if (!a.strides.empty() && a.strides.size() != nd) node.fail("strides must have one per dim");
  if (!a.dilations.empty() && a.dilations.size() != nd)
    node.fail("dilations must have one value per spatial dim");
  a.ceil_mode = node.attr_i("ceil_mode", 0) != 0;
  a.count_include_pad = node.attr_i("count_include_pad", 0) != 0;
  a.storage_order = node.attr_i("storage_order", 0);
  if (kind == PoolKind::lp) {
    a.p = node.attr_i("p", 2);
    if (a.p < 1) node.fail("p must be >= 1");
  }
  return a;
}

struct PoolGeom {
  size_t nd = 0, NC = 0;
  std::vector<int64_t> in, k, out, stride, dil, pb, pe;
  size_t in_prod = 1, out_prod = 1;
};

PoolGeom pool_geom(const PoolAttrs& a, const Tensor& x, OpContext& c) {
  PoolGeom g;
  g.nd = a.kernel.size();
  if (x.rank() != g.nd + 2)
    c.fail("X " + shape_str(x.shape) + " must have rank " + std::to_string(g.nd + 2) +
           " for kernel_shape " + shape_str(a.kernel));
  g.NC = static_cast<size_t>(x.shape[0] * x.shape[1]);
  g.in.assign(x.shape.begin() + 2, x.shape.end());
  g.k = a.kernel;
  g.stride = a.strides.empty() ? std::vector<int64_t>(g.nd, 1) : a.strides;
  g.dil = a.dilations.empty() ? std::vector<int64_t>(g.nd, 1) : a.dilations;
  g.pb.assign(g.nd, 0);
  g.pe.assign(g.nd, 0);
  g.out.resize(g.nd);
  for (size_t d = 0; d < g.nd; ++d) {
    const int64_t span = (g.k[d] - 1) * g.dil[d] + 1;
    spatial_pads(a.auto_pad, a.pads, d, g.nd, g.in[d], g.stride[d], span, g.pb[d], g.pe[d]);
    if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
      g.out[d] = (g.in[d] + g.stride[d] - 1) / g.stride[d];  // no ceil_mode under SAME
      continue;
    }
    const int64_t padded = g.in[d] + g.pb[d] + g.pe[d];
    if (padded < span)
      c.fail("kernel " + shape_str(g.k) + " is larger than the padded input " +
             shape_str(x.shape));
    if (a.ceil_mode) {
      g.out[d] = (padded - span + g.stride[d] - 1) / g.stride[d] + 1;
      if ((g.out[d] - 1) * g.stride[d] >= g.in[d] + g.pb[d]) --g.out[d];
    } else {
      g.out[d] = (padded - span) / g.stride[d] + 1;
    }
  }
  for (size_t d = 0; d < g.nd; ++d) {
    g.in_prod *= g.in[d];
    g.out_prod *= g.out[d];
  }
  return g;
}

class PoolKernel final : public Kernel {
 public:
  PoolKernel(const NodeDesc& node, PoolKind kind) : a_(read_pool_attrs(node, kind)),
                                                     kind_(kind) {}

  // The vector kernels need every pad smaller than the dilated window and every window to
  // start inside the padded input (always so unless ceil_mode adds a window past the end).
  static bool fits_vector_kernel(const PoolGeom& g) {
    for (size_t d = 0; d < 2; ++d) {
      const int64_t span = (g.k[d] - 1) * g.dil[d] + 1;
      if (g.pb[d] >= span || g.pe[d] >= span) return false;
      if ((g.out[d] - 1) * g.stride[d] >= g.in[d] + g.pb[d]) return false;
    }
    return true;
  }

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    if (x.dtype != DType::f32) c.fail("X must be float32");
    const PoolGeom g = pool_geom(a_, x, c);
    Shape oshape = {x.shape[0], x.shape[1]};
    oshape.insert(oshape.end(), g.out.begin(), g.out.end());
    Tensor& y = c.output(0, DType::f32, oshape);
    int64_t* pind = nullptr;
    if (kind_ == PoolKind::max && c.wants_output(1))
      pind = c.output(1, DType::i64, oshape).ptr<int64_t>();
    const float* px = x.ptr<float>();
    float* py = y.ptr<float>();
    const size_t nd = g.nd;
    if (nd == 2 && !pind && kind_ != PoolKind::lp && fits_vector_kernel(g)) {
      // The vectorized 2-D kernels (kernels/pool.h), dispatched by ISA.
      Pool2dParams p;
      p.N = x.shape[0]; p.C = x.shape[1]; p.H = g.in[0]; p.W = g.in[1];
      p.kh = g.k[0]; p.kw = g.k[1]; p.stride_h = g.stride[0]; p.stride_w = g.stride[1];
      p.pad_top = g.pb[0]; p.pad_left = g.pb[1]; p.pad_bottom = g.pe[0]; p.pad_right = g.pe[1];
      p.dilation_h = g.dil[0]; p.dilation_w = g.dil[1];
      p.out_h = g.out[0]; p.out_w = g.out[1];
      p.count_include_pad = a_.count_include_pad;
      kiln::pool2d(kind_ == PoolKind::max ? kiln::PoolKind::max : kiln::PoolKind::avg, p, px,
                   py, c.pool);
      return;
    }
    if (nd == 2 && kind_ != PoolKind::lp) {
      pool2d(g, px, py, pind, c.pool);
      return;
    }
    parallel(c.pool, g.NC, 1, [&](size_t b, size_t e) {
      std::vector<int64_t> oidx(nd), kidx(nd);
      for (size_t nc = b; nc < e; ++nc) {
        const float* xc = px + nc * g.in_prod;
        std::fill(oidx.begin(), oidx.end(), 0);
        for (size_t o = 0; o < g.out_prod; ++o) {
          float best = -std::numeric_limits<float>::infinity();
          int64_t best_at = -1;
          double sum = 0.0;
          size_t count = 0, padded_count = 0;
          std::fill(kidx.begin(), kidx.end(), 0);
          bool done = false;
          while (!done) {
            int64_t off = 0, cm_off = 0, cm_mul = 1;
            bool inside = true, in_pad_region = true;
            for (size_t d = 0; d < nd; ++d) {
              int64_t i = oidx[d] * g.stride[d] - g.pb[d] + kidx[d] * g.dil[d];
              if (i < 0 || i >= g.in[d]) inside = false;
              if (i < -g.pb[d] || i >= g.in[d] + g.pe[d]) in_pad_region = false;
              off = off * g.in[d] + i;
              cm_off += i * cm_mul;
              cm_mul *= g.in[d];
            }
            if (in_pad_region) ++padded_count;
            if (inside) {
              const float v = xc[off];
              ++count;
              if (kind_ == PoolKind::max) {
                if (v > best || best_at < 0) {
                  best = v;
                  best_at = a_.storage_order ? cm_off : off;
                }
              } else if (kind_ == PoolKind::avg) {
                sum += v;
              } else {
                sum += std::pow(std::abs(static_cast<double>(v)), static_cast<double>(a_.p));
              }
            }
            done = true;
            for (size_t d = nd; d-- > 0;) {
              if (++kidx[d] < g.k[d]) {
                done = false;
                break;
              }
              kidx[d] = 0;
            }
          }
          float out;
          if (kind_ == PoolKind::max) {
            out = best;
            if (pind) pind[nc * g.out_prod + o] = static_cast<int64_t>(nc * g.in_prod) + best_at;
          } else if (kind_ == PoolKind::avg) {
            size_t div = a_.count_include_pad ? padded_count : count;
            out = div ? static_cast<float>(sum / static_cast<double>(div)) : 0.0f;
          } else {
            out = static_cast<float>(std::pow(sum, 1.0 / static_cast<double>(a_.p)));
          }
          py[nc * g.out_prod + o] = out;
          for (size_t d = nd; d-- > 0;) {
            if (++oidx[d] < g.out[d]) break;
            oidx[d] = 0;
          }
        }
      }
    });
  }

 private:
  // 2-D max / average pooling: the same rules as the N-d loop, without index vectors.
  void pool2d(const PoolGeom& g, const float* px, float* py, int64_t* pind,
              ThreadPool* pool) const {
    const int64_t H = g.in[0], W = g.in[1], OH = g.out[0], OW = g.out[1];
    const int64_t KH = g.k[0], KW = g.k[1], SH = g.stride[0], SW = g.stride[1];
    const int64_t DH = g.dil[0], DW = g.dil[1];
    const bool is_max = kind_ == PoolKind::max;
    parallel(pool, g.NC, 1, [&](size_t b, size_t e) {
      for (size_t nc = b; nc < e; ++nc) {
        const float* xc = px + nc * g.in_prod;
        float* yc = py + nc * g.out_prod;
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t h0 = oh * SH - g.pb[0];
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int64_t w0 = ow * SW - g.pb[1];
            float best = -std::numeric_limits<float>::infinity();
            int64_t best_at = -1;
            float sum = 0.0f;
            int64_t count = 0, padded = 0;
            for (int64_t kh = 0; kh < KH; ++kh) {
              const int64_t ih = h0 + kh * DH;
              const bool h_in = ih >= 0 && ih < H;
              const bool h_pad = ih >= -g.pb[0] && ih < H + g.pe[0];
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t iw = w0 + kw * DW;
                if (h_pad && iw >= -g.pb[1] && iw < W + g.pe[1]) ++padded;
                if (!h_in || iw < 0 || iw >= W) continue;
                const float v = xc[ih * W + iw];
                ++count;
                if (is_max) {
                  if (v > best || best_at < 0) {
                    best = v;
                    best_at = a_.storage_order ? iw * H + ih : ih * W + iw;
                  }
                } else {
                  sum += v;
                }
              }
            }
            const int64_t o = oh * OW + ow;
            if (is_max) {
              yc[o] = best;
              if (pind) pind[nc * g.out_prod + o] = static_cast<int64_t>(nc * g.in_prod) + best_at;
            } else {
              const int64_t div = a_.count_include_pad ? padded : count;
              yc[o] = div ? sum / static_cast<float>(div) : 0.0f;
            }
          }
        }
      }
    });
  }

  PoolAttrs a_;
  PoolKind kind_;
};

void global_pool(OpContext& c, bool is_max) {
  const Tensor& x = c.in(0);
  if (x.dtype != DType::f32) c.fail("X must be float32");
  if (x.rank() < 3) c.fail("X must have rank >= 3, got " + shape_str(x.shape));
  Shape oshape(x.rank(), 1);
  oshape[0] = x.shape[0];
  oshape[1] = x.shape[1];
  Tensor& y = c.output(0, DType::f32, oshape);
  const size_t nc = static_cast<size_t>(x.shape[0] * x.shape[1]);
  const size_t hw = nc ? x.numel() / nc : 0;
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  parallel(c.pool, nc, 16, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const float* xc = px + i * hw;
      if (is_max)
        py[i] = max_f32(xc, hw);
      else
        py[i] = hw ? static_cast<float>(sum_f32(xc, hw) / static_cast<double>(hw)) : 0.0f;
    }
  });
}

KernelFactory pool_factory(PoolKind kind) {
  return [kind](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    return std::make_unique<PoolKernel>(node, kind);
  };
}

KILN_REGISTER_OP("", "MaxPool", pool_factory(PoolKind::max));
KILN_REGISTER_OP("", "AveragePool", pool_factory(PoolKind::avg));
KILN_REGISTER_OP("", "LpPool", pool_factory(PoolKind::lp));
KILN_REGISTER_OP("", "GlobalAveragePool", simple_kernel([](OpContext& c) {
  global_pool(c, false);
}));
KILN_REGISTER_OP("", "GlobalMaxPool", simple_kernel([](OpContext& c) { global_pool(c, true); }));

}  // namespace
}  // namespace kiln::ops
