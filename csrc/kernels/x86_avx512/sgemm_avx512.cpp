// The AVX-512 packed SGEMM (BLIS-style loops and packing around the 12x32 micro-kernel,
// sgemm_12x32_avx512.hpp), and the run-time check that the CPU and FASTCONV_CPU allow it.
#include "kernels/x86_avx512/sgemm_avx512.hpp"

#if !(defined(__x86_64__) || defined(__i386__))
// Off x86 the float32 GEMMs run on OpenBLAS: sgemm_avx512_enabled() is false.
#include <stdexcept>

namespace fastconv {

bool sgemm_avx512_enabled() { return false; }

void sgemm_avx512(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, bool, float*,
                  int64_t) {
  throw std::logic_error("fastconv internal error: no AVX-512 GEMM kernel on this CPU");
}

}  // namespace fastconv

#else

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/x86_avx512/sgemm_12x32_avx512.hpp"
#include "runtime/cpu_features.hpp"

namespace fastconv {

namespace {

constexpr int64_t kMR = 12;
constexpr int64_t kKC = 384, kMC = 12 * 16, kNC = 3072;

// Packs rows [i0, i0+mc) x columns [k0, k0+kc) of op(A) into kMR-row micro-panels: panel p holds
// k-major groups of kMR floats.  The packers run only on AVX-512 CPUs, so they are compiled for it
// like the micro-kernel: built for the baseline ISA, their copy loops cost a 1x1 layer ~1.4x
// (resnet_1x1_56, against a -march=native build).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void pack_a(bool trans_a, const float* A, int64_t lda,
                                                                          int64_t i0, int64_t mc, int64_t k0,
                                                                          int64_t kc, float* dst) {
  for (int64_t p = 0; p < mc; p += kMR) {
    const int64_t rows = std::min(kMR, mc - p);
    for (int64_t k = 0; k < kc; ++k) {
      float* d = dst + (p / kMR) * kMR * kc + k * kMR;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + p + r, kk = k0 + k;
        d[r] = trans_a ? A[kk * lda + i] : A[i * lda + kk];
      }
      for (int64_t r = rows; r < kMR; ++r) d[r] = 0.0f;
    }
  }
}

// Packs rows [k0, k0+kc) x columns [j0, j0+nc) of op(B) into kNR-column micro-panels.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) void pack_b(bool trans_b, const float* B, int64_t ldb,
                                                                          int64_t k0, int64_t kc, int64_t j0,
                                                                          int64_t nc, float* dst) {
  for (int64_t p = 0; p < nc; p += kNR) {
    const int64_t cols = std::min(kNR, nc - p);
    float* panel = dst + (p / kNR) * kNR * kc;
    if (!trans_b && cols == kNR) {
      for (int64_t k = 0; k < kc; ++k) std::memcpy(panel + k * kNR, B + (k0 + k) * ldb + j0 + p, sizeof(float) * kNR);
      continue;
    }
    if (trans_b) {  // column j of op(B) is contiguous: read it in order, scatter into the panel
      for (int64_t c = 0; c < cols; ++c) {
        const float* src = B + (j0 + p + c) * ldb + k0;
        for (int64_t k = 0; k < kc; ++k) panel[k * kNR + c] = src[k];
      }
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t c = 0; c < cols; ++c) panel[k * kNR + c] = B[(k0 + k) * ldb + j0 + p + c];
    }
    if (cols < kNR)
      for (int64_t k = 0; k < kc; ++k) std::fill(panel + k * kNR + cols, panel + (k + 1) * kNR, 0.0f);
  }
}

}  // namespace

bool sgemm_avx512_enabled() {
  static const bool openblas_forced = [] {
    const char* choice = std::getenv("FASTCONV_GEMM");
    return choice && std::strcmp(choice, "openblas") == 0;
  }();
  // active_level() checked the CPU: avx512 is never active on a CPU without it.
  return !openblas_forced && active_level() == CpuLevel::avx512;
}

void sgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* B, int64_t ldb, bool accumulate, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  thread_local std::vector<float> pa, pb;
  for (int64_t j0 = 0; j0 < N; j0 += kNC) {
    const int64_t nc = std::min(kNC, N - j0), nc_pad = (nc + kNR - 1) / kNR * kNR;
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t kc = std::min(kKC, K - k0);
      const bool acc = accumulate || k0 > 0;
      if (pb.size() < static_cast<size_t>(nc_pad * kc)) pb.resize(nc_pad * kc);
      pack_b(trans_b, B, ldb, k0, kc, j0, nc, pb.data());
      for (int64_t i0 = 0; i0 < M; i0 += kMC) {
        const int64_t mc = std::min(kMC, M - i0), mc_pad = (mc + kMR - 1) / kMR * kMR;
        if (pa.size() < static_cast<size_t>(mc_pad * kc)) pa.resize(mc_pad * kc);
        pack_a(trans_a, A, lda, i0, mc, k0, kc, pa.data());
        for (int64_t jr = 0; jr < nc; jr += kNR)
          for (int64_t ir = 0; ir < mc; ir += kMR)
            sgemm_micro<kMR>(kc, pa.data() + (ir / kMR) * kMR * kc, pb.data() + (jr / kNR) * kNR * kc, kNR,
                             C + (i0 + ir) * ldc + j0 + jr, ldc, acc, std::min(kMR, mc - ir), std::min(kNR, nc - jr));
      }
    }
  }
}

}  // namespace fastconv

#endif  // x86
