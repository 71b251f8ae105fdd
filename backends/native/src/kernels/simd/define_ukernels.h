// Defines one ISA's f32 microkernels from the list (kernels/ukernels.inc): every entry of that
// ISA becomes a function of the name the list gives, instantiating the shared template over
// the ISA's vector traits type. The translation unit, compiled with the ISA's flags, first
// makes its ISA's KILN_ON_<isa> pass its arguments through and names the traits type:
//   #include "kernels/avx2/vec.h"
//   #define KILN_SIMD_ISA_VEC kiln::avx2::V256
//   #define KILN_ON_avx2(...) __VA_ARGS__
//   #include "kernels/simd/define_ukernels.h"
// Entries of other ISAs expand to nothing; int8 kernels are defined in their own sources.
#pragma once
#include "kernels/simd/f32_directconv.h"
#include "kernels/simd/f32_dwconv.h"
#include "kernels/simd/f32_elementwise.h"
#include "kernels/simd/f32_gemv.h"
#include "kernels/simd/f32_gemm.h"
#include "kernels/simd/f32_pool.h"
#include "kernels/ukernels.h"
#include "kernels/winograd_ukernel.h"

#ifndef KILN_SIMD_ISA_VEC
#error "define KILN_SIMD_ISA_VEC (the ISA's vector traits type) before this header"
#endif
#ifndef KILN_ON_generic
#define KILN_ON_generic(...)
#endif
#ifndef KILN_ON_avx2
#define KILN_ON_avx2(...)
#endif
#ifndef KILN_ON_avx512
#define KILN_ON_avx512(...)
#endif
#ifndef KILN_ON_neon
#define KILN_ON_neon(...)
#endif

namespace kiln {

#define KILN_UKERNEL(kind, name, isa) KILN_ON_##isa(KILN_DEFINE_##kind(name))
#define KILN_DEFINE_vunary(name) \
  void name(size_t n, const float* x, float* y) { simd::vrelu_ukernel<KILN_SIMD_ISA_VEC>(n, x, y); }
#define KILN_DEFINE_vbinary(name)                                \
  void name(size_t n, const float* a, const float* b, float* y) { \
    simd::vadd_ukernel<KILN_SIMD_ISA_VEC>(n, a, b, y);           \
  }
#define KILN_DEFINE_vact(name)                                                 \
  void name(size_t n, float* x, Activation act, float alpha, float beta) {     \
    simd::vact_ukernel<KILN_SIMD_ISA_VEC>(n, x, act, alpha, beta);             \
  }
#define KILN_DEFINE_vsoftmax(name)                                             \
  void name(size_t n, const float* x, float* y, double* sum) {                 \
    simd::vsoftmax_ukernel<KILN_SIMD_ISA_VEC>(n, x, y, sum);                   \
  }
#define KILN_DEFINE_vsoftmax_cols(name)                                              \
  void name(size_t n, size_t len, size_t stride, const float* x, float* y, bool* finite) { \
    simd::vsoftmax_cols_ukernel<KILN_SIMD_ISA_VEC>(n, len, stride, x, y, finite);      \
  }
#define KILN_DEFINE_vbinop(name)                                                           \
  void name(size_t n, const float* a, size_t sa, const float* b, size_t sb, float* y,      \
            BinaryOp op) {                                                                 \
    simd::vbinop_ukernel<KILN_SIMD_ISA_VEC>(n, a, sa, b, sb, y, op);                       \
  }
#define KILN_DEFINE_vaffine_panels(name)                                                  \
  void name(size_t n, const float* x, float scale, float shift, bool relu, float* y,       \
            size_t nr, size_t stride) {                                                    \
    simd::vaffine_panels_ukernel<KILN_SIMD_ISA_VEC>(n, x, scale, shift, relu, y, nr, stride); \
  }
#define KILN_DEFINE_vlrn(name)                                                            \
  void name(size_t n, const float* const* window, size_t count, const float* x, float bias, \
            float a, float beta, float* y) {                                               \
    simd::vlrn_ukernel<KILN_SIMD_ISA_VEC>(n, window, count, x, bias, a, beta, y);          \
  }
#define KILN_GEMM_UKERNEL(name, isa, mr, nr)                                             \
  KILN_ON_##isa(void name(size_t m, size_t kc, const float* a, const float* b,          \
                          const GemmTile& t) {                                           \
    simd::gemm_ukernel<KILN_SIMD_ISA_VEC, mr, nr>(m, kc, a, b, t);                       \
  })
#define KILN_DWCONV_UKERNEL(name, isa) \
  KILN_ON_##isa(void name(const DwConvPlane& p) { simd::dwconv_ukernel<KILN_SIMD_ISA_VEC>(p); })
#define KILN_GEMV_UKERNEL(name, isa, mr)                                                 \
  KILN_ON_##isa(void name(size_t panels, size_t K, const float* a, const float* v, float* y) { \
    simd::gemv_panels<KILN_SIMD_ISA_VEC, mr>(panels, K, a, v, y);                          \
  })
#define KILN_POOL_UKERNEL(name, isa) \
  KILN_ON_##isa(void name(const PoolPlane& p) { simd::pool_ukernel<KILN_SIMD_ISA_VEC>(p); })
#define KILN_DIRECTCONV_UKERNEL(name, isa, kb, nv, lanes)                                \
  KILN_ON_##isa(void name(const DirectConvRows& p) {                                      \
    static_assert(lanes == KILN_SIMD_ISA_VEC::kWidth, "the list's lanes for " #name);     \
    simd::directconv_ukernel<KILN_SIMD_ISA_VEC, kb, nv>(p);                              \
  })
#define KILN_FMA_PROBE(name, isa) \
  KILN_ON_##isa(double name(size_t iters) { return simd::fma_probe<KILN_SIMD_ISA_VEC>(iters); })
// The Winograd transforms are plain loops the compiler vectorizes under the ISA's flags.
#define KILN_WINO_UKERNEL(suffix, isa, tiles) \
  KILN_ON_##isa(KILN_DEFINE_WINO43_UKERNELS(suffix, tiles))
#define KILN_INT8_GEMM_UKERNEL(name, isa, feature)
#define KILN_INT8_LOOPS(isa, range)
#include "kernels/ukernels.inc"
#undef KILN_UKERNEL
#undef KILN_DEFINE_vunary
#undef KILN_DEFINE_vbinary
#undef KILN_DEFINE_vact
#undef KILN_DEFINE_vsoftmax
#undef KILN_DEFINE_vsoftmax_cols
#undef KILN_DEFINE_vbinop
#undef KILN_DEFINE_vaffine_panels
#undef KILN_DEFINE_vlrn
#undef KILN_GEMM_UKERNEL
#undef KILN_DWCONV_UKERNEL
#undef KILN_GEMV_UKERNEL
#undef KILN_POOL_UKERNEL
#undef KILN_DIRECTCONV_UKERNEL
#undef KILN_FMA_PROBE
#undef KILN_WINO_UKERNEL
#undef KILN_INT8_GEMM_UKERNEL
#undef KILN_INT8_LOOPS

}  // namespace kiln
