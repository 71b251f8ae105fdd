// Python entry points of the native extension.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
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

kiln::Isa parse_isa(const std::string& name) {
  if (name == "generic") return kiln::Isa::generic;
  if (name == "avx2") return kiln::Isa::avx2;
  if (name == "avx512") return kiln::Isa::avx512;
  throw std::invalid_argument("unknown ISA '" + name + "' (expected generic, avx2 or avx512)");
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
