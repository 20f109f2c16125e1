// Convolution operators: the paths ops/conv_paths.cpp chooses, run with their tiling and threads, and
// im2col + GEMM for everything else; transposed convolution, unfold and fold.
#include "ops/conv.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "algorithms/direct.hpp"
#include "algorithms/gemm.hpp"
#include "algorithms/im2col.hpp"
#include "algorithms/implicit_gemm.hpp"
#include "algorithms/padded_planes.hpp"
#include "algorithms/strided_input_grad.hpp"
#include "algorithms/winograd.hpp"
#include "core/finite.hpp"
#include "core/geometry.hpp"
#include "kernels/table.hpp"
#include "kernels/x86_avx512/sgemm_avx512.hpp"
#include "ops/conv_paths.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

namespace {

PlaneGeom plane_of(const ConvGeom& g, int64_t channels) {
  return PlaneGeom{channels, g.H, g.W, g.kh, g.kw, g.pt, g.pl, g.sh, g.sw, g.dh, g.dw, g.OH, g.OW};
}

// A 1x1, stride-1, unpadded convolution reads the input itself as its column matrix.
bool is_pointwise(const ConvGeom& g) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.OH == g.H && g.OW == g.W;
}

// How a group's N*P columns are cut into GEMM tiles.  The GEMM packs its
// operands itself, so tiles are sized for GEMM efficiency: AVX-512 sgemm
// kernels need N >= ~256 columns to reach their rate, and the K x tile column
// buffer is kept near 2 MiB.  Images with at least that many columns are cut
// into equal tiles inside each image (no copies for 1x1 convs); smaller maps
// are cut across images, so 7x7 layers still get wide GEMMs.  The number of
// tiles is rounded up to a multiple of the thread count so none idles.
constexpr size_t kColBytes = 2 << 20;
constexpr int64_t kMinCols = 256;
constexpr size_t kSmallKColBytes = 256 << 10;

struct Tiling {
  int64_t P, NP, tile, per_image, ntiles;  // per_image == 0: tiles span images

  Tiling(int64_t K, int64_t N, int64_t P_, size_t elem, int threads, int64_t groups, bool pointwise)
      : P(P_), NP(N * P_) {
    int64_t want = static_cast<int64_t>(kColBytes / (static_cast<size_t>(K) * elem));
    want = std::max<int64_t>(kMinCols, want);
    // A 1x1 layer's tile inside one image is a GEMM of the input and output
    // themselves, while a tile across images copies both: whole images as soon
    // as they are wide enough (64 -> 30 channels at 32x32, batch 64: the input
    // gradient 2-3x faster at avx2 than in 8-image tiles).
    if (pointwise && P >= kMinCols) want = std::min(want, P);
    // Short reductions run on gemm_small_k, which gains nothing from wide tiles:
    // stay inside images and write the output in place instead of copying it,
    // in tiles whose columns stay in L2 between im2col and the GEMM.
    if (K <= kSmallK) want = std::min({want, P, std::max<int64_t>(kMinCols, kSmallKColBytes / (K * elem))});
    const int64_t t = std::max(threads, 1);
    if (P >= want) {
      per_image = (P + want - 1) / want;
      // A static split of few tiles idles threads (3 tiles on 2 threads: a third of the time).
      while ((groups * N * per_image < t || (groups * N * per_image % t != 0 && groups * N * per_image < 8 * t)) &&
             per_image < P)
        ++per_image;
      tile = (P + per_image - 1) / per_image;
      per_image = (P + tile - 1) / tile;  // rounding the tile up can leave fewer, never empty, tiles
      ntiles = N * per_image;
    } else {
      per_image = 0;
      ntiles = (NP + want - 1) / want;
      if ((groups * ntiles) % t != 0) ntiles = ((groups * ntiles + t - 1) / t * t + groups - 1) / groups;
      ntiles = std::min(ntiles, NP);
      tile = (NP + ntiles - 1) / ntiles;
      ntiles = (NP + tile - 1) / tile;
    }
  }

  // First global column and column count (always >= 1) of tile t.
  void range(int64_t t, int64_t& j0, int64_t& count) const {
    if (per_image) {
      const int64_t n = t / per_image, k = t % per_image;
      j0 = n * P + k * tile;
      count = std::min(tile, P - k * tile);
    } else {
      j0 = t * tile;
      count = std::min(tile, NP - j0);
    }
    if (count <= 0) throw std::logic_error("fastconv internal error: empty GEMM tile");
  }
};

// Output-channel blocks per (group, column tile) of the im2col forward.  Where a layer's columns make fewer
// tiles than threads (a 7x7 map at batch 1 is 49 columns), cutting the columns to feed the threads gave each
// thread a GEMM of 25 columns that packed all of the weights; cutting the output channels gives each thread
// its share of the weights against every column.  Blocks keep at least kMinChannelBlock rows (the GEMM's
// row panels), and only as many as the threads need.  A layer whose columns are copied (im2col) copies them
// once per block, where the column cut had the GEMM pack the weights once per tile: channel blocks where the
// columns are fewer than half the channels (measured at avx2, batch 1, 2 threads, old time / new: 1x1 layers
// 160 -> 960 channels at 7x7 1.37x, 960 -> 320 1.24x, 64 -> 384 at 14x14 1.36x, 1x1/2 256 -> 512 at 14 1.20x,
// 3x3/2 256 -> 512 at 14 1.14x; but 3x3/2 128 -> 256 at 28, 196 columns for 256 channels, 0.92x).
// `natural` is the tiling made for one thread.
constexpr int64_t kMinChannelBlock = 32;

int64_t channel_blocks(const Tiling& natural, int64_t groups, int64_t Cog, int threads, bool pointwise) {
  const int64_t items = groups * natural.ntiles;
  if (items >= threads || (!pointwise && 2 * natural.NP > Cog)) return 1;
  const int64_t want = (threads + items - 1) / items;
  return std::max<int64_t>(1, std::min(want, Cog / kMinChannelBlock));
}

// Images [n0, n0 + m) of x (C planes of H x W) and their phases: phase (a, b)
// of image n is image ((n - n0) d + a) d + b of xs, C planes of (H/d) x (W/d).
// phase_gather copies x into xs, phase_scatter xs back into x.
template <class Src, class Dst, class Move>
void phase_move(Src* x, int64_t n0, int64_t m, int64_t C, int64_t H, int64_t W, int64_t d, Dst* xs, Move move) {
  const int64_t h = H / d, w = W / d;
  parallel_for(m * C, workers_for(double(m * C * H * W), m * C), [&](int64_t item, int) {
    const int64_t i = item / C, c = item % C;
    Src* plane = x + ((n0 + i) * C + c) * H * W;
    for (int64_t a = 0; a < d; ++a)
      for (int64_t b = 0; b < d; ++b) {
        Dst* sub = xs + (((i * d + a) * d + b) * C + c) * h * w;
        for (int64_t r = 0; r < h; ++r) move(plane + (r * d + a) * W + b, sub + r * w, w, d);
      }
  });
}

void phase_gather(const float* x, int64_t n0, int64_t m, int64_t C, int64_t H, int64_t W, int64_t d, float* xs) {
  phase_move(x, n0, m, C, H, W, d, xs, [](const float* row, float* srow, int64_t w, int64_t step) {
    for (int64_t j = 0; j < w; ++j) srow[j] = row[j * step];
  });
}

void phase_scatter(const float* xs, int64_t n0, int64_t m, int64_t C, int64_t H, int64_t W, int64_t d, float* x) {
  phase_move(x, n0, m, C, H, W, d, xs, [](float* row, const float* srow, int64_t w, int64_t step) {
    for (int64_t j = 0; j < w; ++j) row[j * step] = srow[j];
  });
}

// Images per chunk of the phase path: its two phase copies (input and output
// sides) within 8 MiB, so the workspace stays flat in the batch size.
int64_t phase_chunk(const ConvGeom& g) {
  const int64_t per_image = (g.C * g.H * g.W + g.Cout * g.OH * g.OW) * int64_t(sizeof(float));
  return std::max<int64_t>(1, (int64_t(8) << 20) / per_image);
}

// The forward of a layer dilated_phases() split into pg, chunk by chunk of images.
void dilated_forward(const float* x, const float* w, const float* b, float* y, const ConvGeom& g, const ConvGeom& pg,
                     const Epilogue<float>& ep, PrepRef prep) {
  const int64_t d = g.dh, chunk = std::min(phase_chunk(g), g.N), P = g.OH * g.OW;
  thread_local std::vector<float> xs, ys;  // kept between calls: no page faults per call
  xs.resize(static_cast<size_t>(chunk * g.C * g.H * g.W));
  ys.resize(static_cast<size_t>(chunk * g.Cout * P));
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t m = std::min(chunk, g.N - n0);
    phase_gather(x, n0, m, g.C, g.H, g.W, d, xs.data());
    winograd_f2x3(xs.data(), w, false, b, ys.data(),
                  WinogradGeom{m * d * d, g.C, pg.H, pg.W, g.Cout, pg.pt, pg.pl, pg.OH, pg.OW}, {}, prep);
    phase_scatter(ys.data(), n0, m, g.Cout, g.OH, g.OW, d, y);
    if (ep.active())  // residual offsets are the output's: after the phases are back in place
      parallel_for(m * g.Cout, workers_for(double(m * g.Cout * P), m * g.Cout),
                   [&](int64_t plane, int) { ep.apply(y, (n0 * g.Cout + plane) * P, P); });
  }
  release_if_large(xs);
  release_if_large(ys);
}

// The input and weight gradients (either may be null) of a layer dilated_phases() split into pg.
void dilated_backward(const float* gy, const float* x, const float* w, float* gx, float* gw, const ConvGeom& g,
                      const ConvGeom& pg, PrepRef prep) {
  const int64_t d = g.dh, chunk = std::min(phase_chunk(g), g.N), q = pg.pt, K = g.C * 9;
  thread_local std::vector<float> xs, ys, part;
  ys.resize(static_cast<size_t>(chunk * g.Cout * g.OH * g.OW));
  xs.resize(static_cast<size_t>(chunk * g.C * g.H * g.W));  // the input's phases, or the input gradient's
  if (gw && chunk < g.N) part.resize(static_cast<size_t>(g.Cout * K));
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t m = std::min(chunk, g.N - n0);
    phase_gather(gy, n0, m, g.Cout, g.OH, g.OW, d, ys.data());
    if (gw) {
      phase_gather(x, n0, m, g.C, g.H, g.W, d, xs.data());
      float* dst = n0 == 0 ? gw : part.data();
      winograd_f2x3_grad_weight(xs.data(), ys.data(), dst,
                                WinogradGeom{m * d * d, g.C, pg.H, pg.W, g.Cout, q, q, pg.OH, pg.OW});
      if (n0 > 0)
        for (int64_t i = 0; i < g.Cout * K; ++i) gw[i] += dst[i];
    }
    if (gx) {
      winograd_f2x3(ys.data(), w, true, nullptr, xs.data(),
                    WinogradGeom{m * d * d, g.Cout, pg.OH, pg.OW, g.C, 2 - q, 2 - q, pg.H, pg.W}, {}, prep);
      phase_scatter(xs.data(), n0, m, g.C, g.H, g.W, d, gx);
    }
  }
  release_if_large(xs);
  release_if_large(ys);
  release_if_large(part);
}

double conv_flops(const ConvGeom& g) { return 2.0 * g.N * g.Cout * g.OH * g.OW * (g.C / g.groups) * g.kh * g.kw; }

// Per-channel sums of a[N, C, P] over images and positions (bias gradients),
// split over channels.  Thirty-two running sums per channel let the compiler
// vectorise instead of waiting on one scalar add chain.
template <class T>
void channel_sums(const T* a, int64_t N, int64_t C, int64_t P, T* out) {
  constexpr int64_t L = 32;
  parallel_for(C, workers_for(double(N) * C * P, C), [&](int64_t c, int) {
    T acc[L] = {};
    T total = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = a + (n * C + c) * P;
      int64_t p = 0;
      for (; p + L <= P; p += L)
        for (int64_t k = 0; k < L; ++k) acc[k] += row[p + k];
      for (; p < P; ++p) total += row[p];
    }
    for (int64_t k = 0; k < L; ++k) total += acc[k];
    out[c] = total;
  });
}

}  // namespace

// Per-image runs of the global columns [j0, j0 + count) of an N*P column space:
// fn(image, first position, length, offset within the tile).
template <class Fn>
void for_each_segment(int64_t j0, int64_t count, int64_t P, Fn&& fn) {
  for (int64_t off = 0; off < count;) {
    const int64_t j = j0 + off, n = j / P, p0 = j % P, len = std::min(P - p0, count - off);
    fn(n, p0, len, off);
    off += len;
  }
}

// Copies `rows` rows of `len` values from a matrix with leading dimension
// `src_ld` into one with leading dimension `dst_ld` (tile <-> image segments).
template <class T>
void copy_rows(const T* src, int64_t src_ld, T* dst, int64_t dst_ld, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * dst_ld, src + r * src_ld, sizeof(T) * len);
}

// B of one group's GEMM for the tile of columns [j0, j0 + cnt) (ldb set): the input itself where a pointwise tile
// lies in one image, else the tile's columns gathered into `col` (rows copied for a pointwise layer, im2col
// otherwise; col grown to `capacity` values).  The forward and the weight gradient read the same B.
template <class T, class ImageX>
const T* tile_columns(ImageX&& image_x, const PlaneGeom& pg, bool pointwise, int64_t j0, int64_t cnt, int64_t P,
                      int64_t HW, int64_t capacity, std::vector<T>& col, int64_t& ldb) {
  if (pointwise && j0 % P + cnt <= P) {
    ldb = P;
    return image_x(j0 / P) + j0 % P;
  }
  ldb = cnt;
  if (col.size() < static_cast<size_t>(capacity)) col.resize(static_cast<size_t>(capacity));
  for_each_segment(j0, cnt, P, [&](int64_t n, int64_t p0, int64_t len, int64_t off) {
    if (pointwise)
      copy_rows(image_x(n) + p0, HW, col.data() + off, cnt, pg.C, len);
    else
      im2col_tile(image_x(n), pg, p0, len, cnt, col.data() + off);
  });
  return col.data();
}

// The im2col operators' per-worker buffers, kept by the calling thread between
// calls and indexed by worker id (not by the thread that runs the worker: a busy
// pool runs every worker on the caller).  Fresh vectors cost page faults and zero
// fills on every call: a 512-channel 7x7 layer's column tiles are 3.6 MiB per
// worker, its weight-gradient partial sums 9 MiB.
template <class T>
struct WorkerBuffers {
  std::vector<T> col, out, gcol, gyt, gw, plane;
};

template <class T>
std::vector<WorkerBuffers<T>>& worker_buffers(int workers) {
  thread_local std::vector<WorkerBuffers<T>> bufs;
  if (bufs.size() < static_cast<size_t>(workers)) bufs.resize(static_cast<size_t>(workers));
  return bufs;
}

// After a call: what the buffers hold is kept up to 64 MiB per calling thread
// (many threads on a wide layer would keep hundreds), released beyond.
template <class T>
void trim_worker_buffers(std::vector<WorkerBuffers<T>>& bufs) {
  size_t held = 0;
  for (const WorkerBuffers<T>& b : bufs)
    held += b.col.capacity() + b.out.capacity() + b.gcol.capacity() + b.gyt.capacity() + b.gw.capacity() +
            b.plane.capacity();
  if (held * sizeof(T) > kKeptBufferBytes) bufs.clear();
}

// The forward's tiling on one thread, before threads cut it: what channel blocks and the packed GEMM's vectors go by.
Tiling natural_tiling(const ConvGeom& g, size_t elem) {
  return Tiling(g.C / g.groups * g.kh * g.kw, g.N, g.OH * g.OW, elem, 1, g.groups, is_pointwise(g));
}

int64_t im2col_tile_columns(const ConvGeom& g, int64_t elem_bytes) {
  return natural_tiling(g, static_cast<size_t>(elem_bytes)).tile;
}

template <class T>
void conv2d_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep, PrepRef prep) {
  const int64_t G = g.groups, Cg = g.C / G, Cog = g.Cout / G, P = g.OH * g.OW, HW = g.H * g.W;
  ConvPath path = choose_forward(g, sizeof(T), bool(prep));
  if (path.algo == ConvAlgo::none) {  // an empty batch
    record_path(ConvPass::forward, path.algo);
    return;
  }
  const PlaneGeom pg = plane_of(g, Cg);
  const int64_t K = Cg * g.kh * g.kw;
  if (path.needs) {  // Winograd: only on finite data, else chosen again without it
    const Finite f{all_finite(x, g.N * g.C * HW), weights_finite(prep, w, g.Cout * K)};
    if (!f.holds(path.needs)) path = choose_forward(g, sizeof(T), bool(prep), f);
  }
  record_path(ConvPass::forward, path.algo);
  if constexpr (std::is_same_v<T, float>) {
    ConvGeom phases;
    if (path.algo == ConvAlgo::winograd_phases && dilated_phases(g, phases)) {
      dilated_forward(x, w, b, y, g, phases, ep, prep);
      return;
    }
    if (path.algo == ConvAlgo::winograd) {
      winograd_f2x3(x, w, false, b, y, WinogradGeom{g.N, g.C, g.H, g.W, g.Cout, g.pt, g.pl, g.OH, g.OW}, ep, prep);
      return;
    }
  }
  if (path.algo == ConvAlgo::direct) {
    direct_forward(x, w, b, y, g, ep);
    return;
  }
  if (path.algo == ConvAlgo::implicit_gemm) {
    implicit_gemm_forward(x, w, b, y, g, ep, prep);
    return;
  }
  // Columns of all images of a group form one N*P column space, cut into tiles
  // that may span images: small feature maps still get wide GEMMs.
  const bool pointwise = is_pointwise(g);
  const int threads = get_num_threads();
  // A plan's weights packed once for the level's packed GEMM (the implicit GEMM's panels), B the columns as
  // im2col wrote them or the input itself: no packing of the weights per call (plan_packs_gemm says where).
  const LevelKernels<T>& lk = kernels_for<T>();
  const bool packed = prep && K > kSmallK && plan_packs_gemm(g, sizeof(T));
  // Channel vectors by the columns of a tile on one thread (the tile channel blocks keep whole).
  const Tiling natural = natural_tiling(g, sizeof(T));
  const bool chans = packed && plan_gemm_channels(Cog, natural.tile, K, sizeof(T));
  int64_t mr = 1;
  thread_local std::vector<T> kept_ap;
  const T* const ap = packed ? packed_weight_panels(w, g, chans, prep, kept_ap, mr) : nullptr;
  int64_t blocks = channel_blocks(natural, G, Cog, threads, pointwise);
  // Channel tiles split any count of positions evenly, whole panels only so: the threads take columns instead where
  // that leaves the busiest less to do (960 -> 320 channels at 7x7 on 2 threads: panels of 64 made blocks of 192 and
  // 128 channels).
  if (chans && blocks > 1) {
    const int64_t panels = (Cog + mr - 1) / mr;
    const double by_channels = double((panels + blocks - 1) / blocks * mr) * double(natural.tile);
    const double by_columns = double(panels * mr) * double((natural.tile + blocks - 1) / blocks);
    if (by_columns < by_channels) blocks = 1;
  }
  // Channel blocks of whole panels where the weights are packed.
  const int64_t rows = detail::round_up((Cog + blocks - 1) / blocks, mr),
                mb = (Cog + rows - 1) / rows;  // no empty block
  const Tiling tiling(K, g.N, P, sizeof(T), mb > 1 ? 1 : threads, G, pointwise);
  const int64_t tile = tiling.tile, ntiles = tiling.ntiles;
  check_blas_dims(Cog, tile, K, "conv2d");
  const int workers = workers_for(conv_flops(g), G * ntiles * mb);
  std::vector<WorkerBuffers<T>>& bufs = worker_buffers<T>(workers);
  // The packed GEMM reads every row of B up to its columns rounded up to whole vectors (packed_gemm.hpp): the
  // column buffers keep that many values past their last row, and a pointwise tile read in place must not end
  // within a vector of the input's end.
  const int64_t past = packed ? lk.lanes : 0;
  parallel_for(G * ntiles * mb, workers, [&](int64_t item, int worker) {
    const int64_t gi = item / (ntiles * mb), m0 = item % mb * rows, mrows = std::min(rows, Cog - m0);
    int64_t j0, cnt;
    tiling.range(item / mb % ntiles, j0, cnt);
    const T* wg = w + (gi * Cog + m0) * K;
    auto image_x = [&](int64_t n) { return x + (n * g.C + gi * Cg) * HW; };
    auto image_y = [&](int64_t n) { return y + (n * g.Cout + gi * Cog + m0) * P; };
    const int64_t n0 = j0 / P, p00 = j0 % P;
    const bool single = p00 + cnt <= P;
    int64_t ldb;
    const bool at_end = n0 == g.N - 1 && gi == G - 1 && p00 + detail::round_up(cnt, lk.lanes) > P;
    // Reading such a tile in place, the channels' kernel reads only the values it uses; the positions' kernel
    // reads whole vectors, so it takes the last, partial vector from a copy of those columns alone where that
    // costs less than copying the tile (one more pass over the block's packed weights against a copy of every
    // column: 384 -> 64 channels at 14x14, batch 1, on 2 threads had each copy all of the input).
    const bool whole_vectors = packed && !chans && at_end;
    const int64_t tail = pointwise && whole_vectors && mrows <= cnt ? cnt % lk.lanes : 0;
    const T* B = tile_columns(image_x, pg, pointwise && (!whole_vectors || tail > 0), j0, cnt - tail, P, HW,
                              K * tile + past, bufs[worker].col, ldb);
    T* C;
    int64_t ldc;
    if (single) {  // write straight into the output image
      C = image_y(n0) + p00;
      ldc = P;
    } else {
      auto& out = bufs[worker].out;
      if (out.size() < static_cast<size_t>(mrows * tile)) out.resize(mrows * tile);
      C = out.data();
      ldc = cnt;
    }
    if (packed) {
      thread_local std::vector<int64_t> koff;
      koff.resize(static_cast<size_t>(K));
      for (int64_t r = 0; r < K; ++r) koff[r] = r * ldb;
      const T* const apg = ap + (gi * detail::round_up(Cog, mr) + m0) * K;
      if (chans) {  // positions j of B's rows, j of C's
        thread_local std::vector<int64_t> qoff;
        qoff.resize(static_cast<size_t>(cnt));
        for (int64_t j = 0; j < cnt; ++j) qoff[j] = j;
        lk.gemm_packed_channels(mr, mrows, cnt, K, apg, B, koff.data(), qoff.data(), qoff.data(), C, ldc);
      } else {
        if (cnt > tail) lk.gemm_packed_rows(mr, mrows, cnt - tail, K, apg, B, koff.data(), C, ldc);
        if (tail > 0) {  // K rows of `tail` columns and a vector past them (the forward leaves gcol unused)
          std::vector<T>& tb = bufs[worker].gcol;
          if (tb.size() < static_cast<size_t>(K * tail + lk.lanes)) tb.resize(static_cast<size_t>(K * tail + lk.lanes));
          copy_rows(image_x(n0) + p00 + cnt - tail, HW, tb.data(), tail, K, tail);
          for (int64_t r = 0; r < K; ++r) koff[r] = r * tail;
          lk.gemm_packed_rows(mr, mrows, tail, K, apg, tb.data(), koff.data(), C + cnt - tail, ldc);
        }
      }
    } else if (K <= kSmallK)
      lk.gemm_small_k(mrows, cnt, K, wg, K, 1, B, ldb, C, ldc);
    else
      gemm<T>(false, false, mrows, cnt, K, T(1), wg, K, B, ldb, T(0), C, ldc);
    for_each_segment(j0, cnt, P, [&](int64_t n, int64_t p0, int64_t len, int64_t off) {
      if (!single) copy_rows(C + off, ldc, image_y(n) + p0, P, mrows, len);
      if (b || ep.active())  // the bias and the epilogue in one pass over the tile's rows
        for (int64_t oc = gi * Cog + m0; oc < gi * Cog + m0 + mrows; ++oc)
          ep.apply(y, (n * g.Cout + oc) * P + p0, len, b ? b[oc] : T(0));
    });
  });
  trim_worker_buffers(bufs);
}

// Whether the im2col weight gradient splits gw's rows across threads instead of the columns (conv2d_backward):
// more than one thread, all of a group's columns in one tile (at most kMinCols, a column matrix within kColBytes),
// and at least twice as many output channels a group as columns (1x1 1024 -> 256 channels at 14x14, 196 columns,
// ran 0.8x so: each thread packs all the columns again).
bool split_weight_grad_rows(const ConvGeom& g, int threads) {
  const int64_t cols = g.N * g.OH * g.OW, K = g.C / g.groups * g.kh * g.kw;
  return threads > 1 && cols <= kMinCols && double(K) * double(cols) * 8 <= double(kColBytes) &&
         g.Cout / g.groups >= std::max<int64_t>(32, 2 * cols);
}

template <class T>
void conv2d_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, const ConvGeom& g, PrepRef prep) {
  const int64_t G = g.groups, Cg = g.C / G, Cog = g.Cout / G, P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t K = Cg * g.kh * g.kw;
  // Each gradient's path, chosen assuming finite data; where a path needs an array finite that is not, both are
  // chosen again knowing it (each array checked at most once).
  const bool f32 = std::is_same_v<T, float>;
  ConvPath px = gx ? choose_input_grad(g, sizeof(T), bool(prep)) : ConvPath{};
  ConvPath pw = gw ? choose_weight_grad(g, sizeof(T), bool(prep)) : ConvPath{};
  Finite f;
  unsigned checked = 0;
  for (;;) {
    const unsigned need = (px.needs | pw.needs) & ~checked;
    if (!need) break;
    if (need & kNeedGy) f.gy = all_finite(gy, g.N * g.Cout * P);
    if (need & kNeedW) f.w = weights_finite(prep, w, g.Cout * K);
    if (need & kNeedX) f.x = all_finite(x, g.N * g.C * HW);
    checked |= need;
    if (f.holds(px.needs) && f.holds(pw.needs)) break;
    if (gx) px = choose_input_grad(g, sizeof(T), bool(prep), f);
    if (gw) pw = choose_weight_grad(g, sizeof(T), bool(prep), f);
  }
  if (gx) record_path(ConvPass::input_grad, px.algo);
  if (gw) record_path(ConvPass::weight_grad, pw.algo);
  const ConvAlgo ax = gx ? px.algo : ConvAlgo::none, aw = gw ? pw.algo : ConvAlgo::none;
  if constexpr (f32) {
    ConvGeom phases;
    if ((ax == ConvAlgo::winograd_phases || aw == ConvAlgo::winograd_phases) && dilated_phases(g, phases)) {
      float* const pgx = ax == ConvAlgo::winograd_phases ? gx : nullptr;
      float* const pgw = aw == ConvAlgo::winograd_phases ? gw : nullptr;
      dilated_backward(gy, x, w, pgx, pgw, g, phases, prep);
      if (pgx) gx = nullptr;
      if (pgw) gw = nullptr;
    }
  }
  // A stride-1 input gradient is the forward convolution of gy with the rotated, transposed weight and padding
  // d (k - 1) - p, on the implicit GEMM.  Grouped layers too: group gi's adjoint maps its Cog gradient channels to
  // its Cg input channels.
  if (gx && ax == ConvAlgo::adjoint_implicit_gemm) {
    const ConvGeom ga = adjoint_geom(g);
    const int64_t taps = g.kh * g.kw;
    thread_local std::vector<T> kept_wa;  // kept between calls: no page faults per call
    const T* wa = prepared(prep, Prep::adjoint_weights, 0, 0, g.Cout * K, kept_wa, [&](T* out) {
      for (int64_t gi = 0; gi < G; ++gi)
        for (int64_t o = 0; o < Cog; ++o)
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t t = 0; t < taps; ++t)
              out[((gi * Cg + c) * Cog + o) * taps + (taps - 1 - t)] = w[((gi * Cog + o) * Cg + c) * taps + t];
    });
    implicit_gemm_forward(gy, wa, static_cast<const T*>(nullptr), gx, ga, {}, prep.derived());
    release_if_large(kept_wa);
    gx = nullptr;
  }
  // A strided one as sh x sw stride-1 phases, each summing only the taps that meet it.
  if (gx && ax == ConvAlgo::strided_phases) {
    strided_input_grad(gy, w, gx, g, prep);
    gx = nullptr;
  }
  if (gw && aw == ConvAlgo::implicit_gemm) {
    implicit_gemm_weight_grad(x, gy, gw, g);
    gw = nullptr;
  }
  if constexpr (f32) {
    // The input gradient is a 3x3 convolution of gy with the rotated, transposed weight and padding 2 - p.
    if (gx && ax == ConvAlgo::winograd) {
      winograd_f2x3(gy, w, true, nullptr, gx, WinogradGeom{g.N, g.Cout, g.OH, g.OW, g.C, 2 - g.pt, 2 - g.pl, g.H, g.W},
                    {}, prep);
      gx = nullptr;
    }
    if (gw && aw == ConvAlgo::winograd) {
      winograd_f2x3_grad_weight(x, gy, gw, WinogradGeom{g.N, g.C, g.H, g.W, g.Cout, g.pt, g.pl, g.OH, g.OW});
      gw = nullptr;
    }
  }
  if (gb) channel_sums(gy, g.N, g.Cout, P, gb);
  if ((gx && ax == ConvAlgo::direct) || (gw && aw == ConvAlgo::direct)) {
    // The direct input gradient gathers over zero margins of gy, so a non-finite weight would reach inputs torch
    // keeps finite: im2col for it then (the choice's kNeedW).
    T* const direct_gx = ax == ConvAlgo::direct ? gx : nullptr;
    T* const direct_gw = aw == ConvAlgo::direct ? gw : nullptr;
    direct_backward(gy, x, w, direct_gx, direct_gw, g);
    if (direct_gx) gx = nullptr;
    if (direct_gw) gw = nullptr;
    if (!gx && !gw) return;
  }
  if (gx) std::fill(gx, gx + g.N * g.C * HW, T(0));
  if (gw) std::fill(gw, gw + g.Cout * K, T(0));
  if (g.N == 0 || (!gx && !gw)) return;
  const PlaneGeom pg = plane_of(g, Cg);

  const bool pointwise = is_pointwise(g);
  // Few columns against many weights (a 7x7 map at batch 1: 49 columns, 512 x 4608 weights): cut by columns, every
  // worker's partial sums would be the whole gradient (9 MiB zeroed, filled by a GEMM of 25 columns, added after),
  // so the workers split gw's rows instead, each over all the columns, written once in place.
  if (gw && split_weight_grad_rows(g, get_num_threads())) {
    const int64_t NP = g.N * P;
    std::vector<WorkerBuffers<T>>& one = worker_buffers<T>(1);
    for (int64_t gi = 0; gi < G; ++gi) {
      auto image_x = [&](int64_t n) { return x + (n * g.C + gi * Cg) * HW; };
      int64_t ldb;
      const T* B = tile_columns(image_x, pg, pointwise, 0, NP, P, HW, K * NP, one[0].col, ldb);
      const T* A = gy + gi * Cog * P;
      int64_t lda = P;
      if (g.N > 1) {
        if (one[0].gyt.size() < static_cast<size_t>(Cog * NP)) one[0].gyt.resize(Cog * NP);
        for (int64_t n = 0; n < g.N; ++n) copy_rows(A + n * g.Cout * P, P, one[0].gyt.data() + n * P, NP, Cog, P);
        A = one[0].gyt.data();
        lda = NP;
      }
      // One block a thread: each packs the columns again.
      const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(get_num_threads(), Cog / 16));
      check_blas_dims(Cog, K, NP, "conv2d_backward");
      parallel_for(blocks, workers_for(conv_flops(g) / G, blocks), [&](int64_t bk, int) {
        const int64_t r0 = Cog * bk / blocks, r1 = Cog * (bk + 1) / blocks;
        if (r1 > r0)
          gemm<T>(false, true, r1 - r0, K, NP, T(1), A + r0 * lda, lda, B, ldb, T(0), gw + (gi * Cog + r0) * K, K);
      });
    }
    trim_worker_buffers(one);
    gw = nullptr;
    if (!gx) return;
  }
  // The forward's column space and tiles.  Each worker takes a contiguous run
  // of tiles; only the image where its run starts can be shared with the
  // previous worker (col2im scatters), so that one image's input gradient goes
  // to a private plane, added in after the join.
  const Tiling tiling(K, g.N, P, sizeof(T), get_num_threads(), G, pointwise);
  const int64_t tile = tiling.tile, ntiles = tiling.ntiles, items = G * ntiles;
  check_blas_dims(K, tile, Cog, "conv2d_backward");
  const int workers = workers_for(2 * conv_flops(g), items);
  std::vector<WorkerBuffers<T>>& bufs = worker_buffers<T>(workers);
  std::vector<int64_t> shared_image(workers, -1);  // n * G + gi of the private plane, or -1
  parallel_for(workers, workers, [&](int64_t wk, int) {
    const int64_t begin = items * wk / workers, end = items * (wk + 1) / workers;
    std::vector<T>&col = bufs[wk].col, &gcol = bufs[wk].gcol, &gyt = bufs[wk].gyt;
    if (begin < end && gx) {
      int64_t j0, cnt;
      tiling.range(begin % ntiles, j0, cnt);
      if (j0 % P != 0) {  // this run starts inside an image the previous worker also wrote
        shared_image[wk] = (j0 / P) * G + begin / ntiles;
        bufs[wk].plane.assign(Cg * HW, T(0));
      }
    }
    // Worker 0 sums into gw itself (zeroed above), the others into partial sums added after the join.
    T* gwp_all = nullptr;
    if (gw && wk == 0) {
      gwp_all = gw;
    } else if (gw) {
      bufs[wk].gw.assign(g.Cout * K, T(0));
      gwp_all = bufs[wk].gw.data();
    }
    for (int64_t item = begin; item < end; ++item) {
      const int64_t gi = item / ntiles;
      int64_t j0, cnt;
      tiling.range(item % ntiles, j0, cnt);
      const int64_t n0 = j0 / P, p00 = j0 % P;
      const bool single = p00 + cnt <= P;
      const T* wg = w + gi * Cog * K;
      auto image_x = [&](int64_t n) { return x + (n * g.C + gi * Cg) * HW; };
      auto image_gy = [&](int64_t n) { return gy + (n * g.Cout + gi * Cog) * P; };
      auto image_gx = [&](int64_t n) {
        return n * G + gi == shared_image[wk] ? bufs[wk].plane.data() : gx + (n * g.C + gi * Cg) * HW;
      };
      const T* A;
      int64_t lda;
      if (single) {
        A = image_gy(n0) + p00;
        lda = P;
      } else {
        if (gyt.size() < static_cast<size_t>(Cog * tile)) gyt.resize(Cog * tile);
        for_each_segment(j0, cnt, P, [&](int64_t n, int64_t p0, int64_t len, int64_t off) {
          copy_rows(image_gy(n) + p0, P, gyt.data() + off, cnt, Cog, len);
        });
        A = gyt.data();
        lda = cnt;
      }
      if (gw) {
        int64_t ldb;
        const T* B = tile_columns(image_x, pg, pointwise, j0, cnt, P, HW, K * tile, col, ldb);
        gemm<T>(false, true, Cog, K, cnt, T(1), A, lda, B, ldb, T(1), gwp_all + gi * Cog * K, K);
      }
      if (gx) {
        if (single && pointwise) {
          gemm<T>(true, false, K, cnt, Cog, T(1), wg, K, A, lda, T(1), image_gx(n0) + p00, P);
          continue;
        }
        if (gcol.size() < static_cast<size_t>(K * tile)) gcol.resize(K * tile);
        if (Cog <= kSmallK)  // W^T (K x Cog) times the gradient tile, a short reduction
          kernels_for<T>().gemm_small_k(K, cnt, Cog, wg, 1, K, A, lda, gcol.data(), cnt);
        else
          gemm<T>(true, false, K, cnt, Cog, T(1), wg, K, A, lda, T(0), gcol.data(), cnt);
        for_each_segment(j0, cnt, P, [&](int64_t n, int64_t p0, int64_t len, int64_t off) {
          if (pointwise) {
            T* dst = image_gx(n) + p0;
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t i = 0; i < len; ++i) dst[c * HW + i] += gcol[c * cnt + off + i];
          } else {
            col2im_tile_add(gcol.data() + off, pg, p0, len, cnt, image_gx(n));
          }
        });
      }
    }
  });
  for (int wk = 0; wk < workers; ++wk)
    if (shared_image[wk] >= 0) {
      const int64_t n = shared_image[wk] / G, gi = shared_image[wk] % G;
      T* dst = gx + (n * g.C + gi * Cg) * HW;
      for (int64_t i = 0; i < Cg * HW; ++i) dst[i] += bufs[wk].plane[i];
    }
  if (gw)
    for (int wk = 1; wk < workers; ++wk) {
      const T* part = bufs[wk].gw.data();
      for (int64_t i = 0; i < g.Cout * K; ++i) gw[i] += part[i];
    }
  trim_worker_buffers(bufs);
}

template <class T>
void unfold(const T* x, T* cols, const ConvGeom& g) {
  const PlaneGeom pg = plane_of(g, g.C);
  const int64_t P = g.OH * g.OW, HW = g.H * g.W, rows = g.C * g.kh * g.kw;
  const int workers = workers_for(double(g.N) * rows * P, g.N);
  parallel_for(g.N, workers, [&](int64_t n, int) { im2col_tile(x + n * g.C * HW, pg, 0, P, P, cols + n * rows * P); });
}

template <class T>
void fold(const T* cols, T* x, const ConvGeom& g) {
  const PlaneGeom pg = plane_of(g, g.C);
  const int64_t P = g.OH * g.OW, HW = g.H * g.W, rows = g.C * g.kh * g.kw;
  std::fill(x, x + g.N * g.C * HW, T(0));
  const int workers = workers_for(double(g.N) * rows * P, g.N);
  parallel_for(g.N, workers,
               [&](int64_t n, int) { col2im_tile_add(cols + n * rows * P, pg, 0, P, P, x + n * g.C * HW); });
}

template <class T>
void conv_transpose2d_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g) {
  conv2d_backward<T>(x, nullptr, w, y, nullptr, nullptr, g);
  if (!b) return;
  const int64_t HW = g.H * g.W;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      T* plane = y + (n * g.C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) plane[i] += b[c];
    }
}

template <class T>
void conv_transpose2d_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, const ConvGeom& g) {
  // The transposed op's input gradient is the forward convolution of gy; its
  // weight gradient is the convolution's weight gradient with the roles of
  // image and output gradient swapped.
  if (gx) conv2d_forward<T>(gy, w, nullptr, gx, g);
  if (gw) conv2d_backward<T>(x, gy, w, nullptr, gw, nullptr, g);
  if (gb) channel_sums(gy, g.N, g.C, g.H * g.W, gb);
}

#define FASTCONV_INSTANTIATE(T)                                                                                    \
  template void conv2d_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&, const Epilogue<T>&, PrepRef); \
  template void conv2d_backward<T>(const T*, const T*, const T*, T*, T*, T*, const ConvGeom&, PrepRef);            \
  template void unfold<T>(const T*, T*, const ConvGeom&);                                                          \
  template void fold<T>(const T*, T*, const ConvGeom&);                                                            \
  template void conv_transpose2d_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&);                    \
  template void conv_transpose2d_backward<T>(const T*, const T*, const T*, T*, T*, T*, const ConvGeom&);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
