// Python entry points of the native extension.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <nanobind/stl/tuple.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "executor.h"
#include "kernels/gemm.h"
#include "kernels/gemm_driver.h"
#include "kernels/int8_gemm.h"
#include "kernels/ukernels.h"

namespace nb = nanobind;
using namespace nb::literals;

// --- kernel test/benchmark bindings (bindings_kernels.cpp) ---
void bind_kernels(nb::module_& m);
// --- end kernel bindings ---

namespace {

using F32Array = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;

nb::ndarray<nb::numpy, float> new_like(const F32Array& x) {
  size_t n = x.size();
  float* data = new float[n];
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  std::vector<size_t> shape(x.shape_ptr(), x.shape_ptr() + x.ndim());
  return nb::ndarray<nb::numpy, float>(data, x.ndim(), shape.data(), owner);
}

// A plan's ISA by name: generic, avx2, avx512 (no VNNI), avx512_vnni or avx512_amx (VNNI and
// AMX tiles); on aarch64 neon, neon_dotprod or neon_i8mm (the int8 kernels the plan may use).
kiln::PlanIsa parse_plan_isa(const std::string& name) {
  if (name == "avx512_vnni" || name == "avx512_amx") {
    kiln::PlanIsa p;
    p.amx = name == "avx512_amx";
    return p;
  }
  if (name == "neon" || name == "neon_dotprod" || name == "neon_i8mm") {
    kiln::PlanIsa p;
    p.isa = kiln::Isa::neon;
    p.vnni = false;
    p.dotprod = name != "neon";
    p.i8mm = name == "neon_i8mm";
    return p;
  }
  if (name == "generic" || name == "avx2" || name == "avx512") {
    kiln::PlanIsa p;
    p.isa = name == "generic" ? kiln::Isa::generic
            : name == "avx2"  ? kiln::Isa::avx2
                              : kiln::Isa::avx512;
    p.vnni = false;
    return p;
  }
  throw std::invalid_argument("unknown plan ISA '" + name +
                              "' (expected generic, avx2, avx512, avx512_vnni, avx512_amx, "
                              "neon, neon_dotprod or neon_i8mm)");
}

// The kernels a plan with this ISA runs on this CPU, and the SGEMM blocking they get.
nb::dict plan_kernels(const kiln::PlanIsa& isa) {
  kiln::PlanIsaScope scope(&isa);
  const kiln::Isa active = kiln::active_isa();
  const kiln::GemmKernel& gemm = kiln::gemm_kernel(active);
  const kiln::GemmBlocking blk = kiln::gemm_blocking(gemm);
  nb::dict d;
  d["isa"] = std::string(kiln::isa_name(active)) + (kiln::amx_int8_active() ? "_amx"
                                                    : kiln::vnni_active()      ? "_vnni"
                                                    : kiln::i8mm_active()    ? "_i8mm"
                                                    : kiln::dotprod_active() ? "_dotprod"
                                                                             : "");
  d["f32_gemm"] = std::string(gemm.name);
  d["f32_gemm_blocking"] = std::vector<size_t>{blk.kc, blk.mc, blk.nc};
  d["u8s8_gemm"] = std::string(kiln::int8_gemm_kernel_name());
  return d;
}

kiln::Isa parse_isa(const std::string& name) {
  if (name == "generic") return kiln::Isa::generic;
  if (name == "avx2") return kiln::Isa::avx2;
  if (name == "avx512") return kiln::Isa::avx512;
  if (name == "neon") return kiln::Isa::neon;
  throw std::invalid_argument("unknown ISA '" + name +
                              "' (expected generic, avx2, avx512 or neon)");
}

using AnyArray = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
using OutArray = nb::ndarray<nb::numpy>;

kiln::DType dtype_of(const nb::dlpack::dtype& dt) {
  using C = nb::dlpack::dtype_code;
  const auto code = static_cast<C>(dt.code);
  if (dt.lanes != 1) throw std::invalid_argument("vector element types are not supported");
  if (code == C::Float && dt.bits == 32) return kiln::DType::f32;
  if (code == C::Float && dt.bits == 64) return kiln::DType::f64;
  if (code == C::Float && dt.bits == 16) return kiln::DType::f16;
  if (code == C::Int && dt.bits == 64) return kiln::DType::i64;
  if (code == C::Int && dt.bits == 32) return kiln::DType::i32;
  if (code == C::Int && dt.bits == 8) return kiln::DType::i8;
  if (code == C::UInt && dt.bits == 8) return kiln::DType::u8;
  if (code == C::UInt && dt.bits == 16) return kiln::DType::u16;
  if (code == C::UInt && dt.bits == 32) return kiln::DType::u32;
  if (code == C::UInt && dt.bits == 64) return kiln::DType::u64;
  if (code == C::Int && dt.bits == 16) return kiln::DType::i16;
  if (code == C::Bool && dt.bits == 8) return kiln::DType::boolean;
  throw std::invalid_argument("element type not supported by the native backend");
}

nb::dlpack::dtype dlpack_of(kiln::DType t) {
  using C = nb::dlpack::dtype_code;
  nb::dlpack::dtype dt;
  dt.lanes = 1;
  switch (t) {
    case kiln::DType::f32: dt.code = uint8_t(C::Float); dt.bits = 32; break;
    case kiln::DType::f64: dt.code = uint8_t(C::Float); dt.bits = 64; break;
    case kiln::DType::f16: dt.code = uint8_t(C::Float); dt.bits = 16; break;
    case kiln::DType::i64: dt.code = uint8_t(C::Int); dt.bits = 64; break;
    case kiln::DType::i32: dt.code = uint8_t(C::Int); dt.bits = 32; break;
    case kiln::DType::i8: dt.code = uint8_t(C::Int); dt.bits = 8; break;
    case kiln::DType::u8: dt.code = uint8_t(C::UInt); dt.bits = 8; break;
    case kiln::DType::u16: dt.code = uint8_t(C::UInt); dt.bits = 16; break;
    case kiln::DType::u32: dt.code = uint8_t(C::UInt); dt.bits = 32; break;
    case kiln::DType::u64: dt.code = uint8_t(C::UInt); dt.bits = 64; break;
    case kiln::DType::i16: dt.code = uint8_t(C::Int); dt.bits = 16; break;
    case kiln::DType::boolean: dt.code = uint8_t(C::Bool); dt.bits = 8; break;
    // Narrow types cross as their bits (uint16 / uint8); Python views them as ml_dtypes.
    case kiln::DType::bf16: dt.code = uint8_t(C::UInt); dt.bits = 16; break;
    case kiln::DType::f8e4m3fn: case kiln::DType::f8e4m3fnuz: case kiln::DType::f8e5m2:
    case kiln::DType::f8e5m2fnuz: case kiln::DType::u4: case kiln::DType::i4:
    case kiln::DType::f4e2m1: case kiln::DType::f8e8m0: case kiln::DType::u2:
    case kiln::DType::i2: dt.code = uint8_t(C::UInt); dt.bits = 8; break;
    default: throw std::invalid_argument("undefined element type");
  }
  return dt;
}

// A tensor viewing a numpy array's memory (no copy); the caller keeps the array alive.
// `code` (an ONNX element type, 0 = the array's own) retags the bits of a narrow type,
// which Python hands over as a uint8/uint16 view.
kiln::Tensor borrow(const AnyArray& a, int code = 0) {
  kiln::Tensor t;
  t.dtype = dtype_of(a.dtype());
  if (code != 0) {
    if (!kiln::dtype_known(code))
      throw std::invalid_argument("unknown element type code " + std::to_string(code));
    const auto tagged = static_cast<kiln::DType>(code);
    if (kiln::dtype_size(tagged) != kiln::dtype_size(t.dtype))
      throw std::invalid_argument(std::string("a ") + kiln::dtype_name(tagged) +
                                  " value must arrive as its bits, one element per item");
    t.dtype = tagged;
  }
  for (size_t i = 0; i < a.ndim(); ++i) t.shape.push_back(static_cast<int64_t>(a.shape(i)));
  t.data = const_cast<void*>(a.data());
  return t;
}

kiln::Tensor copy_of(const AnyArray& a, int code = 0) {
  kiln::Tensor view = borrow(a, code);
  kiln::Tensor t = kiln::make_heap_tensor(view.dtype, view.shape);
  if (view.nbytes()) std::memcpy(t.data, view.data, view.nbytes());
  return t;
}

// Hands a tensor's buffer to numpy without a copy; the capsule keeps it alive.
OutArray to_numpy(const kiln::Tensor& t) {
  auto* keep = new std::shared_ptr<void>(t.owner);
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<std::shared_ptr<void>*>(p); });
  std::vector<size_t> shape(t.shape.begin(), t.shape.end());
  return OutArray(t.data, shape.size(), shape.data(), owner, nullptr, dlpack_of(t.dtype));
}

kiln::Attr to_attr(const std::string& key, nb::handle v) {
  kiln::Attr a;
  if (nb::isinstance<nb::bool_>(v) || nb::isinstance<nb::int_>(v)) {
    a.kind = kiln::Attr::Kind::i;
    a.i = nb::cast<int64_t>(v);
  } else if (nb::isinstance<nb::float_>(v)) {
    a.kind = kiln::Attr::Kind::f;
    a.f = nb::cast<double>(v);
  } else if (nb::isinstance<nb::str>(v)) {
    a.kind = kiln::Attr::Kind::s;
    a.s = nb::cast<std::string>(v);
  } else if (nb::isinstance<nb::list>(v) || nb::isinstance<nb::tuple>(v)) {
    bool any_float = false, any_str = false;
    for (nb::handle item : v) {
      any_float = any_float || nb::isinstance<nb::float_>(item);
      any_str = any_str || nb::isinstance<nb::str>(item);
    }
    if (any_str) {
      a.kind = kiln::Attr::Kind::strings;
      for (nb::handle item : v) a.strings.push_back(nb::cast<std::string>(item));
    } else if (any_float) {
      a.kind = kiln::Attr::Kind::floats;
      for (nb::handle item : v) a.floats.push_back(nb::cast<double>(item));
    } else {
      a.kind = kiln::Attr::Kind::ints;
      for (nb::handle item : v) a.ints.push_back(nb::cast<int64_t>(item));
    }
  } else {
    AnyArray arr;
    if (!nb::try_cast(v, arr))
      throw std::invalid_argument("attribute '" + key + "' has an unsupported Python type");
    a.kind = kiln::Attr::Kind::tensor;
    a.t = copy_of(arr);
  }
  return a;
}

}  // namespace

NB_MODULE(_native, m) {
  m.doc() = "kiln native kernels and executor";
  bind_kernels(m);  // kernel test/benchmark bindings: the submodule _native.kernels

  m.def("best_isa", [] { return std::string(kiln::isa_name(kiln::best_isa())); },
        "Best ISA this CPU and OS support.");
  m.def("isa", [] { return std::string(kiln::isa_name(kiln::active_isa())); },
        "ISA the kernels dispatch to now.");
  m.def("set_isa_cap", [](const std::string& name) {
        return std::string(kiln::isa_name(kiln::set_isa_cap(parse_isa(name))));
      }, "name"_a, "Cap dispatch at an ISA (to test slower paths); returns the ISA now active.");
  m.def("cpu_features", [] {
    const kiln::CpuFeatures& f = kiln::cpu_features();
    nb::dict d;
    d["avx2"] = f.avx2 && f.os_saves_avx;
    d["fma"] = f.fma && f.os_saves_avx;
    d["f16c"] = f.f16c;
    d["avx512f"] = f.avx512f && f.os_saves_avx512;
    d["avx512bw"] = f.avx512bw && f.os_saves_avx512;
    d["avx512vl"] = f.avx512vl && f.os_saves_avx512;
    d["avx512_vnni"] = f.avx512_vnni && f.os_saves_avx512;
    d["avx512_bf16"] = f.avx512_bf16 && f.os_saves_avx512;
    d["amx"] = f.amx_tile;
    return d;
  }, "CPU features as CPUID and XCR0 report them.");

  nb::exception<kiln::NodeError>(m, "NodeError", PyExc_RuntimeError);
  nb::exception<kiln::LimitError>(m, "LimitError", PyExc_MemoryError);

  m.def("registered_ops", &kiln::registered_ops,
        "Every (domain::op) the executor has a kernel for.");

  nb::class_<kiln::Plan>(m, "Plan", "A lowered model: kernels, constants and a memory plan.")
      .def(nb::init<int>(), "n_values"_a)
      .def("set_threads", &kiln::Plan::set_threads, "threads"_a)
      .def("set_limit_bytes", &kiln::Plan::set_limit_bytes, "bytes"_a)
      .def("set_isa", [](kiln::Plan& p, const std::string& name) {
        p.set_isa(parse_plan_isa(name));
      }, "name"_a, "The ISA the plan is built and run for (before add_node); capped by the CPU.")
      .def("kernels", [](const kiln::Plan& p) { return plan_kernels(p.isa()); },
           "The kernels this plan runs on this CPU (isa, GEMM kernels, SGEMM blocking).")
      .def("add_constant", [](kiln::Plan& p, int id, AnyArray value, int code, bool borrowed) {
        if (!borrowed) {
          p.add_constant(id, copy_of(value, code));
          return;
        }
        // The plan holds the array (through nanobind's reference to it) while it runs on it;
        // the last reference is dropped under the GIL.
        kiln::Tensor t = borrow(value, code);
        t.owner = std::shared_ptr<void>(new AnyArray(value), [](void* q) noexcept {
          nb::gil_scoped_acquire gil;
          delete static_cast<AnyArray*>(q);
        });
        p.add_constant(id, std::move(t));
      }, "id"_a, "value"_a, "code"_a = 0, "borrowed"_a = false,
         "Adds a constant (weights): copied once, or with `borrowed` read in place from the "
         "array (read-only and never written again; a memory-mapped file's pages, say), "
         "which the plan keeps alive. `code` as in run.")
      .def("set_file_backed", &kiln::Plan::set_file_backed, "id"_a,
           "Marks a borrowed constant as pages of a read-only file map (see the C++ header).")
      .def("release_constant", &kiln::Plan::release_constant, "id"_a,
           "Drops a constant's bytes once every node reading it packed it (call after its "
           "last consumer); returns whether it did.")
      .def_prop_ro("constant_bytes", &kiln::Plan::constant_bytes,
                   "Bytes of the constants the plan holds (packed copies not included).")
      .def("add_node", [](kiln::Plan& p, const std::string& name, const std::string& domain,
                          const std::string& op, int opset, std::vector<int> inputs,
                          std::vector<int> outputs, nb::dict attrs) {
        kiln::NodeDesc node;
        node.name = name;
        node.domain = domain;
        node.op = op;
        node.opset = opset;
        node.inputs = std::move(inputs);
        node.outputs = std::move(outputs);
        for (auto [k, v] : attrs) {
          std::string key = nb::cast<std::string>(k);
          node.attrs[key] = to_attr(key, v);
        }
        p.add_node(std::move(node));
      }, "name"_a, "domain"_a, "op"_a, "opset"_a, "inputs"_a, "outputs"_a, "attrs"_a,
         "Appends a node; its kernel is built (and constant weights packed) now.")
      .def("set_memory", &kiln::Plan::set_memory, "offsets"_a, "planned_bytes"_a,
           "arena_bytes"_a, "frees"_a)
      .def("set_io", &kiln::Plan::set_io, "inputs"_a, "outputs"_a)
      .def("set_profiling", &kiln::Plan::set_profiling, "on"_a)
      .def("node_times", &kiln::Plan::node_times,
           "Microseconds per node of the last profiled run (empty when profiling is off).")
      .def("node_splits", &kiln::Plan::node_splits,
           "Per node of the last profiled run: its pool calls that went to the workers.")
      .def_prop_ro("n_nodes", &kiln::Plan::n_nodes)
      .def_prop_ro("arena_bytes", &kiln::Plan::arena_bytes)
      .def_prop_ro("threads", &kiln::Plan::threads)
      .def("signature_arena_bytes", &kiln::Plan::signature_arena_bytes,
           "Arena bytes planned for each input signature seen (models with symbolic dims).")
      .def("run", [](const kiln::Plan& p, std::vector<AnyArray> feeds, std::vector<int> codes) {
        if (!codes.empty() && codes.size() != feeds.size())
          throw std::invalid_argument("run: one element type code per feed");
        std::vector<kiln::Tensor> inputs;
        inputs.reserve(feeds.size());
        for (size_t i = 0; i < feeds.size(); ++i)
          inputs.push_back(borrow(feeds[i], codes.empty() ? 0 : codes[i]));
        std::vector<kiln::Tensor> outputs;
        {
          nb::gil_scoped_release release;
          outputs = p.run(inputs);
        }
        nb::list result;
        for (const kiln::Tensor& t : outputs)
          result.append(nb::make_tuple(to_numpy(t), static_cast<int>(t.dtype)));
        return result;
      }, "feeds"_a, "codes"_a = std::vector<int>(),
         "Runs the plan on C-contiguous arrays (borrowed, not copied); `codes` gives each "
         "feed's ONNX element type (0: the array's own). Returns (array, code) pairs: a narrow "
         "type's array holds its bits.");

  m.def("relu", [](F32Array x) {
    auto y = new_like(x);
    float* out = y.data();
    {
      nb::gil_scoped_release release;
      kiln::select_f32_vrelu()(x.size(), x.data(), out);
    }
    return y;
  }, "x"_a, "Elementwise max(x, 0) of a contiguous float32 array.");

  m.def("add", [](F32Array a, F32Array b) {
    if (a.ndim() != b.ndim()) throw std::invalid_argument("add: operands differ in rank");
    for (size_t i = 0; i < a.ndim(); ++i)
      if (a.shape(i) != b.shape(i))
        throw std::invalid_argument("add: operands differ in shape at axis " + std::to_string(i));
    auto y = new_like(a);
    float* out = y.data();
    {
      nb::gil_scoped_release release;
      kiln::select_f32_vadd()(a.size(), a.data(), b.data(), out);
    }
    return y;
  }, "a"_a, "b"_a, "Elementwise a + b of two same-shape contiguous float32 arrays.");
}
