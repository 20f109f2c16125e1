// The implicit GEMM's layout rules, shared by its forward, its weight gradient and the strided input gradient
// (implicit_gemm.cpp, strided_input_grad.cpp): which vectors cover the output (positions or channels), how tall
// a row panel is, and the FASTCONV_IMPLICIT_* switches tests use to reach every layout.  Internal to algorithms/.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "algorithms/padded_planes.hpp"
#include "core/conv_geom.hpp"
#include "kernels/table.hpp"

namespace fastconv::detail {

// The implicit GEMM reads B rows of K taps for each panel of output columns:
// K * packed_cols values (36 KiB at K = 576 and AVX2's 16 columns), near L1.
// Beyond that im2col's blocked GEMM is the better tool, and so it is where
// the tiles would keep at most 60% of the columns they compute (measured:
// rows of half a tile, AVX2 at 8x8 with stride 2, 1.2x im2col's time;
// AVX-512's 48-column tiles lost 1.3-2.6x on 16- and 8-wide rows).
constexpr int64_t kImplicitMaxK = 576;
// Longer reductions made of large kernels over few channels stay in place: the
// packed GEMM's B panels beyond L1 run in L2 column blocks (packed_gemm.hpp),
// and im2col's column matrix for a 5x5 or 7x7 kernel is 25-49 copies of the
// input.  Forward against im2col at avx2, batch 8: 5x5/2 32 -> 64 channels at
// 56 1.39x, 64 -> 128 1.15x; 7x7/2 64 -> 64 at 112 1.50x, 64 -> 128 at 56
// 1.15x.  Not for many channels under a small kernel: 3x3/2 128 -> 256 at 28
// 0.89x, 256 -> 512 at 14 0.77x, 3x3 dilated 128 -> 128 at 28 0.93x.
constexpr int64_t kImplicitWideKernelChannels = 64, kImplicitMaxWideK = 64 * 7 * 7;

// How the implicit GEMM's vectors of V columns cover the output (over a
// compact plane): along each output row, the last one partial
// (gemm_packed_vecs: rows a multiple of V wide waste nothing); two rows of at
// most V/2 in each vector (its halves: 8x8 maps at AVX-512); or consecutive
// output rows read as one run of virtual columns q = oh * row_step + ow, of
// which ow < OW are kept (gemm_packed_rows: rows that would leave much of a
// vector empty, 28 wide at AVX2 keeps 784 of 840 columns so).  The
// layout that wastes least, and the share of computed columns kept.
enum class ImplicitLayout { rows, halves, run };

struct ImplicitTiling {
  ImplicitLayout layout;
  double kept;
};

// The share of columns kept when a compact plane runs all output rows as one
// run of columns, in vectors of V: consecutive output rows lie one phase row
// apart, len = ceil(padded columns read / sw) values (Phases below).
inline double compact_kept(const ConvGeom& g, int64_t V) {
  const int64_t len = ((g.OW - 1) * g.sw + (g.kw - 1) * g.dw + 1 + g.sw - 1) / g.sw;
  const int64_t run = (g.OH - 1) * len + g.OW;
  return double(g.OH) * double(g.OW) / double(round_up(run, V));
}

// FASTCONV_IMPLICIT_LAYOUT (read on every call): rows, halves or run puts every
// layer that layout can take on it, for tests and comparisons; unset, the
// layout that keeps most.
inline ImplicitTiling implicit_tiling(const ConvGeom& g, int64_t V) {
  const double P = double(g.OH) * double(g.OW);
  const ImplicitTiling rows{ImplicitLayout::rows, P / (double(g.OH) * double(round_up(g.OW, V)))};
  const bool can_halve = V >= 2 && 2 * g.OW <= V;
  const ImplicitTiling halves{ImplicitLayout::halves, P / (double((g.OH + 1) / 2) * double(V))};
  const ImplicitTiling run{ImplicitLayout::run, compact_kept(g, V)};
  if (const char* v = std::getenv("FASTCONV_IMPLICIT_LAYOUT")) {
    if (std::strcmp(v, "rows") == 0) return rows;
    if (std::strcmp(v, "halves") == 0 && can_halve) return halves;
    if (std::strcmp(v, "run") == 0) return run;
  }
  ImplicitTiling best = rows;
  if (can_halve && halves.kept > best.kept) best = halves;
  if (g.OH >= 2 && run.kept > 1.05 * best.kept) best = run;
  return best;
}

// FASTCONV_IMPLICIT_GEMM (read on every call): 0 off, 1 every layer the
// kernels can take (the tests reach the edge cases so), unset: the rules below.
enum class ImplicitMode { off, rules, forced };

inline ImplicitMode implicit_mode() {
  const char* v = std::getenv("FASTCONV_IMPLICIT_GEMM");
  if (v && std::strcmp(v, "0") == 0) return ImplicitMode::off;
  return v && std::strcmp(v, "1") == 0 ? ImplicitMode::forced : ImplicitMode::rules;
}

// Of a kernel's two tiles, `first` and `second` channels (or rows) tall, the one
// for n of them: the second where it computes at least 6% fewer than the first,
// whose shape is the faster one (AVX2, batch 64, forward / input gradient, 4 x 3
// against 6 x 2: 16 channels at 32x32 1.13 / 1.12x, 32 at 16x16 1.10 / 1.07x,
// where 6-row panels compute 18 and 36 rows; but 64 channels at 8x8 0.97 /
// 1.04x, 66 rows against 64, and 24 at 16x16, both exact, 0.93 / 0.94x).
// FASTCONV_IMPLICIT_PANEL (read on every call): 1 or 2 forces the first or the
// second tile, for tests and comparisons.
inline int64_t pick_tile(int64_t n, int64_t first, int64_t second) {
  if (const char* v = std::getenv("FASTCONV_IMPLICIT_PANEL")) {
    if (std::strcmp(v, "1") == 0) return first;
    if (std::strcmp(v, "2") == 0) return second;
  }
  return 1.06 * double(round_up(n, second)) < double(round_up(n, first)) ? second : first;
}

// The packed GEMM's row panel for Cout output channels (position vectors).
template <class T>
inline int64_t implicit_panel(int64_t Cout, const LevelKernels<T>& k) {
  return pick_tile(Cout, k.packed_rows, k.packed_rows2);
}
template <class T>
inline int64_t implicit_rows(int64_t Cout, const LevelKernels<T>& k) {
  return round_up(Cout, implicit_panel(Cout, k));
}

// The channel tile for Cog output channels per group (channel vectors).
template <class T>
inline int64_t chan_panel(int64_t Cog, const LevelKernels<T>& k) {
  return pick_tile(Cog, k.chan_width, k.chan_width2);
}

// The forward's channel tile for Cog output channels per group over P output positions an image: each tile is
// channels x positions (chan_width x packed_rows, chan_width2 x packed_rows2: 48 x 8 and 64 x 6 at AVX-512), and
// a small map leaves a tile's positions as empty as its channels, so the second is taken where it computes at least
// 6% fewer values counting both (pick_tile's margin).  Plan against plan at avx512 (Zen 4), second tile / first:
// 3x3 512 -> 512 channels at 7x7, batch 1 (49 positions: 54 against 56 computed) 1.18x, 256 -> 512 1.13x, 3x3/2
// 512 -> 512 onto 7x7 1.16x, 384 -> 192 onto 6x6 1.26x; at 4x4 (18 against 16) 0.98x, so by channels alone the
// first; both exact (12x12, 192 and 384 channels) 1.03-1.04x.  FASTCONV_IMPLICIT_PANEL forces either as there.
template <class T>
inline int64_t chan_panel_over(int64_t Cog, int64_t P, const LevelKernels<T>& k) {
  if (std::getenv("FASTCONV_IMPLICIT_PANEL")) return chan_panel(Cog, k);
  const double first = double(round_up(Cog, k.chan_width)) * double(round_up(P, k.packed_rows));
  const double second = double(round_up(Cog, k.chan_width2)) * double(round_up(P, k.packed_rows2));
  return 1.06 * second < first ? k.chan_width2 : k.chan_width;
}

// Channel vectors against position vectors, forward, batch 8 (avx2 / avx512):
// 5x5/2 64 -> 128 channels at 56 1.12 / 1.12x, 32 -> 64 1.16 / 1.10x; 7x7/2 64
// -> 64 at 112 1.05 / 1.08x; 3x3/2 64 -> 128 at 28 1.80 / 1.02x (14-wide rows);
// 3x3 128 -> 128 in 4 groups at 28 1.05x at avx2 (32 channels a group; 0.77x at
// avx512, whose 48- and 64-channel tiles waste a third of that); 64 -> 64 in 2
// groups at 56 1.13x.  Short reductions lose to the transposed store: 3 -> 16
// channels (K = 27) 0.77 / 0.34x, 3x3/2 16 -> 32 (K = 144) 0.76 / 0.65x; the
// 7x7/2 stem (K = 147) 0.89-1.06 / 1.04x.  Where the position vectors waste
// nothing, a reduction of 288 does not pay for the transposed store either:
// batch 64, 3x3 32 -> 32 channels at 16x16 0.94x, 3x3/2 32 -> 64 onto 8x8
// 0.94x, 32 -> 32 at 32x32 1.00x.  Hence K >= 256, and >= 512 unless the
// position vectors would leave 5% or more of their columns empty (the layouts
// of implicit_tiling), and channel vectors at least 90% full (a partly empty
// last panel runs only the vectors it fills: with whole panels, 160 channels in
// 48- or 64-wide ones computed 192 and took Winograd or im2col instead; on the
// channel tiles, AVX-512, batch 1, 3x3 160 -> 160 at 7x7 1.36x on 1 thread,
// 2.2x on 2; 3x3/2 96 -> 160 onto 7x7 1.44x / 1.63x); and only where the
// level broadcasts a value in one load and fuses the multiply-add (SSE2:
// 0.64-0.74x; NEON unmeasured).  Every channel
// tile reads all of an image's planes again: 7x7/2 64 -> 64 at 112 gained with
// 3.5 MiB of them (float32), lost with 7 MiB (float64: 0.82x).  Kernels of 25
// taps and more take it past the implicit GEMM's limits on K (the column matrix
// is 25 copies of the input or more): 5x5 128 -> 128 channels at 56 1.19x
// im2col's speed, 5x5/2 96 -> 128 at 28 1.24x; not 3x3/2 layers with many
// channels (128 -> 256 at 28 0.95x, 256 -> 512 at 14 0.93x).
constexpr int64_t kChanMinK = 256, kChanLongK = 512, kChanWideTaps = 25;
constexpr double kChanMaxInputBytes = 4 << 20;

// Whether n channels fill the channel tiles' vectors to 90% (a partly empty last panel runs only its vectors): the
// forward's rule and the strided input gradient's, one rule as one kernel serves both (counted in whole panels, the
// input gradient of 5x5/2 layers with 80-160 input channels took im2col + col2im: batch 8, AVX-512, 1.7-2.5x).
template <class T>
inline bool chan_vectors_full(int64_t n, const LevelKernels<T>& k) {
  return double(n) >= 0.9 * double(round_up(n, k.lanes));
}

// Where the channel vectors pay (the rules above), for values of elem_bytes.
inline bool channel_vectors_suit(const ConvGeom& g, const LevelKernels<float>& k, int64_t elem_bytes) {
  const int64_t Cg = g.C / g.groups, Cog = g.Cout / g.groups, K = Cg * g.kh * g.kw;
  // The padded input planes the tiles read (one group's), against the budget above.
  const double rows = double(g.OH - 1) * g.sh + double(g.kh - 1) * g.dh + 1;
  const double cols = double(g.OW - 1) * g.sw + double(g.kw - 1) * g.dw + 1;
  return k.chan_vectors_pay && K >= kChanMinK && (K >= kChanLongK || implicit_tiling(g, k.lanes).kept < 0.95) &&
         chan_vectors_full(Cog, k) && double(Cg) * rows * cols * double(elem_bytes) <= kChanMaxInputBytes;
}

// FASTCONV_IMPLICIT_VECTORS (read on every call): channels (1) or positions (0)
// forces the vectors of every rule below, for tests and comparisons; unset or
// anything else, -1: the rules decide.
inline int forced_vectors() {
  const char* v = std::getenv("FASTCONV_IMPLICIT_VECTORS");
  if (v && std::strcmp(v, "channels") == 0) return 1;
  if (v && std::strcmp(v, "positions") == 0) return 0;
  return -1;
}

// Whether the implicit GEMM's forward puts output channels in the vectors
// (gemm_packed_channels) rather than output positions: the rules above unless
// forced.
template <class T>
inline bool implicit_channel_vectors(const ConvGeom& g) {
  const int forced = forced_vectors();
  return forced >= 0 ? forced == 1 : channel_vectors_suit(g, kernels_for<float>(), sizeof(T));
}

// A plan's im2col GEMM on the packed tiles (plan_packs_gemm: 1x1 layers, strided ones through their copied
// columns, and layers no other algorithm takes) puts the output channels in the vectors where that computes
// fewer values: position vectors over a tile of `cols` columns (one image's positions at batch 1) leave the last
// vector partly empty, 49 positions in four 16-lane vectors at AVX-512 computing 64; channel tiles split the
// positions evenly and waste only the channels' last panel.  Plan against plan, Zen 5, float32, batch 1, median of
// interleaved rounds, 1 thread: 1x1 at 7x7 (77% of the lanes) 2048 -> 512 channels 1.23x, 960 -> 320 1.21x, 512 ->
// 2048 1.22x; at 14x14 (94%) 1024 -> 256 1.07x, 1024 -> 512 1.04x (2 threads 1.06x, 1.24x), but 256 -> 1024 0.99x
// (a reduction of 256: the transposed store weighs more); on full vectors (8x8) 0.98x.  Hence at
// least 5% fewer values for reductions of kChanLongK or more, 10% from kChanMinK (channel_vectors_suit's limits).
// FASTCONV_IMPLICIT_VECTORS forces either here too (forced_vectors).
template <class T>
inline bool gemm_channel_vectors(int64_t Cog, int64_t cols, int64_t K, const LevelKernels<T>& k) {
  if (const int forced = forced_vectors(); forced >= 0) return forced == 1;
  if (!k.chan_vectors_pay || K < kChanMinK || cols < 1 || Cog < 1) return false;
  const double positions = double(cols) / double(round_up(cols, k.lanes)) * double(Cog) / double(implicit_rows(Cog, k));
  const double channels = double(Cog) / double(round_up(Cog, chan_panel_over(Cog, cols, k)));
  return channels >= (K >= kChanLongK ? 1.05 : 1.1) * positions;
}

}  // namespace fastconv::detail
