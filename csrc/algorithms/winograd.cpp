// The generic F(2x2, 3x3) Winograd operator: tiles blocked across images,
// transforms from the dispatch table (kernels/winograd_tiles.hpp, compiled per
// level), the 16 point GEMMs of a block on OpenBLAS, blocks over threads.
// Serves the avx2 and neon levels; avx512 has its own implementation.
#include "algorithms/winograd.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "algorithms/gemm.hpp"
#include "core/geometry.hpp"
#include "kernels/table.hpp"
#include "kernels/x86_avx512/sgemm_avx512.hpp"
#include "runtime/cpu_features.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

namespace {

bool generic_level() {
  const CpuLevel l = active_level();
  return l == CpuLevel::avx2 || l == CpuLevel::neon;
}

}  // namespace

bool winograd_enabled() {
  const char* v = std::getenv("FASTCONV_WINOGRAD");
  if (v && std::strcmp(v, "0") == 0) return false;
  return sgemm_avx512_enabled() || generic_level();
}

// Where the generic operator gains, measured at the avx2 level (Xeon, 2 threads,
// time against im2col + OpenBLAS, forward / forward+backward): 64 -> 64
// channels at 56x56 0.88 / 0.95, 128 -> 128 at 28x28 0.81 / 0.77, 256 -> 256 at
// 14x14 0.85 / 0.75, 32 -> 32 at 64x64 0.84 / 0.77; but 512 -> 512 at 7x7
// 1.31 / 1.59: 2x2 tiles cover an 8x8 map there, 31% more products than
// outputs, and the 16 MiB of transformed weights cost more than they save.
// So it takes maps of at least 8x8 outputs, and smaller ones only where
// winograd_suits' rule below says (with the transformed weights fused into the
// point GEMMs and the strides of point_stride, which came later).
constexpr int64_t kGenericMinOutput = 8;

// The point GEMMs run on the level's gemm_packed with the transformed weights
// packed once per call (kernels/packed_gemm.hpp); FASTCONV_WINOGRAD_GEMM=openblas
// puts them on OpenBLAS instead, for comparison.
namespace {
bool packed_point_gemms() {
  const char* v = std::getenv("FASTCONV_WINOGRAD_GEMM");
  return !(v && std::strcmp(v, "openblas") == 0);
}
}  // namespace

bool winograd_forced() {
  const char* v = std::getenv("FASTCONV_WINOGRAD");
  return v && std::strcmp(v, "1") == 0;
}

// Smaller maps gain once the weight transform is shared by enough tiles on wide
// enough layers, with U fused into the point GEMMs (below).  Measured at avx2,
// forward / input gradient time against im2col + OpenBLAS: 512 -> 512 channels
// at 7x7, batch 8 (128 tiles) 1.33 / 1.31, batch 16 1.30, batch 32 1.16, batch 4
// 1.09 / 1.07, batch 2 0.58 / 0.51; 256 -> 256 at 7x7, batch 8 1.46 / 1.14,
// batch 4 0.96 / 0.86; 512 -> 512 at 4x4, batch 32 1.64 / 1.90; 192 -> 192 at
// 7x7, batch 8 1.04 / 0.95; 128 -> 128, batch 8 0.93 / 0.80 (batch 32 1.46 /
// 1.34, left out: its rule would need the batch and the width together).
constexpr int64_t kGenericSmallMapTiles = 128, kGenericSmallMapChannels = 256;
// The weight gradient has no weight transform to share, only its final G^T . G
// per kernel: at 7x7, 512 -> 512 channels batch 8 1.39, batch 4 1.25, batch 2
// 0.78; 256 -> 256 batch 8 1.39, batch 4 1.31; 192 -> 192 batch 8 1.33; 128 ->
// 128 batch 8 1.12, batch 32 1.18; 512 -> 512 at 4x4, batch 32 1.65.
constexpr int64_t kGradSmallMapTiles = 64, kGradSmallMapChannels = 128;
// At AVX-512 too the point GEMMs need tiles to reduce over: a reduction of 16 tiles (7x7 or 8x8, batch 1) writes
// 16 point sums a weight to make one.  Weight gradient against im2col's (its gw rows split across the threads),
// Zen 5, 2 threads: 512 -> 512 channels at 7x7, batch 1 (16 tiles) 0.23x, at 4x4 (4) 0.14x, 256 -> 512 at 8x8
// (16) 0.57x; 256 -> 256 at 14x14, batch 1 (49) 2.5x, 512 -> 512 at 7x7, batch 8 (128) 2.1x.
constexpr int64_t kAvx512GradMinTiles = 32;

double tile_count(int64_t N, int64_t OH, int64_t OW) { return double(N) * double((OH + 1) / 2) * double((OW + 1) / 2); }

// Forced (FASTCONV_WINOGRAD=1), every eligible layer takes it: the tests reach the edge cases so.
bool winograd_suits(int64_t N, int64_t C, int64_t Cout, int64_t OH, int64_t OW) {
  if (winograd_forced() || sgemm_avx512_enabled()) return true;
  if (OH >= kGenericMinOutput && OW >= kGenericMinOutput) return true;
  return tile_count(N, OH, OW) >= kGenericSmallMapTiles && C >= kGenericSmallMapChannels &&
         Cout >= kGenericSmallMapChannels;
}

bool winograd_weight_grad_suits(int64_t N, int64_t C, int64_t Cout, int64_t OH, int64_t OW) {
  if (winograd_forced()) return true;
  if (sgemm_avx512_enabled()) return tile_count(N, OH, OW) >= kAvx512GradMinTiles;
  if (OH >= kGenericMinOutput && OW >= kGenericMinOutput) return true;
  return tile_count(N, OH, OW) >= kGradSmallMapTiles && C >= kGradSmallMapChannels && Cout >= kGradSmallMapChannels;
}

const char* winograd_kernel_name() {
  if (!winograd_enabled()) return "off (im2col + GEMM)";
  if (sgemm_avx512_enabled()) return "F(2x2, 3x3), AVX-512";
  return packed_point_gemms() ? "F(2x2, 3x3), generic transforms + packed point GEMMs"
                              : "F(2x2, 3x3), generic transforms + OpenBLAS point GEMMs";
}

namespace {

// Uninitialised float buffers that keep their capacity between calls of the
// calling thread: U, V and M of a wide layer are tens of MiB, and fresh zeroed
// pages cost more than the transforms (measured: a fifth of a 14x14 layer's time
// in page faults and memset).
struct Workspace {
  std::unique_ptr<float[]> buf[4];
  size_t cap[4] = {0, 0, 0, 0};
  float* get(int slot, int64_t n) {
    if (size_t(n) > cap[slot]) {
      buf[slot].reset();  // free first: the old and new buffers need not coexist
      buf[slot].reset(new float[size_t(n)]);
      cap[slot] = size_t(n);
    }
    return buf[slot].get();
  }
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

// The 16 left operands of the point GEMMs: point p's Cout x C matrix at
// u + p * stride, in gemm_packed's panels when `packed`, row-major otherwise.
struct PointWeights {
  const float* u;
  int64_t stride;
  bool packed;
};

// M (Cout x N, ldc) = U[p] B (C x N, ldb).
void point_gemm(const PointWeights& pw, int p, int64_t Cout, int64_t N, int64_t C, const float* b, int64_t ldb,
                float* c, int64_t ldc) {
  if (pw.packed)
    kernels().f32.gemm_packed(Cout, N, C, pw.u + p * pw.stride, b, ldb, c, ldc);
  else
    gemm<float>(false, false, Cout, N, C, 1.0f, pw.u + p * pw.stride, C, b, ldb, 0.0f, c, ldc);
}

// The distance between two points' matrices of n floats each.  The transforms
// read or write the 16 points as 16 streams at once; distances that are
// multiples of 4 KiB (any 256- or 512-channel layer's) put all 16 in the same
// L1 sets, so each point starts 64 bytes further along its page (avx2, forward /
// input gradient: 512 -> 512 channels at 7x7 1.12 / 1.18x, 64 -> 64 at 56x56
// with the GEMM order of packed_gemm.hpp 1.22 / 1.18x).
int64_t point_stride(int64_t n) { return checked_add(n, 1023 + 16, "winograd workspace") / 1024 * 1024 + 16; }

// Floats of 16 points' matrices of rows x cols each.
int64_t point_floats(int64_t rows, int64_t cols) {
  return checked_mul(16, point_stride(checked_mul(rows, cols, "winograd workspace")), "winograd workspace");
}

// U[p][o][c] = (G g G^T)[p] of kernel g = w[o][c] (or, for the adjoint, w[c][o]
// rotated by 180 degrees): 16 Cout x C matrices, the point GEMMs' left operands.
// A run of kernels is gathered tap-major and transformed in vectors.  For the
// packed GEMM a run is a whole panel in its packed order (channel-major, the
// panel's rows inside), so the transform writes the packed operand itself: an
// unpacked U (16 C Cout floats) written, read back and packed cost as much as
// the transform (measured at avx2, 512 -> 512 channels at 7x7: 28% of the
// layer, 19% now; the layer 1.3x faster).
//
// Panels [p0, p1) of `rows` rows (1: row-major U for OpenBLAS) go to out, panel
// pi of point p at out + p * stride + (pi - p0) * rows * C; taps is a worker's
// scratch.
void transform_panels(const WinogradTiles& k, const float* w, bool adjoint, int64_t C, int64_t Cout, int64_t rows,
                      int64_t p0, int64_t p1, float* out, int64_t stride, std::vector<float>& taps) {
  const int64_t n = rows * C, tap_stride = n + 16;  // whole vectors of every level readable
  taps.resize(static_cast<size_t>(9 * tap_stride));
  float* tp = taps.data();
  for (int64_t pi = p0; pi < p1; ++pi) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = pi * rows + r;
      if (o >= Cout) {  // a last panel's missing rows: zeros, as the packed GEMM expects
        for (int t = 0; t < 9; ++t)
          for (int64_t c = 0; c < C; ++c) tp[t * tap_stride + c * rows + r] = 0.0f;
        continue;
      }
      for (int64_t c = 0; c < C; ++c) {
        const float* g = adjoint ? w + (c * Cout + o) * 9 : w + (o * C + c) * 9;
        for (int t = 0; t < 9; ++t) tp[t * tap_stride + c * rows + r] = g[adjoint ? 8 - t : t];
      }
    }
    k.weight_run(tp, tap_stride, n, out + (pi - p0) * n, stride);
  }
}

int64_t weight_rows() { return packed_point_gemms() ? kernels().f32.packed_rows : 1; }

// U for every point, into the calling thread's workspace, or made once into a prepared layer's store.
PointWeights transform_weights(const WinogradTiles& k, const float* w, bool adjoint, int64_t C, int64_t Cout,
                               PrepRef prep) {
  const int64_t mat = checked_mul(Cout, C, "winograd weights");
  const bool packed = packed_point_gemms();
  const int64_t rows = weight_rows(), panels = (Cout + rows - 1) / rows;
  const int64_t stride = point_stride(checked_mul(panels * rows, C, "winograd weights"));
  const int64_t count = checked_mul(16, stride, "winograd weights");
  auto make = [&](float* U) {
    const int workers = workers_for(150.0 * mat, panels);
    std::vector<std::vector<float>> taps(workers);
    parallel_for(panels, workers, [&](int64_t pi, int wk) {
      transform_panels(k, w, adjoint, C, Cout, rows, pi, pi + 1, U + pi * rows * C, stride, taps[wk]);
    });
  };
  if (prep)
    return PointWeights{prep.store->get<float>(PrepKey{Prep::winograd_points, prep.ns, rows, adjoint}, count, make),
                        stride, packed};
  float* U = workspace().get(packed ? 3 : 0, count);
  make(U);
  return PointWeights{U, stride, packed};
}

// The tiles of all images, flattened: tile t is image t / per_image, tile row
// (t % per_image) / tw, column t % tw.  A block is a range of them; `runs`
// walks a range as pieces inside one tile row.
struct Tiles {
  int64_t th, tw, per_image, total;
  Tiles(const WinogradGeom& g, int64_t N) : th((g.OH + 1) / 2), tw((g.OW + 1) / 2) {
    per_image = checked_mul(th, tw, "winograd tiles");
    total = checked_mul(per_image, N, "winograd tiles");
  }
  template <class F>
  void runs(int64_t t0, int64_t t1, F&& f) const {
    for (int64_t t = t0; t < t1;) {
      const int64_t n = t / per_image, rem = t % per_image, ty = rem / tw, tx = rem % tw;
      const int64_t len = std::min(tw - tx, t1 - t);
      f(n, ty, tx, len, t - t0);
      t += len;
    }
  }
};

// Tiles per block: V and M (16 points x (C + Cout) floats per tile) near 1 MiB,
// so a block's transforms and GEMMs stay in L2; a multiple of 16 and enough
// blocks to give every thread work.
int64_t block_tiles(int64_t total, int64_t C, int64_t Cout, int threads) {
  int64_t nb = std::clamp<int64_t>((1 << 20) / (64 * (C + Cout)) / 16 * 16, 32, 512);
  while (nb > 32 && (total + nb - 1) / nb < 2 * threads) nb -= 16;
  return std::min(nb, total);
}

// The kernels' contracts: 16 * (len + 32) floats of scratch per run of the
// transforms (kernels/winograd_tiles.hpp); readable floats after a product
// buffer (16, the output transform) and after a transformed input (the packed
// GEMM's column panel: at most 3 vectors of 16).
constexpr int64_t kRunScratch = 16 * 32;
constexpr int64_t kSlack = 64;

// A thread's buffers for one block of the blocked schedule: transformed
// inputs v, products (or transformed gradients) m, a run's scratch.  Kept per
// thread between calls: zero-filled vectors per call were 5% of a layer.
struct BlockScratch {
  float *v, *m, *run;
};

BlockScratch block_scratch(int64_t nv, int64_t nm, int64_t nrun) {
  thread_local Workspace ws;
  return BlockScratch{ws.get(0, nv), ws.get(1, nm), ws.get(2, nrun)};
}

// Two schedules, whichever moves fewer bytes.  Blocked: each block of tiles is
// transformed, multiplied and transformed back while it sits in L2, but every
// block re-reads (and OpenBLAS re-packs) all of U, 64 C Cout bytes.  Layered:
// a chunk of images is transformed at once, each point GEMM then runs over all
// its tiles (U packed once per chunk), the products are transformed back; V and
// M make one more trip through memory, 64 (C + Cout) bytes per tile.  Wide
// layers on small maps (resnet 3x3 at 14x14 and 7x7) take the layered one.
constexpr double kLayeredBytes = 32 << 20;  // V and M of one chunk of images

struct Schedule {
  bool layered;
  int64_t nb, blocks;  // blocked: tiles per block, blocks
  int64_t chunk;       // layered: images per chunk
};

Schedule schedule_for(const Tiles& tiles, int64_t N, int64_t C, int64_t Cout, int threads) {
  Schedule s{};
  s.nb = block_tiles(tiles.total, C, Cout, threads);
  s.blocks = (tiles.total + s.nb - 1) / s.nb;
  const double blocked = double(s.blocks) * 64.0 * C * Cout;
  const double layered = double(tiles.total) * 64.0 * (C + Cout) + 64.0 * C * Cout;
  s.layered = layered < blocked;
  const double per_image = double(tiles.per_image) * 64.0 * (C + Cout);
  s.chunk = std::clamp<int64_t>(int64_t(kLayeredBytes / per_image), 1, N);
  return s;
}

// Items of the layered point GEMMs: (point, column range) pairs, columns cut so
// that every thread has work even when there are more threads than points.
template <class F>
void for_point_columns(int64_t T, int threads, double flops, F&& f) {
  const int64_t pieces = std::clamp<int64_t>((threads + 15) / 16, 1, std::max<int64_t>(1, T / 64));
  const int64_t step = (T + pieces - 1) / pieces;
  parallel_for(16 * pieces, workers_for(flops, 16 * pieces), [&](int64_t item, int) {
    const int64_t p = item / pieces, j0 = (item % pieces) * step;
    if (j0 < T) f(int(p), j0, std::min(step, T - j0));
  });
}

// Wide layers on small maps (512 -> 512 channels at 7x7: 16 MiB of transformed
// weights, four times the transformed inputs of 8 images) make U in row blocks
// instead, each block multiplied by all 16 points' inputs while it is in L2, so
// U never goes out to memory and back (avx2, batch 8: 1.09x forward with the
// strides above).  Every block reads all of V, so only while V is small: at 16
// images (8 MiB) the whole U made once was as fast, at 32 1.6x faster.
constexpr double kFusedMinWeightBytes = 2 << 20, kFusedMaxInputBytes = 4 << 20, kFusedBlockBytes = 512 << 10;
bool fuse_weights(int64_t C, int64_t Cout, int64_t T) {
  return 64.0 * double(C) * double(Cout) >= kFusedMinWeightBytes && 64.0 * double(C) * double(T) <= kFusedMaxInputBytes;
}

// M[p] (Cout x T, rows T apart, p * mstride) = U[p] V[p] (V[p] C x T at p * vstride), U made here a row
// block at a time by the worker that multiplies it; or, with `whole` (a prepared layer's U, made once), read from
// there a row block at a time, in the same order.
void fused_point_gemms(const WinogradTiles& k, const float* w, bool adjoint, int64_t C, int64_t Cout, int64_t T,
                       const float* V, int64_t vstride, float* M, int64_t mstride, const PointWeights* whole) {
  const bool packed = packed_point_gemms();
  const int64_t rows = weight_rows(), panels = (Cout + rows - 1) / rows;
  const double per_panel = 64.0 * rows * C;  // bytes of one panel's 16 points
  int64_t blocks = std::clamp<int64_t>(int64_t(std::ceil(panels * per_panel / kFusedBlockBytes)), 1, panels);
  const int workers = workers_for(2.0 * 16 * C * Cout * T, blocks);
  blocks = std::min<int64_t>(panels, (blocks + workers - 1) / workers * workers);
  parallel_for(blocks, workers, [&](int64_t b, int) {
    thread_local Workspace ws;
    thread_local std::vector<float> taps;
    const int64_t p0 = panels * b / blocks, p1 = panels * (b + 1) / blocks;
    const int64_t row0 = p0 * rows, nrows = std::min(p1 * rows, Cout) - row0;
    PointWeights pw;
    if (whole) {
      pw = PointWeights{whole->u + row0 * C, whole->stride, whole->packed};  // panel p0 of every point
    } else {
      const int64_t stride = point_stride((p1 - p0) * rows * C);
      float* ub = ws.get(0, checked_mul(16, stride, "winograd weights"));
      transform_panels(k, w, adjoint, C, Cout, rows, p0, p1, ub, stride, taps);
      pw = PointWeights{ub, stride, packed};
    }
    for (int p = 0; p < 16; ++p) point_gemm(pw, p, nrows, T, C, V + p * vstride, T, M + p * mstride + row0 * T, T);
  });
}

}  // namespace

void winograd_f2x3(const float* x, const float* w, bool adjoint, const float* bias, float* y, const WinogradGeom& g,
                   const Epilogue<float>& ep, PrepRef prep) {
  if (sgemm_avx512_enabled()) return winograd_f2x3_avx512(x, w, adjoint, bias, y, g, ep, prep);
  const WinogradTiles& k = kernels().winograd;
  const int64_t C = g.C, Cout = g.Cout, HWi = g.H * g.W, HWo = g.OH * g.OW;
  const Tiles tiles(g, g.N);
  if (tiles.total == 0) return;
  const int threads = get_num_threads();
  const Schedule sch = schedule_for(tiles, g.N, C, Cout, threads);
  // A prepared layer keeps the whole U; the fused order then reads it a row block at a time.
  const bool fused = sch.layered && fuse_weights(C, Cout, sch.chunk * tiles.per_image);
  const PointWeights U = fused && !prep ? PointWeights{} : transform_weights(k, w, adjoint, C, Cout, prep);
  if (sch.layered) {
    const int64_t T_max = sch.chunk * tiles.per_image;
    check_blas_dims(Cout, T_max, C, "winograd point GEMM");
    float* V = workspace().get(1, point_floats(C, T_max) + kSlack);
    float* M = workspace().get(2, point_floats(Cout, T_max) + kSlack);
    std::vector<std::vector<float>> runs(threads);
    for (int64_t n0 = 0; n0 < g.N; n0 += sch.chunk) {
      const int64_t imgs = std::min(sch.chunk, g.N - n0), T = imgs * tiles.per_image;
      const int64_t vstride = point_stride(C * T), mstride = point_stride(Cout * T);
      // V[p][c][t]: tile t = (image - n0) * per_image + ty * tw + tx
      parallel_for(imgs * C, workers_for(40.0 * C * T, imgs * C), [&](int64_t item, int wk) {
        const int64_t n = item / C, c = item % C;
        runs[wk].resize(static_cast<size_t>(kRunScratch + 16 * tiles.tw));
        for (int64_t ty = 0; ty < tiles.th; ++ty)
          k.input_run(x + ((n0 + n) * C + c) * HWi, 1, HWi, g.H, g.W, g.pad_t, g.pad_l, ty, 0, tiles.tw,
                      V + c * T + n * tiles.per_image + ty * tiles.tw, T, vstride, runs[wk].data());
      });
      if (fused)
        fused_point_gemms(k, w, adjoint, C, Cout, T, V, vstride, M, mstride, prep ? &U : nullptr);
      else
        for_point_columns(T, threads, 2.0 * 16 * C * Cout * T, [&](int p, int64_t j0, int64_t cols) {
          point_gemm(U, p, Cout, cols, C, V + p * vstride + j0, T, M + p * mstride + j0, T);
        });
      parallel_for(imgs * Cout, workers_for(40.0 * Cout * T, imgs * Cout), [&](int64_t item, int wk) {
        const int64_t n = item / Cout, o = item % Cout;
        runs[wk].resize(static_cast<size_t>(kRunScratch + 16 * tiles.tw));
        for (int64_t ty = 0; ty < tiles.th; ++ty)
          k.output_run(M + o * T + n * tiles.per_image + ty * tiles.tw, mstride, ty, 0, tiles.tw, bias ? bias[o] : 0.0f,
                       y + ((n0 + n) * Cout + o) * HWo, g.OH, g.OW, runs[wk].data());
        if (ep.active()) ep.apply(y, ((n0 + n) * Cout + o) * HWo, HWo);
      });
    }
    return;
  }
  const int64_t nb = sch.nb, blocks = sch.blocks;
  check_blas_dims(Cout, nb, C, "winograd point GEMM");
  const int workers = workers_for(2.0 * 16 * C * Cout * tiles.total, blocks);
  parallel_for(blocks, workers, [&](int64_t blk, int) {
    const BlockScratch s =
        block_scratch(point_floats(C, nb) + kSlack, point_floats(Cout, nb) + kSlack, kRunScratch + 16 * tiles.tw);
    const int64_t t0 = blk * nb, cnt = std::min(nb, tiles.total - t0);
    // V[p][c][j], j < cnt: the block's transformed inputs.
    const int64_t vstride = point_stride(C * cnt), mstride = point_stride(Cout * cnt);
    tiles.runs(t0, t0 + cnt, [&](int64_t n, int64_t ty, int64_t tx, int64_t len, int64_t col) {
      k.input_run(x + n * C * HWi, C, HWi, g.H, g.W, g.pad_t, g.pad_l, ty, tx, len, s.v + col, cnt, vstride, s.run);
    });
    for (int p = 0; p < 16; ++p) point_gemm(U, p, Cout, cnt, C, s.v + p * vstride, cnt, s.m + p * mstride, cnt);
    tiles.runs(t0, t0 + cnt, [&](int64_t n, int64_t ty, int64_t tx, int64_t len, int64_t col) {
      for (int64_t o = 0; o < Cout; ++o)
        k.output_run(s.m + o * cnt + col, mstride, ty, tx, len, bias ? bias[o] : 0.0f, y + (n * Cout + o) * HWo, g.OH,
                     g.OW, s.run);
      if (ep.active()) finish_tile_rows(ep, y, n, Cout, g.OH, g.OW, ty, tx, len);
    });
  });
}

// Per-worker sums of the point GEMMs (16 Cout x C matrices each), kept by the
// calling thread between calls: 16 MiB at 512 channels, whose fresh pages and
// zero fill cost a tenth of a 256-channel 14x14 weight gradient.
std::vector<std::vector<float>>& kept_point_sums(int workers, int64_t n) {
  thread_local std::vector<std::vector<float>> sums;
  if (sums.size() < size_t(workers)) sums.resize(size_t(workers));
  for (int w = 0; w < workers; ++w) sums[w].resize(static_cast<size_t>(n));
  return sums;
}

void winograd_f2x3_grad_weight(const float* x, const float* gy, float* gw, const WinogradGeom& g) {
  if (sgemm_avx512_enabled()) return winograd_f2x3_grad_weight_avx512(x, gy, gw, g);
  const WinogradTiles& k = kernels().winograd;
  const int64_t C = g.C, Cout = g.Cout, HWi = g.H * g.W, HWo = g.OH * g.OW;
  const int64_t mat = checked_mul(Cout, C, "winograd weights"), sums_n = checked_mul(16, mat, "winograd weights");
  const Tiles tiles(g, g.N);
  if (tiles.total == 0) {
    std::fill(gw, gw + mat * 9, 0.0f);
    return;
  }
  const int threads = get_num_threads();
  const Schedule sch = schedule_for(tiles, g.N, C, Cout, threads);
  // Each worker's first GEMM overwrites its sums (beta 0), so they need no zero fill.
  const int parts = sch.layered ? 1 : workers_for(2.0 * 16 * C * Cout * tiles.total, sch.blocks);
  std::vector<std::vector<float>>& part = kept_point_sums(parts, sums_n);
  float* sum = part[0].data();
  if (sch.layered) {
    const int64_t T_max = sch.chunk * tiles.per_image;
    check_blas_dims(Cout, C, T_max, "winograd point GEMM");
    float* V = workspace().get(1, point_floats(C, T_max));
    float* Z = workspace().get(2, point_floats(Cout, T_max));
    std::vector<std::vector<float>> runs(threads);
    for (int64_t n0 = 0; n0 < g.N; n0 += sch.chunk) {
      const int64_t imgs = std::min(sch.chunk, g.N - n0), T = imgs * tiles.per_image;
      const int64_t vstride = point_stride(C * T), zstride = point_stride(Cout * T);
      parallel_for(imgs * (C + Cout), workers_for(40.0 * (C + Cout) * T, imgs * (C + Cout)), [&](int64_t item, int wk) {
        const int64_t n = item / (C + Cout), c = item % (C + Cout);
        runs[wk].resize(static_cast<size_t>(kRunScratch + 16 * tiles.tw));
        for (int64_t ty = 0; ty < tiles.th; ++ty) {
          const int64_t col = n * tiles.per_image + ty * tiles.tw;
          if (c < C)
            k.input_run(x + ((n0 + n) * C + c) * HWi, 1, HWi, g.H, g.W, g.pad_t, g.pad_l, ty, 0, tiles.tw,
                        V + c * T + col, T, vstride, runs[wk].data());
          else
            k.grad_run(gy + ((n0 + n) * Cout + (c - C)) * HWo, g.OH, g.OW, ty, 0, tiles.tw, Z + (c - C) * T + col,
                       zstride, runs[wk].data());
        }
      });
      // One item per point: its sum over the chunk's tiles is one GEMM with a long reduction.
      const float beta = n0 == 0 ? 0.0f : 1.0f;
      parallel_for(16, workers_for(2.0 * 16 * C * Cout * T, 16), [&](int64_t p, int) {
        gemm<float>(false, true, Cout, C, T, 1.0f, Z + p * zstride, T, V + p * vstride, T, beta, sum + p * mat, C);
      });
    }
  } else {
    const int64_t nb = sch.nb, blocks = sch.blocks;
    check_blas_dims(Cout, C, nb, "winograd point GEMM");
    const int workers = parts;  // worker wk sums its blocks into part[wk]
    parallel_for(blocks, workers, [&](int64_t blk, int wk) {
      const BlockScratch s =
          block_scratch(point_floats(C, nb) + kSlack, point_floats(Cout, nb) + kSlack, kRunScratch + 16 * tiles.tw);
      const int64_t t0 = blk * nb, cnt = std::min(nb, tiles.total - t0);
      const int64_t vstride = point_stride(C * cnt), zstride = point_stride(Cout * cnt);
      tiles.runs(t0, t0 + cnt, [&](int64_t n, int64_t ty, int64_t tx, int64_t len, int64_t col) {
        k.input_run(x + n * C * HWi, C, HWi, g.H, g.W, g.pad_t, g.pad_l, ty, tx, len, s.v + col, cnt, vstride, s.run);
        for (int64_t o = 0; o < Cout; ++o)
          k.grad_run(gy + (n * Cout + o) * HWo, g.OH, g.OW, ty, tx, len, s.m + o * cnt + col, zstride, s.run);
      });
      const float beta = blk == blocks * wk / workers ? 0.0f : 1.0f;  // the worker's first block (parallel_for)
      for (int p = 0; p < 16; ++p)
        gemm<float>(false, true, Cout, C, cnt, 1.0f, s.m + p * zstride, cnt, s.v + p * vstride, cnt, beta,
                    part[wk].data() + p * mat, C);
    });
  }
  if (parts > 1)
    parallel_for(16 * Cout, workers_for(double(parts) * sums_n, 16 * Cout), [&](int64_t row, int) {
      float* dst = sum + row * C;
      for (int w = 1; w < parts; ++w) {
        const float* src = part[w].data() + row * C;
        for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
      }
    });
  // gw[o][c] = G^T GW[o][c] G.
  parallel_for(Cout, workers_for(60.0 * mat, Cout),
               [&](int64_t o, int) { k.weight_grad_run(sum + o * C, mat, C, gw + o * C * 9); });
  if (double(parts) * double(sums_n) * sizeof(float) > double(kKeptBufferBytes))
    for (int w = 0; w < parts; ++w) std::vector<float>().swap(part[w]);
}

}  // namespace fastconv
