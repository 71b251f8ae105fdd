// Elementwise operators: unary math, binary arithmetic and comparisons with numpy
// broadcasting, logical ops, Where, variadic Sum/Mean/Min/Max, Clip and the activations.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernels/gemm.h"
#include "kernels/ukernels.h"
#include "ops/common.h"

namespace kiln::ops {
namespace {

// ---- unary ------------------------------------------------------------------------------

// y = act(x) over a float32 tensor on the vectorized activation kernels; each block is
// copied and then transformed while it is still in L1.
void run_f32_activation(OpContext& c, Activation act, float alpha, float beta) {
  const Tensor& x = c.in(0);
  Tensor& y = c.output(0, x.dtype, x.shape);
  const float* px = x.ptr<float>();
  float* py = y.ptr<float>();
  constexpr size_t kBlock = 4096;
  parallel(c.pool, x.numel(), kBlock, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; i += kBlock) {
      const size_t n = std::min(kBlock, e - i);
      if (py != px) std::memcpy(py + i, px + i, n * sizeof(float));
      apply_activation(act, alpha, beta, py + i, n);
    }
  }, 4 * x.numel());
}

// A float op computed in double per element; with f32_fast, float32 tensors take that
// vectorized activation instead (its approximation is within a few float ulps).
template <typename F>
KernelFactory float_unary(F f, Activation f32_fast = Activation::none) {
  return simple_kernel([f, f32_fast](OpContext& c) {
    const Tensor& x = c.in(0);
    if (f32_fast != Activation::none && x.dtype == DType::f32)
      return run_f32_activation(c, f32_fast, 0.0f, 0.0f);
    dispatch_float(x.dtype, c.node, [&](auto tag) {
      using T = decltype(tag);
      Tensor& y = c.output(0, x.dtype, x.shape);
      const T* px = x.ptr<T>();
      T* py = y.ptr<T>();
      parallel(c.pool, x.numel(), 4096, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) py[i] = static_cast<T>(f(static_cast<double>(px[i])));
      }, 8 * x.numel());
    });
  });
}

// f32 fast path for the activations the GEMM epilogue also knows.
KernelFactory activation_op(Activation act, float dflt_alpha, float dflt_beta,
                            const char* alpha_key, const char* beta_key) {
  return [=](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    float alpha = alpha_key ? node.attr_f(alpha_key, dflt_alpha) : dflt_alpha;
    float beta = beta_key ? node.attr_f(beta_key, dflt_beta) : dflt_beta;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      if (x.dtype == DType::f32) return run_f32_activation(c, act, alpha, beta);
      if (x.dtype != DType::f64) c.fail(std::string("unsupported element type ") +
                                        dtype_name(x.dtype));
      Tensor& y = c.output(0, x.dtype, x.shape);
      const double* px = x.ptr<double>();
      double* py = y.ptr<double>();
      for (size_t i = 0; i < x.numel(); ++i) {
        float v = static_cast<float>(px[i]);
        apply_activation(act, alpha, beta, &v, 1);
        py[i] = v;
      }
    }));
  };
}

// Unary ops defined for every numeric type (Neg, Abs, Sign).
template <typename F>
KernelFactory numeric_unary(F f) {
  return simple_kernel([f](OpContext& c) {
    const Tensor& x = c.in(0);
    dispatch_numeric(x.dtype, c.node, [&](auto tag) {
      using T = decltype(tag);
      Tensor& y = c.output(0, x.dtype, x.shape);
      const T* px = x.ptr<T>();
      T* py = y.ptr<T>();
      for (size_t i = 0, n = x.numel(); i < n; ++i) py[i] = f(px[i]);
    });
  });
}

// ---- binary -----------------------------------------------------------------------------

template <typename T, typename R, typename F>
void binary_bcast(const Tensor& a, const Tensor& b, Tensor& y, F f, ThreadPool* pool) {
  const T* pa = a.ptr<T>();
  const T* pb = b.ptr<T>();
  R* py = y.ptr<R>();
  if (a.shape == b.shape) {
    parallel(pool, y.numel(), 16384, [&](size_t s, size_t e) {
      for (size_t i = s; i < e; ++i) py[i] = f(pa[i], pb[i]);
    });
    return;
  }
  const std::vector<size_t> st[2] = {broadcast_strides(a.shape, y.shape),
                                     broadcast_strides(b.shape, y.shape)};
  for_each_broadcast<2>(y.shape, st, [&](size_t o, size_t* offs, size_t n, size_t* ist) {
    const T* ra = pa + offs[0];
    const T* rb = pb + offs[1];
    R* ry = py + o;
    if (ist[0] == 1 && ist[1] == 1) {
      for (size_t i = 0; i < n; ++i) ry[i] = f(ra[i], rb[i]);
    } else if (ist[0] == 1 && ist[1] == 0) {
      const T bv = *rb;
      for (size_t i = 0; i < n; ++i) ry[i] = f(ra[i], bv);
    } else if (ist[0] == 0 && ist[1] == 1) {
      const T av = *ra;
      for (size_t i = 0; i < n; ++i) ry[i] = f(av, rb[i]);
    } else {
      for (size_t i = 0; i < n; ++i) ry[i] = f(ra[i * ist[0]], rb[i * ist[1]]);
    }
  });
}

void same_type(const Tensor& a, const Tensor& b, OpContext& c) {
  if (a.dtype != b.dtype)
    c.fail(std::string("operand types differ: ") + dtype_name(a.dtype) + " and " +
           dtype_name(b.dtype));
}

template <typename T>
T safe_div(T a, T b, const NodeDesc& node) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0) node.fail("integer division by zero");
    if constexpr (std::is_signed_v<T>)
      if (a == std::numeric_limits<T>::min() && b == T(-1)) node.fail("integer overflow");
  }
  return a / b;
}

// Arithmetic: same type in and out, every numeric type.
enum class Arith { add, sub, mul, div, min, max, mod, fmod };

template <typename T>
T arith(Arith op, T a, T b, const NodeDesc& node) {
  switch (op) {
    case Arith::add: return static_cast<T>(a + b);
    case Arith::sub: return static_cast<T>(a - b);
    case Arith::mul: return static_cast<T>(a * b);
    case Arith::div: return safe_div(a, b, node);
    case Arith::min:
      if constexpr (std::is_floating_point_v<T>) if (std::isnan(a) || std::isnan(b)) return NAN;
      return a < b ? a : b;
    case Arith::max:
      if constexpr (std::is_floating_point_v<T>) if (std::isnan(a) || std::isnan(b)) return NAN;
      return a > b ? a : b;
    case Arith::fmod:
      if constexpr (std::is_floating_point_v<T>) return std::fmod(a, b);
      else {
        if (b == 0) node.fail("integer modulo by zero");
        return static_cast<T>(a % b);
      }
    case Arith::mod:
      if constexpr (std::is_floating_point_v<T>) {
        T r = std::fmod(a, b);
        if (r != 0 && ((r < 0) != (b < 0))) r += b;
        return r;
      } else {
        if (b == 0) node.fail("integer modulo by zero");
        T r = static_cast<T>(a % b);
        if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
        return r;
      }
  }
  return a;
}

// f32 add/sub/mul/div under any broadcast: dims of extent 1 are dropped and a dim merges
// into the next one when both inputs continue contiguously (or both repeat) across it, so a
// scalar, per-channel or per-row operand leaves one or two dims. Every innermost row is one
// vbinop call (each input walks it or repeats one element); rows split across the pool.
void binop_f32(const Tensor& a, const Tensor& b, Tensor& y, BinaryOp op, ThreadPool* pool) {
  const size_t total = y.numel();
  if (total == 0) return;
  const f32_vbinop_fn kernel = select_f32_vbinop(active_isa());
  const float* pa = a.ptr<float>();
  const float* pb = b.ptr<float>();
  float* py = y.ptr<float>();
  const std::vector<size_t> sa = broadcast_strides(a.shape, y.shape);
  const std::vector<size_t> sb = broadcast_strides(b.shape, y.shape);
  std::vector<size_t> ext, ta, tb;
  for (size_t d = 0; d < y.shape.size(); ++d) {
    const size_t e = static_cast<size_t>(y.shape[d]);
    if (e == 1) continue;
    if (!ext.empty() && ta.back() == sa[d] * e && tb.back() == sb[d] * e) {
      ext.back() *= e;
      ta.back() = sa[d];
      tb.back() = sb[d];
      continue;
    }
    ext.push_back(e);
    ta.push_back(sa[d]);
    tb.push_back(sb[d]);
  }
  if (ext.empty()) ext = {1}, ta = {0}, tb = {0};
  const size_t rank = ext.size(), inner = ext.back(), rows = total / inner;
  const size_t ia = ta.back(), ib = tb.back();
  if (rows == 1) {  // one row: split it
    parallel(pool, inner, 4096, [&](size_t s, size_t e) {
      kernel(e - s, pa + s * ia, ia, pb + s * ib, ib, py + s, op);
    }, 2 * total);
    return;
  }
  parallel(pool, rows, std::max<size_t>(1, 4096 / inner), [&](size_t r0, size_t r1) {
    std::vector<size_t> idx(rank, 0);
    size_t oa = 0, ob = 0, rem = r0;
    for (size_t d = rank - 1; d-- > 0;) {
      idx[d] = rem % ext[d];
      rem /= ext[d];
      oa += idx[d] * ta[d];
      ob += idx[d] * tb[d];
    }
    for (size_t r = r0; r < r1; ++r) {
      kernel(inner, pa + oa, ia, pb + ob, ib, py + r * inner, op);
      for (size_t d = rank - 1; d-- > 0;) {
        oa += ta[d];
        ob += tb[d];
        if (++idx[d] < ext[d]) break;
        oa -= ta[d] * ext[d];
        ob -= tb[d] * ext[d];
        idx[d] = 0;
      }
    }
  }, 2 * total);
}

void run_arith(OpContext& c, Arith op, const Tensor& a, const Tensor& b, Tensor* into) {
  same_type(a, b, c);
  Shape shape = broadcast_shapes(a.shape, b.shape, c.node);
  Tensor& y = into ? *into : c.output(0, a.dtype, shape);
  const NodeDesc& node = c.node;
  if (a.dtype == DType::f32 && op <= Arith::div) {
    constexpr BinaryOp kOps[] = {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div};
    binop_f32(a, b, y, kOps[static_cast<int>(op)], c.pool);
    return;
  }
  dispatch_numeric(a.dtype, node, [&](auto tag) {
    using T = decltype(tag);
    switch (op) {
      case Arith::add:
        binary_bcast<T, T>(a, b, y, [](T x, T z) { return static_cast<T>(x + z); }, c.pool);
        break;
      case Arith::sub:
        binary_bcast<T, T>(a, b, y, [](T x, T z) { return static_cast<T>(x - z); }, c.pool);
        break;
      case Arith::mul:
        binary_bcast<T, T>(a, b, y, [](T x, T z) { return static_cast<T>(x * z); }, c.pool);
        break;
      default:
        // Integer division can fail: run serially so the error is raised on this thread.
        binary_bcast<T, T>(a, b, y, [&](T x, T z) { return arith(op, x, z, node); }, nullptr);
    }
  });
}

KernelFactory arith_op(Arith op) {
  return [op](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    Arith real = op;
    if (op == Arith::mod && node.attr_i("fmod", 0) != 0) real = Arith::fmod;
    return std::unique_ptr<Kernel>(new FnKernel([real](OpContext& c) {
      run_arith(c, real, c.in(0), c.in(1), nullptr);
    }));
  };
}

// Variadic Sum / Mean / Min / Max with broadcasting across all inputs.
KernelFactory variadic_op(Arith op, bool mean) {
  return simple_kernel([op, mean](OpContext& c) {
    size_t n = c.n_inputs();
    if (n == 0) c.fail("needs at least one input");
    Shape shape = c.in(0).shape;
    for (size_t i = 1; i < n; ++i) {
      same_type(c.in(0), c.in(i), c);
      shape = broadcast_shapes(shape, c.in(i).shape, c.node);
    }
    const Tensor& x0 = c.in(0);
    Tensor& y = c.output(0, x0.dtype, shape);
    // y = broadcast(x0), then y = y op xi in place.
    Tensor acc = y;
    dispatch_numeric(x0.dtype, c.node, [&](auto tag) {
      using T = decltype(tag);
      const std::vector<size_t> st[1] = {broadcast_strides(x0.shape, shape)};
      T* py = y.ptr<T>();
      const T* px = x0.ptr<T>();
      for_each_broadcast<1>(shape, st, [&](size_t o, size_t* offs, size_t m, size_t* ist) {
        for (size_t i = 0; i < m; ++i) py[o + i] = px[offs[0] + i * ist[0]];
      });
      for (size_t k = 1; k < n; ++k) {
        const Tensor& xk = c.in(k);
        binary_bcast<T, T>(acc, xk, y, [&](T a, T b) { return arith(op, a, b, c.node); },
                           nullptr);
      }
      if (mean) {
        if constexpr (std::is_floating_point_v<T>) {
          for (size_t i = 0; i < y.numel(); ++i) py[i] = py[i] / static_cast<T>(n);
        } else {
          c.fail("Mean needs a floating point type");
        }
      }
    });
  });
}

enum class Cmp { eq, lt, gt, le, ge };

KernelFactory compare_op(Cmp op) {
  return simple_kernel([op](OpContext& c) {
    const Tensor& a = c.in(0);
    const Tensor& b = c.in(1);
    same_type(a, b, c);
    Shape shape = broadcast_shapes(a.shape, b.shape, c.node);
    Tensor& y = c.output(0, DType::boolean, shape);
    auto run = [&](auto tag) {
      using T = decltype(tag);
      switch (op) {
        case Cmp::eq: binary_bcast<T, uint8_t>(a, b, y, [](T x, T z) { return x == z; }, c.pool);
          break;
        case Cmp::lt: binary_bcast<T, uint8_t>(a, b, y, [](T x, T z) { return x < z; }, c.pool);
          break;
        case Cmp::gt: binary_bcast<T, uint8_t>(a, b, y, [](T x, T z) { return x > z; }, c.pool);
          break;
        case Cmp::le: binary_bcast<T, uint8_t>(a, b, y, [](T x, T z) { return x <= z; }, c.pool);
          break;
        case Cmp::ge: binary_bcast<T, uint8_t>(a, b, y, [](T x, T z) { return x >= z; }, c.pool);
          break;
      }
    };
    if (a.dtype == DType::boolean) run(uint8_t{});
    else dispatch_numeric(a.dtype, c.node, run);
  });
}

enum class Logic { and_, or_, xor_ };

KernelFactory logic_op(Logic op) {
  return simple_kernel([op](OpContext& c) {
    const Tensor& a = c.in(0);
    const Tensor& b = c.in(1);
    if (a.dtype != DType::boolean || b.dtype != DType::boolean) c.fail("operands must be bool");
    Shape shape = broadcast_shapes(a.shape, b.shape, c.node);
    Tensor& y = c.output(0, DType::boolean, shape);
    switch (op) {
      case Logic::and_:
        binary_bcast<uint8_t, uint8_t>(a, b, y, [](uint8_t x, uint8_t z) { return x && z; },
                                       c.pool);
        break;
      case Logic::or_:
        binary_bcast<uint8_t, uint8_t>(a, b, y, [](uint8_t x, uint8_t z) { return x || z; },
                                       c.pool);
        break;
      case Logic::xor_:
        binary_bcast<uint8_t, uint8_t>(
            a, b, y, [](uint8_t x, uint8_t z) { return (x != 0) != (z != 0); }, c.pool);
        break;
    }
  });
}

void run_not(OpContext& c) {
  const Tensor& x = c.in(0);
  if (x.dtype != DType::boolean) c.fail("input must be bool");
  Tensor& y = c.output(0, DType::boolean, x.shape);
  for (size_t i = 0; i < x.numel(); ++i) y.ptr<uint8_t>()[i] = !x.ptr<uint8_t>()[i];
}

void run_where(OpContext& c) {
  const Tensor& cond = c.in(0);
  const Tensor& a = c.in(1);
  const Tensor& b = c.in(2);
  if (cond.dtype != DType::boolean) c.fail("condition must be bool");
  same_type(a, b, c);
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape, a.shape, c.node), b.shape,
                                 c.node);
  Tensor& y = c.output(0, a.dtype, shape);
  const std::vector<size_t> st[3] = {broadcast_strides(cond.shape, shape),
                                     broadcast_strides(a.shape, shape),
                                     broadcast_strides(b.shape, shape)};
  dispatch_bytes(a.dtype, c.node, [&](auto tag) {
    using T = decltype(tag);
    const uint8_t* pc = cond.ptr<uint8_t>();
    const T* pa = a.ptr<T>();
    const T* pb = b.ptr<T>();
    T* py = y.ptr<T>();
    for_each_broadcast<3>(shape, st, [&](size_t o, size_t* offs, size_t n, size_t* ist) {
      for (size_t i = 0; i < n; ++i)
        py[o + i] = pc[offs[0] + i * ist[0]] ? pa[offs[1] + i * ist[1]]
                                              : pb[offs[2] + i * ist[2]];
    });
  });
}

void run_pow(OpContext& c) {
  const Tensor& a = c.in(0);
  const Tensor& b = c.in(1);
  Shape shape = broadcast_shapes(a.shape, b.shape, c.node);
  if (a.dtype == b.dtype && a.dtype == DType::f32) {
    Tensor& y = c.output(0, a.dtype, shape);
    if (b.numel() == 1 && b.ptr<float>()[0] == 2.0f) {
      binary_bcast<float, float>(a, b, y, [](float x, float) { return x * x; }, c.pool);
    } else {
      binary_bcast<float, float>(a, b, y, [](float x, float z) { return std::pow(x, z); },
                                 c.pool);
    }
    return;
  }
  // Mixed types: convert both sides through double.
  Tensor& y = c.output(0, a.dtype, shape);
  auto get = [&](const Tensor& t, size_t i) -> double {
    switch (t.dtype) {
      case DType::f32: return t.ptr<float>()[i];
      case DType::f64: return t.ptr<double>()[i];
      case DType::i64: return static_cast<double>(t.ptr<int64_t>()[i]);
      case DType::i32: return t.ptr<int32_t>()[i];
      default: c.fail(std::string("unsupported element type ") + dtype_name(t.dtype));
    }
  };
  const std::vector<size_t> st[2] = {broadcast_strides(a.shape, shape),
                                     broadcast_strides(b.shape, shape)};
  for_each_broadcast<2>(shape, st, [&](size_t o, size_t* offs, size_t n, size_t* ist) {
    for (size_t i = 0; i < n; ++i) {
      double v = std::pow(get(a, offs[0] + i * ist[0]), get(b, offs[1] + i * ist[1]));
      switch (a.dtype) {
        case DType::f32: y.ptr<float>()[o + i] = static_cast<float>(v); break;
        case DType::f64: y.ptr<double>()[o + i] = v; break;
        case DType::i64: y.ptr<int64_t>()[o + i] = static_cast<int64_t>(v); break;
        case DType::i32: y.ptr<int32_t>()[o + i] = static_cast<int32_t>(v); break;
        default: break;
      }
    }
  });
}

void run_prelu(OpContext& c) {
  const Tensor& x = c.in(0);
  Tensor slope = c.in(1);
  same_type(x, slope, c);
  // Opset < 7: a 1-D slope of C values applies per channel (axis 1).
  if (c.node.opset > 0 && c.node.opset < 7 && slope.rank() == 1 && x.rank() >= 2 &&
      slope.shape[0] == x.shape[1] && slope.shape[0] != 1) {
    slope.shape.assign(x.rank() - 1, 1);
    slope.shape[0] = x.shape[1];
  }
  Shape shape = broadcast_shapes(x.shape, slope.shape, c.node);
  if (shape != x.shape) c.fail("slope " + shape_str(slope.shape) + " does not broadcast to X " +
                               shape_str(x.shape));
  Tensor& y = c.output(0, x.dtype, shape);
  if (x.dtype == DType::f32) return binop_f32(x, slope, y, BinaryOp::prelu, c.pool);
  dispatch_float(x.dtype, c.node, [&](auto tag) {
    using T = decltype(tag);
    binary_bcast<T, T>(x, slope, y, [](T v, T s) { return v < 0 ? v * s : v; }, c.pool);
  });
}

// Clip: bounds from attributes (opset < 11) or optional inputs 1 and 2.
KernelFactory clip_op() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    float amin = node.attr_f("min", -std::numeric_limits<float>::infinity());
    float amax = node.attr_f("max", std::numeric_limits<float>::infinity());
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      dispatch_numeric(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        T lo = std::numeric_limits<T>::lowest();
        T hi = std::numeric_limits<T>::max();
        if constexpr (std::is_floating_point_v<T>) {
          lo = static_cast<T>(amin);
          hi = static_cast<T>(amax);
        }
        for (size_t k = 1; k <= 2; ++k) {
          const Tensor* bound = c.input(k);
          if (!bound) continue;
          if (bound->dtype != x.dtype) c.fail("min/max must have the type of the input");
          if (bound->numel() != 1) c.fail("min/max must be scalars");
          (k == 1 ? lo : hi) = bound->ptr<T>()[0];
        }
        Tensor& y = c.output(0, x.dtype, x.shape);
        const T* px = x.ptr<T>();
        T* py = y.ptr<T>();
        for (size_t i = 0, n = x.numel(); i < n; ++i) {
          T v = px[i];
          if constexpr (std::is_floating_point_v<T>) if (std::isnan(v)) { py[i] = v; continue; }
          const T t = v < lo ? lo : v;  // min > max yields max, as the spec says
          py[i] = t > hi ? hi : t;
        }
      });
    }));
  };
}

const std::vector<const Tensor*> no_consts;

double erf_d(double x) { return std::erf(x); }

KernelFactory gelu_op() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    std::string approx = node.attr_s("approximate", "none");
    if (approx != "none" && approx != "tanh") node.fail("approximate must be 'none' or 'tanh'");
    Activation act = approx == "tanh" ? Activation::gelu_tanh : Activation::gelu_erf;
    return activation_op(act, 0, 0, nullptr, nullptr)(node, BuildContext(no_consts));
  };
}

KernelFactory elu_like(int kind) {
  return [kind](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    double alpha = node.attr_f("alpha", kind == 1 ? 1.67326319217681884765625f : 1.0f);
    double gamma = node.attr_f("gamma", 1.05070102214813232421875f);
    return float_unary([=](double x) -> double {
      switch (kind) {
        case 0: return x >= 0 ? x : alpha * (std::exp(x) - 1);                   // Elu
        case 1: return x > 0 ? gamma * x : gamma * (alpha * std::exp(x) - alpha);  // Selu
        case 2: return std::max(0.0, x) + std::min(0.0, alpha * (std::exp(x / alpha) - 1));
        case 3: return std::abs(x) < alpha ? 0.0 : x;                             // Shrink-ish
        default: return x;
      }
    })(node, BuildContext(no_consts));
  };
}

KernelFactory thresholded_relu() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    double alpha = node.attr_f("alpha", 1.0f);
    return float_unary([=](double x) { return x > alpha ? x : 0.0; })(node,
                                                                        BuildContext(no_consts));
  };
}

// Swish (opset 24): x * sigmoid(alpha * x).
KernelFactory swish() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    double alpha = node.attr_f("alpha", 1.0f);
    return float_unary([=](double x) { return x / (1.0 + std::exp(-alpha * x)); })(
        node, BuildContext(no_consts));
  };
}

KernelFactory shrink() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    double lambd = node.attr_f("lambd", 0.5f);
    double bias = node.attr_f("bias", 0.0f);
    return float_unary([=](double x) {
      return x < -lambd ? x + bias : (x > lambd ? x - bias : 0.0);
    })(node, BuildContext(no_consts));
  };
}

void run_isnan(OpContext& c) {
  const Tensor& x = c.in(0);
  Tensor& y = c.output(0, DType::boolean, x.shape);
  dispatch_float(x.dtype, c.node, [&](auto tag) {
    using T = decltype(tag);
    const T* __restrict px = x.ptr<T>();
    uint8_t* __restrict py = y.ptr<uint8_t>();
    const size_t n = x.numel();  // hoisted: a byte store may alias the shape
    for (size_t i = 0; i < n; ++i) py[i] = px[i] != px[i];
  });
}

KernelFactory isinf() {
  return [](const NodeDesc& node, const BuildContext&) -> std::unique_ptr<Kernel> {
    bool neg = node.attr_i("detect_negative", 1) != 0;
    bool pos = node.attr_i("detect_positive", 1) != 0;
    return std::unique_ptr<Kernel>(new FnKernel([=](OpContext& c) {
      const Tensor& x = c.in(0);
      Tensor& y = c.output(0, DType::boolean, x.shape);
      dispatch_float(x.dtype, c.node, [&](auto tag) {
        using T = decltype(tag);
        for (size_t i = 0; i < x.numel(); ++i) {
          T v = x.ptr<T>()[i];
          y.ptr<uint8_t>()[i] = std::isinf(v) && ((v > 0 && pos) || (v < 0 && neg));
        }
      });
    }));
  };
}

double round_half_even(double x) { return std::nearbyint(x); }

// ---- registrations ----------------------------------------------------------------------

KILN_REGISTER_OP("", "Sqrt", float_unary([](double x) { return std::sqrt(x); }));
KILN_REGISTER_OP("", "Exp", float_unary([](double x) { return std::exp(x); }, Activation::exp));
KILN_REGISTER_OP("", "Log", float_unary([](double x) { return std::log(x); }));
KILN_REGISTER_OP("", "Erf", float_unary(erf_d, Activation::erf));
KILN_REGISTER_OP("", "Reciprocal", float_unary([](double x) { return 1.0 / x; }));
KILN_REGISTER_OP("", "Floor", float_unary([](double x) { return std::floor(x); }));
KILN_REGISTER_OP("", "Ceil", float_unary([](double x) { return std::ceil(x); }));
KILN_REGISTER_OP("", "Round", float_unary(round_half_even));
KILN_REGISTER_OP("", "Sin", float_unary([](double x) { return std::sin(x); }));
KILN_REGISTER_OP("", "Cos", float_unary([](double x) { return std::cos(x); }));
KILN_REGISTER_OP("", "Tan", float_unary([](double x) { return std::tan(x); }));
KILN_REGISTER_OP("", "Asin", float_unary([](double x) { return std::asin(x); }));
KILN_REGISTER_OP("", "Acos", float_unary([](double x) { return std::acos(x); }));
KILN_REGISTER_OP("", "Atan", float_unary([](double x) { return std::atan(x); }));
KILN_REGISTER_OP("", "Sinh", float_unary([](double x) { return std::sinh(x); }));
KILN_REGISTER_OP("", "Cosh", float_unary([](double x) { return std::cosh(x); }));
KILN_REGISTER_OP("", "Asinh", float_unary([](double x) { return std::asinh(x); }));
KILN_REGISTER_OP("", "Acosh", float_unary([](double x) { return std::acosh(x); }));
KILN_REGISTER_OP("", "Atanh", float_unary([](double x) { return std::atanh(x); }));
KILN_REGISTER_OP("", "Softplus", float_unary([](double x) { return std::log1p(std::exp(x)); }));
KILN_REGISTER_OP("", "Softsign", float_unary([](double x) { return x / (1.0 + std::abs(x)); }));
KILN_REGISTER_OP("", "Mish", float_unary([](double x) {
  return x * std::tanh(std::log1p(std::exp(x)));
}));
KILN_REGISTER_OP("", "Elu", elu_like(0));
KILN_REGISTER_OP("", "Selu", elu_like(1));
KILN_REGISTER_OP("", "Celu", elu_like(2));
KILN_REGISTER_OP("", "ThresholdedRelu", thresholded_relu());
KILN_REGISTER_OP("", "Swish", swish());
KILN_REGISTER_OP("", "Shrink", shrink());
KILN_REGISTER_OP("", "Relu", activation_op(Activation::relu, 0, 0, nullptr, nullptr));
KILN_REGISTER_OP("", "Sigmoid", activation_op(Activation::sigmoid, 0, 0, nullptr, nullptr));
KILN_REGISTER_OP("", "Tanh", activation_op(Activation::tanh, 0, 0, nullptr, nullptr));
KILN_REGISTER_OP("", "LeakyRelu",
                 activation_op(Activation::leaky_relu, 0.01f, 0, "alpha", nullptr));
KILN_REGISTER_OP("", "HardSigmoid",
                 activation_op(Activation::hard_sigmoid, 0.2f, 0.5f, "alpha", "beta"));
KILN_REGISTER_OP("", "HardSwish", activation_op(Activation::hard_swish, 0, 0, nullptr, nullptr));
KILN_REGISTER_OP("", "Gelu", gelu_op());
KILN_REGISTER_OP("", "Neg", numeric_unary([](auto x) { return static_cast<decltype(x)>(-x); }));
KILN_REGISTER_OP("", "Abs", numeric_unary([](auto x) {
  using T = decltype(x);
  if constexpr (std::is_unsigned_v<T>) return x;
  else return static_cast<T>(x < 0 ? -x : x);
}));
KILN_REGISTER_OP("", "Sign", numeric_unary([](auto x) {
  using T = decltype(x);
  return static_cast<T>(x > 0 ? 1 : (x < 0 ? -1 : 0));
}));
KILN_REGISTER_OP("", "Add", arith_op(Arith::add));
KILN_REGISTER_OP("", "Sub", arith_op(Arith::sub));
KILN_REGISTER_OP("", "Mul", arith_op(Arith::mul));
KILN_REGISTER_OP("", "Div", arith_op(Arith::div));
KILN_REGISTER_OP("", "Mod", arith_op(Arith::mod));
KILN_REGISTER_OP("", "Pow", simple_kernel(run_pow));
KILN_REGISTER_OP("", "PRelu", simple_kernel(run_prelu));
KILN_REGISTER_OP("", "Sum", variadic_op(Arith::add, false));
KILN_REGISTER_OP("", "Mean", variadic_op(Arith::add, true));
KILN_REGISTER_OP("", "Min", variadic_op(Arith::min, false));
KILN_REGISTER_OP("", "Max", variadic_op(Arith::max, false));
KILN_REGISTER_OP("", "Equal", compare_op(Cmp::eq));
KILN_REGISTER_OP("", "Less", compare_op(Cmp::lt));
KILN_REGISTER_OP("", "Greater", compare_op(Cmp::gt));
KILN_REGISTER_OP("", "LessOrEqual", compare_op(Cmp::le));
KILN_REGISTER_OP("", "GreaterOrEqual", compare_op(Cmp::ge));
KILN_REGISTER_OP("", "And", logic_op(Logic::and_));
KILN_REGISTER_OP("", "Or", logic_op(Logic::or_));
KILN_REGISTER_OP("", "Xor", logic_op(Logic::xor_));
KILN_REGISTER_OP("", "Not", simple_kernel(run_not));
KILN_REGISTER_OP("", "Where", simple_kernel(run_where));
KILN_REGISTER_OP("", "Clip", clip_op());
KILN_REGISTER_OP("", "IsNaN", simple_kernel(run_isnan));
KILN_REGISTER_OP("", "IsInf", isinf());

}  // namespace
}  // namespace kiln::ops
