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

// Instruction-set levels, in order.  x86: portable < avx2 (AVX2 + FMA) < avx512
// (AVX-512F/BW/VL/DQ); aarch64: portable < neon.
enum class CpuLevel { portable = 0, avx2 = 1, avx512 = 2, neon = 3 };

const char* level_name(CpuLevel level);

// The widest level this CPU runs.
CpuLevel cpu_level();

// The level fastconv's run-time chosen kernels may use: cpu_level(), capped by
// FASTCONV_CPU=portable|avx2|avx512|neon (read once) or by set_active_level.
// A level the CPU lacks, or an unknown name, throws std::runtime_error naming
// what is missing: never an illegal instruction later.
CpuLevel active_level();
void set_active_level(const std::string& name);  // the same check; tests switch levels with it

}  // namespace fastconv
