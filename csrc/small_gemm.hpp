// C = A * B for a short reduction dimension (K <= kSmallK), where a BLAS call
// spends more time packing than computing (a 1-channel 3x3 conv has K = 9).
//
// Contract:
//   A is M x K, element (i, k) at a[i * a_row + k * a_col]  (strides allow A^T)
//   B is K x N, row-major with leading dimension ldb
//   C is M x N, row-major with leading dimension ldc; overwritten, never read
//   Any M, N >= 0 and 1 <= K.  No alignment is assumed.
// Blocking: kBlock columns of B (K x kBlock, at most 16 KiB for float and
// K = 32) stay in L1 while every row of A sweeps them; the kBlock partial sums
// of a row live in a fixed-size local array the compiler keeps in vector
// registers (kBlock = 64 floats = 4 AVX-512 or 8 AVX2 registers).
#pragma once

#include <algorithm>
#include <cstdint>

namespace fastconv {

constexpr int64_t kSmallK = 32;

template <class T>
void gemm_small_k(int64_t M, int64_t N, int64_t K, const T* a, int64_t a_row, int64_t a_col, const T* b,
                  int64_t ldb, T* c, int64_t ldc) {
  constexpr int64_t kBlock = 64;
  for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
    const int64_t nb = std::min(kBlock, N - j0);
    for (int64_t i = 0; i < M; ++i) {
      T acc[kBlock] = {};
      const T* ai = a + i * a_row;
      if (nb == kBlock) {  // the common case, with a compile-time trip count
        for (int64_t k = 0; k < K; ++k) {
          const T av = ai[k * a_col];
          const T* bk = b + k * ldb + j0;
          for (int64_t j = 0; j < kBlock; ++j) acc[j] += av * bk[j];
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          const T av = ai[k * a_col];
          const T* bk = b + k * ldb + j0;
          for (int64_t j = 0; j < nb; ++j) acc[j] += av * bk[j];
        }
      }
      std::copy(acc, acc + nb, c + i * ldc + j0);
    }
  }
}

}  // namespace fastconv
