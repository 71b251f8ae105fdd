// Resize (opset 10+) and Upsample: nearest and N-linear interpolation on float32.
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/common.h"

namespace kiln::ops {
namespace {

enum class Coord { half_pixel, pytorch_half_pixel, align_corners, asymmetric, tf_half_pixel };
enum class Nearest { round_prefer_floor, round_prefer_ceil, floor, ceil };

struct ResizeAttrs {
  bool linear = false;
  Coord coord = Coord::half_pixel;
  Nearest nearest = Nearest::round_prefer_floor;
  std::vector<float> scales_attr;  // Upsample-7
  bool upsample = false;
};

ResizeAttrs read_resize(const NodeDesc& node) {
  ResizeAttrs a;
  a.upsample = node.op == "Upsample";
  const std::string mode = node.attr_s("mode", "nearest");
  if (mode == "linear" || mode == "bilinear") a.linear = true;
  else if (mode != "nearest") node.fail("mode '" + mode + "' is not supported (nearest, linear)");
  const bool legacy = a.upsample || (node.opset > 0 && node.opset < 11);
  const std::string ct = node.attr_s("coordinate_transformation_mode",
                                     legacy ? "asymmetric" : "half_pixel");
  if (ct == "half_pixel") a.coord = Coord::half_pixel;
  else if (ct == "pytorch_half_pixel") a.coord = Coord::pytorch_half_pixel;
  else if (ct == "align_corners") a.coord = Coord::align_corners;
  else if (ct == "asymmetric") a.coord = Coord::asymmetric;
  else if (ct == "tf_half_pixel_for_nn") a.coord = Coord::tf_half_pixel;
  else node.fail("coordinate_transformation_mode '" + ct + "' is not supported");
  const std::string nm = node.attr_s("nearest_mode", legacy ? "floor" : "round_prefer_floor");
  if (nm == "round_prefer_floor") a.nearest = Nearest::round_prefer_floor;
  else if (nm == "round_prefer_ceil") a.nearest = Nearest::round_prefer_ceil;
  else if (nm == "floor") a.nearest = Nearest::floor;
  else if (nm == "ceil") a.nearest = Nearest::ceil;
  else node.fail("nearest_mode '" + nm + "' is not supported");
  if (node.attr_i("antialias", 0) != 0) node.fail("antialias is not supported");
  if (node.has("axes")) node.fail("the axes attribute is not supported");
  const std::string policy = node.attr_s("keep_aspect_ratio_policy", "stretch");
  if (policy != "stretch") node.fail("keep_aspect_ratio_policy '" + policy + "' not supported");
  a.scales_attr = node.attr_floats("scales");
  return a;
}

double to_original(Coord coord, double x, double scale, int64_t in_len, double out_len) {
  switch (coord) {
    case Coord::half_pixel: return (x + 0.5) / scale - 0.5;
    case Coord::pytorch_half_pixel: return out_len > 1.0 ? (x + 0.5) / scale - 0.5 : 0.0;
    case Coord::align_corners:
      return out_len == 1.0 ? 0.0 : x * static_cast<double>(in_len - 1) / (out_len - 1.0);
    case Coord::asymmetric: return x / scale;
    case Coord::tf_half_pixel: return (x + 0.5) / scale;
  }
  return x;
}

int64_t nearest_index(Nearest mode, double v, int64_t len) {
  double r;
  switch (mode) {
    case Nearest::floor: r = std::floor(v); break;
    case Nearest::ceil: r = std::ceil(v); break;
    case Nearest::round_prefer_ceil:
      r = (v - std::floor(v) == 0.5) ? std::ceil(v) : std::round(v);
      break;
    default:
      r = (v - std::floor(v) == 0.5) ? std::floor(v) : std::round(v);
  }
  int64_t i = static_cast<int64_t>(r);
  return i < 0 ? 0 : (i >= len ? len - 1 : i);
}

// Whether a dim's tables map every output index to the same input index.
bool keeps_dim(const std::vector<int64_t>& index, const std::vector<float>& weight,
               int64_t in_len) {
  if (static_cast<int64_t>(index.size()) != in_len) return false;
  for (size_t o = 0; o < index.size(); ++o)
    if (index[o] != static_cast<int64_t>(o) || (!weight.empty() && weight[o] != 0.0f))
      return false;
  return true;
}

// The common case: N and C kept, H and W resampled. Planes split across the pool; every
// output row reads one source row (nearest; a row equal to the one above is copied) or
// blends two (linear), through the per-dim index and weight tables.
void resize_planes(const Tensor& x, Tensor& y, const std::vector<std::vector<int64_t>>& i0,
                   const std::vector<std::vector<int64_t>>& i1,
                   const std::vector<std::vector<float>>& w, ThreadPool* pool) {
  const size_t H = x.shape[2], W = x.shape[3], OH = y.shape[2], OW = y.shape[3];
  const size_t planes = static_cast<size_t>(x.shape[0] * x.shape[1]);
  const bool linear = !w[3].empty();
  const std::vector<int32_t> x0(i0[3].begin(), i0[3].end());
  std::vector<int32_t> x1;
  if (linear) x1.assign(i1[3].begin(), i1[3].end());
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  parallel(pool, planes, 1, [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      const float* src = px + p * H * W;
      float* dst = py + p * OH * OW;
      for (size_t oy = 0; oy < OH; ++oy) {
        float* drow = dst + oy * OW;
        if (!linear) {
          if (oy > 0 && i0[2][oy] == i0[2][oy - 1]) {
            std::memcpy(drow, drow - OW, OW * sizeof(float));
            continue;
          }
          const float* srow = src + i0[2][oy] * W;
          for (size_t ox = 0; ox < OW; ++ox) drow[ox] = srow[x0[ox]];
          continue;
        }
        const float* r0 = src + i0[2][oy] * W;
        const float* r1 = src + i1[2][oy] * W;
        const float wy = w[2][oy];
        const float* wx = w[3].data();
        for (size_t ox = 0; ox < OW; ++ox) {
          const float top = r0[x0[ox]] + wx[ox] * (r0[x1[ox]] - r0[x0[ox]]);
          const float bottom = r1[x0[ox]] + wx[ox] * (r1[x1[ox]] - r1[x0[ox]]);
          drow[ox] = top + wy * (bottom - top);
        }
      }
    }
  }, planes * OH * OW * (linear ? 8 : 1));
}

class ResizeKernel final : public Kernel {
 public:
  explicit ResizeKernel(const NodeDesc& node) : a_(read_resize(node)) {}

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    if (x.dtype != DType::f32) c.fail("X must be float32");
    const size_t r = x.rank();
    std::vector<double> scales;
    std::vector<double> out_len;  // x_len * scale before flooring, as the spec's formulas use
    Shape out(r);
    const Tensor* scales_t = nullptr;
    const Tensor* sizes_t = nullptr;
    if (a_.upsample) {
      scales_t = c.input(1);
    } else if (c.node.opset > 0 && c.node.opset < 11) {
      scales_t = c.input(1);
    } else {
      scales_t = c.input(2);
      sizes_t = c.input(3);
    }
    if (scales_t && scales_t->numel() == 0) scales_t = nullptr;
    if (sizes_t && sizes_t->numel() == 0) sizes_t = nullptr;
    if (sizes_t) {
      std::vector<int64_t> sizes = read_ints(*sizes_t, c.node, "sizes");
      if (sizes.size() != r) c.fail("sizes must have one value per input dim");
      for (size_t d = 0; d < r; ++d) {
        if (sizes[d] < 0) c.fail("sizes must be >= 0");
        out[d] = sizes[d];
        out_len.push_back(static_cast<double>(sizes[d]));
        scales.push_back(x.shape[d] ? static_cast<double>(sizes[d]) / x.shape[d] : 1.0);
      }
    } else {
      std::vector<float> sv;
      if (scales_t) {
        if (scales_t->dtype != DType::f32) c.fail("scales must be float32");
        sv.assign(scales_t->ptr<float>(), scales_t->ptr<float>() + scales_t->numel());
      } else {
        sv = a_.scales_attr;
      }
      if (sv.size() != r) c.fail("scales must have one value per input dim");
      for (size_t d = 0; d < r; ++d) {
        if (!(sv[d] > 0.0f) || sv[d] > 1e6f) c.fail("scales must be positive and finite");
        scales.push_back(sv[d]);
        out_len.push_back(x.shape[d] * static_cast<double>(sv[d]));
        out[d] = static_cast<int64_t>(std::floor(x.shape[d] * static_cast<double>(sv[d])));
      }
    }
    Tensor& y = c.output(0, DType::f32, out);
    if (y.numel() == 0) return;
    for (int64_t d : x.shape) if (d == 0) c.fail("cannot resize an empty input");
    // Per dim: for each output coordinate, the two source indices and the weight of the second.
    std::vector<std::vector<int64_t>> i0(r), i1(r);
    std::vector<std::vector<float>> w(r);
    for (size_t d = 0; d < r; ++d) {
      const int64_t in_len = x.shape[d];
      for (int64_t o = 0; o < out[d]; ++o) {
        double v = to_original(a_.coord, static_cast<double>(o), scales[d], in_len, out_len[d]);
        if (a_.linear) {
          v = std::min(std::max(v, 0.0), static_cast<double>(in_len - 1));
          const int64_t lo = static_cast<int64_t>(std::floor(v));
          i0[d].push_back(lo);
          i1[d].push_back(std::min(lo + 1, in_len - 1));
          w[d].push_back(static_cast<float>(v - lo));
        } else {
          i0[d].push_back(nearest_index(a_.nearest, v, in_len));
        }
      }
    }
    const float* px = x.ptr<float>();
    float* py = y.ptr<float>();
    if (r == 4 && keeps_dim(i0[0], w[0], x.shape[0]) && keeps_dim(i0[1], w[1], x.shape[1])) {
      resize_planes(x, y, i0, i1, w, c.pool);
      return;
    }
    const std::vector<size_t> xs = strides_of(x.shape);
    std::vector<int64_t> idx(r, 0);
    const size_t corners = a_.linear ? (size_t(1) << r) : 1;
    for (size_t o = 0, n = y.numel(); o < n; ++o) {
      float acc = 0.0f;
      for (size_t cr = 0; cr < corners; ++cr) {
        float weight = 1.0f;
        size_t off = 0;
        for (size_t d = 0; d < r; ++d) {
          const bool hi = a_.linear && ((cr >> d) & 1);
          if (a_.linear) weight *= hi ? w[d][idx[d]] : 1.0f - w[d][idx[d]];
          off += (hi ? i1[d][idx[d]] : i0[d][idx[d]]) * xs[d];
        }
        if (weight != 0.0f) acc += weight * px[off];
      }
      py[o] = acc;
      for (size_t d = r; d-- > 0;) {
        if (++idx[d] < out[d]) break;
        idx[d] = 0;
      }
    }
  }

 private:
  ResizeAttrs a_;
};

KernelFactory resize_factory() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    return std::make_unique<ResizeKernel>(node);
  };
}

KILN_REGISTER_OP("", "Resize", resize_factory());
KILN_REGISTER_OP("", "Upsample", resize_factory());

}  // namespace
}  // namespace kiln::ops
