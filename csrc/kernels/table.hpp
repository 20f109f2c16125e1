// The dispatch table: every micro-kernel the operators reach, one table per
// instruction-set level, chosen once at run time.
//
// Layout of the kernel layer:
//   kernels/table.hpp          this table and the micro-kernel contracts' index
//   kernels/vec.hpp            the width-generic vector layer the kernels are written in
//   kernels/direct_tiles.hpp   direct convolution tiles (depthwise, one input channel per group)
//   kernels/small_k_gemm.hpp   C = A B for reductions of at most kSmallK
//   kernels/packed_gemm.hpp    C = A B with A packed in row panels once (Winograd point GEMMs)
//   kernels/winograd_tiles.hpp F(2x2, 3x3) input, output and gradient transforms of a run of tiles
//   kernels/isa_kernels.cpp    compiled once per level (CMake), fills that level's table
//   kernels/x86_avx512/        hand-written AVX-512 kernels (sgemm tile, Winograd transforms)
// Operators (tiling, threads, workspaces) live in csrc/*.cpp, compile for the
// baseline ISA and call kernels only through kernels().
#pragma once

#include <cstdint>

#include "core/conv_geom.hpp"

namespace fastconv {

constexpr int64_t kSmallK = 32;

// Accumulator vectors per direct-kernel block: with a 4-cycle FMA latency and
// two FMA pipes, eight independent chains keep both pipes busy, and they fit the
// register file beside their operands.  Buffers the operator pads for blocks
// that run past a row's end hold kDirectChains vectors of zeros.
constexpr int64_t kDirectChains = 8;

// The direct kernels read a zero-padded input plane split into column phases
// (built by direct.cpp): padded column c of a padded row is at
// (c % sw) * ld + c / sw from that row's start, so every tap of a run of output
// columns is one unit-stride load.  offs[t] is tap t's offset from its output
// position's row start; output row oh starts oh * row_step into the buffer.
struct DirectPlane {
  int64_t row_step;
  const int64_t* offs;
};

// One block of an input gradient's gathered sums (direct_tiles.hpp).
template <class T>
using DirectInputBlock = void (*)(const T* gyb, int64_t plane, const int64_t* offs, const int64_t* tap, int64_t pairs,
                                  const T* w, int64_t taps, int64_t cog, T* out, int64_t n, int64_t dst_stride);

template <class T>
struct LevelKernels {
  int64_t lanes;  // values per vector register of the level
  // Every output plane of one group: y = conv(plane, w) + b (b may be null);
  // w, b and y start at the group's first output channel.
  void (*direct_forward_group)(const T* buf, DirectPlane ph, const ConvGeom& g, const T* w, const T* b, T* y);
  // Up to `lanes` channels of a depthwise layer with the channels in the vectors: their input planes interleaved
  // into buf (padded), y = conv(x, w) + b per channel (contract in direct_tiles.hpp).
  void (*direct_forward_chanvec)(const T* x, int64_t hw, int64_t nc, const T* w, const T* b, const int64_t* offs, T* y,
                                 const ConvGeom& g, T* buf);
  // gw[t] += sum over the plane of gy * (input under tap t), for one output
  // channel; gyb holds gy with rows ldy apart and zeros from column OW on
  // (at least 2 * lanes - 1 of them).
  void (*direct_weight_channel)(const T* gyb, int64_t ldy, const T* buf, DirectPlane ph, const ConvGeom& g, T* gw);
  // The input-gradient block for runs of `vectors` vectors (1, 2, 4 or 8) and
  // `cog` output channels per group.
  DirectInputBlock<T> (*direct_input_block)(int64_t vectors, int64_t cog);
  // C (M x N, ldc) = A (M x K, element (i, k) at a[i*a_row + k*a_col]) times
  // B (K x N, ldb), 1 <= K <= kSmallK; C is overwritten, never read.
  void (*gemm_small_k)(int64_t M, int64_t N, int64_t K, const T* a, int64_t a_row, int64_t a_col, const T* b,
                       int64_t ldb, T* c, int64_t ldc);
  // C (M x N, ldc) = A B, A packed by pack_rows in panels of packed_rows rows,
  // B (K x N, ldb) readable up to N rounded up to whole vectors (contract in
  // packed_gemm.hpp); C is overwritten, never read.  packed_cols: the widest
  // tile's columns.
  int64_t packed_rows, packed_cols;
  // The second tile's rows (packed_gemm.hpp): gemm_packed_rows and gemm_packed_vecs take A packed in panels of
  // packed_rows or packed_rows2 rows, and which one as their first argument.
  int64_t packed_rows2;
  void (*gemm_packed)(int64_t M, int64_t N, int64_t K, const T* ap, const T* b, int64_t ldb, T* c, int64_t ldc);
  // The same with B's row k at b + koff[k] (an implicit GEMM over a padded input).
  void (*gemm_packed_rows)(int64_t mr, int64_t M, int64_t N, int64_t K, const T* ap, const T* b, const int64_t* koff,
                           T* c, int64_t ldc);
  // The same over Q vectors of columns placed anywhere in B and C (boff, coff), cnt[q] lanes of vector q
  // stored, or with `halves` each vector two half vectors placed so (contract in packed_gemm.hpp).
  void (*gemm_packed_vecs)(int64_t mr, int64_t M, int64_t Q, int64_t K, const T* ap, const T* b, const int64_t* koff,
                           const int64_t* boff, const int64_t* coff, const int64_t* cnt, bool halves, T* c,
                           int64_t ldc);
  // C = A B with A's rows in the vectors: A packed by pack_rows in panels of chan_width or chan_width2 rows
  // (which one as the first argument), position j's value in B's row k at b[qoff[j] + koff[k]], C's element
  // (i, j) at c[i * ldc + coff[j]] (contract in packed_gemm.hpp).
  // chan_vectors_pay: the level broadcasts in one load and has fused multiply-adds (direct.cpp's rule).
  int64_t chan_width, chan_width2;
  bool chan_vectors_pay;
  void (*gemm_packed_channels)(int64_t width, int64_t M, int64_t N, int64_t K, const T* ap, const T* b,
                               const int64_t* koff, const int64_t* qoff, const int64_t* coff, T* c, int64_t ldc);
  // C (K x M, ldc) += B A^T over `segs` runs of `len` positions, B's row k, run s at b + koff[k] + soff[s],
  // A^T's rows lda apart (the implicit weight gradient, transposed; contract in packed_gemm.hpp); K a
  // multiple of tn_rows.
  int64_t tn_rows;
  void (*gemm_tn_rows)(int64_t K, int64_t M, int64_t segs, int64_t len, const T* b, const int64_t* koff,
                       const int64_t* soff, const T* at, int64_t lda, T* c, int64_t ldc);
  // dst[p * ldd + o] = src[o * lds + p] for o < rows, p < cols; dst's lanes from rows up to rows rounded up
  // to lanes are set to zero (ldd at least that).
  void (*transpose_lanes)(const T* src, int64_t rows, int64_t cols, int64_t lds, T* dst, int64_t ldd);
  // even[i] = src[2i], odd[i] = src[2i + 1] over src[0, n) (a row split into two column phases).
  void (*deinterleave2)(const T* src, int64_t n, T* even, T* odd);
};

// F(2x2, 3x3) Winograd transforms of one run of tiles (float32; contract in
// winograd_tiles.hpp).
struct WinogradTiles {
  void (*input_run)(const float* x, int64_t channels, int64_t x_cstride, int64_t H, int64_t W, int64_t pad_t,
                    int64_t pad_l, int64_t ty, int64_t tx0, int64_t len, float* out, int64_t out_cstride,
                    int64_t point_stride, float* scratch);
  void (*output_run)(const float* in, int64_t point_stride, int64_t ty, int64_t tx0, int64_t len, float bias, float* y,
                     int64_t OH, int64_t OW, float* scratch);
  void (*grad_run)(const float* gy, int64_t OH, int64_t OW, int64_t ty, int64_t tx0, int64_t len, float* out,
                   int64_t point_stride, float* scratch);
  void (*weight_run)(const float* taps, int64_t tap_stride, int64_t n, float* out, int64_t point_stride);
  // gw of n kernels in a row (9 taps each) from their 16 points' sums, d[p * point_stride + j].
  void (*weight_grad_run)(const float* d, int64_t point_stride, int64_t n, float* gw);
};

struct KernelTable {
  const char* level;  // "portable", "avx2", "avx512", "neon"
  const char* isa;    // what the table's unit was compiled for, e.g. "sse2", "avx2+fma"
  LevelKernels<float> f32;
  LevelKernels<double> f64;
  WinogradTiles winograd;
};

// The table of the active level (cpu_features.hpp: the CPU's, capped by
// FASTCONV_CPU or set_active_level); looked up on every call, so a level
// switched by a test takes effect at once.
const KernelTable& kernels();

template <class T>
const LevelKernels<T>& kernels_for();
template <>
inline const LevelKernels<float>& kernels_for<float>() {
  return kernels().f32;
}
template <>
inline const LevelKernels<double>& kernels_for<double>() {
  return kernels().f64;
}

}  // namespace fastconv
