// C = A * B for a short reduction dimension (K <= kSmallK), where a BLAS call
// spends more time packing than computing (a 1-channel 3x3 conv has K = 9).
//
// Contract:
//   A is M x K, element (i, k) at a[i * a_row + k * a_col]  (strides allow A^T)
//   B is K x N, row-major with leading dimension ldb
//   C is M x N, row-major with leading dimension ldc; overwritten, never read
//   Any M, N >= 0 and 1 <= K.  No alignment is assumed.
// Blocking: a kRows x kBlock tile of C is accumulated in a fixed-size local
// array the compiler keeps in vector registers (8 x 32 floats = 16 of the 32
// AVX-512 registers; 4 x 32 = all 16 AVX2 ones elsewhere); each loaded row of B
// feeds kRows FMAs, and with AVX-512 the 16 FMAs per two loads of B outrun the
// loads.  The K x kBlock panel
// of B (at most 4 KiB for float and K = 32) stays in L1 while all rows of A
// sweep it.
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastconv {

constexpr int64_t kSmallK = 32;

template <class T>
void gemm_small_k(int64_t M, int64_t N, int64_t K, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                  T* c, int64_t ldc) {
#ifdef __AVX512F__
  constexpr int64_t kRows = 8, kBlock = 32;
#else
  constexpr int64_t kRows = 4, kBlock = 32;
#endif
  for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
    const int64_t nb = std::min(kBlock, N - j0);
    int64_t i = 0;
    if (nb == kBlock) {  // full column block: fixed trip counts, vectorised and register-resident
      for (; i + kRows <= M; i += kRows) {
        T acc[kRows][kBlock] = {};
        for (int64_t k = 0; k < K; ++k) {
          const T* bk = b + k * ldb + j0;
          T av[kRows];
          for (int64_t r = 0; r < kRows; ++r) av[r] = a[(i + r) * a_row + k * a_col];
          for (int64_t r = 0; r < kRows; ++r)
            for (int64_t j = 0; j < kBlock; ++j) acc[r][j] += av[r] * bk[j];
        }
        for (int64_t r = 0; r < kRows; ++r) std::copy(acc[r], acc[r] + kBlock, c + (i + r) * ldc + j0);
      }
    }
    for (; i < M; ++i) {  // leftover rows, and the partial last column block
      T acc[kBlock] = {};
      for (int64_t k = 0; k < K; ++k) {
        const T av = a[i * a_row + k * a_col];
        const T* bk = b + k * ldb + j0;
        for (int64_t j = 0; j < nb; ++j) acc[j] += av * bk[j];
      }
      std::copy(acc, acc + nb, c + i * ldc + j0);
    }
  }
}

}  // namespace fastconv
