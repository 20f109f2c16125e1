// The generic F(2x2, 3x3) Winograd operator: tiles blocked across images,
// transforms from the dispatch table (kernels/winograd_tiles.hpp, compiled per
// level), the 16 point GEMMs of a block on OpenBLAS, blocks over threads.
// Serves the avx2 and neon levels; avx512 has its own implementation.
#include "winograd.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu_features.hpp"
#include "gemm.hpp"
#include "geometry.hpp"
#include "kernels/table.hpp"
#include "parallel.hpp"
#include "sgemm_avx512.hpp"

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

// The generic operator re-reads (and OpenBLAS re-packs) the 16 transformed
// weight matrices once per block of tiles, and blocks hold fewer tiles as
// channels grow (V and M must stay in L2).  Measured at the avx2 level (Xeon,
// 2 threads, against im2col + OpenBLAS): 64 -> 64 channels at 56x56 0.85x the
// time forward, 0.76x backward; 128 -> 128 at 28x28 0.84x / 0.81x; 256 -> 256 at
// 14x14 1.04x / 0.98x; 512 -> 512 at 7x7 1.77x / 1.46x.  So it takes layers of
// at most 256 channels in and out together.
constexpr int64_t kGenericMaxChannels = 256;

bool winograd_suits(int64_t C, int64_t Cout) { return sgemm_avx512_enabled() || C + Cout <= kGenericMaxChannels; }

const char* winograd_kernel_name() {
  if (!winograd_enabled()) return "off (im2col + GEMM)";
  return sgemm_avx512_enabled() ? "F(2x2, 3x3), AVX-512" : "F(2x2, 3x3), generic transforms + OpenBLAS point GEMMs";
}

namespace {

// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
constexpr float kG[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};

// U[p][o][c] = (G g G^T)[p] of kernel g = w[o][c] (or, for the adjoint, w[c][o]
// rotated by 180 degrees): 16 Cout x C matrices, the point GEMMs' left operands.
std::vector<float> transform_weights(const WinogradTiles& k, const float* w, bool adjoint, int64_t C, int64_t Cout) {
  const int64_t mat = checked_mul(Cout, C, "winograd weights");
  std::vector<float> U(static_cast<size_t>(checked_mul(16, mat, "winograd weights")));
  const int workers = workers_for(150.0 * mat, Cout);
  std::vector<std::vector<float>> scratch(workers);
  parallel_for(Cout, workers, [&](int64_t o, int wk) {
    scratch[wk].resize(static_cast<size_t>(9 * C));
    const float* first = adjoint ? w + o * 9 : w + o * C * 9;
    k.weight_run(first, adjoint ? Cout * 9 : 9, adjoint, C, U.data() + o * C, mat, scratch[wk].data());
  });
  return U;
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

struct Scratch {
  std::vector<float> v, m, run;
};

}  // namespace

void winograd_f2x3(const float* x, const float* w, bool adjoint, const float* bias, float* y, const WinogradGeom& g) {
  if (sgemm_avx512_enabled()) return winograd_f2x3_avx512(x, w, adjoint, bias, y, g);
  const WinogradTiles& k = kernels().winograd;
  const int64_t C = g.C, Cout = g.Cout, HWi = g.H * g.W, HWo = g.OH * g.OW;
  const Tiles tiles(g, g.N);
  if (tiles.total == 0) return;
  const std::vector<float> U = transform_weights(k, w, adjoint, C, Cout);
  const int threads = get_num_threads();
  const int64_t nb = block_tiles(tiles.total, C, Cout, threads), blocks = (tiles.total + nb - 1) / nb;
  check_blas_dims(Cout, nb, C, "winograd point GEMM");
  const int workers = workers_for(2.0 * 16 * C * Cout * tiles.total, blocks);
  std::vector<Scratch> scratch(workers);
  parallel_for(blocks, workers, [&](int64_t blk, int wk) {
    Scratch& s = scratch[wk];
    const int64_t t0 = blk * nb, cnt = std::min(nb, tiles.total - t0);
    s.v.resize(static_cast<size_t>(16 * C * nb));
    s.m.resize(static_cast<size_t>(16 * Cout * nb));
    s.run.resize(static_cast<size_t>(16 * (tiles.tw + 1)));
    // V[p][c][j], j < cnt: the block's transformed inputs, point stride C * cnt.
    const int64_t vstride = C * cnt, mstride = Cout * cnt;
    tiles.runs(t0, t0 + cnt, [&](int64_t n, int64_t ty, int64_t tx, int64_t len, int64_t col) {
      for (int64_t c = 0; c < C; ++c)
        k.input_run(x + (n * C + c) * HWi, g.H, g.W, g.pad_t, g.pad_l, ty, tx, len, s.v.data() + c * cnt + col, vstride,
                    s.run.data());
    });
    for (int p = 0; p < 16; ++p)
      gemm<float>(false, false, Cout, cnt, C, 1.0f, U.data() + p * Cout * C, C, s.v.data() + p * vstride, cnt, 0.0f,
                  s.m.data() + p * mstride, cnt);
    tiles.runs(t0, t0 + cnt, [&](int64_t n, int64_t ty, int64_t tx, int64_t len, int64_t col) {
      for (int64_t o = 0; o < Cout; ++o)
        k.output_run(s.m.data() + o * cnt + col, mstride, ty, tx, len, bias ? bias[o] : 0.0f, y + (n * Cout + o) * HWo,
                     g.OH, g.OW, s.run.data());
    });
  });
}

void winograd_f2x3_grad_weight(const float* x, const float* gy, float* gw, const WinogradGeom& g) {
  if (sgemm_avx512_enabled()) return winograd_f2x3_grad_weight_avx512(x, gy, gw, g);
  const WinogradTiles& k = kernels().winograd;
  const int64_t C = g.C, Cout = g.Cout, HWi = g.H * g.W, HWo = g.OH * g.OW;
  const int64_t mat = checked_mul(Cout, C, "winograd weights");
  std::fill(gw, gw + mat * 9, 0.0f);
  const Tiles tiles(g, g.N);
  if (tiles.total == 0) return;
  const int threads = get_num_threads();
  const int64_t nb = block_tiles(tiles.total, C, Cout, threads), blocks = (tiles.total + nb - 1) / nb;
  check_blas_dims(Cout, C, nb, "winograd point GEMM");
  const int workers = workers_for(2.0 * 16 * C * Cout * tiles.total, blocks);
  std::vector<Scratch> scratch(workers);
  // Per worker: sum over its blocks of Z[p] V[p]^T (16 Cout x C matrices).
  std::vector<std::vector<float>> part(workers);
  parallel_for(blocks, workers, [&](int64_t blk, int wk) {
    Scratch& s = scratch[wk];
    const int64_t t0 = blk * nb, cnt = std::min(nb, tiles.total - t0);
    s.v.resize(static_cast<size_t>(16 * C * nb));
    s.m.resize(static_cast<size_t>(16 * Cout * nb));
    s.run.resize(static_cast<size_t>(16 * (tiles.tw + 1)));
    if (part[wk].empty()) part[wk].assign(static_cast<size_t>(16 * mat), 0.0f);
    const int64_t vstride = C * cnt, zstride = Cout * cnt;
    tiles.runs(t0, t0 + cnt, [&](int64_t n, int64_t ty, int64_t tx, int64_t len, int64_t col) {
      for (int64_t c = 0; c < C; ++c)
        k.input_run(x + (n * C + c) * HWi, g.H, g.W, g.pad_t, g.pad_l, ty, tx, len, s.v.data() + c * cnt + col, vstride,
                    s.run.data());
      for (int64_t o = 0; o < Cout; ++o)
        k.grad_run(gy + (n * Cout + o) * HWo, g.OH, g.OW, ty, tx, len, s.m.data() + o * cnt + col, zstride,
                   s.run.data());
    });
    for (int p = 0; p < 16; ++p)
      gemm<float>(false, true, Cout, C, cnt, 1.0f, s.m.data() + p * zstride, cnt, s.v.data() + p * vstride, cnt, 1.0f,
                  part[wk].data() + p * mat, C);
  });
  // gw[o][c] = G^T GW[o][c] G, GW summed over workers.
  parallel_for(Cout, workers_for(300.0 * mat, Cout), [&](int64_t o, int) {
    for (int64_t c = 0; c < C; ++c) {
      float d[4][4] = {};
      for (const auto& pw : part)
        if (!pw.empty())
          for (int p = 0; p < 16; ++p) d[p / 4][p % 4] += pw[p * mat + o * C + c];
      float* out = gw + (o * C + c) * 9;
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          float acc = 0.0f;
          for (int a = 0; a < 4; ++a)
            for (int b = 0; b < 4; ++b) acc += kG[a][i] * d[a][b] * kG[b][j];
          out[i * 3 + j] = acc;
        }
    }
  });
}

}  // namespace fastconv
