// Benchmark support: another library in this process made to see an x86 CPU
// without AVX-512 (peer_cpuid.cpp says how).
#pragma once

namespace fastconv {

// on: CPUID executed by the calling thread, and by threads it starts from now
// on, reports no AVX-512 or AMX (Linux x86-64 with CPUID faulting); off: the
// calling thread's CPUID is real again.  Returns whether that took effect
// (false where CPUID faulting is missing, and on every other platform).
bool mask_avx512_cpuid(bool on);

}  // namespace fastconv
