// C = A * B for a short reduction dimension (K <= kSmallK), where a BLAS call
// spends more time packing than computing (a 1-channel 3x3 conv has K = 9).
// Written on the vector layer (vec.hpp), compiled per level; included inside an
// ISA namespace by isa_kernels.cpp.
//
// Contract:
//   A is M x K, element (i, k) at a[i * a_row + k * a_col]  (strides allow A^T)
//   B is K x N, row-major with leading dimension ldb
//   C is M x N, row-major with leading dimension ldc; overwritten, never read
//   Any M, N >= 0 and 1 <= K <= kSmallK.  No alignment is assumed.
// Tile: kRows rows x 2 vectors of C in registers: 8 rows (16 accumulators) where
// the level has 32 vector registers (AVX-512, NEON), 6 rows (12, leaving room
// for the two B vectors and a broadcast) with 16 (AVX2, SSE2); each loaded
// pair of B vectors feeds 2 * kRows multiply-adds.  The K x 2V panel of B
// stays in L1 while all rows of A sweep it.  Edge columns (fewer than 2V) and
// rows (fewer than kRows) run a one-row loop over a partial panel.
#pragma once

// Expects vec.hpp.

template <class T>
void gemm_small_k(int64_t M, int64_t N, int64_t K, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                  T* c, int64_t ldc) {
  constexpr int64_t V = kLanes<T>, kBlock = 2 * V;
  constexpr int64_t kRows = kVecRegisters >= 32 ? 8 : 6;
  for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
    const int64_t nb = imin(kBlock, N - j0);
    int64_t i = 0;
    if (nb == kBlock) {
      for (; i + kRows <= M; i += kRows) {
        Vec<T> acc[kRows][2] = {};
        for (int64_t k = 0; k < K; ++k) {
          const T* bk = b + k * ldb + j0;
          const Vec<T> b0 = load(bk), b1 = load(bk + V);
          for (int64_t r = 0; r < kRows; ++r) {
            const T av = a[(i + r) * a_row + k * a_col];
            acc[r][0] += av * b0;
            acc[r][1] += av * b1;
          }
        }
        for (int64_t r = 0; r < kRows; ++r) {
          store(c + (i + r) * ldc + j0, acc[r][0]);
          store(c + (i + r) * ldc + j0 + V, acc[r][1]);
        }
      }
    }
    for (; i < M; ++i) {  // leftover rows, and the partial last column block
      T acc[kBlock] = {};
      for (int64_t k = 0; k < K; ++k) {
        const T av = a[i * a_row + k * a_col];
        const T* bk = b + k * ldb + j0;
        for (int64_t j = 0; j < nb; ++j) acc[j] += av * bk[j];
      }
      for (int64_t j = 0; j < nb; ++j) c[i * ldc + j0 + j] = acc[j];
    }
  }
}
