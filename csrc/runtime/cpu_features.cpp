// CPU feature detection and the level this build can run (FASTCONV_CPU caps it), for dispatch and show_config.
#include "runtime/cpu_features.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <stdexcept>

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

const char* level_name(CpuLevel level) {
  switch (level) {
    case CpuLevel::avx2:
      return "avx2";
    case CpuLevel::avx512:
      return "avx512";
    case CpuLevel::neon:
      return "neon";
    default:
      return "portable";
  }
}

namespace {

bool has(const std::vector<std::string>& features, const char* name) {
  return std::find(features.begin(), features.end(), name) != features.end();
}

// Why this CPU cannot run a level ("this CPU lacks avx2, fma"); empty when it can.
std::string missing_for(CpuLevel level) {
  const std::vector<std::string> f = cpu_features();
  std::string missing;
  auto need = [&](const char* name) {
    if (!has(f, name)) missing += missing.empty() ? name : std::string(", ") + name;
  };
#if defined(__x86_64__) || defined(__i386__)
  if (level == CpuLevel::neon) return "neon is an ARM level and this is an x86 CPU";
  if (level >= CpuLevel::avx2) need("avx2"), need("fma");
  if (level == CpuLevel::avx512) need("avx512f"), need("avx512bw"), need("avx512vl"), need("avx512dq");
#elif defined(__aarch64__)
  if (level == CpuLevel::avx2 || level == CpuLevel::avx512)
    return std::string(level_name(level)) + " is an x86 level and this is an ARM CPU";
  if (level == CpuLevel::neon) need("asimd");
#else
  if (level != CpuLevel::portable) return std::string(level_name(level)) + " is not a level of this CPU";
#endif
  return missing.empty() ? missing : "this CPU lacks " + missing;
}

CpuLevel parse_level(const std::string& name) {
  for (CpuLevel l : {CpuLevel::portable, CpuLevel::avx2, CpuLevel::avx512, CpuLevel::neon})
    if (name == level_name(l)) {
      const std::string missing = missing_for(l);
      if (!missing.empty())
        throw std::runtime_error("FASTCONV_CPU=" + name + ": " + missing + " (it runs up to '" +
                                 level_name(cpu_level()) + "')");
      return l;
    }
  throw std::runtime_error("FASTCONV_CPU must be one of portable, avx2, avx512, neon, got '" + name + "'");
}

std::atomic<int> g_active{-1};  // -1: not read yet

}  // namespace

CpuLevel cpu_level() {
  for (CpuLevel l : {CpuLevel::avx512, CpuLevel::avx2, CpuLevel::neon})
    if (missing_for(l).empty()) return l;
  return CpuLevel::portable;
}

CpuLevel active_level() {
  int v = g_active.load(std::memory_order_acquire);
  if (v < 0) {
    const char* env = std::getenv("FASTCONV_CPU");
    v = static_cast<int>(env && *env ? parse_level(env) : cpu_level());
    g_active.store(v, std::memory_order_release);
  }
  return static_cast<CpuLevel>(v);
}

void set_active_level(const std::string& name) {
  g_active.store(static_cast<int>(parse_level(name)), std::memory_order_release);
}

}  // namespace fastconv
