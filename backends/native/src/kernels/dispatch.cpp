// Run-time kernel selection, generated from ukernels.inc: each selector includes the list
// with only its own family's macro expanding to a match.
#include "kernels/ukernels.h"

namespace kiln {

#define KILN_UKERNEL(kind, name, isa_) KILN_SELECT_##kind(name, isa_)
#define KILN_SELECT_vunary(name, isa_)
#define KILN_SELECT_vbinary(name, isa_)
#define KILN_SELECT_vact(name, isa_)
#define KILN_SELECT_vsoftmax(name, isa_)
#define KILN_SELECT_vsoftmax_cols(name, isa_)
#define KILN_SELECT_vbinop(name, isa_)
#define KILN_SELECT_vaffine_panels(name, isa_)
#define KILN_SELECT_vlrn(name, isa_)
#define KILN_GEMM_UKERNEL(name, isa_, mr, nr)
#define KILN_DWCONV_UKERNEL(name, isa_)
#define KILN_GEMV_UKERNEL(name, isa_, mr)
#define KILN_POOL_UKERNEL(name, isa_)
#define KILN_DIRECTCONV_UKERNEL(name, isa_, kb, nv, lanes)
#define KILN_FMA_PROBE(name, isa_)
#define KILN_WINO_UKERNEL(suffix, isa_, tiles)
#define KILN_INT8_GEMM_UKERNEL(name, isa_, feature)
#define KILN_INT8_LOOPS(isa_, range)
#define KILN_MATCH(name, isa_) \
  if (isa == Isa::isa_) return name;

const GemmKernel& gemm_kernel(Isa isa) {
#undef KILN_GEMM_UKERNEL
#define KILN_GEMM_UKERNEL(name, isa_, mr, nr)                      \
  if (isa == Isa::isa_) {                                          \
    static const GemmKernel k{Isa::isa_, mr, nr, name, #name};     \
    return k;                                                      \
  }
#include "kernels/ukernels.inc"
#undef KILN_GEMM_UKERNEL
#define KILN_GEMM_UKERNEL(name, isa_, mr, nr)
  return gemm_kernel(Isa::generic);
}

f32_vact_fn select_f32_vact(Isa isa) {
#undef KILN_SELECT_vact
#define KILN_SELECT_vact(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vact
#define KILN_SELECT_vact(name, isa_)
  return kiln_f32_vact_ukernel__generic;
}

f32_vsoftmax_fn select_f32_vsoftmax(Isa isa) {
#undef KILN_SELECT_vsoftmax
#define KILN_SELECT_vsoftmax(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vsoftmax
#define KILN_SELECT_vsoftmax(name, isa_)
  return kiln_f32_vsoftmax_ukernel__generic;
}

f32_vsoftmax_cols_fn select_f32_vsoftmax_cols(Isa isa) {
#undef KILN_SELECT_vsoftmax_cols
#define KILN_SELECT_vsoftmax_cols(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vsoftmax_cols
#define KILN_SELECT_vsoftmax_cols(name, isa_)
  return kiln_f32_vsoftmax_cols_ukernel__generic;
}

f32_vbinop_fn select_f32_vbinop(Isa isa) {
#undef KILN_SELECT_vbinop
#define KILN_SELECT_vbinop(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vbinop
#define KILN_SELECT_vbinop(name, isa_)
  return kiln_f32_vbinop_ukernel__generic;
}

f32_vaffine_panels_fn select_f32_vaffine_panels(Isa isa) {
#undef KILN_SELECT_vaffine_panels
#define KILN_SELECT_vaffine_panels(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vaffine_panels
#define KILN_SELECT_vaffine_panels(name, isa_)
  return kiln_f32_vaffine_panels_ukernel__generic;
}

f32_vlrn_fn select_f32_vlrn(Isa isa) {
#undef KILN_SELECT_vlrn
#define KILN_SELECT_vlrn(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vlrn
#define KILN_SELECT_vlrn(name, isa_)
  return kiln_f32_vlrn_ukernel__generic;
}

dwconv_plane_fn select_f32_dwconv(Isa isa) {
#undef KILN_DWCONV_UKERNEL
#define KILN_DWCONV_UKERNEL(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_DWCONV_UKERNEL
#define KILN_DWCONV_UKERNEL(name, isa_)
  return kiln_f32_dwconv_ukernel__generic;
}

f32_gemv_fn select_f32_gemv(Isa isa, size_t mr) {
#undef KILN_GEMV_UKERNEL
#define KILN_GEMV_UKERNEL(name, isa_, mr_) \
  if (isa == Isa::isa_ && mr == mr_) return name;
#include "kernels/ukernels.inc"
#undef KILN_GEMV_UKERNEL
#define KILN_GEMV_UKERNEL(name, isa_, mr_)
  return nullptr;
}

pool_plane_fn select_f32_pool(Isa isa) {
#undef KILN_POOL_UKERNEL
#define KILN_POOL_UKERNEL(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_POOL_UKERNEL
#define KILN_POOL_UKERNEL(name, isa_)
  return kiln_f32_pool_ukernel__generic;
}

DirectConvKernel select_f32_directconv(Isa isa) {
#undef KILN_DIRECTCONV_UKERNEL
#define KILN_DIRECTCONV_UKERNEL(name, isa_, kb, nv, lanes) \
  if (isa == Isa::isa_) return {name, lanes};
#include "kernels/ukernels.inc"
#undef KILN_DIRECTCONV_UKERNEL
#define KILN_DIRECTCONV_UKERNEL(name, isa_, kb, nv, lanes)
  return {kiln_f32_directconv_ukernel__generic, 1};
}

f32_fma_probe_fn select_f32_fma_probe(Isa isa) {
#undef KILN_FMA_PROBE
#define KILN_FMA_PROBE(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_FMA_PROBE
#define KILN_FMA_PROBE(name, isa_)
  return nullptr;
}

WinogradKernels select_f32_wino43(Isa isa) {
#undef KILN_WINO_UKERNEL
#define KILN_WINO_UKERNEL(suffix, isa_, tiles)                                            \
  if (isa == Isa::isa_)                                                                   \
    return {kiln_f32_wino43_input##suffix, kiln_f32_wino43_output##suffix,                \
            kiln_f32_wino43_gather##suffix, kiln_f32_wino43_scatter##suffix,              \
            kiln_f32_wino43_weights##suffix, tiles};
#include "kernels/ukernels.inc"
#undef KILN_WINO_UKERNEL
#define KILN_WINO_UKERNEL(suffix, isa_, tiles)
  return select_f32_wino43(Isa::generic);
}

bool int8_feature_active(Int8Feature feature) {
  switch (feature) {
    case Int8Feature::vnni: return vnni_active();
    case Int8Feature::dotprod: return dotprod_active();
    case Int8Feature::i8mm: return i8mm_active();
    default: return true;
  }
}

bool int8_feature_here(Int8Feature feature) {
  const CpuFeatures& f = cpu_features();
  switch (feature) {
    case Int8Feature::vnni: return f.avx512_vnni;
    case Int8Feature::dotprod: return f.asimd_dotprod;
    case Int8Feature::i8mm: return f.i8mm;
    default: return true;
  }
}

Int8GemmKernel select_u8s8_gemm(Isa isa) {
  Int8GemmKernel best{kiln_u8s8_gemm_ukernel__generic, "kiln_u8s8_gemm_ukernel__generic"};
#undef KILN_INT8_GEMM_UKERNEL
#define KILN_INT8_GEMM_UKERNEL(name, isa_, feature)                  \
  if (isa_level(Isa::isa_) <= isa_level(isa) &&                      \
      int8_feature_active(Int8Feature::feature))                     \
    best = {name, #name};
#include "kernels/ukernels.inc"
#undef KILN_INT8_GEMM_UKERNEL
#define KILN_INT8_GEMM_UKERNEL(name, isa_, feature)
  return best;
}

const Int8Loops& select_int8_loops(Isa isa) {
#undef KILN_INT8_LOOPS
#define KILN_INT8_LOOPS(isa_, range)                                                        \
  if (isa == Isa::isa_) {                                                                   \
    static const Int8Loops loops{kiln_quantize_u8__##isa_,   kiln_quantize_s8__##isa_,      \
                                 kiln_dequantize_u8__##isa_, kiln_dequantize_s8__##isa_,    \
                                 range,                      kiln_int8_row_f32__##isa_,     \
                                 kiln_int8_row_u8__##isa_,  kiln_int8_tile_f32__##isa_,     \
                                 kiln_int8_tile_u8__##isa_, kiln_dw_u8s8__##isa_,          \
                                 kiln_dw_layout__##isa_,    kiln_transpose_u8__##isa_};  \
    return loops;                                                                           \
  }
#include "kernels/ukernels.inc"
#undef KILN_INT8_LOOPS
#define KILN_INT8_LOOPS(isa_, range)
  return select_int8_loops(Isa::generic);
}

f32_vunary_fn select_f32_vrelu() {
  const Isa isa = active_isa();
#undef KILN_SELECT_vunary
#define KILN_SELECT_vunary(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vunary
#define KILN_SELECT_vunary(name, isa_)
  return kiln_f32_vrelu_ukernel__generic;
}

f32_vbinary_fn select_f32_vadd() {
  const Isa isa = active_isa();
#undef KILN_SELECT_vbinary
#define KILN_SELECT_vbinary(name, isa_) KILN_MATCH(name, isa_)
#include "kernels/ukernels.inc"
#undef KILN_SELECT_vbinary
#define KILN_SELECT_vbinary(name, isa_)
  return kiln_f32_vadd_ukernel__generic;
}

}  // namespace kiln
