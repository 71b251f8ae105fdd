// Index-driven operators: GatherND, ScatterND, ScatterElements, NonZero, Compress, OneHot,
// Trilu, EyeLike, CumSum, CumProd. Every index is bounds-checked before it is used.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/common.h"

namespace kiln::ops {
namespace {

enum class Reduction { none, add, mul, max, min };

Reduction read_reduction(const NodeDesc& node) {
  const std::string r = node.attr_s("reduction", "none");
  if (r == "none") return Reduction::none;
  if (r == "add") return Reduction::add;
  if (r == "mul") return Reduction::mul;
  if (r == "max") return Reduction::max;
  if (r == "min") return Reduction::min;
  node.fail("reduction '" + r + "' is not one of none, add, mul, max, min");
}

template <typename T>
void combine(Reduction r, T& dst, T v) {
  switch (r) {
    case Reduction::none: dst = v; break;
    case Reduction::add: dst = static_cast<T>(dst + v); break;
    case Reduction::mul: dst = static_cast<T>(dst * v); break;
    case Reduction::max: dst = std::max(dst, v); break;
    case Reduction::min: dst = std::min(dst, v); break;
  }
}

int64_t checked_index(int64_t i, int64_t dim, OpContext& c) {
  if (i < -dim || i >= dim)
    c.fail("index " + std::to_string(i) + " is out of range for a dim of size " +
           std::to_string(dim));
  return i < 0 ? i + dim : i;
}

KernelFactory gather_nd() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t batch_dims = node.attr_i("batch_dims", 0);
    if (batch_dims < 0) node.fail("batch_dims must be >= 0");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& ind = c.in(1);
      const size_t b = static_cast<size_t>(batch_dims);
      if (ind.rank() < 1 || x.rank() <= b || ind.rank() <= b) c.fail("ranks too small");
      for (size_t d = 0; d < b; ++d)
        if (x.shape[d] != ind.shape[d]) c.fail("batch dims of data and indices differ");
      const size_t k = static_cast<size_t>(ind.shape.back());
      if (k < 1 || b + k > x.rank()) c.fail("indices' last dim is out of range");
      std::vector<int64_t> idx = read_ints(ind, c.node, "indices");
      Shape out(ind.shape.begin(), ind.shape.end() - 1);
      out.insert(out.end(), x.shape.begin() + b + k, x.shape.end());
      Tensor& y = c.output(0, x.dtype, out);
      size_t batch = 1, slice = dtype_size(x.dtype), per_batch = 1;
      for (size_t d = 0; d < b; ++d) batch *= x.shape[d];
      for (size_t d = b + k; d < x.rank(); ++d) slice *= x.shape[d];
      for (size_t d = b; d < b + k; ++d) per_batch *= x.shape[d];
      const size_t tuples = k ? idx.size() / k : 0;
      const size_t tuples_per_batch = batch ? tuples / batch : 0;
      const uint8_t* px = static_cast<const uint8_t*>(x.data);
      uint8_t* py = static_cast<uint8_t*>(y.data);
      for (size_t t = 0; t < tuples; ++t) {
        size_t off = 0;
        for (size_t j = 0; j < k; ++j)
          off = off * x.shape[b + j] + checked_index(idx[t * k + j], x.shape[b + j], c);
        const size_t bi = tuples_per_batch ? t / tuples_per_batch : 0;
        if (slice) std::memcpy(py + t * slice, px + (bi * per_batch + off) * slice, slice);
      }
    }));
  };
}

KernelFactory scatter_nd() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const Reduction red = read_reduction(node);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& ind = c.in(1);
      const Tensor& upd = c.in(2);
      if (upd.dtype != x.dtype) c.fail("updates must have the data's type");
      if (ind.rank() < 1) c.fail("indices must have rank >= 1");
      const size_t k = static_cast<size_t>(ind.shape.back());
      if (k < 1 || k > x.rank()) c.fail("indices' last dim is out of range");
      Shape want(ind.shape.begin(), ind.shape.end() - 1);
      want.insert(want.end(), x.shape.begin() + k, x.shape.end());
      if (upd.shape != want)
        c.fail("updates " + shape_str(upd.shape) + " must have shape " + shape_str(want));
      std::vector<int64_t> idx = read_ints(ind, c.node, "indices");
      Tensor& y = c.output(0, x.dtype, x.shape);
      if (x.nbytes()) std::memcpy(y.data, x.data, x.nbytes());
      size_t slice = 1;
      for (size_t d = k; d < x.rank(); ++d) slice *= x.shape[d];
      const size_t tuples = idx.size() / k;
      dispatch_numeric(x.dtype == DType::boolean ? DType::u8 : x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        T* py = y.ptr<T>();
        const T* pu = upd.ptr<T>();
        for (size_t t = 0; t < tuples; ++t) {
          size_t off = 0;
          for (size_t j = 0; j < k; ++j)
            off = off * x.shape[j] + checked_index(idx[t * k + j], x.shape[j], c);
          for (size_t i = 0; i < slice; ++i) combine(red, py[off * slice + i], pu[t * slice + i]);
        }
      });
    }));
  };
}

KernelFactory scatter_elements() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const Reduction red = read_reduction(node);
    const int64_t axis = node.attr_i("axis", 0);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& ind = c.in(1);
      const Tensor& upd = c.in(2);
      if (upd.dtype != x.dtype) c.fail("updates must have the data's type");
      if (ind.shape != upd.shape) c.fail("indices and updates must have the same shape");
      if (ind.rank() != x.rank()) c.fail("indices must have the data's rank");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      for (size_t d = 0; d < x.rank(); ++d)
        if (d != ax && ind.shape[d] > x.shape[d]) c.fail("indices exceed the data on a dim");
      std::vector<int64_t> idx = read_ints(ind, c.node, "indices");
      Tensor& y = c.output(0, x.dtype, x.shape);
      if (x.nbytes()) std::memcpy(y.data, x.data, x.nbytes());
      const std::vector<size_t> xs = strides_of(x.shape);
      const size_t r = x.rank();
      if (r == 0 || idx.empty()) {
        if (!idx.empty()) c.fail("a scalar has no axis to scatter along");
        return;
      }
      // Row by row along the last dim: a row's offset without the axis is computed once,
      // and the reduction is chosen outside the element loop (a GNN's scatter-add of
      // [edges, features] messages into [nodes, features] runs one add per element).
      const size_t last = r - 1, inner = static_cast<size_t>(ind.shape[last]);
      const size_t rows = idx.size() / inner, axis_stride = ax == last ? 1 : xs[ax];
      const int64_t axis_dim = x.shape[ax];
      std::vector<int64_t> pos(r, 0);
      dispatch_numeric(x.dtype == DType::boolean ? DType::u8 : x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        T* py = y.ptr<T>();
        const T* pu = upd.ptr<T>();
        auto scatter = [&](auto op) {
          for (size_t row = 0; row < rows; ++row) {
            size_t base = 0;
            for (size_t d = 0; d < last; ++d)
              if (d != ax) base += static_cast<size_t>(pos[d]) * xs[d];
            const int64_t* ir = idx.data() + row * inner;
            const T* ur = pu + row * inner;
            for (size_t j = 0; j < inner; ++j) {
              const size_t at = static_cast<size_t>(checked_index(ir[j], axis_dim, c));
              T& dst = py[base + at * axis_stride + (ax == last ? 0 : j)];
              dst = op(dst, ur[j]);
            }
            for (size_t d = last; d-- > 0;) {
              if (++pos[d] < ind.shape[d]) break;
              pos[d] = 0;
            }
          }
        };
        switch (red) {
          case Reduction::none: return scatter([](T, T v) { return v; });
          case Reduction::add: return scatter([](T a, T v) { return static_cast<T>(a + v); });
          case Reduction::mul: return scatter([](T a, T v) { return static_cast<T>(a * v); });
          case Reduction::max: return scatter([](T a, T v) { return std::max(a, v); });
          case Reduction::min: return scatter([](T a, T v) { return std::min(a, v); });
        }
      });
    }));
  };
}

bool nonzero_at(const Tensor& x, size_t i) {
  switch (dtype_size(x.dtype)) {
    case 1: return x.ptr<uint8_t>()[i] != 0;
    case 2: return (x.ptr<uint16_t>()[i] & (x.dtype == DType::f16 ? 0x7fff : 0xffff)) != 0;
    case 4: return x.dtype == DType::f32 ? x.ptr<float>()[i] != 0.0f : x.ptr<uint32_t>()[i] != 0;
    case 8: return x.dtype == DType::f64 ? x.ptr<double>()[i] != 0.0 : x.ptr<uint64_t>()[i] != 0;
  }
  return false;
}

void nonzero(OpContext& c) {
  const Tensor& x = c.in(0);
  std::vector<size_t> hits;
  for (size_t i = 0; i < x.numel(); ++i)
    if (nonzero_at(x, i)) hits.push_back(i);
  const size_t r = x.rank();
  Tensor& y = c.output(0, DType::i64, {static_cast<int64_t>(r), static_cast<int64_t>(hits.size())});
  const std::vector<size_t> st = strides_of(x.shape);
  for (size_t h = 0; h < hits.size(); ++h)
    for (size_t d = 0; d < r; ++d)
      y.ptr<int64_t>()[d * hits.size() + h] = static_cast<int64_t>((hits[h] / st[d]) % x.shape[d]);
}

KernelFactory compress() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const bool has_axis = node.has("axis");
    const int64_t axis = node.attr_i("axis", 0);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x0 = c.in(0);
      const Tensor& cond = c.in(1);
      if (cond.dtype != DType::boolean || cond.rank() != 1) c.fail("condition must be 1-D bool");
      Tensor x = x0;
      if (!has_axis) x.shape = {static_cast<int64_t>(x.numel())};
      const size_t ax = has_axis ? norm_axis(axis, x.rank(), c.node) : 0;
      const size_t len = x.shape[ax];
      if (static_cast<size_t>(cond.shape[0]) > len) c.fail("condition is longer than the axis");
      std::vector<size_t> keep;
      for (size_t i = 0; i < static_cast<size_t>(cond.shape[0]); ++i)
        if (cond.ptr<uint8_t>()[i]) keep.push_back(i);
      Shape out = x.shape;
      out[ax] = static_cast<int64_t>(keep.size());
      Tensor& y = c.output(0, x.dtype, out);
      size_t outer = 1, inner = dtype_size(x.dtype);
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (d > ax) inner *= x.shape[d];
      }
      uint8_t* py = static_cast<uint8_t*>(y.data);
      const uint8_t* px = static_cast<const uint8_t*>(x.data);
      for (size_t o = 0; o < outer; ++o)
        for (size_t k = 0; k < keep.size(); ++k)
          std::memcpy(py + (o * keep.size() + k) * inner, px + (o * len + keep[k]) * inner, inner);
    }));
  };
}

double scalar_of(const Tensor& t, OpContext& c, const char* what) {
  if (t.numel() < 1) c.fail(std::string(what) + " is empty");
  switch (t.dtype) {
    case DType::f32: return t.ptr<float>()[0];
    case DType::f64: return t.ptr<double>()[0];
    case DType::i64: return static_cast<double>(t.ptr<int64_t>()[0]);
    case DType::i32: return t.ptr<int32_t>()[0];
    default: c.fail(std::string(what) + " has an unsupported type");
  }
}

KernelFactory one_hot() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", -1);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& ind = c.in(0);
      const Tensor& values = c.in(2);
      const double depth_d = scalar_of(c.in(1), c, "depth");
      if (!(depth_d >= 1) || depth_d > 1e9) c.fail("depth must be a positive count");
      const int64_t depth = static_cast<int64_t>(depth_d);
      if (values.numel() != 2) c.fail("values must hold [off, on]");
      std::vector<double> idx(ind.numel());
      for (size_t i = 0; i < idx.size(); ++i) {
        switch (ind.dtype) {
          case DType::f32: idx[i] = ind.ptr<float>()[i]; break;
          case DType::f64: idx[i] = ind.ptr<double>()[i]; break;
          case DType::i64: idx[i] = static_cast<double>(ind.ptr<int64_t>()[i]); break;
          case DType::i32: idx[i] = ind.ptr<int32_t>()[i]; break;
          default: c.fail("indices have an unsupported type");
        }
      }
      const size_t r = ind.rank() + 1;
      const size_t ax = norm_axis(axis, r, c.node);
      Shape out(ind.shape);
      out.insert(out.begin() + ax, depth);
      Tensor& y = c.output(0, values.dtype, out);
      size_t outer = 1, inner = 1;
      for (size_t d = 0; d < ind.rank(); ++d) (d < ax ? outer : inner) *= ind.shape[d];
      dispatch_bytes(values.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        const T off = values.ptr<T>()[0], on = values.ptr<T>()[1];
        T* py = y.ptr<T>();
        for (size_t i = 0; i < y.numel(); ++i) py[i] = off;
        for (size_t o = 0; o < outer; ++o)
          for (size_t i = 0; i < inner; ++i) {
            int64_t v = static_cast<int64_t>(idx[o * inner + i]);
            if (v < 0) v += depth;
            if (v < 0 || v >= depth) continue;
            py[(o * depth + v) * inner + i] = on;
          }
      });
    }));
  };
}

KernelFactory trilu() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const bool upper = node.attr_i("upper", 1) != 0;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.rank() < 2) c.fail("input must have rank >= 2");
      int64_t k = 0;
      if (const Tensor* kt = c.input(1)) {
        std::vector<int64_t> kv = read_ints(*kt, c.node, "k");
        if (kv.size() != 1) c.fail("k must be a scalar");
        k = kv[0];
      }
      Tensor& y = c.output(0, x.dtype, x.shape);
      const int64_t R = x.shape[x.rank() - 2], C = x.shape[x.rank() - 1];
      const size_t mats = R * C ? x.numel() / (R * C) : 0;
      const size_t es = dtype_size(x.dtype);
      const uint8_t* px = static_cast<const uint8_t*>(x.data);
      uint8_t* py = static_cast<uint8_t*>(y.data);
      for (size_t m = 0; m < mats; ++m)
        for (int64_t i = 0; i < R; ++i)
          for (int64_t j = 0; j < C; ++j) {
            const bool keep = upper ? (j - i >= k) : (j - i <= k);
            const size_t off = ((m * R + i) * C + j) * es;
            if (keep) std::memcpy(py + off, px + off, es);
            else std::memset(py + off, 0, es);
          }
    }));
  };
}

KernelFactory eye_like() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t k = node.attr_i("k", 0);
    const int64_t dt = node.attr_i("dtype", 0);
    if (dt && !dtype_known(static_cast<int>(dt))) node.fail("dtype is not supported");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.rank() != 2) c.fail("input must be 2-D");
      const DType out = dt ? static_cast<DType>(dt) : x.dtype;
      Tensor& y = c.output(0, out, x.shape);
      std::memset(y.data, 0, y.nbytes());
      for (int64_t i = 0; i < x.shape[0]; ++i) {
        const int64_t j = i + k;
        if (j < 0 || j >= x.shape[1]) continue;
        const size_t at = static_cast<size_t>(i * x.shape[1] + j);
        switch (out) {
          case DType::f32: y.ptr<float>()[at] = 1.0f; break;
          case DType::f64: y.ptr<double>()[at] = 1.0; break;
          case DType::f16: y.ptr<uint16_t>()[at] = 0x3c00; break;
          default:
            dispatch_numeric(out == DType::boolean ? DType::u8 : out, c.node, [&](auto tag) {
              using T = decltype(tag);
              y.ptr<T>()[at] = T(1);
            });
        }
      }
    }));
  };
}

// CumSum (product = false) and CumProd (product = true): a running sum / product along axis.
KernelFactory cumulative(bool product) {
  return [product](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const bool exclusive = node.attr_i("exclusive", 0) != 0;
    const bool reverse = node.attr_i("reverse", 0) != 0;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      std::vector<int64_t> av = read_ints(c.in(1), c.node, "axis");
      if (av.size() != 1) c.fail("axis must be a scalar");
      if (x.rank() == 0) c.fail("input must have rank >= 1");
      const size_t ax = norm_axis(av[0], x.rank(), c.node);
      Tensor& y = c.output(0, x.dtype, x.shape);
      size_t outer = 1, inner = 1;
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (d > ax) inner *= x.shape[d];
      }
      const int64_t len = x.shape[ax];
      dispatch_numeric(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.ptr<T>();
        T* py = y.ptr<T>();
        for (size_t o = 0; o < outer; ++o)
          for (size_t i = 0; i < inner; ++i) {
            T acc = product ? T(1) : T(0);
            for (int64_t s = 0; s < len; ++s) {
              const int64_t j = reverse ? len - 1 - s : s;
              const size_t at = (o * len + j) * inner + i;
              const T next = static_cast<T>(product ? acc * px[at] : acc + px[at]);
              py[at] = exclusive ? acc : next;
              acc = next;
            }
          }
      });
    }));
  };
}

KILN_REGISTER_OP("", "GatherND", gather_nd());
KILN_REGISTER_OP("", "ScatterND", scatter_nd());
KILN_REGISTER_OP("", "ScatterElements", scatter_elements());
KILN_REGISTER_OP("", "NonZero", simple_kernel(nonzero));
KILN_REGISTER_OP("", "Compress", compress());
KILN_REGISTER_OP("", "OneHot", one_hot());
KILN_REGISTER_OP("", "Trilu", trilu());
KILN_REGISTER_OP("", "EyeLike", eye_like());
KILN_REGISTER_OP("", "CumSum", cumulative(false));
KILN_REGISTER_OP("", "CumProd", cumulative(true));

}  // namespace
}  // namespace kiln::ops
