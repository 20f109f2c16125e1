// C = A B with A packed once in row panels and reused against many B: the
// Winograd point GEMMs, whose 16 left operands (the transformed weights) serve
// every block of tiles.  OpenBLAS packs both operands on every call (a tenth of
// a layer's time at 128 channels); this kernel reads B where the transforms
// wrote it.  Written on the vector layer (vec.hpp), compiled per level;
// included inside an ISA namespace by isa_kernels.cpp.
//
// Contract:
//   A  M x K, packed in panels of kPackedRows rows (pack_rows in gemm.hpp):
//      element (i, k) at ap[(i / MR) * K * MR + k * MR + i % MR]; the rows of
//      the last panel past M are zero.
//   B  K x N, row-major, leading dimension ldb.  b[k * ldb + j] is read for j
//      below N rounded up to kPackedVecs vectors: the caller keeps that many
//      readable values after B's last row.  Columns past N compute on whatever
//      is there and are never stored.
//   C  M x N, row-major, leading dimension ldc; overwritten, never read.
//   Any M, N >= 0 and K >= 1.  No alignment is assumed.
// Tile: MR rows x NV vectors of C in registers, 6 x 2 where the level has 16
// vector registers (12 accumulators, two B vectors, a broadcast), 8 x 3 with 32
// (24).  The loop runs column panels outside, row panels inside, so one K x NV
// vector panel of B (K * 64 bytes at AVX2: 8 KiB at K = 128) stays in L1 while
// the packed A streams from L2.
#pragma once

// Expects vec.hpp.

constexpr int64_t kPackedRows = kVecRegisters >= 32 ? 8 : 6;
constexpr int64_t kPackedVecs = kVecRegisters >= 32 ? 3 : 2;

// The tile loops, B's row k at row(k) + j0: a fixed stride (gemm_packed) or a
// table of offsets (gemm_packed_rows).
template <class T, class Row>
inline void packed_loops(int64_t M, int64_t N, int64_t K, const T* ap, Row row, T* c, int64_t ldc) {
  constexpr int64_t V = kLanes<T>, MR = kPackedRows, NV = kPackedVecs, NR = NV * V;
  for (int64_t j0 = 0; j0 < N; j0 += NR) {
    const int64_t nb = imin(NR, N - j0);
    for (int64_t i0 = 0; i0 < M; i0 += MR) {
      const T* a = ap + (i0 / MR) * K * MR;
      Vec<T> acc[MR][NV] = {};
      for (int64_t k = 0; k < K; ++k) {
        const T* bk = row(k) + j0;
        Vec<T> bv[NV];
        for (int64_t v = 0; v < NV; ++v) bv[v] = load(bk + v * V);
        for (int64_t r = 0; r < MR; ++r) {
          const T av = a[k * MR + r];  // scalar times vector: one broadcast load
          for (int64_t v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
        }
      }
      const int64_t rows = imin(MR, M - i0);
      for (int64_t r = 0; r < rows; ++r) {
        T* cr = c + (i0 + r) * ldc + j0;
        for (int64_t v = 0; v < NV; ++v) {
          if (nb == NR)
            store(cr + v * V, acc[r][v]);
          else
            store_vec(cr, acc[r][v], v, nb);
        }
      }
    }
  }
}

template <class T>
void gemm_packed(int64_t M, int64_t N, int64_t K, const T* ap, const T* b, int64_t ldb, T* c, int64_t ldc) {
  packed_loops<T>(M, N, K, ap, [=](int64_t k) { return b + k * ldb; }, c, ldc);
}

// The same with B's row k at b + koff[k]: an implicit GEMM, whose "rows" are a
// convolution's taps read straight from a padded input (direct.cpp), with no
// column matrix.  The read-past rule applies to every row.
template <class T>
void gemm_packed_rows(int64_t M, int64_t N, int64_t K, const T* ap, const T* b, const int64_t* koff, T* c,
                      int64_t ldc) {
  packed_loops<T>(M, N, K, ap, [=](int64_t k) { return b + koff[k]; }, c, ldc);
}

// C (M x K, ldc) += A B^T: A is M x N (leading dimension lda), B's row k is N
// values at b + koff[k]: an implicit-GEMM weight gradient, gy rows against the
// padded input's tap rows, each a long reduction over N.  Tile: MR rows of A x
// KB rows of B, MR * KB accumulator vectors reduced across lanes once at the
// end; the last N % lanes values in a scalar loop (nothing read past N).
constexpr int64_t kNtRows = 4;
constexpr int64_t kNtCols = kVecRegisters >= 32 ? 5 : 2;

template <class T>
void gemm_nt_rows(int64_t M, int64_t N, int64_t K, const T* a, int64_t lda, const T* b, const int64_t* koff, T* c,
                  int64_t ldc) {
  constexpr int64_t V = kLanes<T>, MR = kNtRows, KB = kNtCols;
  const int64_t Nv = N / V * V;
  for (int64_t i0 = 0; i0 < M; i0 += MR)
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
      if (i0 + MR <= M && k0 + KB <= K) {
        Vec<T> acc[MR][KB] = {};
        const T* ar[MR];
        const T* br[KB];
        for (int64_t r = 0; r < MR; ++r) ar[r] = a + (i0 + r) * lda;
        for (int64_t j = 0; j < KB; ++j) br[j] = b + koff[k0 + j];
        for (int64_t p = 0; p < Nv; p += V) {
          Vec<T> av[MR];
          for (int64_t r = 0; r < MR; ++r) av[r] = load(ar[r] + p);
          for (int64_t j = 0; j < KB; ++j) {
            const Vec<T> bv = load(br[j] + p);
            for (int64_t r = 0; r < MR; ++r) acc[r][j] += av[r] * bv;
          }
        }
        for (int64_t r = 0; r < MR; ++r)
          for (int64_t j = 0; j < KB; ++j) {
            T s = reduce_add<T>(acc[r][j]);
            for (int64_t p = Nv; p < N; ++p) s += ar[r][p] * br[j][p];
            c[(i0 + r) * ldc + k0 + j] += s;
          }
      } else {  // edge tiles: one dot product at a time
        for (int64_t r = i0; r < imin(i0 + MR, M); ++r)
          for (int64_t j = k0; j < imin(k0 + KB, K); ++j) {
            const T *ap = a + r * lda, *bp = b + koff[j];
            Vec<T> acc{};
            for (int64_t p = 0; p < Nv; p += V) acc += load(ap + p) * load(bp + p);
            T s = reduce_add<T>(acc);
            for (int64_t p = Nv; p < N; ++p) s += ap[p] * bp[p];
            c[r * ldc + j] += s;
          }
      }
    }
}
