// The AVX2+FMA f32 microkernels of the list: kernels/simd/ over this ISA's vector traits.
#include "kernels/avx2/vec.h"

#define KILN_SIMD_ISA_VEC kiln::avx2::V256
#define KILN_ON_avx2(...) __VA_ARGS__
#include "kernels/simd/define_ukernels.h"
