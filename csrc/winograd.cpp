#include "winograd.hpp"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "parallel.hpp"
#include "sgemm_avx512.hpp"
#include "sgemm_kernel.hpp"

namespace fastconv {

bool winograd_enabled() {
  const char* v = std::getenv("FASTCONV_WINOGRAD");
  if (v && std::strcmp(v, "0") == 0) return false;
  return sgemm_avx512_enabled();
}

namespace {

constexpr int64_t kMR = 12;
// The 16 per-point matrices are written and read side by side; an extra cache
// line between them keeps power-of-two sizes from mapping all 16 streams onto
// the same L1 sets.
constexpr int64_t kStagger = 16;

// 64-byte aligned float scratch that keeps its capacity between calls.
struct Scratch {
  std::unique_ptr<float[]> raw;
  size_t cap = 0;
  float* get(size_t n) {
    if (n + 16 > cap) {
      cap = n + 16;
      raw.reset(new float[cap]);
    }
    auto p = reinterpret_cast<uintptr_t>(raw.get());
    return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
  }
};

inline __mmask16 first(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// Transformed weights U = G g G^T for all 16 points, each point's Cout x C
// matrix packed into micro-panels of 12 output channels (k = input channel);
// the last panel holds the remaining rows padded to a multiple of 4.  Held in
// per-thread storage reused across calls: U of a 512 x 512 layer is 16 MiB, and
// fresh pages would cost more than the transform.
struct PackedU {
  int64_t C, Cout, full, edge_rows, edge_mr, per_point;
  float* data;

  const float* panel(int64_t point, int64_t p) const { return data + point * per_point + p * kMR * C; }
};

// The 12 (or fewer) output channels of a panel are the vector lanes: their 3x3
// kernels are gathered (stride C*9 apart, or 9 for the adjoint), so each of the
// 16 results is one contiguous store into the panel.
__attribute__((target("avx512f"))) PackedU pack_u(const float* w, bool adjoint, int64_t C, int64_t Cout,
                                                   Scratch& store) {
  PackedU u{C, Cout, Cout / kMR, Cout % kMR, (Cout % kMR + 3) / 4 * 4, 0, nullptr};
  u.per_point = (u.full * kMR + u.edge_mr) * C + kStagger;
  u.data = store.get(16 * u.per_point);
  const int64_t panels = u.full + (u.edge_rows > 0);
  const int workers = workers_for(40.0 * Cout * C, panels);
  parallel_for(panels, workers, [&](int64_t p, int) {
    const int64_t rows = p < u.full ? kMR : u.edge_rows, mr = p < u.full ? kMR : u.edge_mr;
    const __mmask16 m = first(rows), store_mask = first(mr);  // padded rows are stored as zeros
    const int64_t lane_stride = adjoint ? 9 : C * 9;
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(lane_stride)));
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int64_t c = 0; c < C; ++c) {
      // first tap of lane 0: g[i][j] = base[i*3 + j], or base[8 - i*3 - j] rotated
      const float* base = adjoint ? w + (c * Cout + p * kMR) * 9 : w + (p * kMR * C + c) * 9;
      __m512 g[3][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) {
          const int tap = adjoint ? 8 - (i * 3 + j) : i * 3 + j;
          g[i][j] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base + tap, 4);
        }
      __m512 t[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        const __m512 s02 = _mm512_add_ps(g[0][j], g[2][j]);
        t[0][j] = g[0][j];
        t[1][j] = _mm512_mul_ps(half, _mm512_add_ps(s02, g[1][j]));
        t[2][j] = _mm512_mul_ps(half, _mm512_sub_ps(s02, g[1][j]));
        t[3][j] = g[2][j];
      }
      float* dst = u.data + p * kMR * C + c * mr;
      for (int a = 0; a < 4; ++a) {
        const __m512 s02 = _mm512_add_ps(t[a][0], t[a][2]);
        const __m512 r[4] = {t[a][0], _mm512_mul_ps(half, _mm512_add_ps(s02, t[a][1])),
                             _mm512_mul_ps(half, _mm512_sub_ps(s02, t[a][1])), t[a][2]};
        for (int b = 0; b < 4; ++b) _mm512_mask_storeu_ps(dst + (a * 4 + b) * u.per_point, store_mask, r[b]);
      }
    }
  });
  return u;
}

// One horizontal run of tiles inside a block: image n, tile row ty, tile
// columns [tx0, tx0 + len), block columns [col, col + len).
struct Run {
  int64_t n, ty, tx0, len, col;
};

std::vector<Run> runs_of(int64_t t0, int64_t t1, int64_t th, int64_t tw) {
  std::vector<Run> runs;
  for (int64_t t = t0; t < t1;) {
    const int64_t n = t / (th * tw), rem = t % (th * tw), ty = rem / tw, tx = rem % tw;
    const int64_t len = std::min(tw - tx, t1 - t);
    runs.push_back({n, ty, tx, len, t - t0});
    t += len;
  }
  return runs;
}

// V[point][c][col..] = B^T d B for the run's tiles of channel plane `x`
// (H x W).  The four input rows of a tile row are first copied into
// zero-padded buffers, so padding and edges need no branches in the vector
// code; even and odd columns are then split with two permutes.
__attribute__((target("avx512f"))) void input_transform(const float* x, int64_t H, int64_t W, int64_t pad_t,
                                                         int64_t pad_l, const Run& run, float* rows, float* v,
                                                         int64_t point_stride) {
  const int64_t span = 2 * run.len + 2, x0 = 2 * run.tx0 - pad_l;
  const int64_t padded = (run.len + 15) / 16 * 32 + 32;
  for (int i = 0; i < 4; ++i) {
    float* rb = rows + i * padded;
    std::fill(rb, rb + padded, 0.0f);
    const int64_t iy = 2 * run.ty - pad_t + i;
    if (iy < 0 || iy >= H) continue;
    const int64_t lo = std::max<int64_t>(0, -x0), hi = std::min<int64_t>(span, W - x0);
    if (hi > lo) std::memcpy(rb + lo, x + iy * W + x0 + lo, sizeof(float) * (hi - lo));
  }
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t k = 0; k < run.len; k += 16) {
    const __mmask16 m = first(run.len - k);
    __m512 R[4][4];
    for (int i = 0; i < 4; ++i) {
      const float* rb = rows + i * padded + 2 * k;
      const __m512 a0 = _mm512_loadu_ps(rb), a1 = _mm512_loadu_ps(rb + 16);
      const __m512 b0 = _mm512_loadu_ps(rb + 2), b1 = _mm512_loadu_ps(rb + 18);
      const __m512 e0 = _mm512_permutex2var_ps(a0, even, a1), o0 = _mm512_permutex2var_ps(a0, odd, a1);
      const __m512 e1 = _mm512_permutex2var_ps(b0, even, b1), o1 = _mm512_permutex2var_ps(b0, odd, b1);
      R[i][0] = _mm512_sub_ps(e0, e1);
      R[i][1] = _mm512_add_ps(o0, e1);
      R[i][2] = _mm512_sub_ps(e1, o0);
      R[i][3] = _mm512_sub_ps(o0, o1);
    }
    float* dst = v + run.col + k;
    for (int j = 0; j < 4; ++j) {
      _mm512_mask_storeu_ps(dst + (0 * 4 + j) * point_stride, m, _mm512_sub_ps(R[0][j], R[2][j]));
      _mm512_mask_storeu_ps(dst + (1 * 4 + j) * point_stride, m, _mm512_add_ps(R[1][j], R[2][j]));
      _mm512_mask_storeu_ps(dst + (2 * 4 + j) * point_stride, m, _mm512_sub_ps(R[2][j], R[1][j]));
      _mm512_mask_storeu_ps(dst + (3 * 4 + j) * point_stride, m, _mm512_sub_ps(R[1][j], R[3][j]));
    }
  }
}

// y plane (OH x OW) of one output channel += nothing: written as A^T m A + bias
// for the run's tiles, where m[point] = M[point][col..] of that channel.
__attribute__((target("avx512f"))) void output_transform(const float* m, int64_t point_stride, const Run& run,
                                                          float bias, float* y, int64_t OH, int64_t OW) {
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  const __m512 bv = _mm512_set1_ps(bias);
  for (int64_t k = 0; k < run.len; k += 16) {
    const float* src = m + run.col + k;
    __m512 s[4], t[4];
    for (int j = 0; j < 4; ++j) {
      const __m512 m0 = _mm512_loadu_ps(src + (0 * 4 + j) * point_stride);
      const __m512 m1 = _mm512_loadu_ps(src + (1 * 4 + j) * point_stride);
      const __m512 m2 = _mm512_loadu_ps(src + (2 * 4 + j) * point_stride);
      const __m512 m3 = _mm512_loadu_ps(src + (3 * 4 + j) * point_stride);
      s[j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
      t[j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
    }
    const int64_t ox = 2 * (run.tx0 + k);
    const int64_t cnt = std::min<int64_t>(2 * std::min<int64_t>(16, run.len - k), OW - ox);
    const __mmask16 mlo = first(cnt), mhi = first(std::max<int64_t>(0, cnt - 16));
    for (int a = 0; a < 2; ++a) {
      const int64_t oy = 2 * run.ty + a;
      if (oy >= OH) break;
      const __m512* q = a == 0 ? s : t;
      const __m512 y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(q[0], q[1]), q[2]), bv);
      const __m512 y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(q[1], q[2]), q[3]), bv);
      float* row = y + oy * OW + ox;
      _mm512_mask_storeu_ps(row, mlo, _mm512_permutex2var_ps(y0, lo_idx, y1));
      _mm512_mask_storeu_ps(row + 16, mhi, _mm512_permutex2var_ps(y0, hi_idx, y1));
    }
  }
}

// Tiles per block: as many as keep V and M (16 points x (C + Cout) floats per
// tile) near 1 MiB, then the count that splits the tiles over the threads with
// the fewest 32-column GEMM panels on the busiest thread.
int64_t block_tiles(int64_t tiles, int64_t C, int64_t Cout, int threads) {
  const int64_t cap = std::clamp<int64_t>((1 << 20) / (64 * (C + Cout)) / 16 * 16, 32, 256);
  int64_t best = cap, best_cost = INT64_MAX;
  for (int64_t nb = 16; nb <= cap; nb += 16) {
    const int64_t blocks = (tiles + nb - 1) / nb, per_thread = (blocks + threads - 1) / threads;
    const int64_t cost = per_thread * ((nb + 31) / 32) * 32 + 2 * per_thread * 16;  // panels + transform overhead
    if (cost < best_cost || (cost == best_cost && nb > best)) best = nb, best_cost = cost;
  }
  return std::min(best, tiles);
}

// M[point] (Cout x cols, leading dimension ld) = U[point] V[point] for the
// columns [j0, j1): output-channel panels outside, so a 12-row panel of U stays in
// L1 while the columns of V stream from L2.
__attribute__((target("avx512f"))) void point_gemm(const PackedU& U, int64_t point, const float* V, float* M,
                                                    int64_t ld, int64_t j0, int64_t j1) {
  for (int64_t p = 0; p < U.full + (U.edge_rows > 0); ++p) {
    const float* a = U.panel(point, p);
    float* c = M + p * kMR * ld;
    for (int64_t j = j0; j < j1; j += kNR) {
      const int64_t n = std::min(kNR, j1 - j);
      if (p < U.full)
        sgemm_micro<12>(U.C, a, V + j, ld, c + j, ld, false, kMR, n);
      else if (U.edge_mr == 4)
        sgemm_micro<4>(U.C, a, V + j, ld, c + j, ld, false, U.edge_rows, n);
      else if (U.edge_mr == 8)
        sgemm_micro<8>(U.C, a, V + j, ld, c + j, ld, false, U.edge_rows, n);
      else
        sgemm_micro<12>(U.C, a, V + j, ld, c + j, ld, false, U.edge_rows, n);
    }
  }
}

// Columns the micro-kernel reads but never stores are kept finite (zero).
void zero_tail(float* V, int64_t rows, int64_t stride_rows, int64_t ld, int64_t cols) {
  if (cols < ld)
    for (int64_t r = 0; r < rows; ++r) std::fill(V + r * stride_rows + cols, V + r * stride_rows + ld, 0.0f);
}

}  // namespace

// Two schedules.  Blocked: each thread takes blocks of tiles and runs input
// transform, 16 GEMMs and output transform on one block while it is in L2; every
// block reads all of U.  Layered: all tiles' V first, then the 16 GEMMs split
// over threads (each point's U read once), then the output; V and M go through
// L3 or memory once.  Large maps with few channels favour the first, few tiles
// with many channels (7x7 layers: U is 16 MiB for 512 x 512) the second; the
// choice compares the bytes each would move.
__attribute__((target("avx512f"))) void winograd_f2x3(const float* x, const float* w, bool adjoint, const float* bias,
                                                       float* y, const WinogradGeom& g) {
  if (g.N == 0) return;
  thread_local Scratch su, sv_all, sm_all;
  const PackedU U = pack_u(w, adjoint, g.C, g.Cout, su);
  const int64_t th = (g.OH + 1) / 2, tw = (g.OW + 1) / 2, tiles = g.N * th * tw;
  const int threads = get_num_threads();
  const int64_t HWi = g.H * g.W, HWo = g.OH * g.OW;
  const int64_t rows_len = 4 * ((tw + 15) / 16 * 32 + 32);
  const int64_t nb = block_tiles(tiles, g.C, g.Cout, threads), blocks = (tiles + nb - 1) / nb;
  const double u_bytes = 64.0 * g.C * g.Cout, vm_bytes = 64.0 * (g.C + g.Cout) * tiles;
  const int workers = workers_for(32.0 * g.C * g.Cout * tiles, blocks);

  if (u_bytes * blocks <= 2 * vm_bytes + u_bytes) {
    const int64_t ld = (nb + 31) / 32 * 32, vstride = g.C * ld + kStagger, mstride = g.Cout * ld + kStagger;
    parallel_for(blocks, workers, [&](int64_t blk, int) {
      thread_local Scratch sv, sm, sr;
      const int64_t t0 = blk * nb, t1 = std::min(tiles, t0 + nb), cols = t1 - t0;
      float* V = sv.get(16 * vstride);
      float* M = sm.get(16 * mstride);
      float* rows = sr.get(rows_len);
      const std::vector<Run> runs = runs_of(t0, t1, th, tw);
      for (int64_t point = 0; point < 16; ++point) zero_tail(V + point * vstride, g.C, ld, ld, cols);
      for (const Run& run : runs)
        for (int64_t c = 0; c < g.C; ++c)
          input_transform(x + (run.n * g.C + c) * HWi, g.H, g.W, g.pad_t, g.pad_l, run, rows, V + c * ld, vstride);
      for (int64_t point = 0; point < 16; ++point)
        point_gemm(U, point, V + point * vstride, M + point * mstride, ld, 0, cols);
      for (const Run& run : runs)
        for (int64_t o = 0; o < g.Cout; ++o)
          output_transform(M + o * ld, mstride, run, bias ? bias[o] : 0.0f, y + (run.n * g.Cout + o) * HWo, g.OH,
                           g.OW);
    });
    return;
  }

  const int64_t ld = (tiles + 31) / 32 * 32, vstride = g.C * ld + kStagger, mstride = g.Cout * ld + kStagger;
  float* V = sv_all.get(16 * vstride);
  float* M = sm_all.get(16 * mstride);
  const int t = get_num_threads();
  parallel_for(g.N * g.C, std::min<int64_t>(t, g.N * g.C), [&](int64_t plane, int) {
    thread_local Scratch sr;
    float* rows = sr.get(rows_len);
    const int64_t n = plane / g.C, c = plane % g.C;
    for (int64_t ty = 0; ty < th; ++ty)
      input_transform(x + plane * HWi, g.H, g.W, g.pad_t, g.pad_l, Run{n, ty, 0, tw, (n * th + ty) * tw}, rows,
                      V + c * ld, vstride);
  });
  for (int64_t point = 0; point < 16; ++point) zero_tail(V + point * vstride, g.C, ld, ld, tiles);
  // Column blocks keep a point's slice of V (C x block) within about half of L2.
  const int64_t jb = std::min(ld, std::max<int64_t>(kNR, (1 << 17) / g.C / kNR * kNR)), njb = (ld + jb - 1) / jb;
  parallel_for(16 * njb, std::min<int64_t>(t, 16 * njb), [&](int64_t item, int) {
    const int64_t point = item / njb, j0 = (item % njb) * jb;
    point_gemm(U, point, V + point * vstride, M + point * mstride, ld, j0, std::min(tiles, j0 + jb));
  });
  parallel_for(g.N * g.Cout, std::min<int64_t>(t, g.N * g.Cout), [&](int64_t plane, int) {
    const int64_t n = plane / g.Cout, o = plane % g.Cout;
    for (int64_t ty = 0; ty < th; ++ty)
      output_transform(M + o * ld, mstride, Run{n, ty, 0, tw, (n * th + ty) * tw}, bias ? bias[o] : 0.0f,
                       y + plane * HWo, g.OH, g.OW);
  });
}

}  // namespace fastconv
