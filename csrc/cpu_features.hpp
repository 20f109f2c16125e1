// What the CPU reports and what this build was compiled for, for show_config().
// Detection only: no kernel is chosen here.
#pragma once

#include <string>
#include <vector>

namespace fastconv {

// Features the running CPU reports that matter to fastconv's kernels (x86:
// cpuid through __builtin_cpu_supports; aarch64: the auxiliary vector's hwcaps).
std::vector<std::string> cpu_features();

// Instruction sets the compiler was allowed to use for code outside the
// runtime-dispatched kernels (the -march of this build), e.g. "avx512f avx2 fma".
std::string build_target();

}  // namespace fastconv
