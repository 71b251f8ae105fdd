// Helpers shared by the operator files: dtype dispatch, axes, broadcasting, int inputs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "executor.h"
#include "threadpool.h"

namespace kiln::ops {

// Calls fn(T{}) for float, double, int64 or int32 (the types every numeric op family takes);
// false, calling nothing, for another type.
template <typename Fn>
bool dispatch_wide(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::f32: fn(float{}); return true;
    case DType::f64: fn(double{}); return true;
    case DType::i64: fn(int64_t{}); return true;
    case DType::i32: fn(int32_t{}); return true;
    default: return false;
  }
}

// Calls fn.template operator()<T>() for the C++ type of `dt` among the listed families.
template <typename Fn>
void dispatch_numeric(DType dt, const NodeDesc& node, Fn&& fn) {
  if (dispatch_wide(dt, fn)) return;
  switch (dt) {
    case DType::i8: fn(int8_t{}); return;
    case DType::u8: fn(uint8_t{}); return;
    case DType::i16: fn(int16_t{}); return;
    case DType::u16: fn(uint16_t{}); return;
    case DType::u32: fn(uint32_t{}); return;
    case DType::u64: fn(uint64_t{}); return;
    default: node.fail(std::string("unsupported element type ") + dtype_name(dt));
  }
}

// Reductions over a contiguous float row. A plain `s += x[i]` is one serial chain of
// dependent adds (a few cycles each) and the compiler may not reorder it; these keep 16
// independent float lanes over blocks of up to 256 elements (a loop the compiler vectorizes)
// and add the block totals in double, so a long row (a 160x160 map) keeps double-like
// accuracy. Only the last n % 16 elements are added one by one: rows shorter than a block
// (attention rows of 128) stay on the lanes too.
template <typename Term>
inline double blocked_sum_f32(const float* x, size_t n, Term term) {
  constexpr size_t kLanes = 16, kBlock = 256;
  double total = 0.0;
  size_t i = 0;
  while (i + kLanes <= n) {
    const size_t end = i + std::min(kBlock, (n - i) / kLanes * kLanes);
    float acc[kLanes] = {};
    for (; i < end; i += kLanes)
      for (size_t l = 0; l < kLanes; ++l) acc[l] += term(x[i + l]);
    float block = 0.0f;
    for (size_t l = 0; l < kLanes; ++l) block += acc[l];
    total += block;
  }
  for (; i < n; ++i) total += double(term(x[i]));
  return total;
}

inline double sum_f32(const float* x, size_t n) {
  return blocked_sum_f32(x, n, [](float v) { return v; });
}

// sum over i of (x[i] - mean)^2.
inline double sum_sq_dev_f32(const float* x, size_t n, float mean) {
  return blocked_sum_f32(x, n, [mean](float v) {
    const float d = v - mean;
    return d * d;
  });
}

// max (kMax) or min of x[at(i)] for i < n, as numpy and the ONNX spec: a NaN anywhere gives NaN;
// n == 0 gives the identity (-inf / +inf, or an integer type's lowest / max). Per-lane NaN flags
// keep the loop free of a serial dependency, so the contiguous case vectorizes like sum_f32.
template <bool kMax, typename T, typename At>
inline T extreme_over(const T* x, size_t n, At at) {
  constexpr size_t kLanes = 16;
  T start;
  if constexpr (std::is_floating_point_v<T>)
    start = kMax ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
  else
    start = kMax ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
  auto better = [](T a, T b) { return kMax ? (a < b ? b : a) : (b < a ? b : a); };
  T acc[kLanes];
  int32_t nan[kLanes] = {};
  for (size_t l = 0; l < kLanes; ++l) acc[l] = start;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t l = 0; l < kLanes; ++l) {
      const T v = x[at(i + l)];
      nan[l] |= v != v;
      acc[l] = better(acc[l], v);
    }
  T m = start;
  bool any_nan = false;
  for (size_t l = 0; l < kLanes; ++l) {
    m = better(m, acc[l]);
    any_nan |= nan[l] != 0;
  }
  for (; i < n; ++i) {
    const T v = x[at(i)];
    any_nan |= v != v;
    m = better(m, v);
  }
  if constexpr (std::is_floating_point_v<T>)
    if (any_nan) return std::numeric_limits<T>::quiet_NaN();
  return m;
}

template <bool kMax>
inline float extreme_f32(const float* x, size_t n) {
  return extreme_over<kMax>(x, n, [](size_t i) { return i; });
}

inline float max_f32(const float* x, size_t n) { return extreme_f32<true>(x, n); }
inline float min_f32(const float* x, size_t n) { return extreme_f32<false>(x, n); }

template <typename Fn>
void dispatch_float(DType dt, const NodeDesc& node, Fn&& fn) {
  switch (dt) {
    case DType::f32: fn(float{}); return;
    case DType::f64: fn(double{}); return;
    default: node.fail(std::string("unsupported element type ") + dtype_name(dt) +
                       " (expected float32 or float64)");
  }
}

// Any dtype, by element size only (for data movement ops).
template <typename Fn>
void dispatch_bytes(DType dt, const NodeDesc& node, Fn&& fn) {
  switch (dtype_size(dt)) {
    case 1: fn(uint8_t{}); return;
    case 2: fn(uint16_t{}); return;
    case 4: fn(uint32_t{}); return;
    case 8: fn(uint64_t{}); return;
    default: node.fail("unsupported element type");
  }
}

// Normalizes a possibly negative axis into [0, rank); fails naming the node.
inline size_t norm_axis(int64_t axis, size_t rank, const NodeDesc& node,
                        const char* what = "axis") {
  int64_t r = static_cast<int64_t>(rank);
  if (axis < -r || axis >= r)
    node.fail(std::string(what) + " " + std::to_string(axis) + " is out of range for rank " +
              std::to_string(rank));
  return static_cast<size_t>(axis < 0 ? axis + r : axis);
}

// Whether a layout attribute the lowering sets (kiln_layout_in / kiln_layout_out on the int8
// ops and FusedConv, kiln_layout_residual on FusedConv) says NHWC; "NCHW" unless said.
inline bool layout_of(const NodeDesc& node, const char* key) {
  const std::string v = node.attr_s(key, "NCHW");
  if (v != "NCHW" && v != "NHWC") node.fail(std::string(key) + " must be NCHW or NHWC");
  return v == "NHWC";
}

// The auto_pad attribute of Conv / pooling nodes, checked.
inline std::string read_auto_pad(const NodeDesc& node) {
  std::string pad = node.attr_s("auto_pad", "NOTSET");
  if (pad != "NOTSET" && pad != "SAME_UPPER" && pad != "SAME_LOWER" && pad != "VALID")
    node.fail("auto_pad '" + pad + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  return pad;
}

// Padding before and after spatial dim d (of nd): SAME_UPPER / SAME_LOWER computed so the
// output has ceil(in / stride) positions (the odd one at the end for UPPER), NOTSET read from
// pads (begin d, end d + nd), VALID none. span is the dilated kernel extent.
inline void spatial_pads(const std::string& auto_pad, const std::vector<int64_t>& pads, size_t d,
                         size_t nd, int64_t in, int64_t stride, int64_t span, int64_t& begin,
                         int64_t& end) {
  begin = end = 0;
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    const int64_t out = (in + stride - 1) / stride;
    const int64_t total = std::max<int64_t>(0, (out - 1) * stride + span - in);
    begin = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    end = total - begin;
  } else if (auto_pad == "NOTSET" && !pads.empty()) {
    begin = pads[d];
    end = pads[d + nd];
  }
}

// Reads an int32/int64 tensor as int64 values.
inline std::vector<int64_t> read_ints(const Tensor& t, const NodeDesc& node, const char* what) {
  std::vector<int64_t> out(t.numel());
  if (t.dtype == DType::i64) {
    if (!out.empty()) std::memcpy(out.data(), t.data, out.size() * 8);
  } else if (t.dtype == DType::i32) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = t.ptr<int32_t>()[i];
  } else {
    node.fail(std::string(what) + " must be int64 or int32, got " + dtype_name(t.dtype));
  }
  return out;
}

// Numpy broadcast of two shapes; fails naming the node when they are incompatible.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, const NodeDesc& node) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == db || db == 1) out[i] = da;
    else if (da == 1) out[i] = db;
    else node.fail("shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast");
  }
  return out;
}

// Strides (in elements) of `in` broadcast to `out` (0 on broadcast dims), aligned right.
inline std::vector<size_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<size_t> st(out.size(), 0);
  std::vector<size_t> own = strides_of(in);
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) st[off + i] = in[i] == 1 ? 0 : own[i];
  return st;
}

// Visits every output index of `shape` in row-major order, tracking up to 3 input offsets.
// fn(out_index, off0, off1, off2) is called once per element of the innermost run.
template <size_t N, typename Fn>
void for_each_broadcast(const Shape& shape, const std::vector<size_t> (&strides)[N], Fn&& fn) {
  const size_t rank = shape.size();
  size_t total = 1;
  for (int64_t d : shape) total *= static_cast<size_t>(d);
  if (total == 0) return;
  if (rank == 0) {
    size_t offs[N] = {};
    size_t st0[N] = {};
    fn(size_t(0), offs, size_t(1), st0);
    return;
  }
  std::vector<size_t> idx(rank, 0);
  size_t offs[N] = {};
  const size_t inner = static_cast<size_t>(shape[rank - 1]);
  size_t inner_st[N];
  for (size_t k = 0; k < N; ++k) inner_st[k] = strides[k][rank - 1];
  for (size_t o = 0; o < total; o += inner) {
    // fn handles one innermost row: offsets of its first element + per-input inner stride.
    size_t row_offs[N];
    for (size_t k = 0; k < N; ++k) row_offs[k] = offs[k];
    fn(o, row_offs, inner, inner_st);
    for (size_t d = rank - 1; d-- > 0;) {
      ++idx[d];
      for (size_t k = 0; k < N; ++k) offs[k] += strides[k][d];
      if (idx[d] < static_cast<size_t>(shape[d])) break;
      for (size_t k = 0; k < N; ++k) offs[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
}

// Splits [0, n) across the pool, or runs inline when there is no pool or too little work:
// `work` is the whole call's cost estimate (ThreadPool::parallel_for), 0 when unknown.
template <typename Fn>
void parallel(ThreadPool* pool, size_t n, size_t grain, Fn&& fn, size_t work = 0) {
  if (!pool || pool->size() <= 1 || n <= grain || pool->chunks_for(n, grain, work) <= 1) {
    if (n) fn(size_t(0), n);
    return;
  }
  pool->parallel_for(n, grain, fn, work);
}

}  // namespace kiln::ops
