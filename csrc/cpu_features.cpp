#include "cpu_features.hpp"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace fastconv {

std::vector<std::string> cpu_features() {
  std::vector<std::string> found;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // __builtin_cpu_supports needs string literals, hence one line per feature.
  if (__builtin_cpu_supports("sse4.2")) found.push_back("sse4.2");
  if (__builtin_cpu_supports("avx")) found.push_back("avx");
  if (__builtin_cpu_supports("avx2")) found.push_back("avx2");
  if (__builtin_cpu_supports("fma")) found.push_back("fma");
  if (__builtin_cpu_supports("avx512f")) found.push_back("avx512f");
  if (__builtin_cpu_supports("avx512bw")) found.push_back("avx512bw");
  if (__builtin_cpu_supports("avx512vl")) found.push_back("avx512vl");
  if (__builtin_cpu_supports("avx512dq")) found.push_back("avx512dq");
#elif defined(__aarch64__) && defined(__linux__)
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  if (hw & (1ul << 1)) found.push_back("asimd");  // HWCAP_ASIMD: NEON
  if (hw & (1ul << 22)) found.push_back("sve");   // HWCAP_SVE
  if (hw2 & (1ul << 1)) found.push_back("sve2");  // HWCAP2_SVE2
  if (hw2 & (1ul << 23)) found.push_back("sme");  // HWCAP2_SME
#elif defined(__aarch64__)
  found.push_back("asimd");  // NEON is part of every AArch64 CPU
#endif
  return found;
}

std::string build_target() {
  std::string t;
  auto add = [&](const char* name) { t += t.empty() ? name : std::string(" ") + name; };
#ifdef __AVX512F__
  add("avx512f");
#endif
#ifdef __AVX512BW__
  add("avx512bw");
#endif
#ifdef __AVX2__
  add("avx2");
#endif
#ifdef __FMA__
  add("fma");
#endif
#ifdef __AVX__
  add("avx");
#endif
#ifdef __SSE2__
  add("sse2");
#endif
#ifdef __ARM_NEON
  add("neon");
#endif
#ifdef __ARM_FEATURE_SVE
  add("sve");
#endif
  return t.empty() ? "generic" : t;
}

}  // namespace fastconv
