// Run-time CPU feature detection; the ISA is chosen once, from CPUID (x86) or the
// kernel's HWCAP bits (aarch64).
#pragma once
#include <cstddef>
#include <string>

namespace kiln {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512_vnni = false;
  bool avx512_vbmi = false;
  bool avx512_bf16 = false;
  bool amx_tile = false;
  bool amx_int8 = false;
  bool os_saves_avx = false;     // XCR0 has YMM state
  bool os_saves_avx512 = false;  // XCR0 has opmask + ZMM state
  // aarch64 (HWCAP_ASIMD, HWCAP_ASIMDDP, HWCAP2_I8MM)
  bool asimd = false;
  bool asimd_dotprod = false;  // sdot / udot (armv8.2-a+dotprod)
  bool i8mm = false;           // usdot / smmla (armv8.6-a i8mm)
};

// One ISA per f32 kernel family. The int8 GEMM further picks its kernel from the features
// (VNNI on avx512; dotprod / i8mm on neon). Levels (isa_level) order the ISAs of one
// architecture for capping: generic 0, avx2 / neon 1, avx512 2.
enum class Isa { generic = 0, avx2 = 1, avx512 = 2, neon = 3 };
int isa_level(Isa isa);

const CpuFeatures& cpu_features();
// Best ISA this CPU and OS can run.
Isa best_isa();
// ISA in use: best_isa() unless capped with set_isa_cap (tests force slower paths).
Isa active_isa();
// Cap the ISA for the whole process to cap's level (never above what the CPU can do; an ISA
// of the other architecture caps by its level); returns the ISA now active. Tests use it to
// force slower paths; plans use PlanIsa instead.
Isa set_isa_cap(Isa cap);

// The ISA one plan was compiled for: kernels chosen, weights packed and GEMMs blocked for it.
// `vnni` allows the AVX-512 VNNI int8 kernel (AVX-512 without it runs the AVX2 one).
// On aarch64 `dotprod` / `i8mm` allow the sdot / usdot int8 kernels in the same way.
struct PlanIsa {
  Isa isa = Isa::avx512;
  bool vnni = true;
  bool dotprod = true;
  bool i8mm = true;
  bool amx = true;  // with vnni: the int8 GEMM may run on AMX tiles (kernels/amx)
};
// The plan ISA of the calling thread (nullptr: none, the process cap alone applies).
const PlanIsa* current_plan_isa();
// Sets the calling thread's plan ISA for the scope's lifetime (a plan building or running;
// the thread pool hands it on to the workers running a call's chunks).
class PlanIsaScope {
 public:
  explicit PlanIsaScope(const PlanIsa* isa);
  ~PlanIsaScope();
  PlanIsaScope(const PlanIsaScope&) = delete;
  PlanIsaScope& operator=(const PlanIsaScope&) = delete;

 private:
  const PlanIsa* saved_;
};
// Whether the int8 kernels may use AVX-512 VNNI now (CPU, process cap and plan ISA allow it).
bool vnni_active();
// Whether the aarch64 dotprod / i8mm int8 kernels may run now (CPU, ISA cap and plan ISA).
bool dotprod_active();
bool i8mm_active();
const char* isa_name(Isa isa);

// Per-core data cache sizes in bytes, read once from sysfs (Linux) or CPUID, with
// conservative defaults when neither answers. They size the GEMM cache blocking.
struct CacheSizes {
  size_t l1d = 32 * 1024;
  size_t l2 = 1024 * 1024;
  size_t l3 = 8 * 1024 * 1024;
};
const CacheSizes& cache_sizes();

}  // namespace kiln
