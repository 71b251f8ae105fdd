// Reductions (ReduceMean/Sum/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp), ArgMax,
// ArgMin and TopK.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/common.h"

namespace kiln::ops {
namespace {

enum class Red { mean, sum, max, min, prod, l1, l2, sum_square, log_sum, log_sum_exp };

// Offsets of every position over `dims` (a subset of axes), given the input strides.
std::vector<size_t> offsets_over(const Shape& shape, const std::vector<size_t>& strides,
                                 const std::vector<size_t>& dims) {
  std::vector<size_t> offs{0};
  for (size_t d : dims) {
    std::vector<size_t> next;
    next.reserve(offs.size() * shape[d]);
    for (size_t base : offs)
      for (int64_t i = 0; i < shape[d]; ++i) next.push_back(base + i * strides[d]);
    offs.swap(next);
  }
  return offs;
}

// f32 reductions over the trailing axes (each output reads one contiguous row, as in
// ReduceMean over the last axis or over H, W) with the vectorized row helpers, without the
// offset tables of the general loop. False when the case is not one of these.
bool reduce_trailing_rows_f32(Red kind, const Tensor& x, const std::vector<size_t>& rdims,
                              Tensor& y, ThreadPool* pool) {
  const size_t r = x.rank();
  if (rdims.empty() || rdims.front() + rdims.size() != r) return false;
  if (kind != Red::mean && kind != Red::sum && kind != Red::max && kind != Red::min &&
      kind != Red::sum_square && kind != Red::l2)
    return false;
  size_t n = 1;
  for (size_t d : rdims) n *= static_cast<size_t>(x.shape[d]);
  if (n == 0) return false;
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  const size_t rows = y.numel();
  parallel(pool, rows, 1, [&](size_t b, size_t e) {
    for (size_t o = b; o < e; ++o) {
      const float* row = px + o * n;
      switch (kind) {
        case Red::max: py[o] = max_f32(row, n); break;
        case Red::min: py[o] = min_f32(row, n); break;
        case Red::sum: py[o] = static_cast<float>(sum_f32(row, n)); break;
        case Red::mean: py[o] = static_cast<float>(sum_f32(row, n) / double(n)); break;
        case Red::sum_square: py[o] = static_cast<float>(sum_sq_dev_f32(row, n, 0.0f)); break;
        default: py[o] = static_cast<float>(std::sqrt(sum_sq_dev_f32(row, n, 0.0f))); break;
      }
    }
  }, rows * n);
  return true;
}

KernelFactory reduce(Red kind) {
  return [kind](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const bool keepdims = node.attr_i("keepdims", 1) != 0;
    const bool noop_empty = node.attr_i("noop_with_empty_axes", 0) != 0;
    const std::vector<int64_t> attr_axes = node.attr_ints("axes");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const size_t r = x.rank();
      std::vector<int64_t> axes =
          c.input(1) ? read_ints(*c.input(1), c.node, "axes") : attr_axes;
      std::vector<bool> red(r, false);
      if (axes.empty()) {
        if (noop_empty) {
          Tensor& y = c.output(0, x.dtype, x.shape);
          if (x.nbytes()) std::memcpy(y.data, x.data, x.nbytes());
          return;
        }
        std::fill(red.begin(), red.end(), true);
      }
      for (int64_t a : axes) red[norm_axis(a, r, c.node)] = true;
      Shape out;
      std::vector<size_t> kept, rdims;
      for (size_t d = 0; d < r; ++d) {
        if (red[d]) {
          rdims.push_back(d);
          if (keepdims) out.push_back(1);
        } else {
          kept.push_back(d);
          out.push_back(x.shape[d]);
        }
      }
      const std::vector<size_t> st = strides_of(x.shape);
      Tensor& y = c.output(0, x.dtype, out);
      if (y.numel() == 0) return;
      if (x.dtype == DType::f32 && reduce_trailing_rows_f32(kind, x, rdims, y, c.pool)) return;
      const std::vector<size_t> base = offsets_over(x.shape, st, kept);
      const std::vector<size_t> roff = offsets_over(x.shape, st, rdims);
      dispatch_numeric(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.ptr<T>();
        T* py = y.ptr<T>();
        const size_t n = roff.size();
        parallel(c.pool, base.size(), 64, [&](size_t b, size_t e) {
          for (size_t o = b; o < e; ++o) {
            const T* xb = px + base[o];
            double acc;
            switch (kind) {
              case Red::max:
                py[o] = extreme_over<true>(xb, n, [&](size_t i) { return roff[i]; });
                continue;
              case Red::min:
                py[o] = extreme_over<false>(xb, n, [&](size_t i) { return roff[i]; });
                continue;
              case Red::prod:
                acc = 1.0;
                for (size_t i = 0; i < n; ++i) acc *= static_cast<double>(xb[roff[i]]);
                break;
              case Red::log_sum_exp: {
                double m = -std::numeric_limits<double>::infinity();
                for (size_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(xb[roff[i]]));
                double s = 0.0;
                for (size_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(xb[roff[i]]) - m);
                acc = n ? m + std::log(s) : -std::numeric_limits<double>::infinity();
                break;
              }
              default: {
                acc = 0.0;
                for (size_t i = 0; i < n; ++i) {
                  const double v = static_cast<double>(xb[roff[i]]);
                  if (kind == Red::l1) acc += std::abs(v);
                  else if (kind == Red::l2 || kind == Red::sum_square) acc += v * v;
                  else acc += v;
                }
                if (kind == Red::mean) acc /= static_cast<double>(n ? n : 1);
                else if (kind == Red::l2) acc = std::sqrt(acc);
                else if (kind == Red::log_sum) acc = std::log(acc);
              }
            }
            py[o] = static_cast<T>(acc);
          }
        });
      });
    }));
  };
}

KernelFactory arg_reduce(bool is_max) {
  return [is_max](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", 0);
    const bool keepdims = node.attr_i("keepdims", 1) != 0;
    const bool last = node.attr_i("select_last_index", 0) != 0;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.rank() == 0) c.fail("input must have rank >= 1");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      if (x.shape[ax] == 0) c.fail("cannot reduce an empty axis");
      size_t outer = 1, inner = 1;
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (d > ax) inner *= x.shape[d];
      }
      Shape out = x.shape;
      if (keepdims) out[ax] = 1;
      else out.erase(out.begin() + ax);
      Tensor& y = c.output(0, DType::i64, out);
      const size_t len = x.shape[ax];
      dispatch_numeric(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.ptr<T>();
        int64_t* py = y.ptr<int64_t>();
        for (size_t o = 0; o < outer; ++o)
          for (size_t i = 0; i < inner; ++i) {
            const T* xr = px + o * len * inner + i;
            size_t best = 0;
            for (size_t j = 1; j < len; ++j) {
              const T v = xr[j * inner], b = xr[best * inner];
              const bool better = is_max ? (last ? v >= b : v > b) : (last ? v <= b : v < b);
              if (better) best = j;
            }
            py[o * inner + i] = static_cast<int64_t>(best);
          }
      });
    }));
  };
}

KernelFactory topk() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", -1);
    const bool largest = node.attr_i("largest", 1) != 0;
    const int64_t k_attr = node.attr_i("k", -1);
    const bool legacy = node.opset > 0 && node.opset < 10;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.rank() == 0) c.fail("input must have rank >= 1");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      int64_t k = k_attr;
      if (!legacy) {
        std::vector<int64_t> kv = read_ints(c.in(1), c.node, "K");
        if (kv.size() != 1) c.fail("K must hold one value");
        k = kv[0];
      }
      if (k < 0 || k > x.shape[ax])
        c.fail("k=" + std::to_string(k) + " is out of range for axis of size " +
               std::to_string(x.shape[ax]));
      size_t outer = 1, inner = 1;
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (d > ax) inner *= x.shape[d];
      }
      Shape out = x.shape;
      out[ax] = k;
      Tensor& vals = c.output(0, x.dtype, out);
      Tensor& idxs = c.output(1, DType::i64, out);
      const size_t len = x.shape[ax];
      dispatch_numeric(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.ptr<T>();
        std::vector<int64_t> order(len);
        for (size_t o = 0; o < outer; ++o)
          for (size_t i = 0; i < inner; ++i) {
            const T* xr = px + o * len * inner + i;
            std::iota(order.begin(), order.end(), 0);
            auto cmp = [&](int64_t a, int64_t b) {
              const T va = xr[a * inner], vb = xr[b * inner];
              if (va != vb) return largest ? va > vb : va < vb;
              return a < b;
            };
            std::partial_sort(order.begin(), order.begin() + k, order.end(), cmp);
            for (int64_t j = 0; j < k; ++j) {
              const size_t at = (o * k + j) * inner + i;
              vals.ptr<T>()[at] = xr[order[j] * inner];
              idxs.ptr<int64_t>()[at] = order[j];
            }
          }
      });
    }));
  };
}

KILN_REGISTER_OP("", "ReduceMean", reduce(Red::mean));
KILN_REGISTER_OP("", "ReduceSum", reduce(Red::sum));
KILN_REGISTER_OP("", "ReduceMax", reduce(Red::max));
KILN_REGISTER_OP("", "ReduceMin", reduce(Red::min));
KILN_REGISTER_OP("", "ReduceProd", reduce(Red::prod));
KILN_REGISTER_OP("", "ReduceL1", reduce(Red::l1));
KILN_REGISTER_OP("", "ReduceL2", reduce(Red::l2));
KILN_REGISTER_OP("", "ReduceSumSquare", reduce(Red::sum_square));
KILN_REGISTER_OP("", "ReduceLogSum", reduce(Red::log_sum));
KILN_REGISTER_OP("", "ReduceLogSumExp", reduce(Red::log_sum_exp));
KILN_REGISTER_OP("", "ArgMax", arg_reduce(true));
KILN_REGISTER_OP("", "ArgMin", arg_reduce(false));
KILN_REGISTER_OP("", "TopK", topk());

}  // namespace
}  // namespace kiln::ops
