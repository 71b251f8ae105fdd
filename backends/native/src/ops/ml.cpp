// ai.onnx.ml tensor operators as scikit-learn pipelines exported by skl2onnx use them: Scaler,
// ArrayFeatureExtractor, Normalizer, Binarizer, Imputer, LinearRegressor, LinearClassifier
// (the tree ensembles are in tree_ensemble.cpp).
//
// The reference is onnxruntime, including where it departs from the letter of the spec: the
// feature count of a rank-2+ input is dims[1]; inputs that are not float32 are converted to
// float; a one-score LinearClassifier with two labels writes [1 - s, s]. Labels are int64
// only: string labels are refused by support.py and run on the fallback engine.
#include "ops/ml_common.h"

namespace kiln::ops {
namespace {

using namespace ml;

// ---- Scaler, Normalizer, Binarizer, Imputer ------------------------------------------------

// The arithmetic type onnxruntime computes `x - offset` in: double for double, else float.
template <typename T>
using Calc = std::conditional_t<std::is_same_v<T, double>, double, float>;

KernelFactory scaler() {
  return [](const NodeDesc& n, const BuildContext&) -> std::unique_ptr<Kernel> {
    std::vector<float> scale = n.attr_floats("scale", {}), offset = n.attr_floats("offset", {});
    if (scale.empty()) n.fail("the scale attribute is empty");
    if (scale.size() != offset.size())
      n.fail("scale has " + std::to_string(scale.size()) + " values and offset " +
             std::to_string(offset.size()) + "; they must have the same length");
    return std::make_unique<FnKernel>([scale, offset](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.rank() == 0) c.fail("input X is a scalar");
      const size_t stride = static_cast<size_t>(x.rank() == 1 ? x.shape[0] : x.shape[1]);
      const bool per_feature = scale.size() == stride;
      if (!per_feature && scale.size() != 1)
        c.fail("scale and offset have " + std::to_string(scale.size()) +
               " values; the input has " + std::to_string(stride) + " features (or give 1)");
      Tensor& y = c.output(0, DType::f32, x.shape);
      if (x.numel() == 0) return;  // (and so stride > 0 below)
      dispatch_ml(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        using C = Calc<T>;
        const T* px = x.ptr<T>();
        float* py = y.ptr<float>();
        // element i takes feature i % stride: walk runs of `stride` (no division per element)
        const size_t count = x.numel();
        for (size_t at = 0; at < count; at += stride) {
          const size_t run = std::min(stride, count - at);
          for (size_t k = 0; k < run; ++k) {
            const size_t f = per_feature ? k : 0;
            const C shifted = static_cast<C>(px[at + k]) - static_cast<C>(offset[f]);
            py[at + k] = static_cast<float>(shifted * static_cast<C>(scale[f]));
          }
        }
      });
    });
  };
}

KernelFactory normalizer() {
  return [](const NodeDesc& n, const BuildContext&) -> std::unique_ptr<Kernel> {
    const std::string norm = n.attr_s("norm", "MAX");
    if (norm != "MAX" && norm != "L1" && norm != "L2")
      n.fail("norm '" + norm + "' is not MAX, L1 or L2");
    const int kind = norm == "MAX" ? 0 : norm == "L1" ? 1 : 2;
    return std::make_unique<FnKernel>([kind](OpContext& c) {
      const Tensor& x = c.in(0);
      const RowsCols rc = rows_cols(x, c.node, 2);
      Tensor& y = c.output(0, DType::f32, x.shape);
      dispatch_ml(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        for (size_t r = 0; r < rc.rows; ++r) {
          const T* in = x.ptr<T>() + r * rc.cols;
          float* out = y.ptr<float>() + r * rc.cols;
          float total;
          if (kind == 0) {
            total = std::numeric_limits<float>::lowest();
            for (size_t i = 0; i < rc.cols; ++i) total = std::max(total, static_cast<float>(in[i]));
          } else if (kind == 1) {
            total = 0.0f;
            for (size_t i = 0; i < rc.cols; ++i) total += static_cast<float>(std::abs(in[i]));
          } else {
            total = 0.0f;
            for (size_t i = 0; i < rc.cols; ++i) {
              // the square in the input's own type, as the reference squares it
              using Sq = std::conditional_t<std::is_integral_v<T>, int64_t, T>;
              out[i] = static_cast<float>(static_cast<Sq>(in[i]) * static_cast<Sq>(in[i]));
              total += out[i];
            }
          }
          if (total == 0.0f) {
            for (size_t i = 0; i < rc.cols; ++i) out[i] = static_cast<float>(in[i]);
          } else if (kind == 2) {
            for (size_t i = 0; i < rc.cols; ++i) {
              const float v = std::sqrt(out[i] / total);
              out[i] = in[i] < 0 ? -v : v;
            }
          } else {
            for (size_t i = 0; i < rc.cols; ++i) out[i] = static_cast<float>(in[i]) / total;
          }
        }
      });
    });
  };
}

KernelFactory binarizer() {
  return [](const NodeDesc& n, const BuildContext&) -> std::unique_ptr<Kernel> {
    const float threshold = n.attr_f("threshold", 0.0f);
    return std::make_unique<FnKernel>([threshold](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.dtype != DType::f32)
        c.fail(std::string("input X of element type ") + dtype_name(x.dtype) +
               " (Binarizer takes float32)");
      Tensor& y = c.output(0, DType::f32, x.shape);
      const float* px = x.ptr<float>();
      float* py = y.ptr<float>();
      for (size_t i = 0, count = x.numel(); i < count; ++i) {
        if (std::isnan(px[i])) c.fail("input X holds NaN at flat index " + std::to_string(i));
        py[i] = px[i] > threshold ? 1.0f : 0.0f;
      }
    });
  };
}

KernelFactory imputer() {
  return [](const NodeDesc& n, const BuildContext&) -> std::unique_ptr<Kernel> {
    std::vector<float> fvalues = n.attr_floats("imputed_value_floats", {});
    std::vector<int64_t> ivalues = n.attr_ints("imputed_value_int64s", {});
    if (fvalues.empty() == ivalues.empty())
      n.fail("give exactly one of imputed_value_floats and imputed_value_int64s");
    const float freplaced = n.attr_f("replaced_value_float", 0.0f);
    const int64_t ireplaced = n.attr_i("replaced_value_int64", 0);
    return std::make_unique<FnKernel>([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.rank() == 0) c.fail("input X is a scalar");
      const size_t stride = static_cast<size_t>(x.rank() == 1 ? x.shape[0] : x.shape[1]);
      Tensor& y = c.output(0, x.dtype, x.shape);
      if (x.numel() == 0) return;  // (and so stride > 0 below)
      auto run = [&](auto tag, const auto& values, auto replaced) {
        using T = decltype(tag);
        if (values.empty())
          c.fail(std::string("no imputed values for an input of element type ") +
                 dtype_name(x.dtype));
        const bool per_feature = values.size() == stride;
        const bool nan_replaced = std::isnan(static_cast<float>(replaced));
        const T* px = x.ptr<T>();
        T* py = y.ptr<T>();
        const size_t count = x.numel();
        for (size_t at = 0; at < count; at += stride) {  // runs of one row's features
          const size_t run = std::min(stride, count - at);
          for (size_t k = 0; k < run; ++k) {
            const T v = px[at + k];
            const bool hit = (nan_replaced && std::isnan(static_cast<float>(v))) ||
                             v == static_cast<T>(replaced);
            py[at + k] = hit ? static_cast<T>(values[per_feature ? k : 0]) : v;
          }
        }
      };
      if (x.dtype == DType::f32) run(float{}, fvalues, freplaced);
      else if (x.dtype == DType::i64) run(int64_t{}, ivalues, ireplaced);
      else c.fail(std::string("input X of element type ") + dtype_name(x.dtype) +
                  " (Imputer takes float32 or int64)");
    });
  };
}

// ---- ArrayFeatureExtractor ---------------------------------------------------------------

void array_feature_extractor(OpContext& c) {
  const Tensor& x = c.in(0);
  const Tensor& idx = c.in(1);
  if (x.rank() == 0) c.fail("input X is a scalar");
  if (idx.dtype != DType::i64)
    c.fail(std::string("indices Y of element type ") + dtype_name(idx.dtype) + ", expected int64");
  const size_t n = idx.numel();
  if (n == 0) c.fail("indices Y are empty");
  const int64_t stride = x.shape.back();
  const int64_t* pi = idx.ptr<int64_t>();
  for (size_t j = 0; j < n; ++j)
    if (pi[j] < 0 || pi[j] >= stride)
      c.fail("index Y[" + std::to_string(j) + "] = " + std::to_string(pi[j]) +
             " is out of range for the last dim of X, " + std::to_string(stride));
  Shape shape = x.shape;
  if (x.rank() == 1) shape = {1, static_cast<int64_t>(n)};  // as the reference: [1, n]
  else shape.back() = static_cast<int64_t>(n);
  Tensor& z = c.output(0, x.dtype, shape);
  const size_t rows = stride == 0 ? 0 : x.numel() / static_cast<size_t>(stride);
  dispatch_bytes(x.dtype, c.node, [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.ptr<T>();
    T* pz = z.ptr<T>();
    for (size_t r = 0; r < rows; ++r, px += stride)
      for (size_t j = 0; j < n; ++j) *pz++ = px[pi[j]];
  });
}

// ---- LinearRegressor, LinearClassifier ---------------------------------------------------

// X as float rows (a view for float32, a converted copy for the other types).
const float* float_rows(const Tensor& x, const NodeDesc& node, std::vector<float>& copy) {
  if (x.dtype == DType::f32) return x.ptr<float>();
  copy.resize(x.numel());
  dispatch_ml(x.dtype, node, [&](auto tag) {
    using T = decltype(tag);
    for (size_t i = 0; i < copy.size(); ++i) copy[i] = static_cast<float>(x.ptr<T>()[i]);
  });
  return copy.data();
}

// scores[r, t] = x[r] . coef[t] + bias[t] (bias may be empty).
void linear_scores(const float* x, size_t rows, size_t cols, const std::vector<float>& coef,
                   const std::vector<float>& bias, size_t targets, float* scores) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    for (size_t t = 0; t < targets; ++t) {
      const float* w = coef.data() + t * cols;
      float acc = 0.0f;
      for (size_t k = 0; k < cols; ++k) acc += xr[k] * w[k];
      scores[r * targets + t] = acc + (bias.empty() ? 0.0f : bias[t]);
    }
  }
}

KernelFactory linear_regressor() {
  return [](const NodeDesc& n, const BuildContext&) -> std::unique_ptr<Kernel> {
    const int64_t targets = n.attr_i("targets", 1);
    if (targets < 1) n.fail("targets must be positive");
    std::vector<float> coef = n.attr_floats("coefficients", {});
    std::vector<float> bias = n.attr_floats("intercepts", {});
    if (bias.size() != static_cast<size_t>(targets)) bias.clear();  // used only when whole
    const Post post = post_of(n);
    return std::make_unique<FnKernel>([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.dtype != DType::f32)
        c.fail(std::string("input X of element type ") + dtype_name(x.dtype) +
               " (LinearRegressor takes float32)");
      if (x.rank() == 0) c.fail("input X is a scalar");
      if (x.rank() > 2) c.fail("input X has shape " + shape_str(x.shape) + "; expected [N, C]");
      const size_t rows = x.rank() == 2 ? static_cast<size_t>(x.shape[0]) : 1;
      const size_t cols = x.rank() == 2 ? static_cast<size_t>(x.shape[1]) : x.numel();
      const size_t t = static_cast<size_t>(targets);
      if (coef.size() != t * cols)
        c.fail("coefficients hold " + std::to_string(coef.size()) + " values; " +
               std::to_string(t) + " targets of " + std::to_string(cols) + " features need " +
               std::to_string(t * cols));
      Tensor& y = c.output(0, DType::f32, {static_cast<int64_t>(rows), targets});
      float* py = y.ptr<float>();
      linear_scores(x.ptr<float>(), rows, cols, coef, bias, t, py);
      for (size_t r = 0; r < rows; ++r) {
        if (t > 1) transform_row(py + r * t, t, post);
        else if (post == Post::probit) py[r] = probit(py[r]);
      }
    });
  };
}

KernelFactory linear_classifier() {
  return [](const NodeDesc& n, const BuildContext&) -> std::unique_ptr<Kernel> {
    if (!n.attr_strings("classlabels_strings").empty())
      n.fail("string class labels (native runs int64 labels)");
    std::vector<float> coef = n.attr_floats("coefficients", {});
    std::vector<float> bias = n.attr_floats("intercepts", {});
    std::vector<int64_t> labels = n.attr_ints("classlabels_ints", {});
    const size_t classes = bias.size();
    if (classes == 0) n.fail("intercepts are empty: they give the number of classes");
    if (classes > 1 && labels.size() < classes)
      n.fail(std::to_string(classes) + " classes but " + std::to_string(labels.size()) +
             " labels in classlabels_ints");
    const Post post = post_of(n);
    // one score and two labels: the scores become [1 - s, s] (onnxruntime's binary case)
    const bool second_class = classes == 1 && labels.size() == 2;
    return std::make_unique<FnKernel>([=](OpContext& c) {
      const Tensor& x = c.in(0);
      const RowsCols rc = rows_cols(x, c.node, 2);
      if (coef.size() != classes * rc.cols)
        c.fail("coefficients hold " + std::to_string(coef.size()) + " values; " +
               std::to_string(classes) + " classes of " + std::to_string(rc.cols) +
               " features need " + std::to_string(classes * rc.cols));
      std::vector<float> copy;
      const float* px = float_rows(x, c.node, copy);
      const size_t width = second_class ? 2 : classes;
      Tensor& y = c.output(0, DType::i64, {static_cast<int64_t>(rc.rows)});
      Tensor& z = c.output(1, DType::f32,
                           {static_cast<int64_t>(rc.rows), static_cast<int64_t>(width)});
      std::vector<float> scores(rc.rows * classes);
      linear_scores(px, rc.rows, rc.cols, coef, bias, classes, scores.data());
      int64_t* py = y.ptr<int64_t>();
      float* pz = z.ptr<float>();
      if (classes == 1) {
        for (size_t r = 0; r < rc.rows; ++r)
          py[r] = labels.size() == 2 ? labels[scores[r] > 0 ? 1 : 0] : (scores[r] > 0 ? 1 : 0);
        if (post == Post::probit) {
          // the reference writes the N probits packed at the start of the scores (with two
          // labels, the second half of the buffer is left unwritten: zeros here)
          std::fill(pz, pz + rc.rows * width, 0.0f);
          for (size_t r = 0; r < rc.rows; ++r) pz[r] = probit(scores[r]);
        } else {
          for (size_t r = 0; r < rc.rows; ++r) {
            const float p = second_class && post == Post::logistic ? logistic(scores[r])
                                                                   : scores[r];
            if (second_class) {
              pz[2 * r] = 1.0f - p;
              pz[2 * r + 1] = p;
            } else {
              pz[r] = p;
            }
          }
        }
        return;
      }
      for (size_t r = 0; r < rc.rows; ++r) {
        const float* s = scores.data() + r * classes;
        float* out = pz + r * width;
        size_t best = 0;
        for (size_t j = 1; j < classes; ++j)
          if (s[j] > s[best]) best = j;
        py[r] = labels[best];
        std::copy(s, s + classes, out);
        transform_row(out, classes, post);
      }
    });
  };
}

}  // namespace

KILN_REGISTER_OP("ai.onnx.ml", "Scaler", scaler());
KILN_REGISTER_OP("ai.onnx.ml", "Normalizer", normalizer());
KILN_REGISTER_OP("ai.onnx.ml", "Binarizer", binarizer());
KILN_REGISTER_OP("ai.onnx.ml", "Imputer", imputer());
KILN_REGISTER_OP("ai.onnx.ml", "ArrayFeatureExtractor", simple_kernel(array_feature_extractor));
KILN_REGISTER_OP("ai.onnx.ml", "LinearRegressor", linear_regressor());
KILN_REGISTER_OP("ai.onnx.ml", "LinearClassifier", linear_classifier());

}  // namespace kiln::ops
