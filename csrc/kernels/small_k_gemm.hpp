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
// stays in L1 while all rows of A sweep it (a contiguous copy of it when more
// than one row tile does).  Leftover rows (fewer than kRows)
// run the same register tile with fewer rows; the partial last column block
// (fewer than 2V columns) runs on a zero-padded copy of its K x 2V panel and
// stores only its columns.  (A one-row scalar loop for them took 40% of a
// 64-output-channel layer's time: 4 of its 64 rows.)
#pragma once

// Expects vec.hpp.

// R rows x 2V columns of C from the K x 2V panel of B at b (leading dimension
// ldb, 2V readable columns per row); the first nb <= 2V columns are stored.
template <class T, int64_t R>
inline void small_k_tile(int64_t K, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb, T* c,
                         int64_t ldc, int64_t nb) {
  constexpr int64_t V = kLanes<T>;
  Vec<T> acc[R][2] = {};
  for (int64_t k = 0; k < K; ++k) {
    const Vec<T> b0 = load(b + k * ldb), b1 = load(b + k * ldb + V);
    for (int64_t r = 0; r < R; ++r) {
      const T av = a[r * a_row + k * a_col];
      acc[r][0] += av * b0;
      acc[r][1] += av * b1;
    }
  }
  // The full-width case on its own, unrolled: as one loop with the partial
  // case inside, GCC copied every accumulator to the stack and back first
  // (AVX2, standalone: 8% of a K = 27 tile's time, 12-27% at K = 9).
  if (nb == 2 * V) {
#pragma GCC unroll 8
    for (int64_t r = 0; r < R; ++r) {
      store(c + r * ldc, acc[r][0]);
      store(c + r * ldc + V, acc[r][1]);
    }
    return;
  }
  // Unrolled where partial vectors go through a lane buffer (no masked
  // stores): rolled, GCC kept every accumulator on the stack and zeroed them
  // there with rep stos on every tile (AVX2, in place: 1.5x the time of a
  // 3 -> 24..64-channel layer; at AVX-512 unrolling its masked stores lost).
#if !FASTCONV_HAS_MASKED_STORE
#pragma GCC unroll 8
#endif
  for (int64_t r = 0; r < R; ++r) {
    store_vec(c + r * ldc, acc[r][0], 0, nb);
    store_vec(c + r * ldc, acc[r][1], 1, nb);
  }
}

// The tile for `rows` (1 <= rows <= R) rows.
template <class T, int64_t R>
inline void small_k_rows(int64_t rows, int64_t K, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                         T* c, int64_t ldc, int64_t nb) {
  if constexpr (R >= 1) {
    if (rows == R)
      small_k_tile<T, R>(K, a, a_row, a_col, b, ldb, c, ldc, nb);
    else
      small_k_rows<T, R - 1>(rows, K, a, a_row, a_col, b, ldb, c, ldc, nb);
  }
}

template <class T>
void gemm_small_k(int64_t M, int64_t N, int64_t K, const T* a, int64_t a_row, int64_t a_col, const T* b, int64_t ldb,
                  T* c, int64_t ldc) {
  constexpr int64_t V = kLanes<T>, kBlock = 2 * V;
  constexpr int64_t kRows = kVecRegisters >= 32 ? 8 : 6;
  T panel[kSmallK * kBlock];
  for (int64_t j0 = 0; j0 < N; j0 += kBlock) {
    const int64_t nb = imin(kBlock, N - j0);
    const T* bp = b + j0;
    int64_t ld = ldb;
    if (nb < kBlock) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < kBlock; ++j) panel[k * kBlock + j] = j < nb ? b[k * ldb + j0 + j] : T(0);
      bp = panel, ld = kBlock;
    } else if (M > kRows) {
      // Several row tiles sweep the panel: a contiguous copy, since B's rows
      // are often 4 KiB apart (image planes, 1024-column tiles) and K of them
      // then share one L1 set, more than its ways.
      // B streams from memory in K rows at once, more than the hardware
      // prefetcher follows: the next panel's lines are requested with this one.
      const bool next = j0 + 2 * kBlock <= N;
      for (int64_t k = 0; k < K; ++k) {
        const T* row = b + k * ldb + j0;
        if (next) {
          __builtin_prefetch(row + kBlock);
          __builtin_prefetch(row + kBlock + V);
        }
        store(panel + k * kBlock, load(row));
        store(panel + k * kBlock + V, load(row + V));
      }
      bp = panel, ld = kBlock;
    }
    int64_t i = 0;
    for (; i + kRows <= M; i += kRows)
      small_k_tile<T, kRows>(K, a + i * a_row, a_row, a_col, bp, ld, c + i * ldc + j0, ldc, nb);
    if (i < M) small_k_rows<T, kRows - 1>(M - i, K, a + i * a_row, a_row, a_col, bp, ld, c + i * ldc + j0, ldc, nb);
  }
}
