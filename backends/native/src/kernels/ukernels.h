// Declarations of every microkernel, generated from ukernels.inc (the one list that drives
// declarations, dispatch and tests).
#pragma once
#include <cstddef>

#include "cpu.h"
#include "kernels/directconv_ukernel.h"
#include "kernels/dwconv_ukernel.h"
#include "kernels/gemm_ukernel.h"
#include "kernels/gemv_ukernel.h"
#include "kernels/int8_gemm.h"
#include "kernels/pool_ukernel.h"
#include "kernels/winograd_ukernel.h"

namespace kiln {

using f32_vunary_fn = void (*)(size_t n, const float* x, float* y);
using f32_vbinary_fn = void (*)(size_t n, const float* a, const float* b, float* y);
// In place: x[i] = act(x[i]).
using f32_vact_fn = void (*)(size_t n, float* x, Activation act, float alpha, float beta);
// y = softmax(x) over one contiguous row (y may be x); *sum gets the sum of exp(x - max): a
// NaN or infinite sum (NaN or +-inf in the row) leaves y unspecified for the caller to redo.
using f32_vsoftmax_fn = void (*)(size_t n, const float* x, float* y, double* sum);
// Softmax down each of n contiguous columns of a len-row block whose rows are `stride` floats
// apart (a softmax over a non-last axis, vectorized across its columns; y may be x): *finite
// is false when a column holds a NaN or an infinity, leaving y unspecified for the caller to
// redo.
using f32_vsoftmax_cols_fn = void (*)(size_t n, size_t len, size_t stride, const float* x,
                                      float* y, bool* finite);
// y[i] = a[i * sa] op b[i * sb] with sa, sb in {0, 1}: 0 repeats the one element (a
// broadcast scalar, per channel or per row), 1 walks a contiguous row. prelu: a < 0 ? a * b
// : a (PRelu's slope in b).
enum class BinaryOp : int { add = 0, sub, mul, div, prelu };
using f32_vbinop_fn = void (*)(size_t n, const float* a, size_t sa, const float* b, size_t sb,
                               float* y, BinaryOp op);
// One row of n floats through a per-row affine, y = x * scale + shift (then max(y, 0) when
// relu), dealt into GEMM B panels nr wide: element j lands at y[(j / nr) * stride + j % nr],
// and the last panel's columns past n are zeroed (the padding the tile kernel reads).
using f32_vaffine_panels_fn = void (*)(size_t n, const float* x, float scale, float shift,
                                       bool relu, float* y, size_t nr, size_t stride);
// LRN over one plane: y[i] = x[i] * (bias + a * sum_w window[w][i]^2)^-beta, the window
// being the `count` planes of the neighbouring channels (x among them).
using f32_vlrn_fn = void (*)(size_t n, const float* const* window, size_t count, const float* x,
                             float bias, float a, float beta, float* y);
// Runs `iters` rounds of independent FMA chains; returns the flop count done.
using f32_fma_probe_fn = double (*)(size_t iters);

#define KILN_ARGS_vunary const float* x, float* y
#define KILN_ARGS_vbinary const float* a, const float* b, float* y
#define KILN_ARGS_vact float* x, Activation act, float alpha, float beta
#define KILN_ARGS_vsoftmax const float* x, float* y, double* sum
#define KILN_ARGS_vsoftmax_cols \
  size_t len, size_t stride, const float* x, float* y, bool* finite
#define KILN_ARGS_vbinop \
  const float* a, size_t sa, const float* b, size_t sb, float* y, BinaryOp op
#define KILN_ARGS_vaffine_panels \
  const float* x, float scale, float shift, bool relu, float* y, size_t nr, size_t stride
#define KILN_ARGS_vlrn                                                                  \
  const float* const* window, size_t count, const float* x, float bias, float a, float beta, \
      float* y
#define KILN_UKERNEL(kind, name, isa) void name(size_t n, KILN_ARGS_##kind);
#define KILN_GEMM_UKERNEL(name, isa, mr, nr) \
  void name(size_t m, size_t kc, const float* a, const float* b, const GemmTile& t);
#define KILN_DWCONV_UKERNEL(name, isa) void name(const DwConvPlane& p);
#define KILN_GEMV_UKERNEL(name, isa, mr) \
  void name(size_t panels, size_t K, const float* a, const float* v, float* y);
#define KILN_POOL_UKERNEL(name, isa) void name(const PoolPlane& p);
#define KILN_DIRECTCONV_UKERNEL(name, isa, kb, nv, lanes) void name(const DirectConvRows& p);
#define KILN_FMA_PROBE(name, isa) double name(size_t iters);
#define KILN_WINO_UKERNEL(suffix, isa, tiles)                                         \
  void kiln_f32_wino43_input##suffix(const float* d, float* v, size_t vs);              \
  void kiln_f32_wino43_output##suffix(const float* m, size_t ms, float* y);             \
  void kiln_f32_wino43_gather##suffix(const float* src, size_t rs, size_t n, float* d); \
  void kiln_f32_wino43_scatter##suffix(const float* y, size_t n, size_t rows, float bias, \
                                       const float* res, float* dst, size_t ds, float lo,  \
                                       float hi);                                          \
  void kiln_f32_wino43_weights##suffix(const float* g, size_t n, float* const* u);
#define KILN_INT8_GEMM_UKERNEL(name, isa, feature)                                         \
  void name(size_t rows, size_t nseg, size_t seg_len, const uint8_t* const* a,          \
            const int8_t* b, int32_t* c, size_t ldc, size_t cols);
#define KILN_INT8_LOOPS(isa, range) \
  KILN_INT8_LOOPS_DECL(isa) bool range(size_t n, const float* x, float* lo, float* hi);
#include "kernels/ukernels.inc"
#undef KILN_INT8_GEMM_UKERNEL
#undef KILN_INT8_LOOPS
#undef KILN_UKERNEL
#undef KILN_GEMM_UKERNEL
#undef KILN_DWCONV_UKERNEL
#undef KILN_GEMV_UKERNEL
#undef KILN_POOL_UKERNEL
#undef KILN_DIRECTCONV_UKERNEL
#undef KILN_FMA_PROBE
#undef KILN_WINO_UKERNEL

// Picks the fastest variant of a kernel family for the active ISA.
f32_vunary_fn select_f32_vrelu();
f32_vbinary_fn select_f32_vadd();
f32_vact_fn select_f32_vact(Isa isa);
f32_vsoftmax_fn select_f32_vsoftmax(Isa isa);
f32_vsoftmax_cols_fn select_f32_vsoftmax_cols(Isa isa);
f32_vbinop_fn select_f32_vbinop(Isa isa);
f32_vaffine_panels_fn select_f32_vaffine_panels(Isa isa);
f32_vlrn_fn select_f32_vlrn(Isa isa);
dwconv_plane_fn select_f32_dwconv(Isa isa);
// The GEMV kernel for SGEMM panels of tile height mr on isa; nullptr when the list has none
// (the caller then loops in plain C++).
f32_gemv_fn select_f32_gemv(Isa isa, size_t mr);
pool_plane_fn select_f32_pool(Isa isa);
// The direct conv kernel of isa (the generic one when the list has none for it) and its
// vector width in floats (1: the generic kernel).
struct DirectConvKernel {
  directconv_fn fn;
  size_t lanes;
};
DirectConvKernel select_f32_directconv(Isa isa);
struct WinogradKernels {
  wino_input_fn input;
  wino_output_fn output;
  wino_gather_fn gather;
  wino_scatter_fn scatter;
  wino_weights_fn weights;
  size_t tiles;  // T: tiles per transform call, equal to the ISA's SGEMM nr
};
WinogradKernels select_f32_wino43(Isa isa);
// The widest u8 x s8 GEMM kernel at most `isa` wide (VNNI ones only when `vnni`), and its name.
struct Int8GemmKernel {
  int8_ukernel_fn fn;
  const char* name;
};
// What an int8 kernel needs beyond its ISA (ukernels.inc's third column).
enum class Int8Feature { none, vnni, dotprod, i8mm };
// Whether that feature is in use now (CPU, caps and the plan's ISA all allow it).
bool int8_feature_active(Int8Feature feature);
// Whether this CPU has that feature, whatever caps are in force (tests run every such kernel).
bool int8_feature_here(Int8Feature feature);
// The widest u8 x s8 kernel the list offers for isa with its features active.
Int8GemmKernel select_u8s8_gemm(Isa isa);
const Int8Loops& select_int8_loops(Isa isa);
// nullptr when this build has no probe for the ISA.
f32_fma_probe_fn select_f32_fma_probe(Isa isa);

}  // namespace kiln
