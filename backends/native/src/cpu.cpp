#include "cpu.h"

#include <atomic>
#include <cstdint>

#if KILN_HAS_X86
#include <cpuid.h>
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
    f.amx_tile = (d >> 24) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = (a >> 5) & 1;
  }
#endif
  return f;
}

Isa detect_best() {
  const CpuFeatures& f = cpu_features();
  if (f.os_saves_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma)
    return Isa::avx512;
  if (f.os_saves_avx && f.avx2 && f.fma) return Isa::avx2;
  return Isa::generic;
}

std::atomic<int> g_cap{static_cast<int>(Isa::avx512)};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa best_isa() {
  static const Isa isa = detect_best();
  return isa;
}

Isa active_isa() {
  const int best = static_cast<int>(best_isa());
  const int cap = g_cap.load(std::memory_order_relaxed);
  return static_cast<Isa>(best < cap ? best : cap);
}

Isa set_isa_cap(Isa cap) {
  g_cap.store(static_cast<int>(cap), std::memory_order_relaxed);
  return active_isa();
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace kiln
