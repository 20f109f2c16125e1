// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C.
// float32 runs on fastconv's AVX-512 kernel (sgemm_avx512.hpp) when the CPU has
// it and alpha == 1, beta in {0, 1}; everything else on OpenBLAS
// (scipy-openblas32: 32-bit indices, prefixed symbols).
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastconv {

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

// Packs the M x K row-major matrix a (leading dimension lda) for the level's
// gemm_packed (kernels/table.hpp): panels of mr rows, element (i, k) at
// out[(i / mr) * K * mr + k * mr + i % mr], rows past M zero; out holds
// packed_size(M, K, mr) values.
template <class T>
void pack_rows(const T* a, int64_t lda, int64_t M, int64_t K, int64_t mr, T* out) {
  for (int64_t i0 = 0; i0 < M; i0 += mr, out += K * mr) {
    const int64_t rows = std::min(mr, M - i0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < K; ++k) out[k * mr + r] = a[(i0 + r) * lda + k];
    for (int64_t r = rows; r < mr; ++r)
      for (int64_t k = 0; k < K; ++k) out[k * mr + r] = T(0);
  }
}

inline int64_t packed_size(int64_t M, int64_t K, int64_t mr) { return (M + mr - 1) / mr * mr * K; }

// Throws when a GEMM dimension does not fit OpenBLAS's 32-bit blasint.
void check_blas_dims(int64_t m, int64_t n, int64_t k, const char* what);

void blas_set_threads(int n);

// The OpenBLAS kernel family in use (e.g. "SkylakeX").
const char* blas_core_name();

// "fastconv AVX-512" or "OpenBLAS": which kernel runs fastconv's float32 GEMMs.
const char* sgemm_kernel_name();

// Seconds for one n x n x n OpenBLAS sgemm on `threads` threads (best of
// `repeats`); the library is put back to one thread afterwards.
double sgemm_seconds(int64_t n, int threads, int repeats);

// Seconds for one n x n x n float32 GEMM through fastconv's own path (the
// kernel its convolutions use), column blocks split over get_num_threads().
double fastconv_sgemm_seconds(int64_t n, int repeats);

}  // namespace fastconv
