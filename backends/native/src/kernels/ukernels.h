// Declarations of every microkernel, generated from ukernels.inc (the one list that drives
// declarations, dispatch and tests).
#pragma once
#include <cstddef>

#include "cpu.h"

namespace kiln {

using f32_vunary_fn = void (*)(size_t n, const float* x, float* y);
using f32_vbinary_fn = void (*)(size_t n, const float* a, const float* b, float* y);

#define KILN_UKERNEL(kind, name, isa) void name(size_t n, KILN_ARGS_##kind);
#define KILN_ARGS_vunary const float* x, float* y
#define KILN_ARGS_vbinary const float* a, const float* b, float* y
#include "kernels/ukernels.inc"
#undef KILN_UKERNEL

// Picks the fastest variant of a kernel family for the active ISA.
f32_vunary_fn select_f32_vrelu();
f32_vbinary_fn select_f32_vadd();

}  // namespace kiln
