// The NEON f32 microkernels of the list: kernels/simd/ over this ISA's vector traits.
#include "kernels/neon/vec.h"

#define KILN_SIMD_ISA_VEC kiln::neon::V128
#define KILN_ON_neon(...) __VA_ARGS__
#include "kernels/simd/define_ukernels.h"
