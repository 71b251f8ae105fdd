// The AVX-512 f32 microkernels of the list: kernels/simd/ over this ISA's vector traits.
#include "kernels/avx512/vec.h"

#define KILN_SIMD_ISA_VEC kiln::avx512::V512
#define KILN_ON_avx512(...) __VA_ARGS__
#include "kernels/simd/define_ukernels.h"
