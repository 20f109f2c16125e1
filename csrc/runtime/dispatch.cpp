// The dispatch table for the active level: one per level CMake built (kernels/isa_kernels.cpp), chosen at run
// time and switchable for tests.
#include "kernels/table.hpp"
#include "runtime/cpu_features.hpp"

namespace fastconv {

// One table per level CMake built (kernels/isa_kernels.cpp); the baseline one
// serves the portable level, and on AArch64, where NEON is architectural, the
// neon level too.
#if defined(FASTCONV_ISA_X86)
namespace isa_sse2 {
const KernelTable& table();
}
namespace isa_avx2 {
const KernelTable& table();
}
namespace isa_avx512 {
const KernelTable& table();
}
#elif defined(FASTCONV_ISA_ARM64)
namespace isa_neon {
const KernelTable& table();
}
#else
namespace isa_generic {
const KernelTable& table();
}
#endif

const KernelTable& kernels() {
#if defined(FASTCONV_ISA_X86)
  switch (active_level()) {
    case CpuLevel::avx512:
      return isa_avx512::table();
    case CpuLevel::avx2:
      return isa_avx2::table();
    default:
      return isa_sse2::table();
  }
#elif defined(FASTCONV_ISA_ARM64)
  return isa_neon::table();
#else
  return isa_generic::table();
#endif
}

}  // namespace fastconv
