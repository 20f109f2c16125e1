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
//      below N rounded up to whole vectors: the caller keeps that many
//      readable values after B's last row.  Columns past N compute on whatever
//      is there and are never stored.
//   C  M x N, row-major, leading dimension ldc; overwritten, never read.
//   Any M, N >= 0 and K >= 1.  No alignment is assumed.
// Tile: MR rows x NV vectors of C in registers, 6 x 2 where the level has 16
// vector registers (12 accumulators, two B vectors, a broadcast), 8 x 3 with 32
// (24); a call's vectors are split into tiles as evenly as that allows
// (packed_tiles below).
#pragma once

// Expects vec.hpp.

constexpr int64_t kPackedRows = kVecRegisters >= 32 ? 8 : 6;
constexpr int64_t kPackedVecs = kVecRegisters >= 32 ? 3 : 2;
// A second tile for row counts the first would leave partly empty: 4 x 3 with
// 16 registers (12 accumulators, three B vectors, a broadcast: 16, 32 and 64
// output channels fill it, where 6-row panels compute 18, 36 and 66 rows), 6 x 4
// with 32 (12, 18 and 36 channels).  The implicit GEMM picks per call; A must
// be packed in panels of the rows passed.
constexpr int64_t kPackedRows2 = kVecRegisters >= 32 ? 6 : 4;
constexpr int64_t kPackedVecs2 = kVecRegisters >= 32 ? 4 : 3;

// One tile: MR rows x NV vectors of C, B's row k at row(k).  Vector v reads
// V values at row(k) + boff[v] and stores lanes [0, cnt[v]) at coff[v] in
// every row; with Halves it is two half vectors, h = 0, 1, reading V/2 values
// at row(k) + boff[2v + h] and storing lanes [hV/2, hV/2 + cnt[2v + h]) at
// coff[2v + h].
template <class T, int64_t MR, int64_t NV, bool Halves, class Row>
inline void packed_tile(int64_t M, int64_t K, const T* ap, Row row, const int64_t* boff, const int64_t* coff,
                        const int64_t* cnt, T* c, int64_t ldc) {
  constexpr int64_t V = kLanes<T>;
  bool full = !Halves;
  for (int64_t v = 0; v < NV; ++v) full = full && cnt[v] == V;
  for (int64_t i0 = 0; i0 < M; i0 += MR) {
    const T* a = ap + (i0 / MR) * K * MR;
    Vec<T> acc[MR][NV] = {};
    for (int64_t k = 0; k < K; ++k) {
      const T* bk = row(k);
      Vec<T> bv[NV];
      for (int64_t v = 0; v < NV; ++v)
        bv[v] = Halves ? load_halves(bk + boff[2 * v], bk + boff[2 * v + 1]) : load(bk + boff[v]);
      for (int64_t r = 0; r < MR; ++r) {
        const T av = a[k * MR + r];  // scalar times vector: one broadcast load
        for (int64_t v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
      }
    }
    // Stores with constant indices only: a loop over the runtime row count
    // made GCC copy all accumulators to the stack after every tile.
    const int64_t rows = imin(MR, M - i0);
    T* const ct = c + i0 * ldc;
    if (rows == MR && full) {
#pragma GCC unroll 8
      for (int64_t r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int64_t v = 0; v < NV; ++v) store(ct + r * ldc + coff[v], acc[r][v]);
    } else {
#pragma GCC unroll 8
      for (int64_t r = 0; r < MR; ++r)
        if (r < rows)
#pragma GCC unroll 4
          for (int64_t v = 0; v < NV; ++v) {
            T* const cr = ct + r * ldc;
            if constexpr (Halves)
              store_halves<T>(cr + coff[2 * v], cr + coff[2 * v + 1], acc[r][v], cnt[2 * v], cnt[2 * v + 1]);
            else if (cnt[v] == V)
              store(cr + coff[v], acc[r][v]);
            else
              store_first<T>(cr + coff[v], acc[r][v], cnt[v]);
          }
    }
  }
}

// Q vectors of C in tiles of up to NV, split as evenly as that allows (7
// vectors at NV = 2: 2, 2, 2, 1), so no tile computes a vector that is not
// there; place(q0, nv, boff, coff, cnt) says where the tile's vectors lie.
// The loop runs column tiles outside, row panels inside, so one K x NV vector
// panel of B (K * 64 bytes at AVX2: 8 KiB at K = 128) stays in L1 while the
// packed A streams from L2.
// Past L1, the order flips: when a K x NV vector panel of B no longer fits in
// L1 beside the stream of A (K above 256 at AVX2, 85 at AVX-512), B is cut into
// column blocks of about 256 KiB that stay in L2, and each block runs row
// panels outside, column tiles inside, so one panel of A (MR x K) stays in L1
// while the block's tiles stream from L2.  Measured: avx2, 512 -> 512 channels
// at 7x7, Winograd forward 1.09x; implicit GEMM forward, 5x5/2 64 -> 128
// channels at 56 1.06x (AVX-512 1.03x), 3x3/2 64 -> 128 at 16 1.04x (AVX-512
// 1.11x), unchanged elsewhere.
constexpr int64_t kL1PanelBytes = 16 << 10, kL2BlockBytes = 256 << 10;

template <class T, int64_t MR, int64_t NV, bool Halves, class Row, class Place>
inline void packed_tiles(int64_t M, int64_t Q, int64_t K, const T* ap, Row row, Place place, T* c, int64_t ldc) {
  constexpr int64_t S = Halves ? 2 : 1;
  int64_t boff[NV * S], coff[NV * S], cnt[NV * S];
  const int64_t tiles = (Q + NV - 1) / NV;
  // Rows [i0, i0 + m) of C against column tiles [t0, t1); tile t is vectors
  // [Q - Q (tiles - t) / tiles, ...), the wider tiles first.
  auto sweep = [&](int64_t i0, int64_t m, int64_t t0, int64_t t1) {
    const T* a = ap + (i0 / MR) * K * MR;
    T* ci = c + i0 * ldc;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t q0 = Q - Q * (tiles - t) / tiles, nv = Q - Q * (tiles - t - 1) / tiles - q0;
      place(q0, nv, boff, coff, cnt);
      if constexpr (NV >= 4)
        if (nv == 4) packed_tile<T, MR, 4, Halves>(m, K, a, row, boff, coff, cnt, ci, ldc);
      if constexpr (NV >= 3)
        if (nv == 3) packed_tile<T, MR, 3, Halves>(m, K, a, row, boff, coff, cnt, ci, ldc);
      if (nv == 2) packed_tile<T, MR, 2, Halves>(m, K, a, row, boff, coff, cnt, ci, ldc);
      if (nv == 1) packed_tile<T, MR, 1, Halves>(m, K, a, row, boff, coff, cnt, ci, ldc);
    }
  };
  const int64_t panel_bytes = K * NV * kLanes<T> * int64_t(sizeof(T));
  if (panel_bytes <= kL1PanelBytes || M <= MR) {
    for (int64_t t = 0; t < tiles; ++t) sweep(0, M, t, t + 1);
    return;
  }
  const int64_t block = imax(1, kL2BlockBytes / panel_bytes);
  for (int64_t t0 = 0; t0 < tiles; t0 += block)
    for (int64_t i0 = 0; i0 < M; i0 += MR) sweep(i0, imin(MR, M - i0), t0, imin(tiles, t0 + block));
}

// The tile shape for A packed in panels of mr rows: kPackedRows or kPackedRows2.
template <class T, bool Halves, class Row, class Place>
inline void packed_tiles_for(int64_t mr, int64_t M, int64_t Q, int64_t K, const T* ap, Row row, Place place, T* c,
                             int64_t ldc) {
  if (mr == kPackedRows2)
    packed_tiles<T, kPackedRows2, kPackedVecs2, Halves>(M, Q, K, ap, row, place, c, ldc);
  else
    packed_tiles<T, kPackedRows, kPackedVecs, Halves>(M, Q, K, ap, row, place, c, ldc);
}

// Columns [0, N) as consecutive vectors.
template <class T>
inline auto contiguous_vectors(int64_t N) {
  return [N](int64_t q0, int64_t nv, int64_t* boff, int64_t* coff, int64_t* cnt) {
    constexpr int64_t V = kLanes<T>;
    for (int64_t v = 0; v < nv; ++v) {
      boff[v] = coff[v] = (q0 + v) * V;
      cnt[v] = imin(V, N - (q0 + v) * V);
    }
  };
}

template <class T>
void gemm_packed(int64_t M, int64_t N, int64_t K, const T* ap, const T* b, int64_t ldb, T* c, int64_t ldc) {
  packed_tiles<T, kPackedRows, kPackedVecs, false>(
      M, (N + kLanes<T> - 1) / kLanes<T>, K, ap, [=](int64_t k) { return b + k * ldb; }, contiguous_vectors<T>(N), c,
      ldc);
}

// The same with B's row k at b + koff[k]: an implicit GEMM, whose "rows" are a
// convolution's taps read straight from a padded input (direct.cpp), with no
// column matrix.  The read-past rule applies to every row.  A is packed in
// panels of mr rows, kPackedRows or kPackedRows2.
template <class T>
void gemm_packed_rows(int64_t mr, int64_t M, int64_t N, int64_t K, const T* ap, const T* b, const int64_t* koff, T* c,
                      int64_t ldc) {
  packed_tiles_for<T, false>(
      mr, M, (N + kLanes<T> - 1) / kLanes<T>, K, ap, [=](int64_t k) { return b + koff[k]; }, contiguous_vectors<T>(N),
      c, ldc);
}

// The same with the columns in vectors placed anywhere: vector q of the
// result is C's values at c + coff[q] in every row, lanes [0, cnt[q]) of it,
// computed from B's values at b + koff[k] + boff[q], V of them read in every
// row k.  With `halves`, vector q is two half vectors, h = 0, 1: lanes
// [hV/2, hV/2 + cnt[2q + h]) of it go to c + coff[2q + h], computed from the
// V/2 values read at b + koff[k] + boff[2q + h].  The implicit GEMM's output
// rows as vectors (an 8-wide row is one AVX2 vector; two rows fill one at
// AVX-512), where a run of rows through a compact plane computes the padding
// columns between rows too (64 of 80 columns kept at 8x8 so), each vector
// stored straight into place in the output.
//
// Contract: Q >= 0 vectors; 1 <= cnt[q] <= V, or with halves 0 <= cnt <= V/2
// (an empty half still reads at its boff); every read above in bounds; lanes
// past the counts compute on whatever is read and are never stored.  A, M, K
// and ldc as for gemm_packed; A packed in panels of mr rows, as gemm_packed_rows.
template <class T>
void gemm_packed_vecs(int64_t mr, int64_t M, int64_t Q, int64_t K, const T* ap, const T* b, const int64_t* koff,
                      const int64_t* boff, const int64_t* coff, const int64_t* cnt, bool halves, T* c, int64_t ldc) {
  auto row = [=](int64_t k) { return b + koff[k]; };
  auto given = [=](int64_t S) {
    return [=](int64_t q0, int64_t nv, int64_t* bo, int64_t* co, int64_t* n) {
      for (int64_t i = 0; i < nv * S; ++i) bo[i] = boff[q0 * S + i], co[i] = coff[q0 * S + i], n[i] = cnt[q0 * S + i];
    };
  };
  if (halves)
    packed_tiles_for<T, true>(mr, M, Q, K, ap, row, given(2), c, ldc);
  else
    packed_tiles_for<T, false>(mr, M, Q, K, ap, row, given(1), c, ldc);
}

// C = A B with A's rows (the output channels) in the vectors instead of B's
// columns: the implicit GEMM transposed, for layers whose positions fill
// vectors badly (strided, dilated and grouped layers on maps whose rows are not
// a multiple of the lanes wide) while their channels fill them.  Each position
// of a tile broadcasts its value in B's row k against NV vectors of A's rows,
// so positions may lie anywhere (any stride, across output rows); the tile is
// stored transposed, each channel's run of positions at once.  MLAS's NCHWc
// kernels put the channels in the vectors so too.
//
// Contract:
//   A  M x K, packed by pack_rows in panels of W = NV * V rows (the tile's
//      channels: kPackedVecs or kPackedVecs2 vectors, passed as `width` in
//      values); rows of the last panel past M are zero.
//   B  position j's value in row k at b[qoff[j] + koff[k]]: scalar reads,
//      nothing read past them.
//   C  M x N, element (i, j) at c[i * ldc + coff[j]] (positions may land
//      anywhere: the strided input gradient's phases, direct.cpp);
//      overwritten, never read.
//   M, N >= 0, K >= 1.  A tile's positions past N repeat position N - 1 and
//   are never stored.  The last panel's rows past M are neither computed nor
//   read beyond the vectors that hold rows below M: a panel of 64 with 32 real
//   channels runs tiles of 2 vectors (160 channels: 64 + 64 + 32, none computed
//   in vain, where whole panels computed 192).
// Tile: MR positions x NV vectors of channels, as the packed tiles above (6 x 2
// with 16 vector registers, 8 x 3 with 32; the second 4 x 3 / 6 x 4).  The
// positions are split into tiles as evenly as MR allows, so a small map
// computes no position twice (49 at MR = 8: seven tiles of 7, where tiles of 8
// computed 56; plan against plan at AVX-512, Zen 5, 1 thread: 3x3 512 -> 512
// channels at 7x7, batch 1 1.05x, 3x3/2 256 -> 512 onto 7x7 1.09x, 1x1 layers
// at 7x7 1.03-1.04x); a tile of MR - 1 positions has its own registers, smaller
// ones repeat their last position.  Loops: channel panels outside, so a K x W
// panel of A (100 KiB at K = 1600 and AVX2's 16 channels) is reused from L2 by
// every tile of positions (cut into L1-sized chunks of K with the sums kept
// between them, it was no faster: 0.93-0.97x on 3x3 layers at 7x7 and 4x4, the
// same on 1x1 layers of 2048 input channels).  The transposed store goes
// through a buffer, lane by lane: MR * W values after K * MR * NV multiply-adds.
// NV of a panel's NVS vectors (its first NV * V channels); the buffer t keeps the panel's width.
template <class T, int64_t R, int64_t NV, int64_t NVS>
inline void chan_tile(const T* const* bp, const T* a, const int64_t* koff, int64_t K, T* t) {
  constexpr int64_t V = kLanes<T>, W = NVS * V;
  Vec<T> acc[R][NV] = {};
  for (int64_t k = 0; k < K; ++k) {
    const int64_t o = koff[k];
    Vec<T> av[NV];
    for (int64_t v = 0; v < NV; ++v) av[v] = load(a + k * W + v * V);
    for (int64_t j = 0; j < R; ++j) {
      const T bv = bp[j][o];  // scalar times vector: one broadcast load
      for (int64_t v = 0; v < NV; ++v) acc[j][v] += bv * av[v];
    }
  }
#pragma GCC unroll 8
  for (int64_t j = 0; j < R; ++j)
#pragma GCC unroll 4
    for (int64_t v = 0; v < NV; ++v) store(t + j * W + v * V, acc[j][v]);
}

// A tile of R positions over the first nv (1 to NVS) vectors of a panel.
template <class T, int64_t R, int64_t NVS>
inline void chan_tile_part(int64_t nv, const T* const* bp, const T* a, const int64_t* koff, int64_t K, T* t) {
  if constexpr (NVS >= 4)
    if (nv == 4) return chan_tile<T, R, 4, NVS>(bp, a, koff, K, t);
  if constexpr (NVS >= 3)
    if (nv == 3) return chan_tile<T, R, 3, NVS>(bp, a, koff, K, t);
  if constexpr (NVS >= 2)
    if (nv == 2) return chan_tile<T, R, 2, NVS>(bp, a, koff, K, t);
  chan_tile<T, R, 1, NVS>(bp, a, koff, K, t);
}

template <class T, int64_t MR, int64_t NV>
void chan_tiles(int64_t M, int64_t N, int64_t K, const T* ap, const T* b, const int64_t* koff, const int64_t* qoff,
                const int64_t* coff, T* c, int64_t ldc) {
  constexpr int64_t V = kLanes<T>, W = NV * V, R1 = MR > 1 ? MR - 1 : 1;
  const int64_t tiles = (N + MR - 1) / MR;
  for (int64_t i0 = 0; i0 < M; i0 += W) {
    const T* const a = ap + (i0 / W) * K * W;
    const int64_t rows = imin(W, M - i0), nv = (rows + V - 1) / V;
    T* const ci = c + i0 * ldc;
    for (int64_t tt = 0; tt < tiles; ++tt) {
      const int64_t j0 = N * tt / tiles, cols = N * (tt + 1) / tiles - j0;
      const T* bp[MR];
      for (int64_t j = 0; j < MR; ++j) bp[j] = b + qoff[j0 + imin(j, cols - 1)];
      alignas(64) T t[MR * W];
      if (nv < NV) {  // the last panel, partly empty
        if (cols == R1)
          chan_tile_part<T, R1, NV>(nv, bp, a, koff, K, t);
        else
          chan_tile_part<T, MR, NV>(nv, bp, a, koff, K, t);
      } else if (cols == R1) {  // R1 == MR when MR == 1: the same tile
        chan_tile<T, R1, NV, NV>(bp, a, koff, K, t);
      } else {
        chan_tile<T, MR, NV, NV>(bp, a, koff, K, t);
      }
      const int64_t* const cj = coff + j0;
      if (cols == MR) {  // constant bounds: moves without a branch per value
        for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 8
          for (int64_t j = 0; j < MR; ++j) ci[r * ldc + cj[j]] = t[j * W + r];
      } else {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < cols; ++j) ci[r * ldc + cj[j]] = t[j * W + r];
      }
    }
  }
}

// width: the first tile's channels (kPackedVecs vectors) or the second's (kPackedVecs2).
template <class T>
void gemm_packed_channels(int64_t width, int64_t M, int64_t N, int64_t K, const T* ap, const T* b, const int64_t* koff,
                          const int64_t* qoff, const int64_t* coff, T* c, int64_t ldc) {
  if (width == kPackedVecs2 * kLanes<T>)
    chan_tiles<T, kPackedRows2, kPackedVecs2>(M, N, K, ap, b, koff, qoff, coff, c, ldc);
  else
    chan_tiles<T, kPackedRows, kPackedVecs>(M, N, K, ap, b, koff, qoff, coff, c, ldc);
}

// C (K x M, ldc) += B A^T, a reduction over output positions: the implicit
// GEMM's weight gradient, transposed (gw^T, tap rows by output channels).
// Output channels are the vector dimension, positions the scalar one, so no
// accumulator is ever reduced across lanes and any set of positions can be
// summed: the positions are `segs` runs of `len` (output rows), and nothing
// between them is read or multiplied.
//
// Contract:
//   B  row k, run s: len values at b + koff[k] + soff[s] (a tap row of a
//      padded input plane; direct.cpp).
//   A^T  run s, value j: the M output channels' values at at + (s*len + j)*lda
//      (gy transposed), lda >= M rounded up to lanes, the lanes past M zero.
//   C  K x M, leading dimension ldc >= M rounded up to lanes; accumulated into,
//      the lanes past M included.
//   K a multiple of kTnRows (the caller pads with rows it ignores), M >= 1,
//   segs, len >= 0.  No alignment is assumed.
// Tile: kTnRows tap rows x up to kTnVecs vectors of channels in registers, 8 x 3
// where the level has 32 vector registers (24 accumulators, three A vectors, a
// broadcast), 6 x 2 with 16.  The caller keeps the A^T of one call within L1
// (a few hundred positions): every tile of tap rows streams over it again.
constexpr int64_t kTnRows = kVecRegisters >= 32 ? 8 : 6;
constexpr int64_t kTnVecs = kVecRegisters >= 32 ? 3 : 2;

template <class T, int64_t NV>
inline void tn_tile(int64_t K, int64_t segs, int64_t len, const T* b, const int64_t* koff, const int64_t* soff,
                    const T* at, int64_t lda, T* c, int64_t ldc) {
  constexpr int64_t V = kLanes<T>, MR = kTnRows;
  for (int64_t k0 = 0; k0 < K; k0 += MR) {
    Vec<T> acc[MR][NV];
    for (int64_t r = 0; r < MR; ++r)
      for (int64_t v = 0; v < NV; ++v) acc[r][v] = load(c + (k0 + r) * ldc + v * V);
    for (int64_t s = 0; s < segs; ++s) {
      const T* br[MR];
      for (int64_t r = 0; r < MR; ++r) br[r] = b + koff[k0 + r] + soff[s];
      const T* as = at + s * len * lda;
      for (int64_t j = 0; j < len; ++j) {
        Vec<T> av[NV];
        for (int64_t v = 0; v < NV; ++v) av[v] = load(as + j * lda + v * V);
        for (int64_t r = 0; r < MR; ++r) {
          const T bv = br[r][j];  // scalar times vector: one broadcast load
          for (int64_t v = 0; v < NV; ++v) acc[r][v] += bv * av[v];
        }
      }
    }
    for (int64_t r = 0; r < MR; ++r)
      for (int64_t v = 0; v < NV; ++v) store(c + (k0 + r) * ldc + v * V, acc[r][v]);
  }
}

template <class T>
void gemm_tn_rows(int64_t K, int64_t M, int64_t segs, int64_t len, const T* b, const int64_t* koff, const int64_t* soff,
                  const T* at, int64_t lda, T* c, int64_t ldc) {
  constexpr int64_t V = kLanes<T>, NV = kTnVecs;
  const int64_t vecs = (M + V - 1) / V;
  // Channel tiles as even as the register budget allows (4 vectors: 2 + 2, not 3 + 1).
  const int64_t tiles = (vecs + NV - 1) / NV;
  for (int64_t t = 0, v0 = 0; t < tiles; ++t) {
    const int64_t nv = (vecs - v0) / (tiles - t) + ((vecs - v0) % (tiles - t) != 0);
    const T* a = at + v0 * V;
    T* ct = c + v0 * V;
    if constexpr (NV >= 3)
      if (nv == 3) tn_tile<T, 3>(K, segs, len, b, koff, soff, a, lda, ct, ldc);
    if (nv == 2) tn_tile<T, 2>(K, segs, len, b, koff, soff, a, lda, ct, ldc);
    if (nv == 1) tn_tile<T, 1>(K, segs, len, b, koff, soff, a, lda, ct, ldc);
    v0 += nv;
  }
}

// A^T for gemm_tn_rows: dst[p * ldd + o] = src[o * lds + p], o < rows, p < cols,
// in lanes x lanes blocks transposed in registers (a scalar loop took longer
// than the weight gradient of a 3 -> 16 channel layer).  Rows past `rows` up to
// the next multiple of the lanes are written as zeros; ldd >= that multiple.
template <class T>
void transpose_lanes(const T* src, int64_t rows, int64_t cols, int64_t lds, T* dst, int64_t ldd) {
  constexpr int64_t V = kLanes<T>;
  const int64_t full = cols / V * V;
  for (int64_t o0 = 0; o0 < rows; o0 += V) {
    const int64_t nr = imin(V, rows - o0);
    for (int64_t p0 = 0; p0 < full; p0 += V) {
      Vec<T> r[V];
      for (int64_t i = 0; i < V; ++i) r[i] = i < nr ? load(src + (o0 + i) * lds + p0) : Vec<T>{};
      transpose_block<T>(r);
      for (int64_t i = 0; i < V; ++i) store(dst + (p0 + i) * ldd + o0, r[i]);
    }
    for (int64_t p = full; p < cols; ++p)
      for (int64_t i = 0; i < V; ++i) dst[p * ldd + o0 + i] = i < nr ? src[(o0 + i) * lds + p] : T(0);
  }
}
