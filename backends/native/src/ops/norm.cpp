// Normalizations and softmax: BatchNormalization (inference), LayerNormalization,
// InstanceNormalization, LRN, Softmax, LogSoftmax, Hardmax.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/ukernels.h"
#include "ops/common.h"

namespace kiln::ops {
namespace {

void require_f32(const Tensor& t, OpContext& c, const char* what) {
  if (t.dtype != DType::f32) c.fail(std::string(what) + " must be float32, got " +
                                    dtype_name(t.dtype));
}

KernelFactory batch_norm() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const float eps = node.attr_f("epsilon", 1e-5f);
    // Set by the native lowering when a Relu was the only reader (one pass instead of two).
    const std::string act = node.attr_s("kiln_activation", "");
    if (!act.empty() && act != "Relu") node.fail("kiln_activation must be Relu, got " + act);
    const bool relu = act == "Relu";
    if (node.attr_i("training_mode", 0) != 0) node.fail("training_mode=1 is not supported");
    if (node.outputs.size() > 1)
      for (size_t i = 1; i < node.outputs.size(); ++i)
        if (node.outputs[i] >= 0) node.fail("training outputs are not supported");
    return std::unique_ptr<Kernel>(new FnKernel([eps, relu](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "X");
      if (x.rank() < 2) c.fail("X must have rank >= 2, got " + shape_str(x.shape));
      const size_t N = x.shape[0], C = x.shape[1];
      const size_t inner = C ? x.numel() / std::max<size_t>(N * C, 1) : 0;
      const char* names[] = {"scale", "B", "mean", "var"};
      const float* p[4];
      for (int i = 0; i < 4; ++i) {
        const Tensor& t = c.in(i + 1);
        require_f32(t, c, names[i]);
        if (t.numel() != C || t.rank() != 1)
          c.fail(std::string(names[i]) + " " + shape_str(t.shape) + " must have shape [" +
                 std::to_string(C) + "]");
        p[i] = t.ptr<float>();
      }
      Tensor& y = c.output(0, DType::f32, x.shape);
      const float* px = x.ptr<float>();
      float* py = y.ptr<float>();
      parallel(c.pool, N * C, 8, [&](size_t b, size_t e) {
        for (size_t nc = b; nc < e; ++nc) {
          const size_t ch = nc % C;
          const float s = p[0][ch] / std::sqrt(p[3][ch] + eps);
          const float t = p[1][ch] - p[2][ch] * s;
          const float* xr = px + nc * inner;
          float* yr = py + nc * inner;
          if (relu)
            for (size_t i = 0; i < inner; ++i) yr[i] = std::max(xr[i] * s + t, 0.0f);
          else
            for (size_t i = 0; i < inner; ++i) yr[i] = xr[i] * s + t;
        }
      });
    }));
  };
}

KernelFactory layer_norm() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", -1);
    const float eps = node.attr_f("epsilon", 1e-5f);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "X");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      size_t outer = 1, inner = 1;
      for (size_t d = 0; d < x.rank(); ++d) (d < ax ? outer : inner) *= x.shape[d];
      Shape norm_shape(x.shape.begin() + ax, x.shape.end());
      const Tensor& scale = c.in(1);
      const Tensor* bias = c.input(2);
      require_f32(scale, c, "Scale");
      auto check = [&](const Tensor& t, const char* what) {
        if (t.numel() != inner)
          c.fail(std::string(what) + " " + shape_str(t.shape) + " must broadcast over " +
                 shape_str(norm_shape) + " exactly");
      };
      check(scale, "Scale");
      if (bias) {
        require_f32(*bias, c, "B");
        check(*bias, "B");
      }
      Tensor& y = c.output(0, DType::f32, x.shape);
      Shape stat_shape = x.shape;
      for (size_t d = ax; d < stat_shape.size(); ++d) stat_shape[d] = 1;
      float* pmean = c.wants_output(1) ? c.output(1, DType::f32, stat_shape).ptr<float>()
                                       : nullptr;
      float* pinv = c.wants_output(2) ? c.output(2, DType::f32, stat_shape).ptr<float>()
                                      : nullptr;
      const float* px = x.ptr<float>();
      const float* ps = scale.ptr<float>();
      const float* pb = bias ? bias->ptr<float>() : nullptr;
      float* py = y.ptr<float>();
      parallel(c.pool, outer, 4, [&](size_t b, size_t e) {
        for (size_t r = b; r < e; ++r) {
          const float* xr = px + r * inner;
          float* yr = py + r * inner;
          const double mean = sum_f32(xr, inner) / static_cast<double>(inner ? inner : 1);
          const double var = sum_sq_dev_f32(xr, inner, static_cast<float>(mean)) /
                             static_cast<double>(inner ? inner : 1);
          const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
          const float m = static_cast<float>(mean);
          for (size_t i = 0; i < inner; ++i)
            yr[i] = (xr[i] - m) * inv * ps[i] + (pb ? pb[i] : 0.0f);
          if (pmean) pmean[r] = m;
          if (pinv) pinv[r] = inv;
        }
      });
    }));
  };
}

KernelFactory instance_norm() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const float eps = node.attr_f("epsilon", 1e-5f);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "X");
      if (x.rank() < 3) c.fail("X must have rank >= 3");
      const size_t N = x.shape[0], C = x.shape[1];
      const size_t inner = N * C ? x.numel() / (N * C) : 0;
      const Tensor& s = c.in(1);
      const Tensor& b = c.in(2);
      require_f32(s, c, "scale");
      require_f32(b, c, "B");
      if (s.numel() != C || b.numel() != C) c.fail("scale and B must have C values");
      Tensor& y = c.output(0, DType::f32, x.shape);
      for (size_t nc = 0; nc < N * C; ++nc) {
        const float* xr = x.ptr<float>() + nc * inner;
        float* yr = y.ptr<float>() + nc * inner;
        const double mean = sum_f32(xr, inner) / double(std::max<size_t>(inner, 1));
        const double var =
            sum_sq_dev_f32(xr, inner, static_cast<float>(mean)) / double(std::max<size_t>(inner, 1));
        const double inv = 1.0 / std::sqrt(var + eps);
        const size_t ch = nc % C;
        for (size_t i = 0; i < inner; ++i)
          yr[i] = static_cast<float>((xr[i] - mean) * inv * s.ptr<float>()[ch] +
                                     b.ptr<float>()[ch]);
      }
    }));
  };
}

KernelFactory lrn() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const float alpha = node.attr_f("alpha", 1e-4f);
    const float beta = node.attr_f("beta", 0.75f);
    const float bias = node.attr_f("bias", 1.0f);
    const int64_t size = node.attr_i("size", 0);
    if (size < 1) node.fail("size must be >= 1");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "X");
      if (x.rank() < 3) c.fail("X must have rank >= 3");
      const int64_t N = x.shape[0], C = x.shape[1];
      const size_t inner = N * C ? x.numel() / (N * C) : 0;
      Tensor& y = c.output(0, DType::f32, x.shape);
      const int64_t lo = (size - 1) / 2, hi = size - 1 - lo;
      const float* px = x.ptr<float>();
      float* py = y.ptr<float>();
      const float a = alpha / static_cast<float>(size);
      // One output plane at a time from the planes of its window (read from cache, squared
      // and summed by the ISA's kernel in one pass with the scaling).
      const f32_vlrn_fn plane = select_f32_vlrn(active_isa());
      parallel(c.pool, static_cast<size_t>(N * C), 1, [&](size_t b, size_t e) {
        std::vector<const float*> window(size);
        for (size_t nc = b; nc < e; ++nc) {
          const int64_t n = nc / C, ch = nc % C;
          const int64_t c0 = std::max<int64_t>(0, ch - lo), c1 = std::min<int64_t>(C - 1, ch + hi);
          for (int64_t k = c0; k <= c1; ++k) window[k - c0] = px + (n * C + k) * inner;
          plane(inner, window.data(), static_cast<size_t>(c1 - c0 + 1), px + nc * inner, bias, a,
                beta, py + nc * inner);
        }
      });
    }));
  };
}

KernelFactory rms_norm() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", -1);
    const float eps = node.attr_f("epsilon", 1e-5f);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "X");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      size_t outer = 1, inner = 1;
      for (size_t d = 0; d < x.rank(); ++d) (d < ax ? outer : inner) *= x.shape[d];
      const Tensor& scale = c.in(1);
      require_f32(scale, c, "scale");
      Shape norm_shape(x.shape.begin() + ax, x.shape.end());
      const std::vector<size_t> st[1] = {broadcast_strides(scale.shape, norm_shape)};
      if (broadcast_shapes(norm_shape, scale.shape, c.node) != norm_shape)
        c.fail("scale " + shape_str(scale.shape) + " does not broadcast to " +
               shape_str(norm_shape));
      std::vector<float> sc(inner);
      for_each_broadcast<1>(norm_shape, st, [&](size_t o, size_t* offs, size_t n, size_t* ist) {
        for (size_t i = 0; i < n; ++i) sc[o + i] = scale.ptr<float>()[offs[0] + i * ist[0]];
      });
      Tensor& y = c.output(0, DType::f32, x.shape);
      for (size_t r = 0; r < outer; ++r) {
        const float* xr = x.ptr<float>() + r * inner;
        float* yr = y.ptr<float>() + r * inner;
        double ss = 0.0;
        for (size_t i = 0; i < inner; ++i) ss += static_cast<double>(xr[i]) * xr[i];
        const double inv = 1.0 / std::sqrt(ss / std::max<size_t>(inner, 1) + eps);
        for (size_t i = 0; i < inner; ++i) yr[i] = static_cast<float>(xr[i] * inv) * sc[i];
      }
    }));
  };
}

KernelFactory lp_norm() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", -1);
    const int64_t p = node.attr_i("p", 2);
    if (p != 1 && p != 2) node.fail("p must be 1 or 2");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "input");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      size_t outer = 1, inner = 1;
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (d > ax) inner *= x.shape[d];
      }
      const size_t len = x.shape[ax];
      Tensor& y = c.output(0, DType::f32, x.shape);
      for (size_t o = 0; o < outer; ++o)
        for (size_t i = 0; i < inner; ++i) {
          const float* xr = x.ptr<float>() + o * len * inner + i;
          float* yr = y.ptr<float>() + o * len * inner + i;
          double n = 0.0;
          for (size_t j = 0; j < len; ++j)
            n += p == 1 ? std::abs(xr[j * inner]) : static_cast<double>(xr[j * inner]) * xr[j * inner];
          if (p == 2) n = std::sqrt(n);
          for (size_t j = 0; j < len; ++j)
            yr[j * inner] = n == 0.0 ? 0.0f : static_cast<float>(xr[j * inner] / n);
        }
    }));
  };
}

KernelFactory mean_variance_norm() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::vector<int64_t> axes = node.attr_ints("axes", {0, 2, 3});
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "X");
      std::vector<bool> red(x.rank(), false);
      for (int64_t a : axes) red[norm_axis(a, x.rank(), c.node)] = true;
      // Group elements by their index on the kept axes.
      const std::vector<size_t> st = strides_of(x.shape);
      size_t groups = 1;
      for (size_t d = 0; d < x.rank(); ++d) if (!red[d]) groups *= x.shape[d];
      std::vector<size_t> group_of(x.numel());
      for (size_t i = 0; i < x.numel(); ++i) {
        size_t g = 0;
        for (size_t d = 0; d < x.rank(); ++d)
          if (!red[d]) g = g * x.shape[d] + (i / st[d]) % x.shape[d];
        group_of[i] = g;
      }
      std::vector<double> sum(groups, 0.0), sq(groups, 0.0), cnt(groups, 0.0);
      const float* px = x.ptr<float>();
      for (size_t i = 0; i < x.numel(); ++i) {
        sum[group_of[i]] += px[i];
        sq[group_of[i]] += static_cast<double>(px[i]) * px[i];
        cnt[group_of[i]] += 1.0;
      }
      Tensor& y = c.output(0, DType::f32, x.shape);
      for (size_t i = 0; i < x.numel(); ++i) {
        const size_t g = group_of[i];
        const double mean = sum[g] / cnt[g];
        const double var = std::max(0.0, sq[g] / cnt[g] - mean * mean);
        y.ptr<float>()[i] = static_cast<float>((px[i] - mean) / (std::sqrt(var) + 1e-9));
      }
    }));
  };
}

enum class SoftKind { softmax, log_softmax, hardmax };

// One row of len elements `stride` apart, exactly (double sum, libm exp): the oracle, and
// the path for rows with NaN or infinities.
void soft_row_exact(SoftKind kind, size_t len, size_t stride, const float* xr, float* yr) {
  float m = -std::numeric_limits<float>::infinity();
  size_t arg = 0;
  for (size_t j = 0; j < len; ++j)
    if (xr[j * stride] > m) {
      m = xr[j * stride];
      arg = j;
    }
  if (kind == SoftKind::hardmax) {
    for (size_t j = 0; j < len; ++j) yr[j * stride] = j == arg ? 1.0f : 0.0f;
    return;
  }
  double s = 0.0;
  for (size_t j = 0; j < len; ++j) {
    const float ev = std::exp(xr[j * stride] - m);
    if (kind == SoftKind::softmax) yr[j * stride] = ev;
    s += ev;
  }
  if (kind == SoftKind::softmax) {
    const float inv = static_cast<float>(1.0 / s);
    for (size_t j = 0; j < len; ++j) yr[j * stride] *= inv;
  } else {
    const float ls = static_cast<float>(std::log(s));
    for (size_t j = 0; j < len; ++j) yr[j * stride] = xr[j * stride] - m - ls;
  }
}

// A contiguous row through the ISA's softmax kernel (within ~1e-6); a NaN or an infinity in
// the row makes its sum non-finite and the exact loop redoes it. x and y may not overlap.
void softmax_row(f32_vsoftmax_fn kernel, size_t len, const float* x, float* y) {
  double sum = 0.0;
  kernel(len, x, y, &sum);
  if (!(sum > 0.0 && sum < std::numeric_limits<double>::infinity()))
    soft_row_exact(SoftKind::softmax, len, 1, x, y);
}

// Columns [i0, i1) of a softmax over a non-last axis (YOLOv8's DFL: 16 bins over 4 sides x
// 2100 anchors at 320 x 320, axis 1) through the ISA's column kernel, vectorized across the
// columns; a block holding a NaN or an infinity is redone column by column by the exact loop.
// x and y may not overlap. The block's rows fit in L1 (kSoftmaxBlockFloats), so the kernel's
// three passes reread them from there. On the Xeon, that DFL node in YOLOv8n, one thread:
// 630-660 -> 42-45 us against transposing each block into rows for the row kernel.
constexpr size_t kSoftmaxBlockFloats = 4096;

void softmax_columns(f32_vsoftmax_cols_fn kernel, size_t len, size_t inner, const float* x,
                     float* y, size_t i0, size_t i1) {
  bool finite = true;
  kernel(i1 - i0, len, inner, x + i0, y + i0, &finite);
  if (!finite)
    for (size_t i = i0; i < i1; ++i) soft_row_exact(SoftKind::softmax, len, inner, x + i, y + i);
}

KernelFactory softmax(SoftKind kind) {
  return [kind](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const bool legacy = node.opset > 0 && node.opset < 13;
    const int64_t axis = node.attr_i("axis", legacy ? 1 : -1);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      require_f32(x, c, "input");
      Tensor& y = c.output(0, DType::f32, x.shape);
      if (x.rank() == 0) c.fail("input must have rank >= 1");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      // Legacy: coerce to 2-D at axis and normalize each row. New: along one axis.
      size_t outer = 1, len = 1, inner = 1;
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (legacy || d == ax) len *= x.shape[d];
        else inner *= x.shape[d];
      }
      const float* px = x.ptr<float>();
      float* py = y.ptr<float>();
      const f32_vsoftmax_fn row_softmax = select_f32_vsoftmax(active_isa());
      if (kind == SoftKind::softmax && inner > 1 && len > 1 && px != py) {
        const f32_vsoftmax_cols_fn cols_softmax = select_f32_vsoftmax_cols(active_isa());
        const size_t block = std::max<size_t>(16, kSoftmaxBlockFloats / len / 16 * 16);
        const size_t blocks = (inner + block - 1) / block;
        parallel(c.pool, outer * blocks, 1, [&](size_t b, size_t e) {
          for (size_t t = b; t < e; ++t) {
            const size_t o = t / blocks, i0 = t % blocks * block;
            softmax_columns(cols_softmax, len, inner, px + o * len * inner,
                            py + o * len * inner, i0, std::min(inner, i0 + block));
          }
        }, outer * len * inner * 16);
        return;
      }
      parallel(c.pool, outer * inner, 8, [&](size_t b, size_t e) {
        for (size_t r = b; r < e; ++r) {
          const size_t o = r / inner, i = r % inner;
          const float* xr = px + o * len * inner + i;
          float* yr = py + o * len * inner + i;
          // The row kernel's fallback rereads x: an output on its input takes the exact loop.
          if (kind == SoftKind::softmax && inner == 1 && xr != yr)
            softmax_row(row_softmax, len, xr, yr);
          else
            soft_row_exact(kind, len, inner, xr, yr);
        }
      });
    }));
  };
}

KILN_REGISTER_OP("", "BatchNormalization", batch_norm());
KILN_REGISTER_OP("", "LayerNormalization", layer_norm());
KILN_REGISTER_OP("", "InstanceNormalization", instance_norm());
KILN_REGISTER_OP("", "LRN", lrn());
KILN_REGISTER_OP("", "RMSNormalization", rms_norm());
KILN_REGISTER_OP("", "LpNormalization", lp_norm());
KILN_REGISTER_OP("", "MeanVarianceNormalization", mean_variance_norm());
KILN_REGISTER_OP("", "Softmax", softmax(SoftKind::softmax));
KILN_REGISTER_OP("", "LogSoftmax", softmax(SoftKind::log_softmax));
KILN_REGISTER_OP("", "Hardmax", softmax(SoftKind::hardmax));

}  // namespace
}  // namespace kiln::ops
