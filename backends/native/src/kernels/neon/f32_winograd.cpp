// Winograd F(4x4, 3x3) transforms over 16 tiles, vectorized by the compiler for NEON.
#include "kernels/ukernels.h"
#include "kernels/winograd_ukernel.h"

KILN_DEFINE_WINO43_UKERNELS(_ukernel__neon_x16, 16)
