#include "cpu.h"

#include <atomic>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#if KILN_HAS_X86
#include <cpuid.h>
#endif
#if KILN_HAS_ARM
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace kiln {

namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if KILN_HAS_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  if (osxsave) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const uint64_t xcr0 = (uint64_t(hi) << 32) | lo;
    f.os_saves_avx = (xcr0 & 0x6) == 0x6;
    f.os_saves_avx512 = (xcr0 & 0xe6) == 0xe6;
  }
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = (b >> 5) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512_vnni = (c >> 11) & 1;
    f.avx512_vbmi = (c >> 1) & 1;
    f.amx_tile = (d >> 24) & 1;
    f.amx_int8 = (d >> 25) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = (a >> 5) & 1;
  }
#endif
#if KILN_HAS_ARM
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  f.asimd = hwcap & HWCAP_ASIMD;
#ifdef HWCAP_ASIMDDP
  f.asimd_dotprod = hwcap & HWCAP_ASIMDDP;
#endif
#ifdef HWCAP2_I8MM
  f.i8mm = hwcap2 & HWCAP2_I8MM;
#endif
  (void)hwcap2;
#endif
  return f;
}

Isa detect_best() {
  const CpuFeatures& f = cpu_features();
  if (f.os_saves_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma)
    return Isa::avx512;
  if (f.os_saves_avx && f.avx2 && f.fma) return Isa::avx2;
  if (f.asimd) return Isa::neon;
  return Isa::generic;
}

// Reads /sys/devices/system/cpu/cpu0/cache/index<i>/{level,type,size}; 0 when absent.
size_t sysfs_cache(int want_level, bool want_data) {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    auto read = [&](const char* leaf, char* buf, size_t len) {
      FILE* f = std::fopen((dir + leaf).c_str(), "r");
      if (!f) return false;
      const bool ok = std::fgets(buf, static_cast<int>(len), f) != nullptr;
      std::fclose(f);
      return ok;
    };
    char level[16], type[32], size[32];
    if (!read("level", level, sizeof level) || !read("type", type, sizeof type) ||
        !read("size", size, sizeof size))
      continue;
    if (std::atoi(level) != want_level) continue;
    const bool is_instr = std::strncmp(type, "Instruction", 11) == 0;
    if (want_data == is_instr) continue;
    char* end = nullptr;
    size_t bytes = std::strtoul(size, &end, 10);
    if (end && (*end == 'K' || *end == 'k')) bytes *= 1024;
    if (end && (*end == 'M' || *end == 'm')) bytes *= 1024 * 1024;
    return bytes;
  }
  return 0;
}

CacheSizes detect_caches() {
  CacheSizes c;
  if (size_t v = sysfs_cache(1, true)) c.l1d = v;
  if (size_t v = sysfs_cache(2, true)) c.l2 = v;
  if (size_t v = sysfs_cache(3, true)) c.l3 = v;
#if KILN_HAS_X86
  if (sysfs_cache(1, true) == 0) {
    // CPUID deterministic cache parameters: leaf 4 (Intel) or 0x8000001D (AMD).
    unsigned a, b, cc, d;
    const unsigned leaf = __get_cpuid_max(0x80000000u, nullptr) >= 0x8000001Du ? 0x8000001Du : 4u;
    for (unsigned i = 0; i < 8; ++i) {
      __cpuid_count(leaf, i, a, b, cc, d);
      const unsigned type = a & 0x1f;
      if (type == 0) break;
      if (type == 2) continue;  // instruction cache
      const size_t bytes = size_t((b >> 22) + 1) * (((b >> 12) & 0x3ff) + 1) *
                           ((b & 0xfff) + 1) * (size_t(cc) + 1);
      const unsigned level = (a >> 5) & 7;
      if (level == 1) c.l1d = bytes;
      if (level == 2) c.l2 = bytes;
      if (level == 3) c.l3 = bytes;
    }
  }
#endif
  return c;
}

std::atomic<int> g_cap_level{2};  // the highest level: no cap
thread_local const PlanIsa* t_plan_isa = nullptr;

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa best_isa() {
  static const Isa isa = detect_best();
  return isa;
}

int isa_level(Isa isa) {
  switch (isa) {
    case Isa::avx512: return 2;
    case Isa::avx2:
    case Isa::neon: return 1;
    default: return 0;
  }
}

Isa active_isa() {
  const Isa best = best_isa();
  int cap = g_cap_level.load(std::memory_order_relaxed);
  if (t_plan_isa && isa_level(t_plan_isa->isa) < cap) cap = isa_level(t_plan_isa->isa);
  if (isa_level(best) <= cap) return best;
  // Only x86 has an ISA between generic and its best one.
  return cap >= 1 && best == Isa::avx512 ? Isa::avx2 : Isa::generic;
}

const PlanIsa* current_plan_isa() { return t_plan_isa; }

PlanIsaScope::PlanIsaScope(const PlanIsa* isa) : saved_(t_plan_isa) { t_plan_isa = isa; }

PlanIsaScope::~PlanIsaScope() { t_plan_isa = saved_; }

bool vnni_active() {
  const CpuFeatures& f = cpu_features();
  return active_isa() == Isa::avx512 && f.avx512_vnni && (!t_plan_isa || t_plan_isa->vnni);
}

bool dotprod_active() {
  const CpuFeatures& f = cpu_features();
  return active_isa() == Isa::neon && f.asimd_dotprod && (!t_plan_isa || t_plan_isa->dotprod);
}

bool i8mm_active() {
  const CpuFeatures& f = cpu_features();
  return active_isa() == Isa::neon && f.i8mm && (!t_plan_isa || t_plan_isa->i8mm);
}

Isa set_isa_cap(Isa cap) {
  g_cap_level.store(isa_level(cap), std::memory_order_relaxed);
  return active_isa();
}

const CacheSizes& cache_sizes() {
  static const CacheSizes sizes = detect_caches();
  return sizes;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::neon: return "neon";
    default: return "generic";
  }
}

}  // namespace kiln
