// The implicit GEMM: a convolution's forward and weight gradient as GEMMs whose B rows are read in place from
// padded input planes (no column matrix), on the packed GEMM tiles of the dispatch table.  Where it serves a layer
// is use_implicit_gemm / use_implicit_weight_grad below, with the measurements behind them; which algorithm a
// layer takes among all of them is decided in ops/conv_paths.cpp.
#include "algorithms/implicit_gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "algorithms/gemm.hpp"
#include "algorithms/implicit_rules.hpp"
#include "algorithms/padded_planes.hpp"
#include "core/geometry.hpp"
#include "kernels/table.hpp"
#include "runtime/cpu_features.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

using namespace detail;

constexpr int64_t kShortKPlanMinWidth = 64;

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
  // 512 channels at 7x7 batch 1 1.33-1.42x, batch 8 1.14x; at 4x4 1.70-1.88x / 1.10-1.22x).  Strided layers at
  // avx2 stay on im2col, whose OpenBLAS GEMM the avx2 tiles do not match (3x3/2 256 -> 512 at 14, batch 8:
  // 0.79-0.91x); at avx512 the im2col GEMM is on the same tiles (plan_packs_gemm), and the channel tiles beat
  // writing the columns: against it, Zen 4, float32, 3x3/2 128 -> 128 channels at 56, batch 1 1.25x; 256 -> 512 at
  // 14 1.06x (batch 8 1.10x); 256 -> 256 at 28 1.07x (batch 8 1.17x).
  const bool stride1 = g.sh == 1 && g.sw == 1, avx512 = active_level() == CpuLevel::avx512;
  const bool k_fits =
      K <= kImplicitMaxK || (C <= kImplicitWideKernelChannels && K <= kImplicitMaxWideK) ||
      (((prepared && (stride1 || avx512)) || g.kh * g.kw >= kChanWideTaps) && channel_vectors_suit(g, k, elem_bytes));
  // Position vectors must keep most of their columns and row panels most of their rows; channel vectors have rules
  // of their own (channel_vectors_suit), and a prepared layer on them needs nothing more (3x3 512 -> 512 channels at
  // 2x2, batch 1: 13 GF/s on im2col, where 4 positions fill a quarter of a position vector).
  const bool layout_ok =
      (prepared && channel_vectors_suit(g, k, elem_bytes)) ||
      (implicit_tiling(g, k.lanes).kept > 0.6 && double(Cout) / double(implicit_rows(Cout, k)) > 0.6);
  // A plan's short reductions over wide maps (image stems) too: im2col writes and rereads K values an output
  // position, more than the output itself, where the tiles read the padded planes in place.  Plan against plan
  // (im2col + gemm_small_k), avx2, float32 / float64: 3x3/2 3 -> 32 channels at 224, batch 1 1.12-1.19x / 1.57x,
  // batch 8 1.24-1.37x / 2.08x; 3 -> 16 1.20x; 3x3 3 -> 64 at 224 1.12x / 2.45x; 3 -> 32 at 128, batch 1-8
  // 1.16-1.19x / 1.93x; but 3 -> 64 at 32x32, batch 1 0.96x, 3x3/2 3 -> 64 onto 28-wide rows 0.89x.
  const bool wide_stem = prepared && g.OW >= kShortKPlanMinWidth && Cout >= 8;
  return g.kh * g.kw > 1 && (!short_k || (Cout <= 16 && g.OW <= 64) || wide_stem) && k_fits && layout_ok;
}

// The weight gradient as gemm_tn_rows sums only real output positions, so map
// size, strides and few input channels cost it nothing; what it needs is its
// sums (C*taps x Cout) in L2 while images stream past.  Measured against
// im2col (batch 8, weight gradient only): 3x3/2 64 -> 128 channels at 56 1.7x
// faster at AVX-512, 1.1x at avx2; 128 -> 256 at 28 1.4x / 0.95x (1.2 M sums);
// 256 -> 512 at 14 0.89x / 0.74x; the 3 -> 64 channel 7x7/2 stem at 224 2.3x /
// 1.2x; 32 -> 64 channel 5x5/2 at 56 2.8x / 1.6x.
constexpr double kImplicitMaxSums = 1 << 18;

bool plan_gemm_channels(int64_t Cog, int64_t cols, int64_t K, int64_t elem_bytes) {
  return elem_bytes == 4 ? gemm_channel_vectors(Cog, cols, K, kernels_for<float>())
                         : gemm_channel_vectors(Cog, cols, K, kernels_for<double>());
}

bool use_implicit_weight_grad(const ConvGeom& g) {
  const ImplicitMode mode = implicit_mode();
  // Per group, as the forward: C and Cout are a group's.
  const int64_t C = g.C / g.groups, Cout = g.Cout / g.groups;
  if (mode == ImplicitMode::off || C < 2 || g.sw > kMaxDirectColumnStride || g.kh * g.kw == 1) return false;
  return mode == ImplicitMode::forced || double(C) * g.kh * g.kw * Cout <= kImplicitMaxSums;
}

namespace {

// How the implicit GEMM's forward cuts a call into items for the threads: blocks of images, each image cut into
// bands of output rows, and blocks of output-channel panels, one item per thread where the layer allows (two a
// thread, as before, copied every channel block's input planes or read every band's weights twice as often: at
// batch 1, 2 threads, AVX-512, 3x3 layers 1.03-1.33x, geometric mean 1.09; AVX2 1.05; batch 8 1.03).
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
  const int64_t want = get_num_threads();
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

template <class T>
const T* packed_weight_panels(const T* w, const ConvGeom& g, bool channels, PrepRef prep, std::vector<T>& scratch,
                              int64_t& mr) {
  const LevelKernels<T>& k = kernels_for<T>();
  const int64_t G = g.groups, Cog = g.Cout / G, K = checked_mul(g.C / G, g.kh * g.kw, "packed weights");
  mr = channels ? chan_panel_over(Cog, g.OH * g.OW, k) : implicit_panel(Cog, k);
  const int64_t group_ap = checked_mul(round_up(Cog, mr), K, "packed weights"), rows = mr;
  return prepared(prep, Prep::implicit_panels, mr, channels, checked_mul(G, group_ap, "packed weights"), scratch,
                  [&](T* out) {
                    for (int64_t gi = 0; gi < G; ++gi)
                      pack_rows(w + gi * Cog * K, K, Cog, K, rows, out + gi * group_ap);
                  });
}

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
  int64_t mr;
  const T* const ap = packed_weight_panels(w, g, chans, prep, kept_ap, mr);
  const int64_t group_ap = round_up(Cog, mr) * K;
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

#define FASTCONV_INSTANTIATE(T)                                                                                 \
  template void implicit_gemm_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&, const Epilogue<T>&, \
                                         PrepRef);                                                              \
  template void implicit_gemm_weight_grad<T>(const T*, const T*, T*, const ConvGeom&);                          \
  template const T* packed_weight_panels<T>(const T*, const ConvGeom&, bool, PrepRef, std::vector<T>&, int64_t&);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
