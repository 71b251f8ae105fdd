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
  bool avx512_bf16 = false;
  bool amx_tile = false;
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
// Cap the ISA to cap's level (never above what the CPU can do; an ISA of the other
// architecture caps by its level); returns the ISA now active.
Isa set_isa_cap(Isa cap);
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
