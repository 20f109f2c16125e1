// Benchmark support, not used by any kernel: make ONNX Runtime, a benchmark
// peer that has no switch of its own, see a CPU without AVX-512, so that
// `FASTCONV_CPU=avx2 fastconv bench` compares AVX2 kernels with AVX2 kernels on
// an AVX-512 machine (torch has ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA).
//
// Linux's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0); the CPU must offer it,
// /proc/cpuinfo says cpuid_fault) makes every CPUID instruction of the calling
// thread, and of threads it starts while it is on, raise SIGSEGV.  The handler
// runs the real CPUID with faulting briefly off, clears the AVX-512 (and AMX)
// feature bits of leaf 7, writes the registers back and steps over the
// instruction; any other SIGSEGV goes to the handler that was there before.
// Libraries read their CPU features once, when first used, so the mask need
// only be on while the peer starts; the handler stays installed for threads
// that inherited the flag.
#include "bench/peer_cpuid.hpp"

#if defined(__linux__) && defined(__x86_64__)
#include <asm/prctl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace fastconv {

namespace {

struct sigaction previous_segv;
bool handler_installed = false;

long set_cpuid_faulting(bool on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

// Leaf 7, sub-leaf 0: EBX AVX512F, DQ, IFMA, PF, ER, CD, BW, VL; ECX VBMI,
// VBMI2, VNNI, BITALG, VPOPCNTDQ; EDX 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16,
// FP16, AMX-TILE, AMX-INT8.  Sub-leaf 1: EAX AVX512_BF16.
constexpr uint32_t kLeaf7Ebx =
    (1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31);
constexpr uint32_t kLeaf7Ecx = (1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14);
constexpr uint32_t kLeaf7Edx = (1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25);
constexpr uint32_t kLeaf7Sub1Eax = 1u << 5;

void on_segv(int sig, siginfo_t* info, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  greg_t* r = uc->uc_mcontext.gregs;
  // A faulting CPUID is a general-protection fault (SI_KERNEL), its address the
  // instruction's, so its two bytes are there to read; page faults are not.
  const auto* ip = reinterpret_cast<const unsigned char*>(r[REG_RIP]);
  if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {  // CPUID
    const uint32_t leaf = static_cast<uint32_t>(r[REG_RAX]), sub = static_cast<uint32_t>(r[REG_RCX]);
    uint32_t a = leaf, b, c = sub, d;
    set_cpuid_faulting(false);
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    set_cpuid_faulting(true);
    if (leaf == 7 && sub == 0) b &= ~kLeaf7Ebx, c &= ~kLeaf7Ecx, d &= ~kLeaf7Edx;
    if (leaf == 7 && sub == 1) a &= ~kLeaf7Sub1Eax;
    r[REG_RAX] = a, r[REG_RBX] = b, r[REG_RCX] = c, r[REG_RDX] = d;
    r[REG_RIP] += 2;
    return;
  }
  // Not ours: the previous handler, or the default action once this returns and the fault repeats.
  if (previous_segv.sa_flags & SA_SIGINFO) {
    previous_segv.sa_sigaction(sig, info, context);
  } else if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN) {
    previous_segv.sa_handler(sig);
  } else {
    signal(SIGSEGV, SIG_DFL);
  }
}

}  // namespace

bool mask_avx512_cpuid(bool on) {
  if (!on) return set_cpuid_faulting(false) == 0;
  if (!handler_installed) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous_segv) != 0) return false;
    handler_installed = true;
  }
  return set_cpuid_faulting(true) == 0;  // fails (ENODEV) where the CPU or kernel has no CPUID faulting
}

}  // namespace fastconv

#else

namespace fastconv {

bool mask_avx512_cpuid(bool) { return false; }

}  // namespace fastconv

#endif
