// Test and benchmark entry points of the f32 kernels, in the submodule `_native.kernels`.
// module.cpp calls bind_kernels(m) once; nothing here is on the inference path.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/int8_gemm.h"
#include "kernels/gemm_driver.h"
#include "kernels/pool.h"
#include "kernels/ukernels.h"
#include "threadpool.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Mat = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Vec = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using Any = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using T4 = nb::ndarray<const float, nb::ndim<4>, nb::c_contig, nb::device::cpu>;
using Out = nb::ndarray<nb::numpy, float>;

Out new_array(std::vector<size_t> shape) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  float* data = new float[n > 0 ? n : 1];
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  return Out(data, shape.size(), shape.data(), owner);
}

kiln::ThreadPool* pool_for(size_t threads) {
  static std::mutex mutex;
  static std::map<size_t, std::unique_ptr<kiln::ThreadPool>> pools;
  if (threads <= 1) return nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  auto& pool = pools[threads];
  if (!pool) pool = std::make_unique<kiln::ThreadPool>(threads);
  return pool.get();
}

kiln::Activation parse_activation(const std::string& name) {
  using A = kiln::Activation;
  static const std::map<std::string, A> names = {
      {"none", A::none},           {"relu", A::relu},           {"leaky_relu", A::leaky_relu},
      {"clip", A::clip},           {"sigmoid", A::sigmoid},     {"silu", A::silu},
      {"hard_sigmoid", A::hard_sigmoid}, {"hard_swish", A::hard_swish},
      {"gelu_erf", A::gelu_erf},   {"gelu_tanh", A::gelu_tanh}, {"tanh", A::tanh},
      {"exp", A::exp}, {"erf", A::erf}};
  auto it = names.find(name);
  if (it == names.end()) throw std::invalid_argument("unknown activation '" + name + "'");
  return it->second;
}

kiln::BiasKind parse_bias_kind(const std::string& name) {
  if (name == "none") return kiln::BiasKind::none;
  if (name == "per_row") return kiln::BiasKind::per_row;
  if (name == "per_col") return kiln::BiasKind::per_col;
  if (name == "full") return kiln::BiasKind::full;
  throw std::invalid_argument("unknown bias kind '" + name + "'");
}

kiln::ConvAlgo parse_algo(const std::string& name) {
  for (int a = 0; a <= int(kiln::kLastConvAlgo); ++a)
    if (name == kiln::conv_algo_name(kiln::ConvAlgo(a))) return kiln::ConvAlgo(a);
  throw std::invalid_argument("unknown conv algorithm '" + name + "'");
}

kiln::Isa parse_isa_name(const std::string& name) {
  if (name == "generic") return kiln::Isa::generic;
  if (name == "avx2") return kiln::Isa::avx2;
  if (name == "avx512") return kiln::Isa::avx512;
  if (name == "neon") return kiln::Isa::neon;
  throw std::invalid_argument("unknown ISA '" + name + "' (expected generic, avx2, avx512 or neon)");
}

double now() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// CPU time of the calling thread: on a shared machine, single-thread figures measured with it
// leave out the time the thread sat descheduled (cache and memory contention remain).
double thread_cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double (*clock_for(const std::string& name))() {
  if (name == "wall") return now;
  if (name == "thread_cpu") return thread_cpu_now;
  throw std::invalid_argument("unknown clock '" + name + "' (expected wall or thread_cpu)");
}

Out gemm(Mat a, Mat b, bool trans_a, bool trans_b, std::optional<Any> bias,
         const std::string& bias_kind, std::optional<Mat> residual, const std::string& act,
         float alpha, float beta, const std::string& mode, size_t threads) {
  const size_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const size_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  if (K != Kb) throw std::invalid_argument("gemm: inner dimensions differ");
  kiln::Epilogue ep;
  ep.bias_kind = parse_bias_kind(bias_kind);
  const size_t want = ep.bias_kind == kiln::BiasKind::per_row ? M
                      : ep.bias_kind == kiln::BiasKind::per_col ? N
                      : ep.bias_kind == kiln::BiasKind::full ? M * N : 0;
  if (want && (!bias || bias->size() != want))
    throw std::invalid_argument("gemm: bias needs " + std::to_string(want) + " values");
  ep.bias = bias ? bias->data() : nullptr;
  if (residual && (residual->shape(0) != M || residual->shape(1) != N))
    throw std::invalid_argument("gemm: residual must be M x N");
  ep.residual = residual ? residual->data() : nullptr;
  ep.act = parse_activation(act);
  ep.alpha = alpha;
  ep.beta = beta;
  Out c = new_array({M, N});
  float* cd = c.data();
  kiln::ThreadPool* pool = pool_for(threads);
  const size_t lda = a.shape(1), ldb = b.shape(1);
  {
    nb::gil_scoped_release release;
    if (mode == "reference") {
      kiln::sgemm_reference(trans_a, trans_b, M, N, K, a.data(), lda, b.data(), ldb, cd, N, ep,
                            pool);
    } else if (mode == "fast") {
      kiln::sgemm(trans_a, trans_b, M, N, K, a.data(), lda, b.data(), ldb, cd, N, ep, pool);
    } else if (mode == "packed_b") {
      auto pb = kiln::pack_b(trans_b, K, N, b.data(), ldb);
      kiln::sgemm_packed(trans_a, M, a.data(), lda, *pb, cd, N, ep, pool);
    } else if (mode == "packed_a") {
      auto pa = kiln::pack_a(trans_a, M, K, a.data(), lda);
      kiln::sgemm_packed_a(*pa, trans_b, N, b.data(), ldb, cd, N, ep, pool);
    } else {
      throw std::invalid_argument("gemm: unknown mode '" + mode + "'");
    }
  }
  return c;
}

kiln::Conv2dParams conv_params(const std::vector<size_t>& xs, const std::vector<size_t>& ws,
                               const std::vector<size_t>& strides,
                               const std::vector<size_t>& pads,
                               const std::vector<size_t>& dilations, size_t groups) {
  if (strides.size() != 2 || pads.size() != 4 || dilations.size() != 2)
    throw std::invalid_argument("conv2d: strides (2), pads (4: top, left, bottom, right) and "
                                "dilations (2) expected");
  kiln::Conv2dParams p;
  p.N = xs[0]; p.C = xs[1]; p.H = xs[2]; p.W = xs[3];
  p.K = ws[0]; p.kh = ws[2]; p.kw = ws[3];
  p.stride_h = strides[0]; p.stride_w = strides[1];
  p.pad_top = pads[0]; p.pad_left = pads[1]; p.pad_bottom = pads[2]; p.pad_right = pads[3];
  p.dilation_h = dilations[0]; p.dilation_w = dilations[1];
  p.groups = groups;
  p.validate();
  if (groups && ws[1] * groups != p.C)
    throw std::invalid_argument("conv2d: weight has " + std::to_string(ws[1]) +
                                " input channels per group, expected C / groups");
  return p;
}

std::pair<Out, std::string> conv2d(T4 x, T4 w, std::optional<Vec> bias,
                                   std::optional<T4> residual, std::vector<size_t> strides,
                                   std::vector<size_t> pads, std::vector<size_t> dilations,
                                   size_t groups, const std::string& act, float alpha,
                                   float beta, const std::string& algorithm, size_t threads) {
  const kiln::Conv2dParams p = conv_params({x.shape(0), x.shape(1), x.shape(2), x.shape(3)},
                                           {w.shape(0), w.shape(1), w.shape(2), w.shape(3)},
                                           strides, pads, dilations, groups);
  const size_t OH = p.out_h(), OW = p.out_w();
  kiln::Epilogue ep;
  if (bias) {
    if (bias->shape(0) != p.K) throw std::invalid_argument("conv2d: bias needs K values");
    ep.bias_kind = kiln::BiasKind::per_row;
    ep.bias = bias->data();
  }
  if (residual) {
    if (residual->shape(0) != p.N || residual->shape(1) != p.K || residual->shape(2) != OH ||
        residual->shape(3) != OW)
      throw std::invalid_argument("conv2d: residual must have the output shape");
    ep.residual = residual->data();
  }
  ep.act = parse_activation(act);
  ep.alpha = alpha;
  ep.beta = beta;
  kiln::Conv2d conv(p, w.data(), parse_algo(algorithm));
  Out y = new_array({p.N, p.K, OH, OW});
  float* yd = y.data();
  {
    nb::gil_scoped_release release;
    conv.run(x.data(), yd, ep, pool_for(threads));
  }
  return {y, kiln::conv_algo_name(conv.algorithm())};
}

// Constant weights packed once, multiplied many times (what the executor does).
struct PackedBHandle {
  std::unique_ptr<kiln::PackedB> packed;
  PackedBHandle(Mat b, bool trans_b)
      : packed(kiln::pack_b(trans_b, trans_b ? b.shape(1) : b.shape(0),
                            trans_b ? b.shape(0) : b.shape(1), b.data(), b.shape(1))) {}
  Out matmul(Mat a, bool trans_a, std::optional<Vec> bias, const std::string& act,
             size_t threads) const {
    const size_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
    if (K != packed->K()) throw std::invalid_argument("matmul: inner dimensions differ");
    kiln::Epilogue ep;
    if (bias) {
      if (bias->shape(0) != packed->N()) throw std::invalid_argument("matmul: bias needs N");
      ep.bias_kind = kiln::BiasKind::per_col;
      ep.bias = bias->data();
    }
    ep.act = parse_activation(act);
    Out c = new_array({M, packed->N()});
    float* cd = c.data();
    nb::gil_scoped_release release;
    kiln::sgemm_packed(trans_a, M, a.data(), a.shape(1), *packed, cd, packed->N(), ep,
                       pool_for(threads));
    return c;
  }
};

// A convolution with its weights packed once.
struct Conv2dHandle {
  std::unique_ptr<kiln::Conv2d> conv;
  Conv2dHandle(T4 w, std::vector<size_t> x_shape, std::vector<size_t> strides,
               std::vector<size_t> pads, std::vector<size_t> dilations, size_t groups,
               const std::string& algorithm) {
    if (x_shape.size() != 4) throw std::invalid_argument("conv2d: x_shape must be N, C, H, W");
    const kiln::Conv2dParams p = conv_params(
        x_shape, {w.shape(0), w.shape(1), w.shape(2), w.shape(3)}, strides, pads, dilations,
        groups);
    conv = std::make_unique<kiln::Conv2d>(p, w.data(), parse_algo(algorithm));
  }
  Out run(T4 x, std::optional<Vec> bias, std::optional<T4> residual, const std::string& act,
          size_t threads) const {
    const kiln::Conv2dParams& p = conv->params();
    if (x.shape(0) != p.N || x.shape(1) != p.C || x.shape(2) != p.H || x.shape(3) != p.W)
      throw std::invalid_argument("conv2d: x does not have the shape the conv was built for");
    const size_t OH = p.out_h(), OW = p.out_w();
    kiln::Epilogue ep;
    if (bias) {
      if (bias->shape(0) != p.K) throw std::invalid_argument("conv2d: bias needs K values");
      ep.bias_kind = kiln::BiasKind::per_row;
      ep.bias = bias->data();
    }
    if (residual) {
      if (residual->shape(0) != p.N || residual->shape(1) != p.K ||
          residual->shape(2) != OH || residual->shape(3) != OW)
        throw std::invalid_argument("conv2d: residual must have the output shape");
      ep.residual = residual->data();
    }
    ep.act = parse_activation(act);
    Out y = new_array({p.N, p.K, OH, OW});
    float* yd = y.data();
    nb::gil_scoped_release release;
    conv->run(x.data(), yd, ep, pool_for(threads));
    return y;
  }
};

// Constant weights, input shapes known at run time (what a conv op of the executor sees).
struct Conv2dCacheHandle {
  std::vector<float> w;
  std::vector<size_t> w_shape;
  kiln::Conv2dCache cache;
  explicit Conv2dCacheHandle(T4 weights)
      : w(weights.data(), weights.data() + weights.size()),
        w_shape{weights.shape(0), weights.shape(1), weights.shape(2), weights.shape(3)} {}
  Out run(T4 x, std::vector<size_t> strides, std::vector<size_t> pads, size_t groups) {
    const kiln::Conv2dParams p =
        conv_params({x.shape(0), x.shape(1), x.shape(2), x.shape(3)}, w_shape, strides, pads,
                    {1, 1}, groups);
    const kiln::Conv2d& conv = cache.get(p, w.data());
    Out y = new_array({p.N, p.K, p.out_h(), p.out_w()});
    float* yd = y.data();
    nb::gil_scoped_release release;
    conv.run(x.data(), yd, kiln::Epilogue(), nullptr);
    return y;
  }
};

}  // namespace

// Every u8 x s8 GEMM kernel of the list (kernels/ukernels.inc) this CPU can run.
struct Int8Entry {
  std::string name;
  kiln::int8_ukernel_fn fn;
};
std::vector<Int8Entry> int8_ukernels() {
  std::vector<Int8Entry> out;
#define KILN_UKERNEL(kind, name, isa_)
#define KILN_GEMM_UKERNEL(name, isa_, mr, nr)
#define KILN_DWCONV_UKERNEL(name, isa_)
#define KILN_GEMV_UKERNEL(name, isa_, mr)
#define KILN_POOL_UKERNEL(name, isa_)
#define KILN_DIRECTCONV_UKERNEL(name, isa_, kb, nv, lanes)
#define KILN_FMA_PROBE(name, isa_)
#define KILN_WINO_UKERNEL(suffix, isa_, tiles)
#define KILN_INT8_LOOPS(isa_, range)
  // Every kernel this CPU can run (its ISA and feature present), whatever is active.
#define KILN_INT8_GEMM_UKERNEL(name, isa_, feature)                                      \
  if (kiln::isa_level(kiln::Isa::isa_) <= kiln::isa_level(kiln::best_isa()) &&          \
      kiln::int8_feature_here(kiln::Int8Feature::feature))                            \
    out.push_back({#name, kiln::name});
#include "kernels/ukernels.inc"
#undef KILN_UKERNEL
#undef KILN_GEMM_UKERNEL
#undef KILN_DWCONV_UKERNEL
#undef KILN_GEMV_UKERNEL
#undef KILN_POOL_UKERNEL
#undef KILN_DIRECTCONV_UKERNEL
#undef KILN_FMA_PROBE
#undef KILN_WINO_UKERNEL
#undef KILN_INT8_LOOPS
#undef KILN_INT8_GEMM_UKERNEL
  return out;
}

using U8Mat = nb::ndarray<const uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using S8Mat = nb::ndarray<const int8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// One call of the named kernel: a (rows <= kInt8Mr x K, K a multiple of 4) times b (K x N,
// N <= kInt8Nr, packed here), int32 products.
nb::ndarray<nb::numpy, int32_t> u8s8_ukernel(const std::string& name, U8Mat a, S8Mat b) {
  const size_t rows = a.shape(0), K = a.shape(1), N = b.shape(1);
  if (rows == 0 || rows > kiln::kInt8Mr || K % 4 || K == 0 || b.shape(0) != K || N == 0 ||
      N > kiln::kInt8Nr)
    throw std::invalid_argument("u8s8_ukernel: a is rows<=6 x K (K % 4 == 0), b is K x N<=32");
  for (const Int8Entry& e : int8_ukernels()) {
    if (e.name != name) continue;
    const kiln::PackedInt8B packed = kiln::pack_int8_b(b.data(), K, N, N);
    std::vector<const uint8_t*> ptrs(rows);
    for (size_t r = 0; r < rows; ++r) ptrs[r] = a.data() + r * K;
    int32_t* c = new int32_t[rows * N];
    nb::capsule owner(c, [](void* p) noexcept { delete[] static_cast<int32_t*>(p); });
    e.fn(rows, 1, K, ptrs.data(), packed.panels.data(), c, N, N);
    size_t shape[2] = {rows, N};
    return nb::ndarray<nb::numpy, int32_t>(c, 2, shape, owner);
  }
  throw std::invalid_argument("u8s8_ukernel: no kernel '" + name + "' runs on this CPU");
}

// The ISA a two-thread pool's caller and worker see while a plan ISA `isa` is in scope on
// the caller: the caller's chunk waits (up to a second) until the other chunk has started,
// so a worker runs it.
std::vector<std::string> pool_isas(const std::string& isa) {
  kiln::PlanIsa plan;
  plan.isa = parse_isa_name(isa);
  plan.vnni = false;
  kiln::ThreadPool pool(2);
  kiln::PlanIsaScope scope(&plan);
  std::vector<std::string> seen(2);
  std::atomic<int> started{0};
  pool.parallel_for(2, 1, [&](size_t b, size_t e) {
    started.fetch_add(1);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (started.load() < 2 && std::chrono::steady_clock::now() < until) {
    }
    for (size_t i = b; i < e; ++i) seen[i] = kiln::isa_name(kiln::active_isa());
  });
  return seen;
}

void bind_kernels(nb::module_& parent) {
  nb::module_ m = parent.def_submodule("kernels", "f32 kernel entry points for tests and "
                                                  "micro-benchmarks");
  m.def("u8s8_ukernels", [] {
    std::vector<std::string> names;
    for (const Int8Entry& e : int8_ukernels()) names.push_back(e.name);
    return names;
  }, "The u8 x s8 GEMM kernels of the list this CPU runs, narrowest first.");
  m.def("u8s8_ukernel", &u8s8_ukernel, "name"_a, "a"_a, "b"_a,
        "One block product with the named u8 x s8 kernel (int32 result).");
  m.def("pool_isas", &pool_isas, "isa"_a,
        "The ISA each chunk of a two-thread parallel_for saw under a plan ISA (a test hook).");
  m.def("gemm", &gemm, "a"_a, "b"_a, "trans_a"_a = false, "trans_b"_a = false,
        "bias"_a = nb::none(), "bias_kind"_a = "none", "residual"_a = nb::none(),
        "activation"_a = "none", "alpha"_a = 0.0f, "beta"_a = 0.0f, "mode"_a = "fast",
        "threads"_a = 1,
        "C = op(a) @ op(b) + epilogue. mode: fast | reference | packed_b | packed_a.");

  m.def("activation", [](Any x, const std::string& name, float alpha, float beta,
                         bool reference) {
    std::vector<size_t> shape(x.shape_ptr(), x.shape_ptr() + x.ndim());
    Out y = new_array(shape);
    float* yd = y.data();
    const size_t n = x.size();
    std::copy(x.data(), x.data() + n, yd);
    const kiln::Activation act = parse_activation(name);
    if (reference) {
      for (size_t i = 0; i < n; ++i) yd[i] = kiln::activation_reference(act, alpha, beta, yd[i]);
    } else {
      kiln::apply_activation(act, alpha, beta, yd, n);
    }
    return y;
  }, "x"_a, "name"_a, "alpha"_a = 0.0f, "beta"_a = 0.0f, "reference"_a = false,
     "The activation applied to a copy of x (vectorized for the active ISA, or scalar).");

  m.def("conv2d", &conv2d, "x"_a, "w"_a, "bias"_a = nb::none(), "residual"_a = nb::none(),
        "strides"_a = std::vector<size_t>{1, 1}, "pads"_a = std::vector<size_t>{0, 0, 0, 0},
        "dilations"_a = std::vector<size_t>{1, 1}, "groups"_a = 1, "activation"_a = "none",
        "alpha"_a = 0.0f, "beta"_a = 0.0f, "algorithm"_a = "auto", "threads"_a = 1,
        "NCHW conv; returns (y, algorithm used).");

  nb::class_<PackedBHandle>(m, "PackedB", "B packed once for the active ISA's kernel.")
      .def(nb::init<Mat, bool>(), "b"_a, "trans_b"_a = false)
      .def("matmul", &PackedBHandle::matmul, "a"_a, "trans_a"_a = false,
           "bias"_a = nb::none(), "activation"_a = "none", "threads"_a = 1,
           "op(a) @ B (+ per-column bias) -> activation.")
      .def_prop_ro("nbytes", [](const PackedBHandle& h) { return h.packed->bytes(); });

  nb::class_<Conv2dHandle>(m, "Conv2d", "A conv2d with its weights packed once.")
      .def(nb::init<T4, std::vector<size_t>, std::vector<size_t>, std::vector<size_t>,
                    std::vector<size_t>, size_t, const std::string&>(),
           "w"_a, "x_shape"_a, "strides"_a = std::vector<size_t>{1, 1},
           "pads"_a = std::vector<size_t>{0, 0, 0, 0},
           "dilations"_a = std::vector<size_t>{1, 1}, "groups"_a = 1, "algorithm"_a = "auto")
      .def("run", &Conv2dHandle::run, "x"_a, "bias"_a = nb::none(), "residual"_a = nb::none(),
           "activation"_a = "none", "threads"_a = 1)
      .def_prop_ro("algorithm", [](const Conv2dHandle& h) {
        return std::string(kiln::conv_algo_name(h.conv->algorithm()));
      })
      .def_prop_ro("nbytes", [](const Conv2dHandle& h) { return h.conv->packed_bytes(); });

  nb::class_<Conv2dCacheHandle>(m, "Conv2dCache", "Conv2d per input shape, weights fixed.")
      .def(nb::init<T4>(), "w"_a)
      .def("run", &Conv2dCacheHandle::run, "x"_a, "strides"_a = std::vector<size_t>{1, 1},
           "pads"_a = std::vector<size_t>{0, 0, 0, 0}, "groups"_a = 1)
      .def_prop_ro("size", [](const Conv2dCacheHandle& h) { return h.cache.size(); })
      .def_prop_ro("packed_forms",
                   [](const Conv2dCacheHandle& h) { return h.cache.packed_forms(); });

  m.def("pool2d", [](T4 x, const std::string& kind, std::vector<size_t> kernel,
                     std::vector<size_t> strides, std::vector<size_t> pads,
                     std::vector<size_t> dilations, bool ceil_mode, bool count_include_pad,
                     bool reference, size_t threads) {
    if (kind != "max" && kind != "avg") throw std::invalid_argument("pool2d: kind max or avg");
    if (kernel.size() != 2 || strides.size() != 2 || pads.size() != 4 || dilations.size() != 2)
      throw std::invalid_argument("pool2d: kernel (2), strides (2), pads (4), dilations (2)");
    kiln::Pool2dParams p;
    p.N = x.shape(0); p.C = x.shape(1); p.H = x.shape(2); p.W = x.shape(3);
    p.kh = kernel[0]; p.kw = kernel[1]; p.stride_h = strides[0]; p.stride_w = strides[1];
    p.pad_top = pads[0]; p.pad_left = pads[1]; p.pad_bottom = pads[2]; p.pad_right = pads[3];
    p.dilation_h = dilations[0]; p.dilation_w = dilations[1];
    p.count_include_pad = count_include_pad;
    if (p.kh && p.kw && p.stride_h && p.stride_w && p.dilation_h && p.dilation_w)
      p.set_output(ceil_mode);
    p.validate();
    const kiln::PoolKind k = kind == "max" ? kiln::PoolKind::max : kiln::PoolKind::avg;
    Out y = new_array({p.N, p.C, p.out_h, p.out_w});
    float* yd = y.data();
    nb::gil_scoped_release release;
    if (reference) kiln::pool2d_reference(k, p, x.data(), yd);
    else kiln::pool2d(k, p, x.data(), yd, pool_for(threads));
    return y;
  }, "x"_a, "kind"_a, "kernel"_a, "strides"_a = std::vector<size_t>{1, 1},
     "pads"_a = std::vector<size_t>{0, 0, 0, 0}, "dilations"_a = std::vector<size_t>{1, 1},
     "ceil_mode"_a = false, "count_include_pad"_a = false, "reference"_a = false,
     "threads"_a = 1, "NCHW max / avg pooling.");

  m.def("gemm_kernel_name", [] { return std::string(kiln::sgemm_kernel_name()); });
  m.def("int8_gemm_kernel_name", [] { return std::string(kiln::int8_gemm_kernel_name()); },
        "The u8 x s8 GEMM kernel in use: the AMX panel kernel, avx512_vnni, avx2 or generic.");
#if KILN_HAS_X86
  m.def("amx_int8_ready", [] { return kiln::amx_int8_ready(); },
        "Whether this CPU has AMX-INT8 and the OS granted the tile state.");
#else
  m.def("amx_int8_ready", [] { return false; });
#endif
  m.def("cache_sizes", [] {
    const kiln::CacheSizes& c = kiln::cache_sizes();
    nb::dict d;
    d["l1d"] = c.l1d;
    d["l2"] = c.l2;
    d["l3"] = c.l3;
    return d;
  });
  m.def("gemm_blocking", [] {
    const kiln::GemmBlocking b = kiln::gemm_blocking(kiln::gemm_kernel(kiln::active_isa()));
    nb::dict d;
    d["kc"] = b.kc;
    d["mc"] = b.mc;
    d["nc"] = b.nc;
    return d;
  });
  m.def("set_gemm_blocking", &kiln::set_gemm_blocking_override, "kc"_a, "mc"_a, "nc"_a,
        "Override KC/MC/NC (0 = derive from the caches).");

  m.def("wino43_weights", [](T4 w, const std::string& isa) {
    if (w.shape(2) != 3 || w.shape(3) != 3)
      throw std::invalid_argument("wino43_weights: the filters must be 3x3");
    const kiln::Isa level = parse_isa_name(isa);
    if (kiln::isa_level(level) > kiln::isa_level(kiln::best_isa()))
      throw std::invalid_argument("wino43_weights: this CPU cannot run " + isa);
    const size_t n = w.shape(0) * w.shape(1);
    Out u = new_array({36, n});
    float* rows[36];
    for (size_t xi = 0; xi < 36; ++xi) rows[xi] = u.data() + xi * n;
    kiln::select_f32_wino43(level).weights(w.data(), n, rows);
    return u;
  }, "w"_a, "isa"_a, "U = G g G^T of each 3x3 filter by one ISA's Winograd weight kernel: "
     "[36, K * C].");
  m.def("set_winograd_enabled", &kiln::set_winograd_enabled, "enabled"_a,
        "Whether conv algorithm 'auto' may pick Winograd F(4,3).");
  m.def("set_winograd_nhwc", &kiln::set_winograd_nhwc, "enabled"_a,
        "Whether a conv with NHWC operands keeps Winograd where it wins (else implicit GEMM).");
  m.def("set_dwconv_blocked_max_pixels", &kiln::set_dwconv_blocked_max_pixels, "pixels"_a,
        "Depthwise output planes up to this many pixels run in the blocked form (0 = never); "
        "returns the limit it replaced.");
  m.def("set_conv_min_column_block", &kiln::set_conv_min_column_block, "columns"_a,
        "Tuning: smallest column block of the conv GEMM paths (0 = automatic).");

  m.def("bench_parallel_for", [](size_t threads, size_t iters) {
    kiln::ThreadPool* pool = pool_for(threads);
    if (!pool) throw std::invalid_argument("bench_parallel_for: needs threads >= 2");
    std::vector<size_t> hits(threads, 0);
    nb::gil_scoped_release release;
    const double t0 = now();
    for (size_t i = 0; i < iters; ++i)
      pool->parallel_for(threads, 1, [&](size_t b, size_t e) {
        for (size_t j = b; j < e; ++j) ++hits[j];
      });
    return (now() - t0) / double(iters);
  }, "threads"_a, "iters"_a = 10000, "Seconds per (nearly empty) parallel_for call.");

  m.def("fma_peak", [](const std::string& isa, size_t iters, size_t repeats,
                       const std::string& clock) {
    double (*tick)() = clock_for(clock);
    const kiln::f32_fma_probe_fn probe = kiln::select_f32_fma_probe(parse_isa_name(isa));
    if (!probe || int(parse_isa_name(isa)) > int(kiln::best_isa()))
      throw std::invalid_argument("fma_peak: this CPU cannot run the " + isa + " probe");
    nb::gil_scoped_release release;
    double best = 0;
    for (size_t r = 0; r < repeats; ++r) {
      const double t0 = tick();
      const double flops = probe(iters);
      const double dt = tick() - t0;
      best = std::max(best, flops / dt * 1e-9);
    }
    return best;
  }, "isa"_a, "iters"_a = 20000000, "repeats"_a = 5, "clock"_a = "wall",
     "Best single-core GFLOP/s of independent FMA chains for an ISA.");

  m.def("bench_gemm", [](size_t M, size_t N, size_t K, size_t threads, bool packed,
                         size_t repeats, double min_seconds, const std::string& clock) {
    double (*tick)() = clock_for(clock);
    std::vector<float> a(M * K), b(K * N), c(M * N);
    for (size_t i = 0; i < a.size(); ++i) a[i] = float(i % 13) * 0.01f - 0.06f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = float(i % 7) * 0.02f - 0.06f;
    kiln::ThreadPool* pool = pool_for(threads);
    auto pb = kiln::pack_b(false, K, N, b.data(), N);
    kiln::Epilogue ep;
    std::vector<double> seconds;
    nb::gil_scoped_release release;
    auto once = [&] {
      if (packed) kiln::sgemm_packed(false, M, a.data(), K, *pb, c.data(), N, ep, pool);
      else kiln::sgemm(false, false, M, N, K, a.data(), K, b.data(), N, c.data(), N, ep, pool);
    };
    once();
    for (size_t r = 0; r < repeats; ++r) {
      size_t n = 0;
      const double t0 = tick();
      double dt = 0;
      do {
        once();
        ++n;
        dt = tick() - t0;
      } while (dt < min_seconds);
      seconds.push_back(dt / double(n));
    }
    return seconds;
  }, "M"_a, "N"_a, "K"_a, "threads"_a = 1, "packed"_a = true, "repeats"_a = 5,
     "min_seconds"_a = 0.2, "clock"_a = "wall",
     "Seconds per SGEMM call, one entry per repeat (clock: wall or thread_cpu).");

  m.def("bench_conv2d", [](std::vector<size_t> xs, std::vector<size_t> ws,
                           std::vector<size_t> strides, std::vector<size_t> pads,
                           std::vector<size_t> dilations, size_t groups,
                           const std::string& algorithm, size_t threads, size_t repeats,
                           double min_seconds, const std::string& clock) {
    double (*tick)() = clock_for(clock);
    const kiln::Conv2dParams p = conv_params(xs, ws, strides, pads, dilations, groups);
    std::vector<float> x(p.N * p.C * p.H * p.W), w(p.K * ws[1] * p.kh * p.kw);
    std::vector<float> y(p.N * p.K * p.out_h() * p.out_w());
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 11) * 0.01f;
    for (size_t i = 0; i < w.size(); ++i) w[i] = float(i % 5) * 0.01f;
    kiln::Conv2d conv(p, w.data(), parse_algo(algorithm));
    kiln::ThreadPool* pool = pool_for(threads);
    kiln::Epilogue ep;
    std::vector<double> seconds;
    nb::gil_scoped_release release;
    conv.run(x.data(), y.data(), ep, pool);
    for (size_t r = 0; r < repeats; ++r) {
      size_t n = 0;
      const double t0 = tick();
      double dt = 0;
      do {
        conv.run(x.data(), y.data(), ep, pool);
        ++n;
        dt = tick() - t0;
      } while (dt < min_seconds);
      seconds.push_back(dt / double(n));
    }
    return std::make_pair(seconds, std::string(kiln::conv_algo_name(conv.algorithm())));
  }, "x_shape"_a, "w_shape"_a, "strides"_a, "pads"_a, "dilations"_a, "groups"_a,
     "algorithm"_a = "auto", "threads"_a = 1, "repeats"_a = 5, "min_seconds"_a = 0.2,
     "clock"_a = "wall",
     "Seconds per conv call, one entry per repeat; and the algorithm used.");
}
