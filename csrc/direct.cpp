#include "direct.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gemm.hpp"
#include "geometry.hpp"
#include "kernels/table.hpp"
#include "parallel.hpp"
#include "sgemm_avx512.hpp"
#include "winograd.hpp"

namespace fastconv {

// The phase buffer pads every padded row with kDirectChains vectors per column phase,
// so its size grows with the column stride: beyond 8, im2col is the better tool.
constexpr int64_t kMaxDirectColumnStride = 8;

bool use_direct(const ConvGeom& g) { return g.C / g.groups == 1 && g.sw <= kMaxDirectColumnStride; }

std::string direct_kernel_name() {
  const KernelTable& k = kernels();
  return std::string(k.level) + " (" + k.isa + ", " + std::to_string(k.f32.lanes * 32) + "-bit vectors)";
}

namespace {

int64_t pow2_at_least(int64_t n, int64_t cap) {
  int64_t p = 1;
  while (p < cap && p < n) p *= 2;
  return p;
}

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

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
double compact_kept(const ConvGeom& g, int64_t V) {
  const int64_t len = ((g.OW - 1) * g.sw + (g.kw - 1) * g.dw + 1 + g.sw - 1) / g.sw;
  const int64_t run = (g.OH - 1) * len + g.OW;
  return double(g.OH) * double(g.OW) / double(round_up(run, V));
}

// FASTCONV_IMPLICIT_LAYOUT (read on every call): rows, halves or run puts every
// layer that layout can take on it, for tests and comparisons; unset, the
// layout that keeps most.
ImplicitTiling implicit_tiling(const ConvGeom& g, int64_t V) {
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

ImplicitMode implicit_mode() {
  const char* v = std::getenv("FASTCONV_IMPLICIT_GEMM");
  if (v && std::strcmp(v, "0") == 0) return ImplicitMode::off;
  return v && std::strcmp(v, "1") == 0 ? ImplicitMode::forced : ImplicitMode::rules;
}

}  // namespace

namespace {

// Of a kernel's two tiles, `first` and `second` channels (or rows) tall, the one
// for n of them: the second where it computes at least 6% fewer than the first,
// whose shape is the faster one (AVX2, batch 64, forward / input gradient, 4 x 3
// against 6 x 2: 16 channels at 32x32 1.13 / 1.12x, 32 at 16x16 1.10 / 1.07x,
// where 6-row panels compute 18 and 36 rows; but 64 channels at 8x8 0.97 /
// 1.04x, 66 rows against 64, and 24 at 16x16, both exact, 0.93 / 0.94x).
// FASTCONV_IMPLICIT_PANEL (read on every call): 1 or 2 forces the first or the
// second tile, for tests and comparisons.
int64_t pick_tile(int64_t n, int64_t first, int64_t second) {
  if (const char* v = std::getenv("FASTCONV_IMPLICIT_PANEL")) {
    if (std::strcmp(v, "1") == 0) return first;
    if (std::strcmp(v, "2") == 0) return second;
  }
  return 1.06 * double(round_up(n, second)) < double(round_up(n, first)) ? second : first;
}

// The packed GEMM's row panel for Cout output channels (position vectors).
template <class T>
int64_t implicit_panel(int64_t Cout, const LevelKernels<T>& k) {
  return pick_tile(Cout, k.packed_rows, k.packed_rows2);
}
template <class T>
int64_t implicit_rows(int64_t Cout, const LevelKernels<T>& k) {
  return round_up(Cout, implicit_panel(Cout, k));
}

// The channel tile for Cog output channels per group (channel vectors).
template <class T>
int64_t chan_panel(int64_t Cog, const LevelKernels<T>& k) {
  return pick_tile(Cog, k.chan_width, k.chan_width2);
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
// of implicit_tiling), and channel tiles at least 90% full; and only where the
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

// Where the channel vectors pay (the rules above), for values of elem_bytes.
bool channel_vectors_suit(const ConvGeom& g, const LevelKernels<float>& k, int64_t elem_bytes) {
  const int64_t Cg = g.C / g.groups, Cog = g.Cout / g.groups, K = Cg * g.kh * g.kw;
  // The padded input planes the tiles read (one group's), against the budget above.
  const double rows = double(g.OH - 1) * g.sh + double(g.kh - 1) * g.dh + 1;
  const double cols = double(g.OW - 1) * g.sw + double(g.kw - 1) * g.dw + 1;
  return k.chan_vectors_pay && K >= kChanMinK && (K >= kChanLongK || implicit_tiling(g, k.lanes).kept < 0.95) &&
         double(Cog) >= 0.9 * double(round_up(Cog, chan_panel(Cog, k))) &&
         double(Cg) * rows * cols * double(elem_bytes) <= kChanMaxInputBytes;
}

// Whether the implicit GEMM's forward puts output channels in the vectors
// (gemm_packed_channels) rather than output positions.  FASTCONV_IMPLICIT_VECTORS
// (read on every call): channels or positions forces one, for tests and
// comparisons; unset, the rules above.
template <class T>
bool implicit_channel_vectors(const ConvGeom& g) {
  if (const char* v = std::getenv("FASTCONV_IMPLICIT_VECTORS")) {
    if (std::strcmp(v, "channels") == 0) return true;
    if (std::strcmp(v, "positions") == 0) return false;
  }
  return channel_vectors_suit(g, kernels_for<float>(), sizeof(T));
}

}  // namespace

bool use_implicit_gemm(const ConvGeom& g, int64_t elem_bytes, bool prepared) {
  const ImplicitMode mode = implicit_mode();
  // Per group: C and Cout below are a group's (grouped layers run their groups in turn).
  const int64_t C = g.C / g.groups, Cout = g.Cout / g.groups;
  if (mode == ImplicitMode::off || C < 2 || g.sw > kMaxDirectColumnStride) return false;
  if (mode == ImplicitMode::forced) return true;
  // 1x1 layers are GEMMs of the input itself (pointwise) or of a strided copy: nothing to gain in place.  Short
  // reductions (K <= kSmallK) stay on gemm_small_k: even at avx2, 1.6x faster at AVX-512 (3 -> 64 channels);
  // but for few output channels on narrow rows im2col's work per row outweighs the GEMM's (3 -> 16 channels,
  // 3x3, batch 64 at 32x32: 1.24x faster in place at avx2, 1.45x at AVX-512; 28-wide rows 1.07x / 1.50x; at
  // 56 0.94x / 1.21x; one 224x224 image 0.90x / 0.97x).
  // Rows likewise: 3 output channels fill half a 6-row tile (an input gradient of a 3-channel image as the adjoint
  // forward: 2x im2col's time).
  const LevelKernels<float>& k = kernels_for<float>();
  const int64_t K = C * g.kh * g.kw;
  const bool short_k = K <= kSmallK;
  // With the weights packed once (a plan), any long stride-1 reduction the channel vectors suit: their packing per
  // call was what lost to im2col's GEMM on many channels (plan against im2col + OpenBLAS, avx2, forward: 3x3 512 ->
  // 512 channels at 7x7 batch 1 1.33-1.42x, batch 8 1.14x; at 4x4 1.70-1.88x / 1.10-1.22x).  Strided layers read
  // their planes in gathers that stay slower than im2col's copies (3x3/2 256 -> 512 at 14, batch 8: 0.79-0.91x).
  const bool stride1 = g.sh == 1 && g.sw == 1;
  const bool k_fits =
      K <= kImplicitMaxK || (C <= kImplicitWideKernelChannels && K <= kImplicitMaxWideK) ||
      (((prepared && stride1) || g.kh * g.kw >= kChanWideTaps) && channel_vectors_suit(g, k, elem_bytes));
  // Position vectors must keep most of their columns and row panels most of their rows; channel vectors have rules
  // of their own (channel_vectors_suit), and a prepared layer on them needs nothing more (3x3 512 -> 512 channels at
  // 2x2, batch 1: 13 GF/s on im2col, where 4 positions fill a quarter of a position vector).
  const bool layout_ok =
      (prepared && channel_vectors_suit(g, k, elem_bytes)) ||
      (implicit_tiling(g, k.lanes).kept > 0.6 && double(Cout) / double(implicit_rows(Cout, k)) > 0.6);
  return g.kh * g.kw > 1 && (!short_k || (Cout <= 16 && g.OW <= 64)) && k_fits && layout_ok;
}

// The weight gradient as gemm_tn_rows sums only real output positions, so map
// size, strides and few input channels cost it nothing; what it needs is its
// sums (C*taps x Cout) in L2 while images stream past.  Measured against
// im2col (batch 8, weight gradient only): 3x3/2 64 -> 128 channels at 56 1.7x
// faster at AVX-512, 1.1x at avx2; 128 -> 256 at 28 1.4x / 0.95x (1.2 M sums);
// 256 -> 512 at 14 0.89x / 0.74x; the 3 -> 64 channel 7x7/2 stem at 224 2.3x /
// 1.2x; 32 -> 64 channel 5x5/2 at 56 2.8x / 1.6x.
constexpr double kImplicitMaxSums = 1 << 18;

bool use_implicit_weight_grad(const ConvGeom& g) {
  const ImplicitMode mode = implicit_mode();
  // Per group, as the forward: C and Cout are a group's.
  const int64_t C = g.C / g.groups, Cout = g.Cout / g.groups;
  if (mode == ImplicitMode::off || C < 2 || g.sw > kMaxDirectColumnStride || g.kh * g.kw == 1) return false;
  return mode == ImplicitMode::forced || double(C) * g.kh * g.kw * Cout <= kImplicitMaxSums;
}

// Against the Winograd weight gradient (3x3, batch 64, time Winograd /
// implicit): AVX-512 16 -> 16 channels at 32x32 1.98, 32 -> 32 at 16x16 1.37, at
// 32x32 1.18, 32 -> 64 at 16x16 1.05; but 64 -> 64 at 16x16 0.87, 48 -> 12 at
// 32x32 0.89 (one vector of output channels: the broadcasts bound it), 128 ->
// 128 at 8x8 0.77.  avx2: 16 -> 16 2.59, 32 -> 32 1.57 (16x16) and 1.58
// (32x32), 48 -> 12 1.63, 64 -> 32 1.40, 32 -> 64 1.35, 64 -> 64 at 8x8 1.36,
// at 16x16 0.96, at 56x56 (batch 8) 1.03; 128 -> 128 at 8x8 0.92, at 28x28 0.74.
// Asked only where use_implicit_weight_grad(g) holds.
bool implicit_weight_grad_beats_winograd(const ConvGeom& g) {
  if (winograd_forced()) return false;
  return sgemm_avx512_enabled() ? g.C <= 32 : (g.C <= 32 || g.Cout <= 32 || g.C * g.Cout <= 64 * 64);
}

namespace {

// The zero-padded input plane, split into column phases.  Padded column c
// (input column c - pl) is stored in phase c % sw at position c / sw; tap j of
// output column ow reads padded column ow*sw + j*dw, i.e. phase (j*dw) % sw at
// position ow + (j*dw) / sw.  So for every stride, each tap of a run of output
// columns is one unit-stride vector load.  A padded row holds its sw phases one
// after another, each `ld` long; ld leaves kDirectChains vectors of zeros after the
// last used position, so blocks may read past the end of an output row.
//
// `compact` (the implicit GEMM on narrow maps): rows exactly `len` long, and
// the padded rows split into sh row phases as well, each phase pair's rows
// stored one after another (row rho = sh*r + rp, column phase cp at
// ((rp * sw + cp) * R + r) * ld).  Output row oh + 1 then reads one row after
// row oh for every tap, so consecutive output rows are one run of "virtual"
// columns q = oh * ld + ow, of which ow < OW are kept: 8 of 9 for a 3x3 layer
// with stride 2 on an 8x8 output, where the interleaved layout kept 8 of 36.
template <class T>
struct Phases {
  int64_t rows, sw, sh, R, len, ld;  // sh, R: row phases and rows per phase (1 and rows unless compact)
  bool compact;
  std::vector<int64_t> offs;  // tap (i, j) -> offset from its output position's row start

  Phases(const ConvGeom& g, int64_t lanes, bool compact_ = false) : sw(g.sw), compact(compact_) {
    rows = checked_add(checked_mul(g.OH - 1, g.sh, "direct workspace"), (g.kh - 1) * g.dh + 1, "direct workspace");
    const int64_t width =
        checked_add(checked_mul(g.OW - 1, g.sw, "direct workspace"), (g.kw - 1) * g.dw + 1, "direct workspace");
    len = (width + sw - 1) / sw;
    ld = compact ? len : round_up(len + kDirectChains * lanes, lanes);
    sh = compact ? g.sh : 1;
    R = (rows + sh - 1) / sh;
    checked_mul(checked_mul(checked_mul(R, sh, "direct workspace"), sw, "direct workspace"), ld, "direct workspace");
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) offs.push_back(row_at(i * g.dh, (j * g.dw) % sw) + (j * g.dw) / sw);
  }
  int64_t size() const { return sh * sw * R * ld; }
  // From output row oh to oh + 1.
  int64_t row_step(const ConvGeom& g) const { return compact ? ld : g.sh * sw * ld; }
  // Where padded row rho's column phase cp starts.
  int64_t row_at(int64_t rho, int64_t cp) const {
    return compact ? (((rho % sh) * sw + cp) * R + rho / sh) * ld : (rho * sw + cp) * ld;
  }
  // Row (c, tap) of the implicit GEMM's B, C planes one after another: the
  // offset of tap's first value in channel c's plane.
  std::vector<int64_t> tap_rows(int64_t C) const {
    const int64_t taps = static_cast<int64_t>(offs.size());
    std::vector<int64_t> r(static_cast<size_t>(C * taps));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) r[c * taps + t] = c * size() + offs[t];
    return r;
  }
  DirectPlane plane(const ConvGeom& g) const { return DirectPlane{row_step(g), offs.data()}; }  // not compact

  // Writes the input's positions only: a buffer zeroed once keeps its zero
  // padding across the planes of a call.
  void fill(const T* x, const ConvGeom& g, std::vector<T>& buf) const {
    if (buf.size() != static_cast<size_t>(size())) buf.assign(size(), T(0));
    fill_rows(x, g, buf.data(), 0, rows);
  }

  // The same for padded rows [rho0, rho1) of a zeroed plane.
  void fill_rows(const T* x, const ConvGeom& g, T* plane, int64_t rho0, int64_t rho1) const {
    // Input columns whose padded column lies inside the phases.
    const int64_t end = std::min(g.W, sw * len - g.pl);
    if (end <= 0) return;
    const LevelKernels<T>& k = kernels_for<T>();
    // Stride 2: input column i is padded column i + pl, in phase (i + pl) % 2 at (i + pl) / 2.
    const int64_t even_phase = g.pl % 2;
    for (int64_t rho = rho0; rho < rho1; ++rho) {
      const int64_t ih = rho - g.pt;
      if (ih < 0 || ih >= g.H) continue;
      const T* src = x + ih * g.W;
      if (sw == 1) {
        std::copy(src, src + end, plane + row_at(rho, 0) + g.pl);
      } else if (sw == 2) {
        k.deinterleave2(src, end, plane + row_at(rho, even_phase) + g.pl / 2,
                        plane + row_at(rho, 1 - even_phase) + (g.pl + 1) / 2);
      } else {
        // Phase r holds padded columns c = r + sw*q, input column c - pl: a
        // strided gather per phase (a division per value cost more than the
        // convolution of a 16-channel layer).
        for (int64_t r = 0; r < sw; ++r) {
          const int64_t q0 = g.pl > r ? (g.pl - r + sw - 1) / sw : 0;  // first q with c >= pl
          const int64_t q1 = (end + g.pl - r + sw - 1) / sw;           // past the last q with c - pl < end
          T* d = plane + row_at(rho, r);
          for (int64_t q = q0; q < q1; ++q) d[q] = src[r + sw * q - g.pl];
        }
      }
    }
  }
};

// Everything about the input gradient's gathers that is the same for every
// plane: per input row ih and phase r the (gy offset, tap) pairs, one list
// after another (pairs of (ih, r) start at first[ih * sw + r]), and per phase
// its positions [qlo, qhi) and block function.  Built once per call: the
// divisions it needs would cost more than a row's arithmetic.
template <class T>
struct Gathers {
  std::vector<int64_t> first, offs, tap, qlo, qhi;
  std::vector<int64_t> span;
  std::vector<DirectInputBlock<T>> block;

  Gathers() = default;
  Gathers(const ConvGeom& g, int64_t ldg, int64_t margin, const LevelKernels<T>& k) {
    const int64_t V = k.lanes;
    const int64_t Cog = g.Cout / g.groups;
    for (int64_t r = 0; r < g.sw; ++r) {
      // padded columns c = r + sw*q inside [pl, pl + W)
      const int64_t lo = g.pl > r ? (g.pl - r + g.sw - 1) / g.sw : 0, end = g.pl + g.W - r;
      const int64_t hi = end > 0 ? (end + g.sw - 1) / g.sw : 0;
      const int64_t rc = pow2_at_least((hi - lo + V - 1) / V, kDirectChains);
      qlo.push_back(lo);
      qhi.push_back(hi);
      span.push_back(rc * V);
      block.push_back(k.direct_input_block(rc, Cog));
    }
    for (int64_t ih = 0; ih < g.H; ++ih)
      for (int64_t r = 0; r < g.sw; ++r) {
        first.push_back(static_cast<int64_t>(offs.size()));
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t d = ih + g.pt - i * g.dh;
          if (d < 0 || d % g.sh != 0 || d / g.sh >= g.OH) continue;
          for (int64_t j = 0; j < g.kw; ++j)
            if ((j * g.dw) % g.sw == r) {
              offs.push_back((d / g.sh) * ldg + margin - (j * g.dw) / g.sw);
              tap.push_back(i * g.kw + j);
            }
        }
      }
    first.push_back(static_cast<int64_t>(offs.size()));
  }
};

template <class T>
void input_group(const T* gyb, int64_t plane, const Gathers<T>& ga, const ConvGeom& g, const T* w, T* gx) {
  const int64_t Cog = g.Cout / g.groups, taps = g.kh * g.kw;
  for (int64_t ih = 0; ih < g.H; ++ih)
    for (int64_t r = 0; r < g.sw; ++r) {
      const int64_t k = ih * g.sw + r, p0 = ga.first[k], pairs = ga.first[k + 1] - p0, span = ga.span[r];
      T* dst = gx + ih * g.W + r - g.pl;  // padded column c = r + sw*q is gx column c - pl
      for (int64_t q0 = ga.qlo[r]; q0 < ga.qhi[r]; q0 += span)
        ga.block[r](gyb + q0, plane, ga.offs.data() + p0, ga.tap.data() + p0, pairs, w, taps, Cog, dst + g.sw * q0,
                    std::min(span, ga.qhi[r] - q0), g.sw);
    }
}

// Per worker: the input's phase buffer and the gy copy.
template <class T>
struct Scratch {
  std::vector<T> buf, gyb;
};

double direct_flops(const ConvGeom& g) { return 2.0 * g.N * g.Cout * g.OH * g.OW * g.kh * g.kw; }

}  // namespace

template <class T>
void direct_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep) {
  const int64_t G = g.groups, Cog = g.Cout / G, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  const LevelKernels<T>& k = kernels_for<T>();
  const Phases<T> ph(g, k.lanes);
  const DirectPlane plane = ph.plane(g);
  const int workers = workers_for(direct_flops(g), g.N * G);
  std::vector<std::vector<T>> bufs(workers);
  parallel_for(g.N * G, workers, [&](int64_t item, int wk) {
    const int64_t n = item / G, gi = item % G;
    ph.fill(x + (n * g.C + gi) * HW, g, bufs[wk]);
    k.direct_forward_group(bufs[wk].data(), plane, g, w + gi * Cog * taps, b ? b + gi * Cog : nullptr,
                           y + (n * g.Cout + gi * Cog) * P);
    if (ep.active()) ep.apply(y, (n * g.Cout + gi * Cog) * P, Cog * P);
  });
}

// Per-thread buffers kept between calls: fresh vectors per call and worker
// cost page faults and zero fills on every call (the weight gradient of a
// 3 -> 64 channel 32x32 image: half its time).  n values of slot `slot`, zeroed
// when `zero`.
template <class T>
T* thread_buffer(int slot, int64_t n, bool zero) {
  thread_local std::vector<T> bufs[2];
  std::vector<T>& b = bufs[slot];
  if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
  if (zero) std::fill(b.begin(), b.begin() + n, T(0));
  return b.data();
}

namespace {

// How the implicit GEMM's forward cuts a call into items for the threads: blocks of images, each image cut into
// bands of output rows, and blocks of output-channel panels, at least 2 items per thread where the layer allows.
// Every item reads its images' input rows and its block's weights, so the cut that reads least is taken: a large
// map with few weights (a stem) in one image per item and bands if there are fewer images than threads; a small
// map with many weights (512 -> 512 channels at 7x7: 9.4 MB of weights for 100 KB of input an image) in channel
// blocks over all the images at once, where an item per image would read all the weights once per image.  Blocks
// of several images need positions that may lie anywhere (channel vectors) and their planes within the channel
// vectors' budget.
constexpr double kItemPlanesBytes = 256 << 10;

struct ItemSplit {
  int64_t images, bands, cblocks;  // images per block
  int64_t blocks(int64_t N) const { return (N + images - 1) / images; }
};

ItemSplit split_items(const ConvGeom& g, int64_t panels, int64_t elem_bytes, bool chans, int64_t image_values) {
  const int64_t want = 2 * int64_t(get_num_threads());
  const double input = double(g.C) * double(g.H) * double(g.W) * double(elem_bytes);
  const double weights = double(g.Cout) * double(g.C / g.groups) * double(g.kh * g.kw) * double(elem_bytes);
  // Several images per block only while their planes stay in L2 (the gathers of every channel panel read them
  // again): 3x3/2 256 -> 512 channels at 14x14, batch 8, lost 1.25x with 2 MiB of planes a block.
  const double image_bytes = double(image_values) * double(elem_bytes);
  const int64_t max_images = chans ? std::max<int64_t>(1, int64_t(kItemPlanesBytes / image_bytes)) : 1;
  ItemSplit best{1, 1, 1};
  double best_bytes = -1;
  auto consider = [&](int64_t m, int64_t bands, int64_t c) {
    const ItemSplit s{m, bands, c};
    const double items = double(s.blocks(g.N)) * double(bands) * double(c);
    // Too few items idle threads: count their share as bytes never saved (a cut short of `want` only wins by
    // reading far less).
    const double idle = items < double(want) ? double(want) / items : 1.0;
    // An item whose planes (its band of an image) exceed L2 reads them from memory again for every panel: counted
    // once more per item.
    const double planes = image_bytes / double(bands), spill = planes > kItemPlanesBytes ? items * planes : 0.0;
    const double bytes =
        (double(s.blocks(g.N)) * double(bands) * weights + double(c) * double(g.N) * input + spill) * idle;
    if (best_bytes < 0 || bytes < best_bytes) best = s, best_bytes = bytes;
  };
  for (int64_t c = 1; c <= std::min(want, panels); ++c) {
    // One image per block, bands to make up the items the images and channel blocks do not.
    const int64_t per_image = g.N >= want ? 1 : (want + g.N * c - 1) / (g.N * c);
    consider(1, std::min<int64_t>(g.OH, per_image), c);
    // All or part of the batch per block, no bands.
    for (int64_t nb = 1; nb < g.N && nb <= want; ++nb) {
      const int64_t m = (g.N + nb - 1) / nb;
      if (m <= max_images) consider(m, 1, c);
    }
  }
  return best;
}

}  // namespace

// y = conv(x, w) + b as a GEMM of the packed weights (Cout x C*taps) with B's
// row (c, tap) read in place from channel c's phase plane at tap's offset:
// the direct kernels' padded input layout, so strided and dilated layers read
// unit-stride rows too, and no column matrix is written.
template <class T>
void implicit_gemm_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep,
                           PrepRef prep) {
  const LevelKernels<T>& k = kernels_for<T>();
  const int64_t V = k.lanes, NR = k.packed_cols;
  const ImplicitLayout layout = implicit_tiling(g, V).layout;
  const bool run = layout == ImplicitLayout::run, halves = layout == ImplicitLayout::halves;
  const Phases<T> ph(g, V, true);
  // Groups run one after another inside each item, each its own GEMM of Cog x K weights over its Cg planes
  // (forward against im2col per group, batch 8, 3x3: 128 -> 128 channels in 4 groups at 28 1.42x at avx2, 1.55x
  // at AVX-512; strided 1.85-2.47x; 64 -> 64 in 2 groups at 56 1.40x / 1.66x; 256 -> 256 in 8 at 14 1.35x /
  // 1.74x; 64 -> 128 in 32 groups at 56 2.08x / 1.20x).
  const int64_t G = g.groups, Cg = g.C / G, Cog = g.Cout / G;
  const int64_t taps = g.kh * g.kw, K = checked_mul(Cg, taps, "implicit GEMM"), P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t plane = ph.size(), row_step = ph.row_step(g);
  // The last tile reads up to NR columns past its last row.
  const int64_t image = checked_add(checked_mul(plane, Cg, "direct workspace"), NR + ph.ld, "direct workspace");
  const std::vector<int64_t> koff = ph.tap_rows(Cg);
  // Kept by the calling thread between calls, as the workers' planes are: a fresh vector per call was an
  // mmap, page faults and munmap every time (150 KiB at 64 -> 64 channels).
  // (Through a reference: the workers' lambda must see this thread's vector, not their own.)
  thread_local std::vector<T> kept_ap;
  const bool chans = implicit_channel_vectors<T>(g);
  const int64_t mr = chans ? chan_panel(Cog, k) : implicit_panel(Cog, k);
  const int64_t group_ap = checked_mul(round_up(Cog, mr), K, "implicit GEMM");
  const T* const ap =
      prepared(prep, Prep::implicit_panels, mr, chans, checked_mul(G, group_ap, "implicit GEMM"), kept_ap, [&](T* out) {
        for (int64_t gi = 0; gi < G; ++gi) pack_rows(w + gi * Cog * K, K, Cog, K, mr, out + gi * group_ap);
      });
  // Runs go through a Cout x cols buffer of at most 64 Ki values.
  const int64_t run_rows =
      run ? std::max<int64_t>(1, ((65536 / std::max<int64_t>(Cog, 1)) - g.OW) / row_step + 1) : g.OH;
  // Row layouts: vectors (or half vectors) of output rows [oh0, oh1), at
  // plane column oh * row_step + i * V and output position oh * OW + i * V;
  // an odd band's last half vector is empty.
  const int64_t width = halves ? V / 2 : V, per_row = (g.OW + width - 1) / width;
  auto place = [&](int64_t oh0, int64_t oh1, std::vector<int64_t>& boff, std::vector<int64_t>& coff,
                   std::vector<int64_t>& cnt) {
    boff.clear(), coff.clear(), cnt.clear();
    for (int64_t oh = oh0; oh < oh1 + (halves && (oh1 - oh0) % 2); ++oh)
      for (int64_t i = 0; i < per_row; ++i) {
        const bool real = oh < oh1;
        boff.push_back((real ? oh : oh1 - 1) * row_step + i * width);
        coff.push_back((real ? oh : oh1 - 1) * g.OW + i * width);
        cnt.push_back(real ? std::min(width, g.OW - i * width) : 0);
      }
  };
  // Items are (block of images, band of output rows, block of channel panels); each copies its input rows into
  // the worker's planes and multiplies them by its block's weights.
  const int64_t panels = (Cog + mr - 1) / mr;
  const ItemSplit split = split_items(g, panels, sizeof(T), chans, image);
  const int64_t m = split.images, blocks = split.blocks(g.N), bands = split.bands, cblocks = split.cblocks;
  const int workers = workers_for(direct_flops(g) * g.C, blocks * bands * cblocks);
  // Channel vectors: every output position's offset in the planes of a block's images (a band reads from its first
  // position on), and in the output from the block's first position.
  std::vector<int64_t> qoff, coff;
  if (chans)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          qoff.push_back(i * image + oh * row_step + ow);
          coff.push_back(i * g.Cout * P + oh * g.OW + ow);
        }
  std::vector<char> zeroed(workers, 0);  // the worker's planes hold zeros wherever no band writes
  parallel_for(blocks * bands * cblocks, workers, [&](int64_t item, int wk) {
    const int64_t n = item / (bands * cblocks) * m, band = item / cblocks % bands, cb = item % cblocks;
    const int64_t mi = std::min(m, g.N - n);  // the block's images [n, n + mi)
    const int64_t oh0 = g.OH * band / bands, oh1 = g.OH * (band + 1) / bands;
    // The block's panels [p0, p1): output channels [p0 mr, min(p1 mr, Cog)) of each group.
    const int64_t p0 = panels * cb / cblocks, p1 = panels * (cb + 1) / cblocks;
    if (oh0 == oh1 || p0 == p1) return;
    T* const buf = thread_buffer<T>(0, m * image, !zeroed[wk]);
    zeroed[wk] = 1;
    // Padding rows are never written, so rows a band does not fill stay zero
    // or hold input rows it does not read.
    const int64_t rho0 = oh0 * g.sh, rho1 = (oh1 - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    for (int64_t gi = 0; gi < G; ++gi) {
      for (int64_t i = 0; i < mi; ++i)
        for (int64_t c = 0; c < Cg; ++c)
          ph.fill_rows(x + ((n + i) * g.C + gi * Cg + c) * HW, g, buf + i * image + c * plane, rho0, rho1);
      const int64_t o0 = gi * Cog + p0 * mr, Cob = std::min(Cog, p1 * mr) - p0 * mr;  // the block's channels
      T* yn = y + (n * g.Cout + o0) * P;
      const T* apg = ap + gi * group_ap + p0 * mr * K;
      if (chans) {
        // One image: the band's positions; several (no bands then): all of theirs.
        const int64_t npos = mi > 1 ? mi * P : (oh1 - oh0) * g.OW;
        k.gemm_packed_channels(mr, Cob, npos, K, apg, buf, koff.data(), qoff.data() + oh0 * g.OW, coff.data(),
                               yn + oh0 * g.OW, P);
        if (b || ep.active())
          for (int64_t i = 0; i < mi; ++i)
            for (int64_t o = o0; o < o0 + Cob; ++o)
              ep.apply(y, ((n + i) * g.Cout + o) * P + oh0 * g.OW, (oh1 - oh0) * g.OW, b ? b[o] : T(0));
        continue;
      }
      for (int64_t oh = oh0; oh < oh1; oh += run_rows) {
        const int64_t r = std::min(run_rows, oh1 - oh);
        if (!run) {
          thread_local std::vector<int64_t> boff, coff, cnt;
          place(oh, oh + r, boff, coff, cnt);
          const int64_t Q = static_cast<int64_t>(cnt.size()) / (halves ? 2 : 1);
          k.gemm_packed_vecs(mr, Cob, Q, K, apg, buf, koff.data(), boff.data(), coff.data(), cnt.data(), halves, yn, P);
        } else {
          const int64_t cols = (r - 1) * row_step + g.OW;
          T* const out = thread_buffer<T>(1, Cob * cols, false);
          k.gemm_packed_rows(mr, Cob, cols, K, apg, buf + oh * row_step, koff.data(), out, cols);
          for (int64_t o = 0; o < Cob; ++o)
            for (int64_t i = 0; i < r; ++i)
              std::memcpy(yn + o * P + (oh + i) * g.OW, out + o * cols + i * row_step, sizeof(T) * g.OW);
        }
        if (b || ep.active())  // the bias and the epilogue in one pass over the run's rows
          for (int64_t o = o0; o < o0 + Cob; ++o)
            ep.apply(y, (n * g.Cout + o) * P + oh * g.OW, r * g.OW, b ? b[o] : T(0));
      }
    }
  });
  release_if_large(kept_ap);
}

// gw = sum over images of gy_n (Cout x P) times x_n's tap rows (C*taps x P),
// as gemm_tn_rows over a compact plane: gw^T with the output channels in the
// vectors, so each output row is one run of positions and nothing is summed
// between rows or reduced across lanes (small maps lost to both when the
// positions were the vectors: 8x8 maps spent more on them than on the sums).
template <class T>
void implicit_gemm_weight_grad(const T* x, const T* gy, T* gw, const ConvGeom& g) {
  const LevelKernels<T>& k = kernels_for<T>();
  const Phases<T> ph(g, k.lanes, true);
  // Grouped layers: group gi's Cog channels of gy against its Cg channels of x, the groups in turn inside each item.
  const int64_t G = g.groups, Cg = g.C / G, Cog = g.Cout / G;
  const int64_t taps = g.kh * g.kw, K = checked_mul(Cg, taps, "implicit GEMM"), P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t plane = ph.size(), image = checked_mul(plane, g.C, "direct workspace"), row_step = ph.row_step(g);
  // Tap rows padded to whole tiles (the padding repeats a real row; its sums are dropped), channels to vectors.
  const int64_t MR = k.tn_rows, Kp = round_up(K, MR), ldt = round_up(Cog, k.lanes);
  const int64_t group_sums = checked_mul(Kp, ldt, "direct workspace"),
                sums = checked_mul(G, group_sums, "direct workspace");
  checked_mul(P, ldt, "direct workspace");
  std::vector<int64_t> koff = ph.tap_rows(Cg);
  koff.resize(static_cast<size_t>(Kp), koff.back());
  std::vector<int64_t> soff(static_cast<size_t>(g.OH));
  for (int64_t oh = 0; oh < g.OH; ++oh) soff[oh] = oh * row_step;
  // Output rows per kernel call: 128 positions or more, so loading and storing
  // a tile's accumulators is a small part of its sums; their gy^T stays in L1.
  const int64_t call_rows = std::max<int64_t>(1, (128 + g.OW - 1) / std::max<int64_t>(g.OW, 1));
  // Tap rows in chunks whose sums (chunk x ldt) stay in L2 (256 KiB) while a
  // block of images streams past.  Items are (block of images, band of output
  // rows): a block's gy^T is transposed once (held within 1 MiB), and each
  // chunk fills only its own channels' planes.  With fewer blocks than threads
  // (a single large image) the images are split into bands of rows instead.
  const int threads = get_num_threads();
  const int64_t row_tiles = Kp / MR, gy_image = P * ldt;
  const int64_t tiles_fit = std::max<int64_t>(1, (256 << 10) / (MR * ldt * static_cast<int64_t>(sizeof(T))));
  const int64_t chunks = (row_tiles + tiles_fit - 1) / tiles_fit;
  const int64_t B = std::max<int64_t>(
      1, std::min<int64_t>((g.N + threads - 1) / threads, (1 << 20) / (gy_image * static_cast<int64_t>(sizeof(T)))));
  checked_mul(B, gy_image, "direct workspace");
  const int64_t blocks = (g.N + B - 1) / B;
  const int64_t bands = blocks >= threads ? 1 : std::min<int64_t>(g.OH, (2 * threads + blocks - 1) / blocks);
  const int workers = workers_for(direct_flops(g) * Cg, blocks * bands);
  // The workers' partial sums (G blocks of Kp x ldt), kept by the calling thread between calls (by worker id).
  // (Through a reference: the workers' lambda must see this thread's vectors, not their own.)
  thread_local std::vector<std::vector<T>> kept_parts;
  std::vector<std::vector<T>>& parts = kept_parts;
  if (parts.size() < static_cast<size_t>(workers)) parts.resize(static_cast<size_t>(workers));
  std::vector<char> used(static_cast<size_t>(workers), 0);
  parallel_for(blocks * bands, workers, [&](int64_t item, int wk) {
    const int64_t blk = item / bands, band = item % bands;
    const int64_t n0 = blk * B, m = std::min(B, g.N - n0);
    const int64_t oh0 = g.OH * band / bands, oh1 = g.OH * (band + 1) / bands;
    if (oh0 == oh1) return;
    auto& part = parts[wk];
    const bool first = !used[wk];
    used[wk] = 1;
    if (first) part.assign(static_cast<size_t>(sums), T(0));
    // Padding is never written: zeros once per call; rows outside the band are not read.
    T* const buf = thread_buffer<T>(0, image, first);
    T* const gyt = thread_buffer<T>(1, B * gy_image, false);
    const int64_t rho0 = oh0 * g.sh, rho1 = (oh1 - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    for (int64_t gi = 0; gi < G; ++gi) {
      for (int64_t i = 0; i < m; ++i)
        k.transpose_lanes(gy + ((n0 + i) * g.Cout + gi * Cog) * P + oh0 * g.OW, Cog, (oh1 - oh0) * g.OW, P,
                          gyt + i * gy_image, ldt);
      T* const gbuf = buf + gi * Cg * plane;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t k0 = MR * (row_tiles * chunk / chunks), k1 = MR * (row_tiles * (chunk + 1) / chunks);
        // The chunk's channels only (the padding rows repeat row K - 1, in the last chunk).
        const int64_t c0 = k0 / taps, c1 = (std::min(k1, K) - 1) / taps + 1;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t c = c0; c < c1; ++c)
            ph.fill_rows(x + ((n0 + i) * g.C + gi * Cg + c) * HW, g, gbuf + c * plane, rho0, rho1);
          for (int64_t oh = oh0; oh < oh1; oh += call_rows)
            k.gemm_tn_rows(k1 - k0, Cog, std::min(call_rows, oh1 - oh), g.OW, gbuf, koff.data() + k0, soff.data() + oh,
                           gyt + i * gy_image + (oh - oh0) * g.OW * ldt, ldt, part.data() + gi * group_sums + k0 * ldt,
                           ldt);
        }
      }
    }
  });
  // The workers' gw^T summed into the first one's, then transposed into gw group by group.
  T* sum = nullptr;
  for (int wk = 0; wk < workers; ++wk) {
    if (!used[wk]) continue;
    const T* part = parts[wk].data();
    if (!sum)
      sum = parts[wk].data();
    else
      for (int64_t i = 0; i < sums; ++i) sum[i] += part[i];
  }
  const int64_t ldk = round_up(K, k.lanes);
  thread_local std::vector<T> t;
  t.resize(static_cast<size_t>(checked_mul(Cog, ldk, "direct workspace")));
  if (!sum) {  // no worker ran: gw is zero
    std::fill(gw, gw + g.Cout * K, T(0));
    return;
  }
  for (int64_t gi = 0; gi < G; ++gi) {
    k.transpose_lanes(sum + gi * group_sums, K, Cog, ldt, t.data(), ldk);
    for (int64_t o = 0; o < Cog; ++o) std::memcpy(gw + (gi * Cog + o) * K, t.data() + o * ldk, sizeof(T) * K);
  }
  release_if_large(t);
  size_t held = 0;
  for (const auto& part : parts) held += part.capacity() * sizeof(T);
  if (held > kKeptBufferBytes) parts.clear();
}

// The input gradient of a strided layer as sh x sw sub-pixel phases.  Padded
// input row rho = ih + pt meets output row oh through tap i when rho = oh * sh
// + i * dh, so the rows of one phase r = rho % sh, rho = r + sh * u, meet only
// the taps with i * dh = r (mod sh), at oh = u - m_i, m_i = (i * dh - r) / sh:
// a stride-1 correlation of gy with those taps, shifted by -m_i.  Columns
// likewise.  Each phase is a GEMM with the input channels in the vectors
// (gemm_packed_channels): row (o, i, j) of B is gy's channel o read m_i rows
// up and n_j columns left of the position, in planes padded so that every
// read outside gy meets zeros, and the positions' results go straight to
// their strided places in gx.  A phase that no tap meets (kernel smaller than
// the stride) is zero.
namespace {

struct GradAxis {
  std::vector<int64_t> tap, shift;  // the phase's taps and their shifts m
  int64_t u0 = 0, u1 = 0;           // its positions: padded row r + s * u for u in [u0, u1)
};

// Phase r of one axis: kernel size kk, dilation d, stride s, leading padding pad, input size n.
GradAxis grad_axis(int64_t kk, int64_t d, int64_t s, int64_t pad, int64_t n, int64_t r) {
  GradAxis a;
  for (int64_t i = 0; i < kk; ++i)
    if ((i * d) % s == r) a.tap.push_back(i), a.shift.push_back((i * d - r) / s);
  a.u0 = pad > r ? (pad - r + s - 1) / s : 0;
  a.u1 = std::max(a.u0, n - 1 + pad - r >= 0 ? (n - 1 + pad - r) / s + 1 : 0);
  return a;
}

// Everything about the phases that is the same for every image: per phase its
// rows' and columns' axes, and the padded gy plane they read (rows R x cols ld,
// gy at row top, column left).
struct GradPhases {
  std::vector<GradAxis> rows, cols;  // rows[r] for r < sh, cols[r] for r < sw
  int64_t top = 0, left = 0, R = 0, ld = 0;

  explicit GradPhases(const ConvGeom& g) {
    int64_t u1 = g.OH, v1 = g.OW;
    for (int64_t r = 0; r < g.sh; ++r) {
      rows.push_back(grad_axis(g.kh, g.dh, g.sh, g.pt, g.H, r));
      for (int64_t m : rows.back().shift) top = std::max(top, m);
      u1 = std::max(u1, rows.back().u1);
    }
    for (int64_t r = 0; r < g.sw; ++r) {
      cols.push_back(grad_axis(g.kw, g.dw, g.sw, g.pl, g.W, r));
      for (int64_t m : cols.back().shift) left = std::max(left, m);
      v1 = std::max(v1, cols.back().u1);
    }
    R = checked_add(top, u1, "input gradient workspace");
    ld = checked_add(left, v1, "input gradient workspace");
    checked_mul(R, ld, "input gradient workspace");
  }
  int64_t plane() const { return R * ld; }
};

}  // namespace

constexpr double kChanMaxPhaseWeightBytes = 1 << 20;

bool use_strided_input_grad(const ConvGeom& g, int64_t elem_bytes) {
  const ImplicitMode mode = implicit_mode();
  const int64_t Cg = g.C / g.groups, Cog = g.Cout / g.groups;
  if (mode == ImplicitMode::off || (g.sh == 1 && g.sw == 1) || Cg < 2) return false;
  if (mode == ImplicitMode::forced) return true;
  const LevelKernels<float>& k = kernels_for<float>();
  const GradPhases ph(g);
  // The fewest and most taps of a phase along an axis.
  auto tap_range = [](const std::vector<GradAxis>& axes) {
    int64_t lo = INT64_MAX, hi = 0;
    for (const GradAxis& a : axes) lo = std::min<int64_t>(lo, a.tap.size()), hi = std::max<int64_t>(hi, a.tap.size());
    return std::pair<int64_t, int64_t>{lo, hi};
  };
  const auto [rlo, rhi] = tap_range(ph.rows);
  const auto [clo, chi] = tap_range(ph.cols);
  // The rules of implicit_channel_vectors for every phase, gy's planes in their place; and at least two taps a phase
  // each way, with one phase's weights within L2, as measured against im2col + col2im (input gradient, batch 8,
  // avx2): 5x5/2 64 -> 128 channels at 56 1.11x, 32 -> 64 1.24x, float64 1.04x; 7x7/2 64 -> 64, one image at 112
  // 1.20x; but 3x3/2 (phases of one tap each way) 64 -> 128 at 56 0.92x, 128 -> 256 at 28 0.97x, and 256 -> 512 at
  // 14 0.64x (2 MiB of weights a phase for 49 positions an image).
  return k.chan_vectors_pay && rlo >= 2 && clo >= 2 && Cog * rlo * clo >= kChanMinK &&
         double(Cg) * double(Cog * rhi * chi) * double(elem_bytes) <= kChanMaxPhaseWeightBytes &&
         double(Cg) >= 0.9 * double(round_up(Cg, chan_panel(Cg, k))) &&
         double(Cog) * double(ph.plane()) * double(elem_bytes) <= kChanMaxInputBytes;
}

template <class T>
void strided_input_grad(const T* gy, const T* w, T* gx, const ConvGeom& g, PrepRef prep) {
  const LevelKernels<T>& k = kernels_for<T>();
  const int64_t G = g.groups, Cg = g.C / G, Cog = g.Cout / G, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t phases = g.sh * g.sw, width = chan_panel(Cg, k);
  const GradPhases ph(g);
  const int64_t plane = ph.plane(), image = checked_mul(plane, Cog, "input gradient workspace");
  // Per phase: B's rows (o, i, j) and the positions' offsets in the planes and in a gx plane; per (group, phase)
  // the packed weights, A[c][(o, i, j)] = w[o][c][i][j].
  std::vector<std::vector<int64_t>> koff(phases), qoff(phases), coff(phases);
  std::vector<int64_t> ap_at(G * phases + 1, 0);  // (group, phase) gi * phases + p's weights at ap[ap_at[.]]
  for (int64_t p = 0; p < phases; ++p) {
    const int64_t K = Cog * int64_t(ph.rows[p / g.sw].tap.size() * ph.cols[p % g.sw].tap.size());
    for (int64_t gi = 0; gi < G; ++gi) ap_at[gi * phases + p + 1] = packed_size(Cg, K, width);
  }
  for (int64_t i = 0; i < G * phases; ++i) ap_at[i + 1] = checked_add(ap_at[i], ap_at[i + 1], "input gradient weights");
  // Kept by the calling thread between calls, as the forward's are (no fresh pages per call).
  for (int64_t p = 0; p < phases; ++p) {
    const GradAxis &ra = ph.rows[p / g.sw], &ca = ph.cols[p % g.sw];
    const int64_t rh = p / g.sw, rw = p % g.sw;
    for (int64_t o = 0; o < Cog; ++o)
      for (size_t i = 0; i < ra.tap.size(); ++i)
        for (size_t j = 0; j < ca.tap.size(); ++j)
          koff[p].push_back(o * plane + (ph.top - ra.shift[i]) * ph.ld + ph.left - ca.shift[j]);
    for (int64_t u = ra.u0; u < ra.u1; ++u)
      for (int64_t v = ca.u0; v < ca.u1; ++v) {
        qoff[p].push_back(u * ph.ld + v);  // koff holds the planes' padding
        coff[p].push_back((rh + g.sh * u - g.pt) * g.W + rw + g.sw * v - g.pl);
      }
  }
  thread_local std::vector<T> kept_ap;
  const T* const ap = prepared(prep, Prep::strided_phases, width, 0, ap_at.back(), kept_ap, [&](T* out) {
    std::vector<T> a;
    for (int64_t p = 0; p < phases; ++p) {
      const GradAxis &ra = ph.rows[p / g.sw], &ca = ph.cols[p % g.sw];
      const int64_t K = Cog * int64_t(ra.tap.size() * ca.tap.size());
      if (K == 0) continue;
      a.resize(static_cast<size_t>(Cg * K));
      for (int64_t gi = 0; gi < G; ++gi) {
        for (int64_t c = 0; c < Cg; ++c) {
          T* row = a.data() + c * K;
          for (int64_t o = 0; o < Cog; ++o)
            for (int64_t i : ra.tap)
              for (int64_t j : ca.tap) *row++ = w[((gi * Cog + o) * Cg + c) * taps + i * g.kw + j];
        }
        pack_rows(a.data(), K, Cg, K, width, out + ap_at[gi * phases + p]);
      }
    }
  });
  // Items: (image, group, phase); each fills its image's gy planes for the group (only their interior: the
  // worker's buffer is zeroed once per call, so the padding stays zero).
  const int64_t items = g.N * G * phases;
  const int workers = workers_for(2.0 * g.N * g.C * HW * Cog * taps / phases, items);
  std::vector<char> zeroed(workers, 0);
  parallel_for(items, workers, [&](int64_t item, int wk) {
    const int64_t n = item / (G * phases), gi = item / phases % G, p = item % phases;
    T* const gxg = gx + (n * g.C + gi * Cg) * HW;
    const int64_t npos = static_cast<int64_t>(qoff[p].size()), K = static_cast<int64_t>(koff[p].size());
    if (K == 0) {
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t q : coff[p]) gxg[c * HW + q] = T(0);
      return;
    }
    T* const buf = thread_buffer<T>(0, image, !zeroed[wk]);
    zeroed[wk] = 1;
    const T* gyg = gy + (n * g.Cout + gi * Cog) * P;
    for (int64_t o = 0; o < Cog; ++o)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        std::copy(gyg + o * P + oh * g.OW, gyg + o * P + (oh + 1) * g.OW,
                  buf + o * plane + (ph.top + oh) * ph.ld + ph.left);
    k.gemm_packed_channels(width, Cg, npos, K, ap + ap_at[gi * phases + p], buf, koff[p].data(), qoff[p].data(),
                           coff[p].data(), gxg, HW);
  });
  release_if_large(kept_ap);
}

template <class T>
void direct_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, const ConvGeom& g) {
  const LevelKernels<T>& k = kernels_for<T>();
  const int64_t V = k.lanes;
  const int64_t G = g.groups, Cog = g.Cout / G, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  if (gw) std::fill(gw, gw + g.Cout * taps, T(0));
  if (g.N == 0 || (!gx && !gw)) return;
  const Phases<T> ph(g, V);
  const DirectPlane plane = ph.plane(g);
  // gy copies: a zero margin before each row for the input gradient's
  // gathers, and zeros after it up to the longest block any kernel reads.
  const int64_t margin = ((g.kw - 1) * g.dw) / g.sw;
  const int64_t qmax = (g.pl + g.W + g.sw - 1) / g.sw;
  const int64_t ldg = margin + std::max(round_up(g.OW, 2 * V), qmax + kDirectChains * V);
  const int64_t gy_plane = checked_mul(g.OH, ldg, "direct workspace");
  checked_mul(gy_plane, Cog, "direct workspace");
  const int workers = workers_for(2 * direct_flops(g), g.N * G);
  const Gathers<T> gathers = gx ? Gathers<T>(g, ldg, margin, k) : Gathers<T>();
  std::vector<Scratch<T>> scratch(workers);
  std::vector<std::vector<T>> gw_part(gw ? workers : 0);
  parallel_for(g.N * G, workers, [&](int64_t item, int wk) {
    Scratch<T>& s = scratch[wk];
    const int64_t n = item / G, gi = item % G;
    const T* gyg = gy + (n * g.Cout + gi * Cog) * P;
    if (s.gyb.empty()) s.gyb.assign(Cog * gy_plane, T(0));  // margins stay zero
    for (int64_t oc = 0; oc < Cog; ++oc)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        std::copy(gyg + oc * P + oh * g.OW, gyg + oc * P + (oh + 1) * g.OW,
                  s.gyb.data() + oc * gy_plane + oh * ldg + margin);
    if (gw) {
      auto& part = gw_part[wk];
      if (part.empty()) part.assign(g.Cout * taps, T(0));
      ph.fill(x + (n * g.C + gi) * HW, g, s.buf);
      for (int64_t oc = gi * Cog; oc < (gi + 1) * Cog; ++oc) {
        const T* gyb = s.gyb.data() + (oc - gi * Cog) * gy_plane + margin;
        k.direct_weight_channel(gyb, ldg, s.buf.data(), plane, g, part.data() + oc * taps);
      }
    }
    if (gx) input_group(s.gyb.data(), gy_plane, gathers, g, w + gi * Cog * taps, gx + (n * g.C + gi) * HW);
  });
  if (gw) reduce_into(gw, gw_part, g.Cout * taps);
}

#define FASTCONV_INSTANTIATE(T)                                                                                 \
  template void direct_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&, const Epilogue<T>&);       \
  template void implicit_gemm_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&, const Epilogue<T>&, \
                                         PrepRef);                                                              \
  template void implicit_gemm_weight_grad<T>(const T*, const T*, T*, const ConvGeom&);                          \
  template void strided_input_grad<T>(const T*, const T*, T*, const ConvGeom&, PrepRef);                        \
  template void direct_backward<T>(const T*, const T*, const T*, T*, T*, const ConvGeom&);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
