#include "kernels/ukernels.h"

namespace kiln {

f32_vunary_fn select_f32_vrelu() {
#if KILN_HAS_X86
  switch (active_isa()) {
    case Isa::avx512: return kiln_f32_vrelu_ukernel__avx512_x32;
    case Isa::avx2: return kiln_f32_vrelu_ukernel__avx2_x16;
    default: break;
  }
#endif
  return kiln_f32_vrelu_ukernel__generic;
}

f32_vbinary_fn select_f32_vadd() {
#if KILN_HAS_X86
  switch (active_isa()) {
    case Isa::avx512: return kiln_f32_vadd_ukernel__avx512_x32;
    case Isa::avx2: return kiln_f32_vadd_ukernel__avx2_x16;
    default: break;
  }
#endif
  return kiln_f32_vadd_ukernel__generic;
}

}  // namespace kiln
