// Convolution attributes and output geometry, shared by the float and the int8 convolutions.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "ops/common.h"

namespace kiln::ops {

struct ConvAttrs {
  std::string auto_pad;
  std::vector<int64_t> pads, strides, dilations, kernel_shape, output_padding, output_shape;
  int64_t group = 1;
};

inline ConvAttrs read_attrs(const NodeDesc& node, bool transpose) {
  ConvAttrs a;
  a.auto_pad = read_auto_pad(node);
  a.pads = node.attr_ints("pads");
  a.strides = node.attr_ints("strides");
  a.dilations = node.attr_ints("dilations");
  a.kernel_shape = node.attr_ints("kernel_shape");
  a.group = node.attr_i("group", 1);
  if (a.group < 1) node.fail("group must be >= 1");
  for (int64_t v : a.pads) if (v < 0) node.fail("pads must be >= 0");
  for (int64_t v : a.strides) if (v < 1) node.fail("strides must be >= 1");
  for (int64_t v : a.dilations) if (v < 1) node.fail("dilations must be >= 1");
  if (transpose) {
    a.output_padding = node.attr_ints("output_padding");
    a.output_shape = node.attr_ints("output_shape");
  }
  return a;
}

struct Geom {
  size_t N = 0, C = 0, M = 0, G = 1, Cg = 0, Mg = 0, nd = 0;
  std::vector<int64_t> in, k, out, stride, dil, pb, pe;
  size_t kprod = 1, in_prod = 1, out_prod = 1;
};

inline void common_geom(const ConvAttrs& a, const Tensor& x, const Tensor& w, OpContext& c, Geom& g) {
  if (x.rank() < 3) c.fail("X must have rank >= 3 (N, C, spatial...), got " + shape_str(x.shape));
  if (w.rank() != x.rank())
    c.fail("W rank " + std::to_string(w.rank()) + " differs from X rank " +
           std::to_string(x.rank()));
  g.nd = x.rank() - 2;
  g.N = x.shape[0];
  g.C = x.shape[1];
  g.G = static_cast<size_t>(a.group);
  g.in.assign(x.shape.begin() + 2, x.shape.end());
  g.k.assign(w.shape.begin() + 2, w.shape.end());
  if (!a.kernel_shape.empty() && a.kernel_shape != g.k)
    c.fail("kernel_shape " + shape_str(a.kernel_shape) + " does not match W " +
           shape_str(w.shape));
  auto per_dim = [&](const std::vector<int64_t>& v, const char* what) {
    if (v.empty()) return std::vector<int64_t>(g.nd, 1);
    if (v.size() != g.nd) c.fail(std::string(what) + " must have one value per spatial dim");
    return v;
  };
  g.stride = per_dim(a.strides, "strides");
  g.dil = per_dim(a.dilations, "dilations");
  if (!a.pads.empty() && a.pads.size() != 2 * g.nd)
    c.fail("pads must have 2 values per spatial dim");
  for (int64_t d : g.k) if (d < 1) c.fail("kernel dims must be >= 1");
}

inline Geom conv_geom(const ConvAttrs& a, const Tensor& x, const Tensor& w, OpContext& c) {
  Geom g;
  common_geom(a, x, w, c, g);
  g.M = w.shape[0];
  if (g.C % g.G || g.M % g.G)
    c.fail("channels (" + std::to_string(g.C) + " in, " + std::to_string(g.M) +
           " out) are not divisible by group " + std::to_string(g.G));
  g.Cg = g.C / g.G;
  g.Mg = g.M / g.G;
  if (static_cast<size_t>(w.shape[1]) != g.Cg)
    c.fail("W " + shape_str(w.shape) + " expects " + std::to_string(w.shape[1] * g.G) +
           " input channels, X " + shape_str(x.shape) + " has " + std::to_string(g.C));
  g.pb.assign(g.nd, 0);
  g.pe.assign(g.nd, 0);
  g.out.resize(g.nd);
  for (size_t d = 0; d < g.nd; ++d) {
    const int64_t span = (g.k[d] - 1) * g.dil[d] + 1;
    spatial_pads(a.auto_pad, a.pads, d, g.nd, g.in[d], g.stride[d], span, g.pb[d], g.pe[d]);
    const int64_t padded = g.in[d] + g.pb[d] + g.pe[d];
    if (padded < span)
      c.fail("kernel " + shape_str(g.k) + " (dilated extent " + std::to_string(span) +
             ") is larger than the padded input " + shape_str(x.shape) + " on spatial dim " +
             std::to_string(d));
    g.out[d] = (padded - span) / g.stride[d] + 1;
  }
  for (size_t d = 0; d < g.nd; ++d) {
    g.kprod *= g.k[d];
    g.in_prod *= g.in[d];
    g.out_prod *= g.out[d];
  }
  return g;
}

}  // namespace kiln::ops
