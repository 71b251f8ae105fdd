// Shared by the ai.onnx.ml operators (ml.cpp, tree_ensemble.cpp): attribute readers, the
// input types they take and onnxruntime's post transforms, which they reproduce (PROBIT is
// sqrt(2) * Winitzki's erfinv with a = 0.147, the approximation onnxruntime uses).
#pragma once
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ops/common.h"

namespace kiln::ops::ml {

// ---- attributes --------------------------------------------------------------------------

// A FLOATS attribute as doubles; an absent or empty one is empty (an empty Python list
// reaches C++ as ints).
inline std::vector<double> floats_of(const NodeDesc& n, const std::string& key) {
  auto it = n.attrs.find(key);
  if (it == n.attrs.end()) return {};
  const Attr& a = it->second;
  if (a.kind == Attr::Kind::floats) return a.floats;
  if (a.kind == Attr::Kind::ints && a.ints.empty()) return {};
  if (a.kind == Attr::Kind::f) return {a.f};
  n.fail("attribute '" + key + "' must be floats");
}

// `key` (FLOATS) or `key`_as_tensor (a float or double tensor), as doubles; both set is an error.
inline std::vector<double> floats_or_tensor(const NodeDesc& n, const std::string& key) {
  std::vector<double> v = floats_of(n, key);
  const Tensor* t = n.attr_tensor(key + "_as_tensor");
  if (t == nullptr) return v;
  if (!v.empty()) n.fail("both '" + key + "' and '" + key + "_as_tensor' are set");
  const size_t count = t->numel();
  v.resize(count);
  if (t->dtype == DType::f64)
    for (size_t i = 0; i < count; ++i) v[i] = t->ptr<double>()[i];
  else if (t->dtype == DType::f32)
    for (size_t i = 0; i < count; ++i) v[i] = t->ptr<float>()[i];
  else
    n.fail("attribute '" + key + "_as_tensor' must be a float or double tensor");
  return v;
}

// Calls fn(T{}) for the input types the ml operators take: float, double, int64, int32.
template <typename Fn>
void dispatch_ml(DType dt, const NodeDesc& node, Fn&& fn) {
  if (!dispatch_wide(dt, fn))
    node.fail(std::string("element type ") + dtype_name(dt) +
              " (expected float32, float64, int64 or int32)");
}

// Rows and features of a classic [N, C] input: a 1-D input is one row; more dims than 2 are
// refused where `max_rank` says so.
struct RowsCols {
  size_t rows, cols;
};

inline RowsCols rows_cols(const Tensor& x, const NodeDesc& node, size_t max_rank) {
  if (x.rank() == 0) node.fail("input X is a scalar; expected [N, C] or [C]");
  if (x.rank() > max_rank)
    node.fail("input X has shape " + shape_str(x.shape) + "; expected [N, C] or [C]");
  if (x.rank() == 1) return {1, static_cast<size_t>(x.shape[0])};
  return {static_cast<size_t>(x.shape[0]), static_cast<size_t>(x.shape[1])};
}

// ---- post transforms (onnxruntime's formulas) --------------------------------------------

enum class Post { none, logistic, softmax, softmax_zero, probit };

inline Post post_of(const NodeDesc& n) {
  const std::string p = n.attr_s("post_transform", "NONE");
  if (p == "NONE") return Post::none;
  if (p == "LOGISTIC") return Post::logistic;
  if (p == "SOFTMAX") return Post::softmax;
  if (p == "SOFTMAX_ZERO") return Post::softmax_zero;
  if (p == "PROBIT") return Post::probit;
  n.fail("post_transform '" + p + "' is not NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO or PROBIT");
}

inline float logistic(float v) {
  const float e = 1.0f / (1.0f + std::exp(-std::abs(v)));
  return v < 0 ? 1.0f - e : e;
}

// erfinv by Winitzki's closed form, a = 0.147, written as the reference writes it (PROBIT's
// scores are that approximation, and near 0.5 its cancellation shows any other rounding).
inline float erf_inv(float x) {
  const float sign = x < 0 ? -1.0f : 1.0f;
  const float ln = std::log((1 - x) * (1 + x));
  const float half = 2 / (3.14159f * 0.147f) + 0.5f * ln;
  const float ln_a = 1 / (0.147f) * ln;
  const float root = -half + std::sqrt(half * half - ln_a);
  return sign * std::sqrt(root);
}

inline float probit(float v) { return 1.41421356f * erf_inv(2 * v - 1); }

inline void softmax_row(float* s, size_t n, bool skip_zero) {
  float top = -std::numeric_limits<float>::max();
  for (size_t i = 0; i < n; ++i) top = s[i] > top ? s[i] : top;
  const float scale_zero = std::exp(-top);
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    if (skip_zero && !(s[i] > 0.0000001f || s[i] < -0.0000001f)) {
      s[i] *= scale_zero;  // a zero score stays zero
    } else {
      s[i] = std::exp(s[i] - top);
      sum += s[i];
    }
  }
  for (size_t i = 0; i < n; ++i) s[i] /= sum;
}

// A row of two or more scores transformed in place.
inline void transform_row(float* s, size_t n, Post post) {
  switch (post) {
    case Post::none: return;
    case Post::logistic:
      for (size_t i = 0; i < n; ++i) s[i] = logistic(s[i]);
      return;
    case Post::probit:
      for (size_t i = 0; i < n; ++i) s[i] = probit(s[i]);
      return;
    case Post::softmax: softmax_row(s, n, false); return;
    case Post::softmax_zero: softmax_row(s, n, true); return;
  }
}

}  // namespace kiln::ops::ml
