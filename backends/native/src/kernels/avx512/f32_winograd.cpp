// Winograd F(4x4, 3x3) transforms over 32 tiles, vectorized by the compiler for this ISA.
#include "kernels/ukernels.h"
#include "kernels/winograd_ukernel.h"

KILN_DEFINE_WINO43_UKERNELS(_ukernel__avx512_x32, 32)
