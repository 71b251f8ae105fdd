// Resize (opset 10+) and Upsample on float32: nearest, N-linear and cubic interpolation.
//
// Cubic (Keys' convolution kernel with coefficient A = cubic_coeff_a) is separable: along one
// axis, output o at source coordinate v = f + s (f = floor(v), 0 <= s < 1) is
//   y[o] = sum_{k=-1..2} W(s - k) * x[clamp(f + k)],
//   W(t) = (A+2)|t|^3 - (A+3)|t|^2 + 1            for |t| <= 1,
//          A|t|^3 - 5A|t|^2 + 8A|t| - 4A           for 1 < |t| < 2, else 0.
// exclude_outside drops the taps outside [0, len) and rescales the rest to sum to 1. With
// antialias (downsampling by r < 1) the kernel (W, or the triangle 1 - |t| for linear) is
// widened to K(r * t) over every source index within reach / r of v + 0.5 and normalized;
// outside taps fold onto the edge unless exclude_outside. So an N-D resize is one pass per
// resampled axis through a table of (source index, weight) per output index, and
// tf_crop_and_resize then writes extrapolation_value wherever an axis' coordinate left
// [0, len - 1]. Cubic, antialias, half_pixel_symmetric and tf_crop_and_resize take these
// tables; plain nearest and linear keep their per-plane path.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/common.h"
#include "ops/element.h"

namespace kiln::ops {
namespace {

enum class Mode { nearest, linear, cubic };
enum class Coord {
  half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric,
  tf_half_pixel, tf_crop_and_resize
};
enum class Nearest { round_prefer_floor, round_prefer_ceil, floor, ceil };
enum class Policy { stretch, not_larger, not_smaller };

struct ResizeAttrs {
  Mode mode = Mode::nearest;
  Coord coord = Coord::half_pixel;
  Nearest nearest = Nearest::round_prefer_floor;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  bool antialias = false;
  float extrapolation = 0.0f;
  Policy policy = Policy::stretch;
  std::vector<int64_t> axes;       // empty: every dim
  std::vector<float> scales_attr;  // Upsample-7
  bool upsample = false;
};

ResizeAttrs read_resize(const NodeDesc& node) {
  ResizeAttrs a;
  a.upsample = node.op == "Upsample";
  const std::string mode = node.attr_s("mode", "nearest");
  const bool legacy = a.upsample || (node.opset > 0 && node.opset < 11);
  if (mode == "linear" || mode == "bilinear") a.mode = Mode::linear;
  else if (mode == "cubic" && !legacy) a.mode = Mode::cubic;
  else if (mode == "cubic") node.fail("mode 'cubic' needs Resize from opset 11");
  else if (mode != "nearest")
    node.fail("mode '" + mode + "' is not supported (nearest, linear, cubic)");
  const std::string ct = node.attr_s("coordinate_transformation_mode",
                                     legacy ? "asymmetric" : "half_pixel");
  if (ct == "half_pixel") a.coord = Coord::half_pixel;
  else if (ct == "half_pixel_symmetric") a.coord = Coord::half_pixel_symmetric;
  else if (ct == "pytorch_half_pixel") a.coord = Coord::pytorch_half_pixel;
  else if (ct == "align_corners") a.coord = Coord::align_corners;
  else if (ct == "asymmetric") a.coord = Coord::asymmetric;
  else if (ct == "tf_half_pixel_for_nn") a.coord = Coord::tf_half_pixel;
  else if (ct == "tf_crop_and_resize") a.coord = Coord::tf_crop_and_resize;
  else node.fail("coordinate_transformation_mode '" + ct + "' is not supported");
  const std::string nm = node.attr_s("nearest_mode", legacy ? "floor" : "round_prefer_floor");
  if (nm == "round_prefer_floor") a.nearest = Nearest::round_prefer_floor;
  else if (nm == "round_prefer_ceil") a.nearest = Nearest::round_prefer_ceil;
  else if (nm == "floor") a.nearest = Nearest::floor;
  else if (nm == "ceil") a.nearest = Nearest::ceil;
  else node.fail("nearest_mode '" + nm + "' is not supported");
  a.antialias = node.attr_i("antialias", 0) != 0;
  if (a.antialias && a.mode == Mode::nearest)
    node.fail("antialias is defined for modes 'linear' and 'cubic' only");
  // Only cubic and antialias taps reach outside the input: elsewhere this changes nothing.
  a.exclude_outside = node.attr_i("exclude_outside", 0) != 0;
  a.cubic_a = node.attr_f("cubic_coeff_a", -0.75f);
  a.extrapolation = node.attr_f("extrapolation_value", 0.0f);
  a.axes = node.attr_ints("axes");
  const std::string policy = node.attr_s("keep_aspect_ratio_policy", "stretch");
  if (policy == "not_larger") a.policy = Policy::not_larger;
  else if (policy == "not_smaller") a.policy = Policy::not_smaller;
  else if (policy != "stretch") node.fail("keep_aspect_ratio_policy '" + policy + "' is unknown");
  a.scales_attr = node.attr_floats("scales");
  return a;
}

// The source coordinate of output index x along one axis. out_len is the unfloored output
// length (input length * scale, or the given size), out_size the output dim itself.
template <typename F>
F to_original(Coord coord, F x, F scale, int64_t in_len, F out_len, int64_t out_size, F roi_lo,
              F roi_hi) {
  const F in = static_cast<F>(in_len), half = F(0.5), one = F(1);
  switch (coord) {
    case Coord::half_pixel: return (x + half) / scale - half;
    case Coord::half_pixel_symmetric: {
      // Centres the sampled span on the input when flooring shortened the output.
      const F offset = in / F(2) * (one - static_cast<F>(out_size) / (scale * in));
      return offset + (x + half) / scale - half;
    }
    case Coord::pytorch_half_pixel: return out_len > one ? (x + half) / scale - half : F(0);
    case Coord::align_corners: return out_len == one ? F(0) : x * (in - one) / (out_len - one);
    case Coord::asymmetric: return x / scale;
    case Coord::tf_half_pixel: return (x + half) / scale;
    case Coord::tf_crop_and_resize:
      if (out_size <= 1) return half * (roi_lo + roi_hi) * (in - one);
      return roi_lo * (in - one) +
             x * (roi_hi - roi_lo) * (in - one) / static_cast<F>(out_size - 1);
  }
  return x;
}

// to_original in float, as onnxruntime computes it: for nearest a tie (x.5) decides the
// index, and on a long axis the float coordinate moves a weight by up to ~1e-5.
double source_coordinate(Coord coord, int64_t x, double scale, int64_t in_len, double out_len,
                         int64_t out_size, double roi_lo, double roi_hi) {
  return to_original<float>(coord, static_cast<float>(x), static_cast<float>(scale), in_len,
                            static_cast<float>(out_len), out_size, static_cast<float>(roi_lo),
                            static_cast<float>(roi_hi));
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

// One resampled axis: output o reads source indices index[o * taps + k] (each
// inside [0, len)) with weights weight[o * taps + k]; outside[o] says o's coordinate left
// [0, len - 1] (what tf_crop_and_resize fills with extrapolation_value).
struct AxisTaps {
  size_t count = 0, taps = 0;
  std::vector<int32_t> index;
  std::vector<float> weight;
  std::vector<uint8_t> outside;
  bool any_outside = false;

  // Whether output o is source o for every o: the pass would be a copy.
  bool identity(int64_t in_len) const {
    if (static_cast<int64_t>(count) != in_len || any_outside) return false;
    for (size_t o = 0; o < count; ++o) {
      float self = 0.0f;
      for (size_t k = 0; k < taps; ++k) {
        const float w = weight[o * taps + k];
        if (index[o * taps + k] == static_cast<int32_t>(o)) self += w;
        else if (w != 0.0f) return false;
      }
      if (self != 1.0f) return false;
    }
    return true;
  }
};

double keys_weight(double t, double A) {
  t = std::fabs(t);
  if (t <= 1.0) return ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
  if (t < 2.0) return (((t - 5.0) * t + 8.0) * t - 4.0) * A;
  return 0.0;
}

// The (index, weight) table of one axis. Plain nearest takes 1 tap, linear 2 (its coordinate
// clamped into the input), cubic 4; antialias takes every source index the widened kernel
// (triangle of half-width 1 for linear, Keys' of 2 for cubic) covers.
AxisTaps axis_taps(const ResizeAttrs& a, int64_t in_len, int64_t out_size, double scale,
                   double out_len, double roi_lo, double roi_hi) {
  AxisTaps t;
  const bool wide = a.antialias && scale < 1.0;
  const double reach = a.mode == Mode::cubic ? 2.0 : 1.0;
  const double support = wide ? reach / scale : reach;  // kernel half-width, source pixels
  const double squeeze = wide ? scale : 1.0;
  auto filter = [&](double u) {
    return a.mode == Mode::cubic ? keys_weight(u, a.cubic_a) : std::max(0.0, 1.0 - std::fabs(u));
  };
  t.count = static_cast<size_t>(out_size);
  if (a.antialias) t.taps = static_cast<size_t>(std::ceil(support)) * 2 + 1;
  else t.taps = a.mode == Mode::cubic ? 4 : (a.mode == Mode::linear ? 2 : 1);
  t.index.resize(t.count * t.taps);
  t.weight.resize(t.count * t.taps);
  t.outside.assign(t.count, 0);
  const double last = static_cast<double>(in_len - 1);
  std::vector<double> w(t.taps);
  for (size_t o = 0; o < t.count; ++o) {
    const double x = static_cast<double>(o);
    // An axis at scale 1 keeps its coordinates whatever the mode (as onnxruntime reads it).
    double v = scale == 1.0 ? x
                            : source_coordinate(a.coord, static_cast<int64_t>(o), scale, in_len,
                                                out_len, out_size, roi_lo, roi_hi);
    if (a.coord == Coord::tf_crop_and_resize && !(v >= 0.0 && v <= last)) {
      t.outside[o] = 1;
      t.any_outside = true;
    }
    // Far outside (crop only, overwritten later) every tap clamps to the edge anyway.
    v = std::isfinite(v) ? std::min(std::max(v, -support - 2.0), last + support + 2.0) : 0.0;
    int64_t first;
    if (a.antialias) {
      const double centre = v + 0.5;
      first = static_cast<int64_t>(std::floor(centre - support + 0.5));
      const int64_t end = static_cast<int64_t>(std::floor(centre + support + 0.5));
      const int64_t n = std::min<int64_t>(std::max<int64_t>(end - first, 0), t.taps);
      for (size_t k = 0; k < t.taps; ++k)
        w[k] = static_cast<int64_t>(k) < n
                   ? filter((first + static_cast<double>(k) - centre + 0.5) * squeeze)
                   : 0.0;
    } else if (a.mode == Mode::nearest) {
      first = nearest_index(a.nearest, v, in_len);
      w[0] = 1.0;
    } else if (a.mode == Mode::linear) {
      v = std::min(std::max(v, 0.0), last);
      const double f = std::floor(v);
      first = static_cast<int64_t>(f);
      w[0] = 1.0 - (v - f);
      w[1] = v - f;
    } else {
      const double f = std::floor(v), s = v - f;
      first = static_cast<int64_t>(f) - 1;
      for (size_t k = 0; k < 4; ++k)
        w[k] = keys_weight(s + 1.0 - static_cast<double>(k), a.cubic_a);
    }
    double total = 0.0;
    for (size_t k = 0; k < t.taps; ++k) {
      const int64_t src = first + static_cast<int64_t>(k);
      if (src < 0 || src >= in_len) {
        if (a.exclude_outside) w[k] = 0.0;
        t.index[o * t.taps + k] = src < 0 ? 0 : static_cast<int32_t>(in_len - 1);
      } else {
        t.index[o * t.taps + k] = static_cast<int32_t>(src);
      }
      total += w[k];
    }
    // Keys' weights sum to 1 over 4 taps; antialias and dropped taps need rescaling.
    const double norm = (a.antialias || a.exclude_outside) && total != 0.0 ? 1.0 / total : 1.0;
    for (size_t k = 0; k < t.taps; ++k) t.weight[o * t.taps + k] = static_cast<float>(w[k] * norm);
  }
  return t;
}

// dst[p, o, i] = sum_k weight[o, k] * src[p, index[o, k], i] for p < outer, i < inner.
void resample_axis(const float* src, float* dst, size_t outer, size_t len, size_t inner,
                   const AxisTaps& t, ThreadPool* pool) {
  const size_t n = t.count, taps = t.taps;
  const int32_t* ix = t.index.data();
  const float* wt = t.weight.data();
  if (inner == 1) {  // the contiguous axis: gather taps per output
    parallel(pool, outer, 1, [&](size_t p0, size_t p1) {
      for (size_t p = p0; p < p1; ++p) {
        const float* s = src + p * len;
        float* d = dst + p * n;
        if (taps == 4) {
          for (size_t o = 0; o < n; ++o) {
            const int32_t* i = ix + 4 * o;
            const float* w = wt + 4 * o;
            d[o] = w[0] * s[i[0]] + w[1] * s[i[1]] + w[2] * s[i[2]] + w[3] * s[i[3]];
          }
          continue;
        }
        for (size_t o = 0; o < n; ++o) {
          float acc = 0.0f;
          for (size_t k = 0; k < taps; ++k) acc += wt[o * taps + k] * s[ix[o * taps + k]];
          d[o] = acc;
        }
      }
    }, outer * n * taps);
    return;
  }
  // An outer axis: each output row blends whole source rows, vectorized along them.
  parallel(pool, outer * n, 1, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const size_t o = r % n;
      const float* s = src + (r / n) * len * inner;
      float* d = dst + r * inner;
      const int32_t* i = ix + taps * o;
      const float* w = wt + taps * o;
      if (taps == 4) {
        const float *s0 = s + i[0] * inner, *s1 = s + i[1] * inner, *s2 = s + i[2] * inner,
                    *s3 = s + i[3] * inner;
        const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
        for (size_t e = 0; e < inner; ++e)
          d[e] = w0 * s0[e] + w1 * s1[e] + w2 * s2[e] + w3 * s3[e];
        continue;
      }
      std::memset(d, 0, inner * sizeof(float));
      for (size_t k = 0; k < taps; ++k) {
        if (w[k] == 0.0f) continue;
        const float wk = w[k];
        const float* sk = s + i[k] * inner;
        for (size_t e = 0; e < inner; ++e) d[e] += wk * sk[e];
      }
    }
  }, outer * n * inner * taps);
}

// Every axis whose table is not a copy, one separable pass each, in the cheapest order.
void resize_separable(const ResizeAttrs& a, const Tensor& x, Tensor& y,
                  const std::vector<double>& scales, const std::vector<double>& out_len,
                  const std::vector<double>& roi, ThreadPool* pool) {
  const size_t r = x.rank();
  std::vector<AxisTaps> tables(r);
  std::vector<size_t> order;
  for (size_t d = 0; d < r; ++d) {
    tables[d] = axis_taps(a, x.shape[d], y.shape[d], scales[d], out_len[d], roi[d], roi[r + d]);
    if (!tables[d].identity(x.shape[d])) order.push_back(d);
  }
  // The order of least work: a pass costs taps x the elements it writes, and a pass along
  // the last (contiguous) axis, which gathers instead of blending whole rows, kGather x that.
  constexpr double kGather = 3.0;
  auto cost = [&](const std::vector<size_t>& seq) {
    double numel = static_cast<double>(x.numel()), total = 0.0;
    for (size_t d : seq) {
      numel = numel / x.shape[d] * y.shape[d];
      total += numel * tables[d].taps * (d + 1 == r ? kGather : 1.0);
    }
    return total;
  };
  std::sort(order.begin(), order.end());
  std::vector<size_t> best = order;
  if (order.size() <= 4) {  // at most 24 orders
    while (std::next_permutation(order.begin(), order.end()))
      if (cost(order) < cost(best)) best = order;
  }
  order = best;
  Shape cur = x.shape;
  const float* src = x.ptr<float>();
  std::vector<float> buf[2];
  for (size_t step = 0; step < order.size(); ++step) {
    const size_t d = order[step];
    size_t outer = 1, inner = 1;
    for (size_t e = 0; e < d; ++e) outer *= static_cast<size_t>(cur[e]);
    for (size_t e = d + 1; e < r; ++e) inner *= static_cast<size_t>(cur[e]);
    const size_t len = static_cast<size_t>(cur[d]);
    cur[d] = y.shape[d];
    float* dst = y.ptr<float>();
    if (step + 1 < order.size()) {
      buf[step % 2].resize(outer * static_cast<size_t>(cur[d]) * inner);
      dst = buf[step % 2].data();
    }
    resample_axis(src, dst, outer, len, inner, tables[d], pool);
    src = dst;
  }
  if (order.empty()) std::memcpy(y.ptr<float>(), x.ptr<float>(), x.numel() * sizeof(float));
  for (size_t d = 0; d < r; ++d) {
    if (!tables[d].any_outside) continue;
    size_t outer = 1, inner = 1;
    for (size_t e = 0; e < d; ++e) outer *= static_cast<size_t>(y.shape[e]);
    for (size_t e = d + 1; e < r; ++e) inner *= static_cast<size_t>(y.shape[e]);
    float* py = y.ptr<float>();
    for (size_t p = 0; p < outer; ++p)
      for (size_t o = 0; o < tables[d].count; ++o)
        if (tables[d].outside[o])
          std::fill_n(py + (p * tables[d].count + o) * inner, inner, a.extrapolation);
  }
}

class ResizeKernel final : public Kernel {
 public:
  explicit ResizeKernel(const NodeDesc& node) : a_(read_resize(node)) {}

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    if (x.dtype != DType::f32) c.fail("X must be float32");
    const size_t r = x.rank();
    Shape out(r);
    const Tensor* scales_t = nullptr;
    const Tensor* sizes_t = nullptr;
    if (a_.upsample) {
      scales_t = c.input(1);
    } else if (c.node.opset > 0 && c.node.opset < 11) {
      scales_t = c.input(1);
    } else {
      scales_t = c.n_inputs() > 2 ? c.input(2) : nullptr;
      sizes_t = c.n_inputs() > 3 ? c.input(3) : nullptr;
    }
    if (scales_t && scales_t->numel() == 0) scales_t = nullptr;
    if (sizes_t && sizes_t->numel() == 0) sizes_t = nullptr;
    // The dims that scales, sizes and roi speak of: `axes` (opset 18+), else every dim.
    std::vector<size_t> axes;
    for (int64_t ax : a_.axes) {
      const size_t d = norm_axis(ax, r, c.node, "axes value");
      if (std::find(axes.begin(), axes.end(), d) != axes.end()) c.fail("axes repeats a dim");
      axes.push_back(d);
    }
    if (a_.axes.empty())
      for (size_t d = 0; d < r; ++d) axes.push_back(d);
    const size_t k = axes.size();
    // roi: starts then ends per dim, as fractions of the input; read by tf_crop_and_resize.
    std::vector<double> roi(2 * r, 1.0);
    std::fill_n(roi.begin(), r, 0.0);
    if (a_.coord == Coord::tf_crop_and_resize) {
      const Tensor* roi_t = c.n_inputs() > 1 ? c.input(1) : nullptr;
      if (roi_t && roi_t->numel() != 0) {
        if (roi_t->numel() != 2 * k) c.fail("roi must have 2 values per resized dim");
        if (roi_t->dtype != DType::f32 && roi_t->dtype != DType::f64 &&
            roi_t->dtype != DType::f16)
          c.fail(std::string("roi must be float16, float32 or float64, got ") +
                 dtype_name(roi_t->dtype));
        for (size_t i = 0; i < 2 * k; ++i) {
          roi[(i < k ? 0 : r) + axes[i % k]] = load(*roi_t, i);
        }
      }
    }
    // Dims outside `axes` keep their length at scale 1.
    std::vector<double> scales(r, 1.0);
    std::vector<double> out_len(x.shape.begin(), x.shape.end());
    out = x.shape;
    if (sizes_t) {
      std::vector<int64_t> sizes = read_ints(*sizes_t, c.node, "sizes");
      if (sizes.size() != k) c.fail("sizes must have one value per resized dim");
      for (int64_t v : sizes) if (v < 0) c.fail("sizes must be >= 0");
      if (a_.policy == Policy::stretch) {
        for (size_t i = 0; i < k; ++i) {
          const size_t d = axes[i];
          out[d] = sizes[i];
          out_len[d] = static_cast<double>(sizes[i]);
          scales[d] = x.shape[d] ? static_cast<double>(sizes[i]) / x.shape[d] : 1.0;
        }
      } else {
        // One scale for every resized dim: the largest that fits inside sizes (not_larger)
        // or the smallest that covers it (not_smaller); lengths rounded half up.
        double scale = a_.policy == Policy::not_larger ? INFINITY : 0.0;
        for (size_t i = 0; i < k; ++i) {
          const double ratio =
              static_cast<double>(sizes[i]) / std::max<int64_t>(x.shape[axes[i]], 1);
          scale = a_.policy == Policy::not_larger ? std::min(scale, ratio)
                                                  : std::max(scale, ratio);
        }
        for (size_t d : axes) {
          out[d] = static_cast<int64_t>(std::floor(scale * x.shape[d] + 0.5));
          out_len[d] = static_cast<double>(out[d]);
          scales[d] = scale;
        }
      }
    } else {
      std::vector<float> sv;
      if (scales_t) {
        if (scales_t->dtype != DType::f32) c.fail("scales must be float32");
        sv.assign(scales_t->ptr<float>(), scales_t->ptr<float>() + scales_t->numel());
      } else {
        sv = a_.scales_attr;
      }
      if (sv.size() != k) c.fail("scales must have one value per resized dim");
      for (size_t i = 0; i < k; ++i) {
        const size_t d = axes[i];
        if (!(sv[i] > 0.0f) || sv[i] > 1e6f) c.fail("scales must be positive and finite");
        // Also under tf_crop_and_resize: the roi does not enter the size (onnxruntime and
        // onnx's shape inference agree).
        scales[d] = sv[i];
        out_len[d] = x.shape[d] * static_cast<double>(sv[i]);
        out[d] = static_cast<int64_t>(std::floor(out_len[d]));
      }
    }
    Tensor& y = c.output(0, DType::f32, out);
    if (y.numel() == 0) return;
    for (int64_t d : x.shape) if (d == 0) c.fail("cannot resize an empty input");
    if (a_.mode == Mode::cubic || a_.antialias || a_.coord == Coord::half_pixel_symmetric ||
        a_.coord == Coord::tf_crop_and_resize) {
      for (int64_t d : x.shape)
        if (d > INT32_MAX) c.fail("an input dim above 2^31 is not supported");
      resize_separable(a_, x, y, scales, out_len, roi, c.pool);
      return;
    }
    // Per dim: for each output coordinate, the two source indices and the weight of the second.
    const bool linear = a_.mode == Mode::linear;
    std::vector<std::vector<int64_t>> i0(r), i1(r);
    std::vector<std::vector<float>> w(r);
    for (size_t d = 0; d < r; ++d) {
      const int64_t in_len = x.shape[d];
      for (int64_t o = 0; o < out[d]; ++o) {
        // At scale 1 an axis (N and C as a rule) keeps its index: tf_half_pixel_for_nn would
        // move it by half a pixel and blend or pick the neighbouring channel.
        double v = scales[d] == 1.0 ? static_cast<double>(o)
                                    : source_coordinate(a_.coord, o, scales[d], in_len,
                                                        out_len[d], out[d], 0.0, 1.0);
        if (linear) {
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
    const size_t corners = linear ? (size_t(1) << r) : 1;
    for (size_t o = 0, n = y.numel(); o < n; ++o) {
      float acc = 0.0f;
      for (size_t cr = 0; cr < corners; ++cr) {
        float weight = 1.0f;
        size_t off = 0;
        for (size_t d = 0; d < r; ++d) {
          const bool hi = linear && ((cr >> d) & 1);
          if (linear) weight *= hi ? w[d][idx[d]] : 1.0f - w[d][idx[d]];
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
