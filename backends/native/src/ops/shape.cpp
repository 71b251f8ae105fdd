// Shape and data-movement operators: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat,
// Split, Slice, Gather, GatherElements, Expand, Tile, Pad, Shape, Size, ConstantOfShape,
// Range, Identity, Dropout (inference), DepthToSpace, SpaceToDepth.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "ops/common.h"

namespace kiln::ops {
namespace {

// Bytes a thread copies at least when a copy is split (a few microseconds of memcpy).
constexpr size_t kCopyGrain = size_t(1) << 15;

// One memcpy of a data-movement op: the ops below list theirs, then copy them at once.
struct CopyRun {
  uint8_t* dst;
  const uint8_t* src;
  size_t bytes;
};

// One run's bytes split across the pool (no table of run offsets to build per inference).
void copy_bytes(ThreadPool* pool, uint8_t* dst, const uint8_t* src, size_t bytes) {
  parallel(pool, bytes, kCopyGrain,
           [&](size_t b, size_t e) { std::memcpy(dst + b, src + b, e - b); });
}

// Copies every run, the total bytes split evenly across the pool (a run may be cut between
// two threads): a Concat of a few large inputs splits as well as one of many small ones.
void copy_runs(ThreadPool* pool, const std::vector<CopyRun>& runs) {
  if (runs.size() == 1) return copy_bytes(pool, runs[0].dst, runs[0].src, runs[0].bytes);
  std::vector<size_t> starts(runs.size() + 1, 0);  // byte offset of each run in the total
  for (size_t i = 0; i < runs.size(); ++i) starts[i + 1] = starts[i] + runs[i].bytes;
  parallel(pool, starts.back(), kCopyGrain, [&](size_t b, size_t e) {
    size_t i = std::upper_bound(starts.begin(), starts.end(), b) - starts.begin() - 1;
    for (; b < e; ++i) {
      const size_t from = b - starts[i], n = std::min(e, starts[i + 1]) - b;
      if (n) std::memcpy(runs[i].dst + from, runs[i].src + from, n);
      b += n;
    }
  });
}

void copy_out(OpContext& c, const Tensor& x, const Shape& shape) {
  Tensor& y = c.output(0, x.dtype, shape);
  if (y.numel() != x.numel()) c.fail("internal: element count changed");
  // The memory plan puts a reshape's output on its input's bytes (plan.py in_place_views)
  if (x.nbytes() && y.data != x.data)
    copy_bytes(c.pool, static_cast<uint8_t*>(y.data), static_cast<const uint8_t*>(x.data),
               x.nbytes());
}

// Ints from input `i` (opset >= the version that moved them to inputs) or attribute `key`.
std::vector<int64_t> ints_from(OpContext& c, size_t i, const std::vector<int64_t>& attr,
                               bool* present = nullptr) {
  const Tensor* t = c.input(i);
  if (present) *present = t != nullptr || !attr.empty();
  if (t) return read_ints(*t, c.node, "shape/axes input");
  return attr;
}

// ---- Reshape family ---------------------------------------------------------------------

KernelFactory reshape() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const bool allowzero = node.attr_i("allowzero", 0) != 0;
    const std::vector<int64_t> attr_shape = node.attr_ints("shape");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      std::vector<int64_t> spec = ints_from(c, 1, attr_shape);
      Shape out(spec.size());
      int infer = -1;
      size_t known = 1;
      for (size_t i = 0; i < spec.size(); ++i) {
        int64_t d = spec[i];
        if (d == -1) {
          if (infer >= 0) c.fail("shape " + shape_str(spec) + " has more than one -1");
          infer = static_cast<int>(i);
          continue;
        }
        if (d == 0 && !allowzero) {
          if (i >= x.rank())
            c.fail("shape " + shape_str(spec) + " copies dim " + std::to_string(i) +
                   " but the input " + shape_str(x.shape) + " has rank " +
                   std::to_string(x.rank()));
          d = x.shape[i];
        }
        if (d < 0) c.fail("shape " + shape_str(spec) + " has invalid dim " + std::to_string(d));
        out[i] = d;
        if (d != 0 && known > (size_t(1) << 62) / static_cast<size_t>(d))
          c.fail("shape " + shape_str(spec) + " is too large");
        known *= static_cast<size_t>(d);
      }
      if (infer >= 0) {
        if (known == 0 || x.numel() % known)
          c.fail("cannot reshape " + shape_str(x.shape) + " (" + std::to_string(x.numel()) +
                 " elements) to " + shape_str(spec));
        out[infer] = static_cast<int64_t>(x.numel() / known);
      } else if (known != x.numel()) {
        c.fail("cannot reshape " + shape_str(x.shape) + " (" + std::to_string(x.numel()) +
               " elements) to " + shape_str(out) + " (" + std::to_string(known) + " elements)");
      }
      copy_out(c, x, out);
    }));
  };
}

KernelFactory flatten() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", 1);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const int64_t r = static_cast<int64_t>(x.rank());
      if (axis < -r || axis > r) c.fail("axis " + std::to_string(axis) + " out of range");
      const size_t ax = static_cast<size_t>(axis < 0 ? axis + r : axis);
      int64_t a = 1, b = 1;
      for (size_t d = 0; d < x.rank(); ++d) (d < ax ? a : b) *= x.shape[d];
      copy_out(c, x, {a, b});
    }));
  };
}

KernelFactory squeeze() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::vector<int64_t> attr_axes = node.attr_ints("axes");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      std::vector<int64_t> axes = ints_from(c, 1, attr_axes);
      std::vector<bool> drop(x.rank(), false);
      if (axes.empty()) {
        for (size_t d = 0; d < x.rank(); ++d) drop[d] = x.shape[d] == 1;
      }
      for (int64_t a : axes) {
        size_t d = norm_axis(a, x.rank(), c.node);
        if (x.shape[d] != 1)
          c.fail("cannot squeeze axis " + std::to_string(a) + " of shape " + shape_str(x.shape));
        drop[d] = true;
      }
      Shape out;
      for (size_t d = 0; d < x.rank(); ++d) if (!drop[d]) out.push_back(x.shape[d]);
      copy_out(c, x, out);
    }));
  };
}

KernelFactory unsqueeze() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::vector<int64_t> attr_axes = node.attr_ints("axes");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      std::vector<int64_t> axes = ints_from(c, 1, attr_axes);
      const size_t r = x.rank() + axes.size();
      std::vector<bool> ins(r, false);
      for (int64_t a : axes) {
        size_t d = norm_axis(a, r, c.node);
        if (ins[d]) c.fail("axis " + std::to_string(a) + " repeated");
        ins[d] = true;
      }
      Shape out;
      size_t k = 0;
      for (size_t d = 0; d < r; ++d) out.push_back(ins[d] ? 1 : x.shape[k++]);
      copy_out(c, x, out);
    }));
  };
}

void identity(OpContext& c) {
  const Tensor& x = c.in(0);
  copy_out(c, x, x.shape);
  if (c.node.op == "Dropout" && c.wants_output(1)) {
    Tensor& m = c.output(1, DType::boolean, x.shape);
    std::memset(m.data, 1, m.nbytes());
  }
}

KernelFactory dropout() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    if (node.attr_i("is_test", 1) == 0 && node.opset > 0 && node.opset < 7)
      node.fail("training-mode Dropout is not supported");
    return std::unique_ptr<Kernel>(new FnKernel([](OpContext& c) {
      const Tensor* training = c.input(2);
      if (training) {
        if (training->dtype != DType::boolean || training->numel() != 1)
          c.fail("training_mode must be a bool scalar");
        if (training->ptr<uint8_t>()[0]) c.fail("training_mode=true is not supported");
      }
      identity(c);
    }));
  };
}

// ---- Transpose --------------------------------------------------------------------------

// Output rows (runs of the last output dim) [row0, row1) of a transpose; out and the input
// strides st are in output dim order. A last dim of input stride 1 is a contiguous run of
// both tensors: copied as a block.
template <typename T>
void transpose_rows(const T* x, T* y, const Shape& out, const std::vector<size_t>& st,
                    size_t row0, size_t row1) {
  const size_t r = out.size();
  const size_t inner = out[r - 1], inner_st = st[r - 1];
  // The multi-index and input offset of row0 (its last dim is 0).
  std::vector<int64_t> idx(r, 0);
  size_t off = 0;
  for (size_t d = r - 1, rest = row0; d-- > 0;) {
    idx[d] = static_cast<int64_t>(rest % out[d]);
    rest /= out[d];
    off += idx[d] * st[d];
  }
  for (size_t row = row0; row < row1; ++row) {
    T* yr = y + row * inner;
    if (inner_st == 1) std::memcpy(yr, x + off, inner * sizeof(T));
    else for (size_t i = 0; i < inner; ++i) yr[i] = x[off + i * inner_st];
    for (size_t d = r - 1; d-- > 0;) {
      off += st[d];
      if (++idx[d] < out[d]) break;
      off -= st[d] * out[d];
      idx[d] = 0;
    }
  }
}

template <typename T>
void transpose_copy(const T* x, T* y, const Shape& in, const std::vector<size_t>& perm,
                    ThreadPool* pool) {
  const size_t r = in.size();
  const std::vector<size_t> ist = strides_of(in);
  size_t total = 1;
  for (int64_t d : in) total *= d;
  if (total == 0) return;
  // The output's dims (in output order) with their input strides, size-1 dims dropped and
  // neighbours that stay neighbours in the input merged: a channel shuffle
  // [N, g, C/g, H, W] -> [N, C/g, g, H, W] becomes rows of H * W contiguous values, an
  // NCHW -> NHWC one of [C, H * W] -> [H * W, C].
  Shape out;
  std::vector<size_t> st;
  for (size_t d = 0; d < r; ++d) {
    const size_t n = static_cast<size_t>(in[perm[d]]), stride = ist[perm[d]];
    if (n == 1) continue;
    if (!out.empty() && st.back() == stride * n) {
      out.back() *= static_cast<int64_t>(n);
      st.back() = stride;
      continue;
    }
    out.push_back(static_cast<int64_t>(n));
    st.push_back(stride);
  }
  if (out.empty()) {
    y[0] = x[0];
    return;
  }
  const size_t inner = static_cast<size_t>(out.back());
  parallel(pool, total / inner, std::max<size_t>(1, kCopyGrain / (inner * sizeof(T))),
           [&](size_t b, size_t e) { transpose_rows(x, y, out, st, b, e); });
}

KernelFactory transpose() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::vector<int64_t> perm_attr = node.attr_ints("perm");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const size_t r = x.rank();
      std::vector<size_t> perm(r);
      if (perm_attr.empty()) {
        for (size_t d = 0; d < r; ++d) perm[d] = r - 1 - d;
      } else {
        if (perm_attr.size() != r)
          c.fail("perm " + shape_str(perm_attr) + " does not match rank " + std::to_string(r));
        std::vector<bool> seen(r, false);
        for (size_t d = 0; d < r; ++d) {
          size_t p = norm_axis(perm_attr[d], r, c.node, "perm value");
          if (seen[p]) c.fail("perm " + shape_str(perm_attr) + " is not a permutation");
          seen[p] = true;
          perm[d] = p;
        }
      }
      Shape out(r);
      for (size_t d = 0; d < r; ++d) out[d] = x.shape[perm[d]];
      Tensor& y = c.output(0, x.dtype, out);
      dispatch_bytes(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        transpose_copy<T>(x.ptr<T>(), y.ptr<T>(), x.shape, perm, c.pool);
      });
    }));
  };
}

// ---- Concat / Split ---------------------------------------------------------------------

KernelFactory concat() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    if (!node.has("axis")) node.fail("axis is required");
    const int64_t axis = node.attr_i("axis", 0);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const size_t n = c.n_inputs();
      if (n == 0) c.fail("needs at least one input");
      const Tensor& x0 = c.in(0);
      const size_t ax = norm_axis(axis, x0.rank(), c.node);
      Shape out = x0.shape;
      out[ax] = 0;
      for (size_t i = 0; i < n; ++i) {
        const Tensor& xi = c.in(i);
        if (xi.dtype != x0.dtype) c.fail("inputs differ in element type");
        if (xi.rank() != x0.rank())
          c.fail("input " + std::to_string(i) + " " + shape_str(xi.shape) +
                 " differs in rank from input 0 " + shape_str(x0.shape));
        for (size_t d = 0; d < x0.rank(); ++d)
          if (d != ax && xi.shape[d] != x0.shape[d])
            c.fail("input " + std::to_string(i) + " " + shape_str(xi.shape) +
                   " does not match input 0 " + shape_str(x0.shape) + " on axis " +
                   std::to_string(d));
        out[ax] += xi.shape[ax];
      }
      Tensor& y = c.output(0, x0.dtype, out);
      size_t outer = 1, inner = dtype_size(x0.dtype);
      for (size_t d = 0; d < x0.rank(); ++d) {
        if (d < ax) outer *= out[d];
        else if (d > ax) inner *= out[d];
      }
      const size_t row = out[ax] * inner;
      // The memory plan puts inputs in their slots of Y where the chunks are contiguous
      // (plan.py in_place_views): those are not copied. An input inside Y anywhere else
      // (a plan made from shapes that turned out wrong) is staged first, so no copy reads
      // bytes an earlier copy overwrote.
      uint8_t* const y0 = static_cast<uint8_t*>(y.data);
      std::vector<std::vector<uint8_t>> staged(n);
      std::vector<const uint8_t*> src(n);
      size_t at = 0;
      for (size_t i = 0; i < n; ++i) {
        const Tensor& xi = c.in(i);
        const size_t chunk = xi.shape[ax] * inner;
        src[i] = static_cast<const uint8_t*>(xi.data);
        const bool inside = xi.nbytes() && src[i] < y0 + y.nbytes() && y0 < src[i] + xi.nbytes();
        if (inside && !(outer == 1 && src[i] == y0 + at)) {
          staged[i].assign(src[i], src[i] + xi.nbytes());
          src[i] = staged[i].data();
        }
        at += chunk;
      }
      at = 0;
      std::vector<CopyRun> runs;
      runs.reserve(n * outer);
      for (size_t i = 0; i < n; ++i) {
        const size_t chunk = c.in(i).shape[ax] * inner;
        uint8_t* dst = y0 + at;
        if (chunk && dst != src[i])
          for (size_t o = 0; o < outer; ++o) runs.push_back({dst + o * row, src[i] + o * chunk,
                                                              chunk});
        at += chunk;
      }
      copy_runs(c.pool, runs);
    }));
  };
}

KernelFactory split() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", 0);
    const std::vector<int64_t> split_attr = node.attr_ints("split");
    const int64_t num_outputs = node.attr_i("num_outputs", 0);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      const size_t nout = c.node.outputs.size();
      std::vector<int64_t> sizes = ints_from(c, 1, split_attr);
      const int64_t len = x.shape[ax];
      if (sizes.empty()) {
        const int64_t parts = num_outputs > 0 ? num_outputs : static_cast<int64_t>(nout);
        if (parts <= 0) c.fail("no outputs");
        const int64_t each = (len + parts - 1) / parts;
        if (num_outputs <= 0 && len % parts)
          c.fail("axis length " + std::to_string(len) + " does not split evenly into " +
                 std::to_string(parts));
        for (int64_t i = 0; i < parts; ++i)
          sizes.push_back(std::max<int64_t>(0, std::min(each, len - i * each)));
      }
      if (sizes.size() != nout)
        c.fail("split has " + std::to_string(sizes.size()) + " parts but the node has " +
               std::to_string(nout) + " outputs");
      int64_t total = 0;
      for (int64_t s : sizes) {
        if (s < 0) c.fail("split sizes must be >= 0");
        total += s;
      }
      if (total != len)
        c.fail("split sizes sum to " + std::to_string(total) + ", axis length is " +
               std::to_string(len));
      size_t outer = 1, inner = dtype_size(x.dtype);
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (d > ax) inner *= x.shape[d];
      }
      const size_t row = len * inner;
      // The memory plan puts outputs on their chunks of X where the chunks are contiguous
      // (plan.py in_place_views): those are not copied. An output inside X anywhere else (a
      // plan made from shapes that turned out wrong) would overwrite chunks still to be read,
      // so X is staged first.
      const uint8_t* x0 = static_cast<const uint8_t*>(x.data);
      std::vector<uint8_t*> dst(nout, nullptr);
      bool stage = false;
      size_t at = 0;
      for (size_t i = 0; i < nout; ++i) {
        Shape s = x.shape;
        s[ax] = sizes[i];
        if (c.wants_output(i)) {
          Tensor& y = c.output(i, x.dtype, s);
          dst[i] = static_cast<uint8_t*>(y.data);
          const bool inside = y.nbytes() && dst[i] < x0 + x.nbytes() && x0 < dst[i] + y.nbytes();
          stage = stage || (inside && !(outer == 1 && dst[i] == x0 + at));
        }
        at += sizes[i] * inner;
      }
      std::vector<uint8_t> staged;
      if (stage) {
        staged.assign(x0, x0 + x.nbytes());
        x0 = staged.data();
      }
      at = 0;
      std::vector<CopyRun> runs;
      runs.reserve(nout * outer);
      for (size_t i = 0; i < nout; ++i) {
        const size_t chunk = sizes[i] * inner;
        if (dst[i] && chunk && dst[i] != x0 + at)
          for (size_t o = 0; o < outer; ++o)
            runs.push_back({dst[i] + o * chunk, x0 + o * row + at, chunk});
        at += chunk;
      }
      copy_runs(c.pool, runs);
    }));
  };
}

// ---- Slice ------------------------------------------------------------------------------

KernelFactory slice() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::vector<int64_t> a_starts = node.attr_ints("starts");
    const std::vector<int64_t> a_ends = node.attr_ints("ends");
    const std::vector<int64_t> a_axes = node.attr_ints("axes");
    const bool legacy = node.opset > 0 && node.opset < 10;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const size_t r = x.rank();
      std::vector<int64_t> starts, ends, axes, steps;
      if (legacy) {
        starts = a_starts;
        ends = a_ends;
        axes = a_axes;
      } else {
        starts = read_ints(c.in(1), c.node, "starts");
        ends = read_ints(c.in(2), c.node, "ends");
        if (c.input(3)) axes = read_ints(*c.input(3), c.node, "axes");
        if (c.input(4)) steps = read_ints(*c.input(4), c.node, "steps");
      }
      if (starts.size() != ends.size()) c.fail("starts and ends differ in length");
      if (axes.empty()) {
        axes.resize(starts.size());
        std::iota(axes.begin(), axes.end(), 0);
      }
      if (steps.empty()) steps.assign(starts.size(), 1);
      if (axes.size() != starts.size() || steps.size() != starts.size())
        c.fail("starts, ends, axes and steps differ in length");
      std::vector<int64_t> st(r, 0), step(r, 1);
      Shape out = x.shape;
      std::vector<bool> seen(r, false);
      for (size_t i = 0; i < axes.size(); ++i) {
        const size_t d = norm_axis(axes[i], r, c.node);
        if (seen[d]) c.fail("axis repeated in Slice");
        seen[d] = true;
        const int64_t dim = x.shape[d];
        const int64_t s = steps[i];
        if (s == 0) c.fail("steps must not be 0");
        int64_t b = starts[i], e = ends[i];
        if (b < 0) b += dim;
        if (e < 0) e += dim;
        if (s > 0) {
          b = std::clamp<int64_t>(b, 0, dim);
          e = std::clamp<int64_t>(e, 0, dim);
          out[d] = e > b ? (e - b + s - 1) / s : 0;
        } else {
          b = std::clamp<int64_t>(b, 0, dim - 1);
          e = std::clamp<int64_t>(e, -1, dim - 1);
          out[d] = b > e ? (b - e + (-s) - 1) / (-s) : 0;
        }
        st[d] = b;
        step[d] = s;
      }
      Tensor& y = c.output(0, x.dtype, out);
      if (y.numel() == 0) return;
      const std::vector<size_t> xs = strides_of(x.shape);
      dispatch_bytes(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.ptr<T>();
        T* py = y.ptr<T>();
        if (r == 0) {
          py[0] = px[0];
          return;
        }
        const size_t inner = out[r - 1], rows = y.numel() / inner;
        const size_t grain = std::max<size_t>(1, kCopyGrain / (inner * sizeof(T)));
        parallel(c.pool, rows, grain, [&](size_t row0, size_t row1) {
          std::vector<int64_t> idx(r, 0);  // of output row row0
          for (size_t d = r - 1, rest = row0; d-- > 0;) {
            idx[d] = static_cast<int64_t>(rest % out[d]);
            rest /= out[d];
          }
          for (size_t row = row0; row < row1; ++row) {
            int64_t base = 0;
            for (size_t d = 0; d + 1 < r; ++d) base += (st[d] + idx[d] * step[d]) * xs[d];
            T* yr = py + row * inner;
            for (size_t i = 0; i < inner; ++i)
              yr[i] = px[base + (st[r - 1] + static_cast<int64_t>(i) * step[r - 1])];
            for (size_t d = r - 1; d-- > 0;) {
              if (++idx[d] < out[d]) break;
              idx[d] = 0;
            }
          }
        });
      });
    }));
  };
}

// ---- Gather -----------------------------------------------------------------------------

KernelFactory gather() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", 0);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& ind = c.in(1);
      if (x.rank() == 0) c.fail("data must have rank >= 1");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      std::vector<int64_t> idx = read_ints(ind, c.node, "indices");
      const int64_t dim = x.shape[ax];
      for (int64_t& i : idx) {
        if (i < -dim || i >= dim)
          c.fail("index " + std::to_string(i) + " is out of range for axis " +
                 std::to_string(ax) + " of size " + std::to_string(dim) + " (data " +
                 shape_str(x.shape) + ")");
        if (i < 0) i += dim;
      }
      Shape out(x.shape.begin(), x.shape.begin() + ax);
      out.insert(out.end(), ind.shape.begin(), ind.shape.end());
      out.insert(out.end(), x.shape.begin() + ax + 1, x.shape.end());
      Tensor& y = c.output(0, x.dtype, out);
      size_t outer = 1, inner = dtype_size(x.dtype);
      for (size_t d = 0; d < x.rank(); ++d) {
        if (d < ax) outer *= x.shape[d];
        else if (d > ax) inner *= x.shape[d];
      }
      const uint8_t* px = static_cast<const uint8_t*>(x.data);
      uint8_t* py = static_cast<uint8_t*>(y.data);
      const size_t n = idx.size();
      if (inner == 0) return;
      for (size_t o = 0; o < outer; ++o)
        for (size_t k = 0; k < n; ++k)
          std::memcpy(py + (o * n + k) * inner, px + (o * dim + idx[k]) * inner, inner);
    }));
  };
}

KernelFactory gather_elements() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t axis = node.attr_i("axis", 0);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const Tensor& ind = c.in(1);
      if (ind.rank() != x.rank()) c.fail("indices must have the rank of data");
      const size_t ax = norm_axis(axis, x.rank(), c.node);
      for (size_t d = 0; d < x.rank(); ++d)
        if (d != ax && ind.shape[d] > x.shape[d]) c.fail("indices exceed data on a dim");
      std::vector<int64_t> idx = read_ints(ind, c.node, "indices");
      Tensor& y = c.output(0, x.dtype, ind.shape);
      const std::vector<size_t> xs = strides_of(x.shape);
      const int64_t dim = x.shape[ax];
      const size_t r = x.rank();
      std::vector<int64_t> pos(r, 0);
      const size_t es = dtype_size(x.dtype);
      for (size_t o = 0; o < idx.size(); ++o) {
        int64_t i = idx[o];
        if (i < -dim || i >= dim) c.fail("index " + std::to_string(i) + " is out of range");
        if (i < 0) i += dim;
        size_t off = 0;
        for (size_t d = 0; d < r; ++d) off += (d == ax ? i : pos[d]) * xs[d];
        std::memcpy(static_cast<uint8_t*>(y.data) + o * es,
                    static_cast<const uint8_t*>(x.data) + off * es, es);
        for (size_t d = r; d-- > 0;) {
          if (++pos[d] < ind.shape[d]) break;
          pos[d] = 0;
        }
      }
    }));
  };
}

// ---- Expand / Tile / Pad ----------------------------------------------------------------

void broadcast_copy(OpContext& c, const Tensor& x, const Shape& out) {
  Tensor& y = c.output(0, x.dtype, out);
  const std::vector<size_t> st[1] = {broadcast_strides(x.shape, out)};
  dispatch_bytes(x.dtype, c.node, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<T>();
    T* py = y.ptr<T>();
    for_each_broadcast<1>(out, st, [&](size_t o, size_t* offs, size_t n, size_t* ist) {
      for (size_t i = 0; i < n; ++i) py[o + i] = px[offs[0] + i * ist[0]];
    });
  });
}

void expand(OpContext& c) {
  const Tensor& x = c.in(0);
  std::vector<int64_t> shape = read_ints(c.in(1), c.node, "shape");
  for (int64_t d : shape) if (d < 0) c.fail("shape " + shape_str(shape) + " has a negative dim");
  broadcast_copy(c, x, broadcast_shapes(x.shape, shape, c.node));
}

void tile(OpContext& c) {
  const Tensor& x = c.in(0);
  std::vector<int64_t> reps = read_ints(c.in(1), c.node, "repeats");
  if (reps.size() != x.rank())
    c.fail("repeats has " + std::to_string(reps.size()) + " values, input rank is " +
           std::to_string(x.rank()));
  Shape out(x.rank());
  for (size_t d = 0; d < x.rank(); ++d) {
    if (reps[d] < 0) c.fail("repeats must be >= 0");
    if (x.shape[d] && reps[d] > (int64_t(1) << 40) / x.shape[d]) c.fail("repeats too large");
    out[d] = x.shape[d] * reps[d];
  }
  Tensor& y = c.output(0, x.dtype, out);
  if (y.numel() == 0) return;
  const std::vector<size_t> xs = strides_of(x.shape);
  const size_t r = x.rank(), es = dtype_size(x.dtype);
  std::vector<int64_t> idx(r, 0);
  for (size_t o = 0; o < y.numel(); ++o) {
    size_t off = 0;
    for (size_t d = 0; d < r; ++d) off += (idx[d] % x.shape[d]) * xs[d];
    std::memcpy(static_cast<uint8_t*>(y.data) + o * es,
                static_cast<const uint8_t*>(x.data) + off * es, es);
    for (size_t d = r; d-- > 0;) {
      if (++idx[d] < out[d]) break;
      idx[d] = 0;
    }
  }
}

KernelFactory pad() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::string mode = node.attr_s("mode", "constant");
    if (mode != "constant" && mode != "reflect" && mode != "edge" && mode != "wrap")
      node.fail("mode '" + mode + "' is not one of constant, reflect, edge, wrap");
    const std::vector<int64_t> pads_attr = node.attr_ints("pads");
    const float value_attr = node.attr_f("value", 0.0f);
    const bool legacy = node.opset > 0 && node.opset < 11;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const size_t r = x.rank();
      std::vector<int64_t> pads = legacy ? pads_attr : read_ints(c.in(1), c.node, "pads");
      std::vector<int64_t> axes;
      if (!legacy && c.input(3)) {
        for (int64_t a : read_ints(*c.input(3), c.node, "axes"))
          axes.push_back(static_cast<int64_t>(norm_axis(a, r, c.node)));
      } else {
        for (size_t d = 0; d < r; ++d) axes.push_back(static_cast<int64_t>(d));
      }
      if (pads.size() != 2 * axes.size())
        c.fail("pads has " + std::to_string(pads.size()) + " values, expected " +
               std::to_string(2 * axes.size()));
      std::vector<int64_t> pb(r, 0), pe(r, 0);
      for (size_t i = 0; i < axes.size(); ++i) {
        pb[axes[i]] = pads[i];
        pe[axes[i]] = pads[i + axes.size()];
      }
      Shape out(r);
      for (size_t d = 0; d < r; ++d) {
        out[d] = x.shape[d] + pb[d] + pe[d];
        if (out[d] < 0) c.fail("negative pads remove more than the whole axis");
        if (mode != "constant" && x.shape[d] == 0 && out[d] > 0)
          c.fail("cannot pad an empty axis in " + mode + " mode");
        if (mode == "reflect" && (pb[d] >= x.shape[d] || pe[d] >= x.shape[d]) &&
            (pb[d] > 0 || pe[d] > 0) && x.shape[d] < 2)
          c.fail("reflect padding needs an axis of size >= 2");
      }
      Tensor& y = c.output(0, x.dtype, out);
      if (y.numel() == 0) return;
      const std::vector<size_t> xs = strides_of(x.shape);
      dispatch_numeric(x.dtype == DType::boolean ? DType::u8 : x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        T cval = static_cast<T>(value_attr);
        if (!legacy && c.input(2) && c.input(2)->numel() > 0) {
          if (c.input(2)->dtype != x.dtype) c.fail("constant_value must have the input's type");
          cval = c.input(2)->ptr<T>()[0];
        }
        const T* px = x.ptr<T>();
        T* py = y.ptr<T>();
        // The input index an output index i (pads removed) reads along an axis of n, or -1
        // for the constant.
        enum { kConstant, kEdge, kWrap, kReflect };
        const int how = mode == "constant" ? kConstant
                        : mode == "edge"   ? kEdge
                        : mode == "wrap"   ? kWrap
                                           : kReflect;
        auto source = [&](int64_t i, int64_t n) -> int64_t {
          if (i >= 0 && i < n) return i;
          if (how == kConstant) return -1;
          if (how == kEdge) return i < 0 ? 0 : n - 1;
          if (how == kWrap) return ((i % n) + n) % n;
          if (i < 0 && -i < n) return -i;  // one reflection (pads shorter than the axis)
          if (i >= n && i < 2 * n - 1) return 2 * (n - 1) - i;
          const int64_t period = 2 * (n - 1);
          i = period ? ((i % period) + period) % period : 0;
          return i >= n ? period - i : i;
        };
        // Row by row along the last axis: the rows' inside parts are one copy each, only the
        // padding is mapped element by element (an STFT front end's reflect pad of [64, 576]
        // to [64, 832] took 460 us element by element).
        if (r == 0) {  // a scalar: nothing to pad
          py[0] = px[0];
          return;
        }
        const size_t last = r - 1;
        const int64_t n = x.shape[last], len = out[last], lead = pb[last];
        const int64_t in0 = std::clamp<int64_t>(lead, 0, len);
        const int64_t in1 = std::clamp<int64_t>(lead + n, in0, len);
        const size_t rows = y.numel() / static_cast<size_t>(len);
        std::vector<int64_t> idx(r, 0);
        for (size_t row = 0; row < rows; ++row) {
          T* dst = py + row * len;
          size_t off = 0;
          bool outside = false;
          for (size_t d = 0; d < last && !outside; ++d) {
            const int64_t i = source(idx[d] - pb[d], x.shape[d]);
            if (i < 0) outside = true;
            else off += static_cast<size_t>(i) * xs[d];
          }
          if (outside) {
            std::fill(dst, dst + len, cval);
          } else {
            const T* src = px + off;
            for (int64_t j = 0; j < in0; ++j) {
              const int64_t i = source(j - lead, n);
              dst[j] = i < 0 ? cval : src[i];
            }
            if (in1 > in0) std::memcpy(dst + in0, src + (in0 - lead), (in1 - in0) * sizeof(T));
            for (int64_t j = in1; j < len; ++j) {
              const int64_t i = source(j - lead, n);
              dst[j] = i < 0 ? cval : src[i];
            }
          }
          for (size_t d = last; d-- > 0;) {
            if (++idx[d] < out[d]) break;
            idx[d] = 0;
          }
        }
      });
    }));
  };
}

// ---- Shape, Size, ConstantOfShape, Range ------------------------------------------------

KernelFactory shape_op() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t start = node.attr_i("start", 0);
    const bool has_end = node.has("end");
    const int64_t end = node.attr_i("end", 0);
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const int64_t r = static_cast<int64_t>(x.rank());
      int64_t b = start < 0 ? start + r : start;
      int64_t e = has_end ? (end < 0 ? end + r : end) : r;
      b = std::clamp<int64_t>(b, 0, r);
      e = std::clamp<int64_t>(e, 0, r);
      const int64_t n = std::max<int64_t>(0, e - b);
      Tensor& y = c.output(0, DType::i64, {n});
      for (int64_t i = 0; i < n; ++i) y.ptr<int64_t>()[i] = x.shape[b + i];
    }));
  };
}

void size_op(OpContext& c) {
  const Tensor& x = c.in(0);
  Tensor& y = c.output(0, DType::i64, {});
  y.ptr<int64_t>()[0] = static_cast<int64_t>(x.numel());
}

KernelFactory constant_of_shape() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    Tensor value;
    if (const Tensor* v = node.attr_tensor("value")) {
      if (v->numel() != 1) node.fail("value must hold exactly one element");
      value = *v;
    } else {
      value = make_heap_tensor(DType::f32, {1});
      value.ptr<float>()[0] = 0.0f;
    }
    return std::unique_ptr<Kernel>(new FnKernel([value](OpContext& c) {
      std::vector<int64_t> shape = read_ints(c.in(0), c.node, "shape");
      for (int64_t d : shape)
        if (d < 0) c.fail("shape " + shape_str(shape) + " has a negative dim");
      Tensor& y = c.output(0, value.dtype, shape);
      const size_t es = dtype_size(value.dtype);
      uint8_t* py = static_cast<uint8_t*>(y.data);
      bool zero = true;
      for (size_t i = 0; i < es; ++i) zero = zero && static_cast<const uint8_t*>(value.data)[i] == 0;
      if (zero) {
        std::memset(py, 0, y.nbytes());
        return;
      }
      for (size_t i = 0, n = y.numel(); i < n; ++i) std::memcpy(py + i * es, value.data, es);
    }));
  };
}

void range_op(OpContext& c) {
  const Tensor& s = c.in(0);
  const Tensor& l = c.in(1);
  const Tensor& d = c.in(2);
  if (s.dtype != l.dtype || s.dtype != d.dtype) c.fail("start, limit and delta differ in type");
  if (s.numel() != 1 || l.numel() != 1 || d.numel() != 1) c.fail("inputs must be scalars");
  dispatch_numeric(s.dtype, c.node, [&](auto tag) {
    using T = decltype(tag);
    const T start = s.ptr<T>()[0], limit = l.ptr<T>()[0], delta = d.ptr<T>()[0];
    if (delta == 0) c.fail("delta must not be 0");
    const double count_d = std::ceil((static_cast<double>(limit) - static_cast<double>(start)) /
                                     static_cast<double>(delta));
    if (!(count_d < 9.0e18)) c.fail("range is too long");
    const int64_t count = std::max<int64_t>(0, static_cast<int64_t>(count_d));
    Tensor& y = c.output(0, s.dtype, {count});
    T* py = y.ptr<T>();
    for (int64_t i = 0; i < count; ++i) py[i] = static_cast<T>(start + static_cast<T>(i) * delta);
  });
}

// ---- DepthToSpace / SpaceToDepth --------------------------------------------------------

KernelFactory depth_space(bool to_space) {
  return [to_space](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t bs = node.attr_i("blocksize", 0);
    if (bs < 1) node.fail("blocksize must be >= 1");
    const std::string mode = node.attr_s("mode", "DCR");
    if (mode != "DCR" && mode != "CRD") node.fail("mode must be DCR or CRD");
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.rank() != 4) c.fail("input must be 4-D");
      const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
      Shape tmp_shape;
      std::vector<size_t> perm;
      Shape out;
      if (to_space) {
        if (C % (bs * bs)) c.fail("channels not divisible by blocksize^2");
        if (mode == "DCR") {
          tmp_shape = {N, bs, bs, C / (bs * bs), H, W};
          perm = {0, 3, 4, 1, 5, 2};
        } else {
          tmp_shape = {N, C / (bs * bs), bs, bs, H, W};
          perm = {0, 1, 4, 2, 5, 3};
        }
        out = {N, C / (bs * bs), H * bs, W * bs};
      } else {
        if (H % bs || W % bs) c.fail("spatial dims not divisible by blocksize");
        tmp_shape = {N, C, H / bs, bs, W / bs, bs};
        if (mode == "DCR") perm = {0, 3, 5, 1, 2, 4};
        else perm = {0, 1, 3, 5, 2, 4};
        out = {N, C * bs * bs, H / bs, W / bs};
      }
      Tensor& y = c.output(0, x.dtype, out);
      dispatch_bytes(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        transpose_copy<T>(x.ptr<T>(), y.ptr<T>(), tmp_shape, perm, c.pool);
      });
    }));
  };
}

KILN_REGISTER_OP("", "Reshape", reshape());
KILN_REGISTER_OP("", "Flatten", flatten());
KILN_REGISTER_OP("", "Squeeze", squeeze());
KILN_REGISTER_OP("", "Unsqueeze", unsqueeze());
KILN_REGISTER_OP("", "Identity", simple_kernel(identity));
KILN_REGISTER_OP("", "Dropout", dropout());
KILN_REGISTER_OP("", "Transpose", transpose());
KILN_REGISTER_OP("", "Concat", concat());
KILN_REGISTER_OP("", "Split", split());
KILN_REGISTER_OP("", "Slice", slice());
KILN_REGISTER_OP("", "Gather", gather());
KILN_REGISTER_OP("", "GatherElements", gather_elements());
KILN_REGISTER_OP("", "Expand", simple_kernel(expand));
KILN_REGISTER_OP("", "Tile", simple_kernel(tile));
KILN_REGISTER_OP("", "Pad", pad());
KILN_REGISTER_OP("", "Shape", shape_op());
KILN_REGISTER_OP("", "Size", simple_kernel(size_op));
KILN_REGISTER_OP("", "ConstantOfShape", constant_of_shape());
KILN_REGISTER_OP("", "Range", simple_kernel(range_op));
KILN_REGISTER_OP("", "DepthToSpace", depth_space(true));
KILN_REGISTER_OP("", "SpaceToDepth", depth_space(false));

}  // namespace
}  // namespace kiln::ops
