// A packed single-precision GEMM for CPUs with AVX-512 (BLIS-style).
//
// C (M x N, row-major, leading dimension ldc) = op(A) op(B), or += when
// `accumulate`.  op(A) is M x K: A[i*lda + k], or A[k*lda + i] when trans_a;
// op(B) is K x N: B[k*ldb + j], or B[j*ldb + k] when trans_b.
//
// Loops (the operator): N in blocks of kNC columns, K in blocks of kKC, M in
// blocks of kMC rows; each K x N block of B is packed once into 32-column
// micro-panels, each M x K block of A into 12-row micro-panels, both
// zero-padded so the micro-kernel never branches on edges.
// Micro-kernel contract: a 12 x 32 tile of C held in 24 zmm registers; per k it
// loads 32 packed floats of B (2 zmm) and broadcasts 12 packed floats of A,
// 24 FMAs.  Edge tiles (fewer than 12 rows or 32 columns valid) are written
// back through masks, so nothing outside C is ever touched.
#pragma once

#include <cstdint>

namespace fastconv {

// True when the active level (cpu_features.hpp: the CPU's, capped by
// FASTCONV_CPU) is avx512 and FASTCONV_GEMM is not set to "openblas".
bool sgemm_avx512_enabled();

void sgemm_avx512(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* B, int64_t ldb, bool accumulate, float* C, int64_t ldc);

}  // namespace fastconv
