// Winograd F(4x4, 3x3) transforms over 16 tiles as plain loops.
#include "kernels/ukernels.h"
#include "kernels/winograd_ukernel.h"

namespace kiln {
KILN_DEFINE_WINO43_UKERNELS(_ukernel__generic_x16, 16)
}  // namespace kiln
