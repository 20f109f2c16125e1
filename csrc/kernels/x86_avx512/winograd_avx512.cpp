// F(2x2, 3x3) Winograd with its own AVX-512 register kernels (transforms and point GEMMs), serving the avx512
// level; the generic operator (algorithms/winograd.cpp) serves avx2 and neon.
#include "algorithms/winograd.hpp"

#if !(defined(__x86_64__) || defined(__i386__))
// Off x86 there is no AVX-512 kernel: winograd.cpp serves every level there.
#include <stdexcept>

namespace fastconv {

void winograd_f2x3_avx512(const float*, const float*, bool, const float*, float*, const WinogradGeom&,
                          const Epilogue<float>&, PrepRef) {
  throw std::logic_error("fastconv internal error: no Winograd kernel for this CPU");
}

void winograd_f2x3_grad_weight_avx512(const float*, const float*, float*, const WinogradGeom&) {
  throw std::logic_error("fastconv internal error: no Winograd kernel for this CPU");
}

}  // namespace fastconv

#else

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/x86_avx512/sgemm_12x32_avx512.hpp"
#include "kernels/x86_avx512/sgemm_avx512.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

namespace {

constexpr int64_t kMR = 12;
// The 16 per-point matrices are written and read side by side; an extra cache
// line between them keeps power-of-two sizes from mapping all 16 streams onto
// the same L1 sets.
constexpr int64_t kStagger = 16;
// Upper bound on the layered schedule's transformed inputs and products.
constexpr int64_t kLayeredBytes = 32 << 20;

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

// GCC 12 reports its own _mm512_undefined_ps() (inside the unpack intrinsics) as
// (maybe-)uninitialised once inlined; the lanes it stands for are never used.
// The pragmas cover transpose16 and the two functions that inline it.
#pragma GCC diagnostic push
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"

// In-register transpose of a 16 x 16 block: r[i] lane j <- r[j] lane i.
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // r[4i + j], 128-bit block L: rows 4i..4i+3 of column 4L + j
  for (int j = 0; j < 4; ++j) {
    const __m512 s0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44), s1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);
    const __m512 s2 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
    const __m512 s3 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
    t[j] = _mm512_shuffle_f32x4(s0, s2, 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
    t[8 + j] = _mm512_shuffle_f32x4(s1, s3, 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Makes one work item of pack_u: panel p, k-index (the packed GEMM's inner
// dimension: input channel, or output channel for the adjoint) [16*kc,
// 16*kc + 16).  Each kernel's 16 transformed values are one vector: U[point] =
// sum over taps of g[tap] * T[tap][point] with T[(i,j)][(a,b)] = G[a][i] G[b][j]
// (9 FMAs, the taps read as broadcasts straight from w).  The panel's 12 rows
// of such vectors are then transposed in registers, which turns them into 16
// contiguous 12-float rows of the packed panels.  Gathers would read the same
// data in place but are several times slower on the CPUs measured (Zen 5).
// A named function, not a lambda: lambdas do not inherit the target attribute.
__attribute__((target("avx512f"))) void transform_weights(const float* w, bool adjoint, const PackedU& u, int64_t p,
                                                          int64_t kc, bool streaming) {
  const int64_t C = u.C, Cout = u.Cout;
  const int64_t rows = p < u.full ? kMR : u.edge_rows, mr = p < u.full ? kMR : u.edge_mr;
  const __mmask16 store_mask = first(mr);
  // G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]; the adjoint's kernels are rotated by 180 degrees.
  static const float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  __m512 T[9];
  for (int tap = 0; tap < 9; ++tap) {
    alignas(64) float col[16];
    const int i = adjoint ? 2 - tap / 3 : tap / 3, j = adjoint ? 2 - tap % 3 : tap % 3;
    for (int q = 0; q < 16; ++q) col[q] = G[q / 4][i] * G[q % 4][j];
    T[tap] = _mm512_load_ps(col);
  }
  // kernel (row r, k) starts at w + (k * k_step + r * r_step) * 9 relative to the panel's first
  const int64_t r_step = adjoint ? 1 : C, k_step = adjoint ? Cout : 1;
  const float* panel_w = adjoint ? w + p * kMR * 9 : w + p * kMR * C * 9;
  const int64_t k0 = kc * 16, k_end = std::min(C, k0 + 16);
  // With `streaming`, whole 16 x 12 blocks whose destinations are 64-byte
  // aligned are staged in L1 and written with streaming stores: no
  // read-for-ownership of U's lines, which a U too big to stay in cache would
  // cost for nothing (resnet_3x3_7, U = 16 MiB: 1.08 -> 0.87 ms).
  alignas(64) float buf[16][16 * kMR];
  const bool stream = streaming && mr == kMR && k_end - k0 == 16 && u.per_point % 16 == 0 && (kMR * C) % 16 == 0;
  if (!adjoint) {
    // The panel's rows (output channels) hold their kernels for [k0, k_end)
    // as runs of (k_end - k0) * 9 contiguous floats: transposed 16 columns at a
    // time through L1, every tap becomes a vector over the rows, and the
    // transform runs separably (G g, then (G g) G^T) on those.  A third of
    // the instructions of the broadcast form below, which the adjoint keeps:
    // its rows are 9 floats apart, not C * 9.
    const int64_t cols = (k_end - k0) * 9;
    alignas(64) float tb[16 * 9][16];
    for (int64_t b = 0; b < cols; b += 16) {
      const __mmask16 cm = first(cols - b);
      __m512 r[16];
      for (int row = 0; row < 16; ++row)  // padded rows of the edge panel are stored as zeros
        r[row] = row < rows ? _mm512_maskz_loadu_ps(cm, panel_w + row * C * 9 + k0 * 9 + b) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t j = 0; j < std::min<int64_t>(16, cols - b); ++j) _mm512_store_ps(tb[b + j], r[j]);
    }
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int64_t k = k0; k < k_end; ++k) {
      const float (*g)[16] = tb + (k - k0) * 9;  // g[i * 3 + j]: tap (i, j) of every row
      __m512 t[4][3];                            // G g
      for (int j = 0; j < 3; ++j) {
        const __m512 g0 = _mm512_load_ps(g[j]), g1 = _mm512_load_ps(g[3 + j]), g2 = _mm512_load_ps(g[6 + j]);
        const __m512 s02 = _mm512_add_ps(g0, g2);
        t[0][j] = g0;
        t[1][j] = _mm512_mul_ps(half, _mm512_add_ps(s02, g1));
        t[2][j] = _mm512_mul_ps(half, _mm512_sub_ps(s02, g1));
        t[3][j] = g2;
      }
      __m512 r[16];  // r[point] lane row
      for (int a = 0; a < 4; ++a) {
        const __m512 s02 = _mm512_add_ps(t[a][0], t[a][2]);
        r[a * 4 + 0] = t[a][0];
        r[a * 4 + 1] = _mm512_mul_ps(half, _mm512_add_ps(s02, t[a][1]));
        r[a * 4 + 2] = _mm512_mul_ps(half, _mm512_sub_ps(s02, t[a][1]));
        r[a * 4 + 3] = t[a][2];
      }
      if (stream)
        for (int point = 0; point < 16; ++point)
          _mm512_mask_storeu_ps(buf[point] + (k - k0) * kMR, store_mask, r[point]);
      else
        for (int point = 0; point < 16; ++point)
          _mm512_mask_storeu_ps(u.data + p * kMR * C + k * mr + point * u.per_point, store_mask, r[point]);
    }
  }
  for (int64_t k = k0; adjoint && k < k_end; ++k) {
    __m512 r[16];
    for (int row = 0; row < 16; ++row) {
      if (row >= rows) {  // padded rows of the edge panel are stored as zeros
        r[row] = _mm512_setzero_ps();
        continue;
      }
      const float* g = panel_w + (k * k_step + row * r_step) * 9;
      __m512 acc = _mm512_mul_ps(_mm512_set1_ps(g[0]), T[0]);
      for (int tap = 1; tap < 9; ++tap) acc = _mm512_fmadd_ps(_mm512_set1_ps(g[tap]), T[tap], acc);
      r[row] = acc;
    }
    transpose16(r);  // r[point] lane row
    if (stream) {
      for (int point = 0; point < 16; ++point) _mm512_mask_storeu_ps(buf[point] + (k - k0) * kMR, store_mask, r[point]);
      continue;
    }
    float* dst = u.data + p * kMR * C + k * mr;
    for (int point = 0; point < 16; ++point) _mm512_mask_storeu_ps(dst + point * u.per_point, store_mask, r[point]);
  }
  if (stream)
    for (int point = 0; point < 16; ++point) {
      float* dst = u.data + point * u.per_point + p * kMR * C + k0 * kMR;
      for (int v = 0; v < 12; ++v) _mm512_stream_ps(dst + 16 * v, _mm512_load_ps(buf[point] + 16 * v));
    }
  if (stream) _mm_sfence();  // streaming stores are weakly ordered: publish them before the join
}

#pragma GCC diagnostic pop

// U = G g G^T for every kernel, in panels of kMR output channels (PackedU);
// `streaming` when U is read once (the layered schedule), not once per block.
// A prepared layer's U is made once into its store (and read many times: not streamed).
__attribute__((target("avx512f"))) PackedU pack_u(const float* w, bool adjoint, int64_t C, int64_t Cout, bool streaming,
                                                  Scratch& store, PrepRef prep) {
  PackedU u{C, Cout, Cout / kMR, Cout % kMR, (Cout % kMR + 3) / 4 * 4, 0, nullptr};
  u.per_point = (u.full * kMR + u.edge_mr) * C + kStagger;
  const int64_t panels = u.full + (u.edge_rows > 0), chunks = (C + 15) / 16;
  auto make = [&](float* data, bool stream) {
    PackedU target = u;
    target.data = data;
    // Items are (panel, chunk of 16 input channels), panel-major: each thread
    // writes whole panels front to back.
    const int workers = workers_for(40.0 * Cout * C, panels * chunks);
    parallel_for(panels * chunks, workers, [&](int64_t item, int) {
      transform_weights(w, adjoint, target, item / chunks, item % chunks, stream);
    });
  };
  if (prep) {
    const PrepKey key{Prep::winograd_avx512, prep.ns, 0, adjoint};
    u.data = const_cast<float*>(prep.store->get<float>(key, 16 * u.per_point, [&](float* d) { make(d, false); }));
    return u;
  }
  u.data = store.get(16 * u.per_point);
  make(u.data, streaming);
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

// V[point][t] = B^T d B for 4x4 patches d held with tiles as lanes; lanes
// outside `m` are not stored.
__attribute__((target("avx512f"))) inline void transform_patches(const __m512 d[4][4], __mmask16 m, float* v,
                                                                 int64_t point_stride) {
  __m512 r[4][4];  // B^T d: rows [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
  for (int j = 0; j < 4; ++j) {
    r[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
    r[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
    r[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
    r[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
  }
  for (int i = 0; i < 4; ++i) {
    float* dst = v + i * 4 * point_stride;
    _mm512_mask_storeu_ps(dst, m, _mm512_sub_ps(r[i][0], r[i][2]));
    _mm512_mask_storeu_ps(dst + point_stride, m, _mm512_add_ps(r[i][1], r[i][2]));
    _mm512_mask_storeu_ps(dst + 2 * point_stride, m, _mm512_sub_ps(r[i][2], r[i][1]));
    _mm512_mask_storeu_ps(dst + 3 * point_stride, m, _mm512_sub_ps(r[i][1], r[i][3]));
  }
}

// V = B^T d B for `count` tiles, written to v[point * point_stride + t].  Tile t's
// patch row i is P[i][2t], P[i][2t + 1], Q[i][2t], Q[i][2t + 1] (Q holds the
// columns two to the right); even and odd columns are split with two permutes.
// P and Q are readable for 2 * round_up(count, 16) floats.
__attribute__((target("avx512f"))) void transform_tiles(const float* const P[4], const float* const Q[4], int64_t count,
                                                        float* v, int64_t point_stride) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t k = 0; k < count; k += 16) {
    __m512 d[4][4];
    for (int i = 0; i < 4; ++i) {
      const __m512 a0 = _mm512_loadu_ps(P[i] + 2 * k), a1 = _mm512_loadu_ps(P[i] + 2 * k + 16);
      const __m512 b0 = _mm512_loadu_ps(Q[i] + 2 * k), b1 = _mm512_loadu_ps(Q[i] + 2 * k + 16);
      d[i][0] = _mm512_permutex2var_ps(a0, even, a1);
      d[i][1] = _mm512_permutex2var_ps(a0, odd, a1);
      d[i][2] = _mm512_permutex2var_ps(b0, even, b1);
      d[i][3] = _mm512_permutex2var_ps(b0, odd, b1);
    }
    transform_patches(d, first(count - k), v + k, point_stride);
  }
}

// Rows of at most 32 values (and runs of at most 16 tiles) skip the staging
// buffers: each of the tile row's four input rows is two masked loads straight
// from x, and each patch value one two-source permute of them, with lanes
// outside the image zeroed by the permute's mask.
constexpr int64_t kRegisterRow = 32;

__attribute__((target("avx512f"))) void input_transform_row(const float* x, int64_t H, int64_t W, int64_t pad_t,
                                                            int64_t pad_l, int64_t ty, int64_t tx0, int64_t len,
                                                            float* v, int64_t point_stride) {
  const __m512i lane2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __mmask16 m = first(len);
  __m512i idx[4];
  __mmask16 valid[4];
  for (int j = 0; j < 4; ++j) {
    idx[j] = _mm512_add_epi32(lane2, _mm512_set1_epi32(static_cast<int>(2 * tx0 - pad_l + j)));
    valid[j] = m & _mm512_cmpge_epi32_mask(idx[j], _mm512_setzero_si512()) &
               _mm512_cmplt_epi32_mask(idx[j], _mm512_set1_epi32(static_cast<int>(W)));
  }
  __m512 d[4][4];
  for (int i = 0; i < 4; ++i) {
    const int64_t iy = 2 * ty - pad_t + i;
    const bool inside = iy >= 0 && iy < H;
    const float* row = x + (inside ? iy * W : 0);
    const __m512 lo = _mm512_maskz_loadu_ps(inside ? first(W) : __mmask16(0), row);
    const __m512 hi = _mm512_maskz_loadu_ps(inside ? first(std::max<int64_t>(0, W - 16)) : __mmask16(0), row + 16);
    for (int j = 0; j < 4; ++j) d[i][j] = _mm512_maskz_permutex2var_ps(valid[j], lo, idx[j], hi);
  }
  transform_patches(d, m, v, point_stride);
}

// V[point][c][col..] = B^T d B for the run's tiles of channel plane `x`
// (H x W).  The four input rows of a tile row are first copied into
// zero-padded buffers, so padding and edges need no branches in the vector
// code.
__attribute__((target("avx512f"))) void input_transform(const float* x, int64_t H, int64_t W, int64_t pad_t,
                                                        int64_t pad_l, const Run& run, float* rows, float* v,
                                                        int64_t point_stride) {
  if (W <= kRegisterRow && run.len <= 16)
    return input_transform_row(x, H, W, pad_t, pad_l, run.ty, run.tx0, run.len, v + run.col, point_stride);
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
  const float *P[4], *Q[4];
  for (int i = 0; i < 4; ++i) P[i] = rows + i * padded, Q[i] = P[i] + 2;
  transform_tiles(P, Q, run.len, v + run.col, point_stride);
}

// input_transform for all th x tw tiles of one plane at once, flattened, so
// that maps narrower than 16 tiles still fill the vector lanes.  Each tile's
// four input columns come from two buffers per patch row: P holds columns
// 2tx, 2tx+1 and Q columns 2tx+2, 2tx+3 of every tile row's input row, built
// with masked loads that read nothing outside the image.  `buf` holds
// 8 * (2 * th * tw + 32) floats.
__attribute__((target("avx512f"))) void input_transform_plane(const float* x, int64_t H, int64_t W, int64_t pad_t,
                                                              int64_t pad_l, int64_t th, int64_t tw, float* buf,
                                                              float* v, int64_t point_stride) {
  if (W <= kRegisterRow && tw <= 16) {
    for (int64_t ty = 0; ty < th; ++ty)
      input_transform_row(x, H, W, pad_t, pad_l, ty, 0, tw, v + ty * tw, point_stride);
    return;
  }
  const int64_t seg = 2 * tw, len = th * seg + 32;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int i = 0; i < 4; ++i)
    for (int h = 0; h < 2; ++h) {  // h = 0: P, 1: Q (shifted by two columns)
      float* dst = buf + (2 * i + h) * len;
      for (int64_t ty = 0; ty < th; ++ty) {
        const int64_t iy = 2 * ty - pad_t + i, x0 = -pad_l + 2 * h;
        for (int64_t q = 0; q < seg; q += 16) {
          const __m512i col = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(x0 + q)));
          __mmask16 m = first(seg - q);
          if (iy < 0 || iy >= H)
            m = 0;
          else
            m &= _mm512_cmpge_epi32_mask(col, _mm512_setzero_si512()) &
                 _mm512_cmplt_epi32_mask(col, _mm512_set1_epi32(static_cast<int>(W)));
          const float* src = x + (iy < 0 || iy >= H ? 0 : iy * W) + x0 + q;  // only masked-in lanes are read
          _mm512_mask_storeu_ps(dst + ty * seg + q, first(seg - q), _mm512_maskz_loadu_ps(m, src));
        }
      }
    }
  const float *P[4], *Q[4];
  for (int i = 0; i < 4; ++i) P[i] = buf + (2 * i) * len, Q[i] = buf + (2 * i + 1) * len;
  transform_tiles(P, Q, th * tw, v, point_stride);
}

// Writes the run's tiles of one output channel's y plane (OH x OW) as
// A^T m A + bias, where m[point] = M[point][col..] of that channel.
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

// Small planes (at most 64 input and 64 output values, at most 16 tiles: 7x7
// and 8x8 maps, for instance) are transformed in registers: the whole plane is
// four vectors, and every tile value is picked out of them with two-source
// permutes whose index vectors depend only on the geometry (built once per
// call).  The buffer-based transforms above cost about 1000 cycles per 7x7
// plane, mostly store-to-load forwarding stalls on their staging rows; this
// path takes a fraction of that.
// Per value v of a tile's patch, where each tile (lane) finds it in a plane of
// at most 64 floats held as four vectors.
struct Picks {
  alignas(64) int32_t idx[16][16] = {};   // [value][tile]: plane offset (bit 5 selects vectors 2-3)
  __mmask16 valid[16] = {}, hi[16] = {};  // lanes inside the plane; lanes reading vectors 2-3
  void set(int v, int64_t t, bool inside, int64_t off) {
    idx[v][t] = static_cast<int32_t>(inside ? off : 0);
    if (inside) valid[v] |= __mmask16(1u << t);
    if (inside && off >= 32) hi[v] |= __mmask16(1u << t);
  }
};

struct SmallPlane {
  bool ok = false;
  int64_t tiles = 0, in_len = 0, out_len = 0;
  Picks in;                            // 16 values: the 4x4 input patch, i * 4 + j
  Picks gy;                            // 4 values: the 2x2 outputs, row * 2 + column (output plane)
  alignas(64) int32_t out_idx[4][16];  // [output vector][lane]: tile + 16 * column parity
  __mmask16 out_odd_row[4];            // lanes taken from the tile's second output row
};

SmallPlane small_plane(const WinogradGeom& g, int64_t th, int64_t tw) {
  SmallPlane sp;
  sp.tiles = th * tw;
  sp.in_len = g.H * g.W;
  sp.out_len = g.OH * g.OW;
  if (sp.tiles > 16 || sp.in_len > 64 || sp.out_len > 64) return sp;
  sp.ok = true;
  for (int64_t t = 0; t < sp.tiles; ++t)
    for (int v = 0; v < 16; ++v) {
      const int64_t iy = 2 * (t / tw) - g.pad_t + v / 4, ix = 2 * (t % tw) - g.pad_l + v % 4;
      sp.in.set(v, t, iy >= 0 && iy < g.H && ix >= 0 && ix < g.W, iy * g.W + ix);
      if (v < 4) {
        const int64_t oy = 2 * (t / tw) + v / 2, ox = 2 * (t % tw) + v % 2;
        sp.gy.set(v, t, oy < g.OH && ox < g.OW, oy * g.OW + ox);
      }
    }
  for (int k = 0; k < 4; ++k) {
    sp.out_odd_row[k] = 0;
    for (int64_t l = 0; l < 16; ++l) {
      const int64_t px = std::min<int64_t>(16 * k + l, sp.out_len - 1), oy = px / g.OW, ox = px % g.OW;
      sp.out_idx[k][l] = static_cast<int32_t>((oy / 2) * tw + ox / 2 + 16 * (ox % 2));
      if (oy % 2) sp.out_odd_row[k] |= __mmask16(1u << l);
    }
  }
  return sp;
}

// Values [0, count) of every tile's patch (Picks) from a plane of `len` <= 64
// floats; out[v] has the tiles as lanes, zero where the value lies outside.
__attribute__((target("avx512f"))) inline void pick_values(const float* plane, int64_t len, const Picks& picks,
                                                           int count, __m512* out) {
  __m512 src[4];
  for (int k = 0; k < 4; ++k) src[k] = _mm512_maskz_loadu_ps(first(std::max<int64_t>(0, len - 16 * k)), plane + 16 * k);
  for (int v = 0; v < count; ++v) {
    const __m512i idx = _mm512_load_si512(picks.idx[v]);
    const __m512 lo = _mm512_permutex2var_ps(src[0], idx, src[1]), hi = _mm512_permutex2var_ps(src[2], idx, src[3]);
    out[v] = _mm512_maskz_mov_ps(picks.valid[v], _mm512_mask_blend_ps(picks.hi[v], lo, hi));
  }
}

// V[point][t] = B^T d B for the tiles t of one small plane (lanes = tiles).
__attribute__((target("avx512f"))) void input_transform_small(const float* x, const SmallPlane& sp, float* v,
                                                              int64_t point_stride) {
  __m512 d[4][4];
  pick_values(x, sp.in_len, sp.in, 16, &d[0][0]);
  transform_patches(d, first(sp.tiles), v, point_stride);
}

// One small output plane y = A^T m A + bias from m[point][t] (lanes = tiles).
__attribute__((target("avx512f"))) void output_transform_small(const float* m, int64_t point_stride,
                                                               const SmallPlane& sp, float bias, float* y) {
  const __mmask16 lanes = first(sp.tiles);
  __m512 s[4], t[4];  // A^T m: rows [m0 + m1 + m2, m1 - m2 - m3]
  for (int j = 0; j < 4; ++j) {
    const __m512 m0 = _mm512_maskz_loadu_ps(lanes, m + (0 * 4 + j) * point_stride);
    const __m512 m1 = _mm512_maskz_loadu_ps(lanes, m + (1 * 4 + j) * point_stride);
    const __m512 m2 = _mm512_maskz_loadu_ps(lanes, m + (2 * 4 + j) * point_stride);
    const __m512 m3 = _mm512_maskz_loadu_ps(lanes, m + (3 * 4 + j) * point_stride);
    s[j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
    t[j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
  }
  const __m512 bv = _mm512_set1_ps(bias);
  __m512 out[2][2];  // [row][column] of each tile's 2x2 outputs
  for (int a = 0; a < 2; ++a) {
    const __m512* q = a == 0 ? s : t;
    out[a][0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(q[0], q[1]), q[2]), bv);
    out[a][1] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(q[1], q[2]), q[3]), bv);
  }
  for (int64_t k = 0; 16 * k < sp.out_len; ++k) {
    const __m512i idx = _mm512_load_si512(sp.out_idx[k]);
    const __m512 even = _mm512_permutex2var_ps(out[0][0], idx, out[0][1]);
    const __m512 odd = _mm512_permutex2var_ps(out[1][0], idx, out[1][1]);
    _mm512_mask_storeu_ps(y + 16 * k, first(sp.out_len - 16 * k), _mm512_mask_blend_ps(sp.out_odd_row[k], even, odd));
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

// How a layer's tiles are scheduled; shared by the forward (and input gradient)
// and the weight gradient, which move the same kinds of data.
struct Plan {
  int64_t th, tw, per_image, tiles;  // 2x2 tiles per row and column, per image, in all
  int64_t nb, blocks;                // blocked schedule: tiles per block, blocks
  bool layered;                      // layered schedule chosen
  int64_t chunk;                     // layered schedule: images per batch chunk
  int64_t rows_len, plane_len;       // floats of input_transform's / input_transform_plane's scratch
};

// Blocked reads all of U (64 C Cout bytes) once per block; layered writes and
// reads every tile's transformed data (64 (C + Cout) bytes per tile) once
// more and U once.  Take the one that moves fewer bytes.
Plan plan_for(const WinogradGeom& g) {
  Plan p;
  p.th = (g.OH + 1) / 2;
  p.tw = (g.OW + 1) / 2;
  p.per_image = p.th * p.tw;
  p.tiles = g.N * p.per_image;
  p.nb = block_tiles(p.tiles, g.C, g.Cout, get_num_threads());
  p.blocks = (p.tiles + p.nb - 1) / p.nb;
  const double u_bytes = 64.0 * g.C * g.Cout, vm_bytes = 64.0 * (g.C + g.Cout) * p.tiles;
  p.layered = u_bytes * p.blocks > 2 * vm_bytes + u_bytes;
  p.chunk = std::clamp<int64_t>(kLayeredBytes / (64 * (g.C + g.Cout) * p.per_image), 1, std::max<int64_t>(g.N, 1));
  p.rows_len = 4 * ((p.tw + 15) / 16 * 32 + 32);
  p.plane_len = 8 * (2 * p.per_image + 32);
  return p;
}

// M[point] (Cout x cols, leading dimension ld) = U[point] V[point] for the
// columns [j0, j1): output-channel panels outside, so a 12-row panel of U stays in
// L1 while the columns of V stream from L2.  U comes from L3 (16 MiB for a
// 512 x 512 layer), so the last column block of each panel prefetches the next.
__attribute__((target("avx512f"))) void point_gemm(const PackedU& U, int64_t point, const float* V, float* M,
                                                   int64_t ld, int64_t j0, int64_t j1) {
  for (int64_t p = 0; p < U.full + (U.edge_rows > 0); ++p) {
    const float* a = U.panel(point, p);
    float* c = M + p * kMR * ld;
    for (int64_t j = j0; j < j1; j += kNR) {
      const int64_t n = std::min(kNR, j1 - j);
      const float* next = j + kNR >= j1 && p + 1 < U.full ? U.panel(point, p + 1) : nullptr;
      if (p < U.full)
        sgemm_micro<12>(U.C, a, V + j, ld, c + j, ld, false, kMR, n, next);
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

// Z[point][t] = A g A^T from each tile's 2x2 output gradient: e[row] its
// even, o[row] its odd column (tiles as lanes).
__attribute__((target("avx512f"))) inline void grad_patches(const __m512 e[2], const __m512 o[2], __mmask16 m, float* z,
                                                            int64_t point_stride) {
  // rows of A g: [a, b], [a + c, b + d], [a - c, b - d], [-c, -d]; then each row [p, q] -> [p, p + q, p - q, -q]
  const __m512 zero = _mm512_setzero_ps();
  const __m512 p[4] = {e[0], _mm512_add_ps(e[0], e[1]), _mm512_sub_ps(e[0], e[1]), _mm512_sub_ps(zero, e[1])};
  const __m512 q[4] = {o[0], _mm512_add_ps(o[0], o[1]), _mm512_sub_ps(o[0], o[1]), _mm512_sub_ps(zero, o[1])};
  for (int i = 0; i < 4; ++i) {
    _mm512_mask_storeu_ps(z + (i * 4 + 0) * point_stride, m, p[i]);
    _mm512_mask_storeu_ps(z + (i * 4 + 1) * point_stride, m, _mm512_add_ps(p[i], q[i]));
    _mm512_mask_storeu_ps(z + (i * 4 + 2) * point_stride, m, _mm512_sub_ps(p[i], q[i]));
    _mm512_mask_storeu_ps(z + (i * 4 + 3) * point_stride, m, _mm512_sub_ps(zero, q[i]));
  }
}

// Z[point][col..] = A g A^T for the run's tiles of one output-gradient plane
// (OH x OW): the 2x2 patch of gy each tile produced, outputs past the edge
// counting as zero.  The adjoint of output_transform.
__attribute__((target("avx512f"))) void grad_output_transform(const float* gy, int64_t OH, int64_t OW, const Run& run,
                                                              float* z, int64_t point_stride) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t k = 0; k < run.len; k += 16) {
    const int64_t ox = 2 * (run.tx0 + k);
    const int64_t cnt = std::min<int64_t>(2 * std::min<int64_t>(16, run.len - k), OW - ox);
    const __mmask16 mlo = first(cnt), mhi = first(std::max<int64_t>(0, cnt - 16));
    __m512 e[2], o[2];  // even / odd output columns of the tile rows' two output rows
    for (int a = 0; a < 2; ++a) {
      const int64_t oy = 2 * run.ty + a;
      __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
      if (oy < OH) {
        lo = _mm512_maskz_loadu_ps(mlo, gy + oy * OW + ox);
        hi = _mm512_maskz_loadu_ps(mhi, gy + oy * OW + ox + 16);
      }
      e[a] = _mm512_permutex2var_ps(lo, even, hi);
      o[a] = _mm512_permutex2var_ps(lo, odd, hi);
    }
    grad_patches(e, o, first(run.len - k), z + run.col + k, point_stride);
  }
}

// grad_output_transform for a whole small plane (SmallPlane), lanes = tiles.
__attribute__((target("avx512f"))) void grad_output_transform_small(const float* gy, const SmallPlane& sp, float* z,
                                                                    int64_t point_stride) {
  __m512 v[4];  // [row * 2 + column] of each tile's 2x2 outputs
  pick_values(gy, sp.out_len, sp.gy, 4, v);
  const __m512 e[2] = {v[0], v[2]}, o[2] = {v[1], v[3]};
  grad_patches(e, o, first(sp.tiles), z, point_stride);
}

#pragma GCC diagnostic push
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"

// Packs rows [r0, r0 + rows) (rows <= 16) of a row-major matrix (leading
// dimension ld) over columns [0, cols) as k-major micro-panel data:
// dst[k * width + lane] = src[(r0 + lane) * ld + k], lanes >= rows zero, for
// width lanes (<= 16).  This turns the tile-contiguous transforms into the
// tile-major operands of the weight-gradient GEMM.
__attribute__((target("avx512f"))) void pack_transposed(const float* src, int64_t ld, int64_t rows, int64_t cols,
                                                        float* dst, int64_t width) {
  const __mmask16 wm = first(width);
  for (int64_t k0 = 0; k0 < cols; k0 += 16) {
    const __mmask16 cm = first(cols - k0);
    __m512 r[16];
    for (int i = 0; i < 16; ++i)  // masked-off rows read nothing (a zero mask never faults)
      r[i] = _mm512_maskz_loadu_ps(i < rows ? cm : __mmask16(0),
                                   src + std::min<int64_t>(i, std::max<int64_t>(rows - 1, 0)) * ld + k0);
    transpose16(r);
    for (int64_t k = 0; k < std::min<int64_t>(16, cols - k0); ++k)
      _mm512_mask_storeu_ps(dst + (k0 + k) * width, wm, r[k]);
  }
}

#pragma GCC diagnostic pop

#pragma GCC diagnostic push
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"

// gw[o][c] = G^T X G for the 4x4 sums X[point] = GW[point][o][c], with c as
// the vector lanes.
__attribute__((target("avx512f"))) void weight_output_transform(const float* gwt, int64_t point_stride, int64_t C,
                                                                int64_t o, float* gw) {
  const __m512 half = _mm512_set1_ps(0.5f);
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    const __mmask16 m = first(C - c0);
    __m512 y[3][4];
    for (int b = 0; b < 4; ++b) {
      __m512 x[4];
      for (int a = 0; a < 4; ++a) x[a] = _mm512_maskz_loadu_ps(m, gwt + (a * 4 + b) * point_stride + o * C + c0);
      const __m512 s = _mm512_mul_ps(half, _mm512_add_ps(x[1], x[2])),
                   d = _mm512_mul_ps(half, _mm512_sub_ps(x[1], x[2]));
      y[0][b] = _mm512_add_ps(x[0], s);
      y[1][b] = d;
      y[2][b] = _mm512_add_ps(s, x[3]);
    }
    __m512 r[16];  // r[tap] lane c, then transposed to r[c] lane tap: each kernel's 9 floats
    for (int i = 0; i < 3; ++i) {
      const __m512 s = _mm512_mul_ps(half, _mm512_add_ps(y[i][1], y[i][2]));
      r[i * 3 + 0] = _mm512_add_ps(y[i][0], s);
      r[i * 3 + 1] = _mm512_mul_ps(half, _mm512_sub_ps(y[i][1], y[i][2]));
      r[i * 3 + 2] = _mm512_add_ps(s, y[i][3]);
    }
    for (int k = 9; k < 16; ++k) r[k] = _mm512_setzero_ps();
    transpose16(r);
    float* dst = gw + (o * C + c0) * 9;
    for (int64_t l = 0; l < std::min<int64_t>(16, C - c0); ++l) _mm512_mask_storeu_ps(dst + l * 9, 0x1FF, r[l]);
  }
}

#pragma GCC diagnostic pop

}  // namespace

// Two schedules.  Blocked: each thread takes blocks of tiles and runs input
// transform, 16 GEMMs and output transform on one block while it is in L2; every
// block reads all of U.  Layered: all tiles' V first, then the 16 GEMMs split
// over threads (each point's U read once), then the output; V and M go through
// L3 or memory once.  Large maps with few channels favour the first, few tiles
// with many channels (7x7 layers: U is 16 MiB for 512 x 512) the second; the
// choice compares the bytes each would move.
__attribute__((target("avx512f"))) void winograd_f2x3_avx512(const float* x, const float* w, bool adjoint,
                                                             const float* bias, float* y, const WinogradGeom& g,
                                                             const Epilogue<float>& ep, PrepRef prep) {
  if (g.N == 0) return;
  thread_local Scratch su, sv_all, sm_all;
  const Plan plan = plan_for(g);
  const PackedU U = pack_u(w, adjoint, g.C, g.Cout, plan.layered, su, prep);
  const int64_t th = plan.th, tw = plan.tw, tiles = plan.tiles, nb = plan.nb, blocks = plan.blocks;
  const int64_t HWi = g.H * g.W, HWo = g.OH * g.OW;
  const int workers = workers_for(32.0 * g.C * g.Cout * tiles, blocks);

  if (!plan.layered) {
    const int64_t ld = (nb + 31) / 32 * 32, vstride = g.C * ld + kStagger, mstride = g.Cout * ld + kStagger;
    parallel_for(blocks, workers, [&](int64_t blk, int) {
      thread_local Scratch sv, sm, sr;
      const int64_t t0 = blk * nb, t1 = std::min(tiles, t0 + nb), cols = t1 - t0;
      float* V = sv.get(16 * vstride);
      float* M = sm.get(16 * mstride);
      float* rows = sr.get(plan.rows_len);
      const std::vector<Run> runs = runs_of(t0, t1, th, tw);
      for (int64_t point = 0; point < 16; ++point) zero_tail(V + point * vstride, g.C, ld, ld, cols);
      for (const Run& run : runs)
        for (int64_t c = 0; c < g.C; ++c)
          input_transform(x + (run.n * g.C + c) * HWi, g.H, g.W, g.pad_t, g.pad_l, run, rows, V + c * ld, vstride);
      for (int64_t point = 0; point < 16; ++point)
        point_gemm(U, point, V + point * vstride, M + point * mstride, ld, 0, cols);
      for (const Run& run : runs) {
        for (int64_t o = 0; o < g.Cout; ++o)
          output_transform(M + o * ld, mstride, run, bias ? bias[o] : 0.0f, y + (run.n * g.Cout + o) * HWo, g.OH, g.OW);
        if (ep.active()) finish_tile_rows(ep, y, run.n, g.Cout, g.OH, g.OW, run.ty, run.tx0, run.len);
      }
    });
    return;
  }

  // Layered: in batch chunks, so that V and M stay under kLayeredBytes
  // whatever the batch (the workspace must not grow with N).
  const int64_t per_image = plan.per_image, chunk = plan.chunk;
  const SmallPlane sp = small_plane(g, th, tw);
  const int64_t ld = (chunk * per_image + 31) / 32 * 32, vstride = g.C * ld + kStagger,
                mstride = g.Cout * ld + kStagger;
  float* V = sv_all.get(16 * vstride);
  float* M = sm_all.get(16 * mstride);
  const int t = get_num_threads();
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t images = std::min(chunk, g.N - n0), ctiles = images * per_image;
    const float* xc = x + n0 * g.C * HWi;
    float* yc = y + n0 * g.Cout * HWo;
    parallel_for(images * g.C, std::min<int64_t>(t, images * g.C), [&](int64_t plane, int) {
      thread_local Scratch sr;
      const int64_t n = plane / g.C, c = plane % g.C;
      if (sp.ok)
        input_transform_small(xc + plane * HWi, sp, V + c * ld + n * per_image, vstride);
      else
        input_transform_plane(xc + plane * HWi, g.H, g.W, g.pad_t, g.pad_l, th, tw, sr.get(plan.plane_len),
                              V + c * ld + n * per_image, vstride);
    });
    for (int64_t point = 0; point < 16; ++point) zero_tail(V + point * vstride, g.C, ld, ld, ctiles);
    // Column blocks keep a point's slice of V (C x block) within about half of L2.
    const int64_t jb = std::min(ld, std::max<int64_t>(kNR, (1 << 17) / g.C / kNR * kNR)), njb = (ld + jb - 1) / jb;
    parallel_for(16 * njb, std::min<int64_t>(t, 16 * njb), [&](int64_t item, int) {
      const int64_t point = item / njb, j0 = (item % njb) * jb;
      point_gemm(U, point, V + point * vstride, M + point * mstride, ld, j0, std::min(ctiles, j0 + jb));
    });
    parallel_for(images * g.Cout, std::min<int64_t>(t, images * g.Cout), [&](int64_t plane, int) {
      const int64_t n = plane / g.Cout, o = plane % g.Cout;
      if (sp.ok) {
        output_transform_small(M + o * ld + n * per_image, mstride, sp, bias ? bias[o] : 0.0f, yc + plane * HWo);
      } else {
        for (int64_t ty = 0; ty < th; ++ty)
          output_transform(M + o * ld, mstride, Run{n, ty, 0, tw, (n * th + ty) * tw}, bias ? bias[o] : 0.0f,
                           yc + plane * HWo, g.OH, g.OW);
      }
      if (ep.active()) ep.apply(y, (n0 * g.Cout + plane) * HWo, HWo);
    });
  }
}

}  // namespace fastconv

namespace fastconv {

// Weight gradient: for each of the 16 points, GW[point] (Cout x C) sums
// Z[point] V[point]^T over all tiles, with Z the transformed output gradient
// and V the transformed input; gw = G^T GW G.  Threads take blocks of tiles and
// keep their own GW sums (added at the end), the tiles' Z and V are packed
// tile-major (pack_transposed) and reduced on the shared micro-kernel.
__attribute__((target("avx512f"))) void winograd_f2x3_grad_weight_avx512(const float* x, const float* gy, float* gw,
                                                                         const WinogradGeom& g) {
  if (g.N == 0) return std::fill(gw, gw + g.Cout * g.C * 9, 0.0f);
  const int64_t C = g.C, Cout = g.Cout;
  const int64_t gstride = Cout * C + kStagger;
  const Plan plan = plan_for(g);
  const int64_t th = plan.th, tw = plan.tw, tiles = plan.tiles, nb = plan.nb, blocks = plan.blocks;
  const int workers = workers_for(32.0 * C * Cout * tiles, blocks);
  const int64_t HWi = g.H * g.W, HWo = g.OH * g.OW;
  const int64_t ld = (nb + 31) / 32 * 32, vstride = C * ld + kStagger, zstride = Cout * ld + kStagger;
  const int64_t o_panels = (Cout + kMR - 1) / kMR, c_panels = (C + kNR - 1) / kNR;
  // GW[point] += Z[point][:, cols] V[point][:, cols]^T over `cols` tile columns.
  auto reduce_point = [&](const float* Zp, int64_t zld, const float* Vp, int64_t vld, int64_t cols, float* G, float* Ap,
                          float* Bp, bool accumulate) {
    for (int64_t p = 0; p < o_panels; ++p)
      pack_transposed(Zp + p * kMR * zld, zld, std::min(kMR, Cout - p * kMR), cols, Ap + p * kMR * cols, kMR);
    for (int64_t q = 0; q < c_panels; ++q)
      for (int64_t h = 0; h < 2; ++h) {
        const int64_t c0 = q * kNR + h * 16;
        pack_transposed(Vp + std::min(c0, C - 1) * vld, vld, std::max<int64_t>(0, std::min<int64_t>(16, C - c0)), cols,
                        Bp + q * kNR * cols + h * 16, kNR);
      }
    for (int64_t p = 0; p < o_panels; ++p)
      for (int64_t q = 0; q < c_panels; ++q)
        sgemm_micro<12>(cols, Ap + p * kMR * cols, Bp + q * kNR * cols, kNR, G + p * kMR * C + q * kNR, C, accumulate,
                        std::min(kMR, Cout - p * kMR), std::min(kNR, C - q * kNR));
  };
  float* sum;
  std::vector<std::vector<float> > parts(workers);
  if (!plan.layered) {
    parallel_for(blocks, workers, [&](int64_t blk, int worker) {
      thread_local Scratch sv, sz, sr, sa, sb;
      auto& gwp = parts[worker];
      if (gwp.empty()) gwp.assign(16 * gstride, 0.0f);
      const int64_t t0 = blk * nb, t1 = std::min(tiles, t0 + nb), cols = t1 - t0;
      float* V = sv.get(16 * vstride);
      float* Z = sz.get(16 * zstride);
      float* rows = sr.get(plan.rows_len);
      float* Ap = sa.get(o_panels * kMR * cols);
      float* Bp = sb.get(c_panels * kNR * cols);
      for (const Run& run : runs_of(t0, t1, th, tw)) {
        for (int64_t c = 0; c < C; ++c)
          input_transform(x + (run.n * C + c) * HWi, g.H, g.W, g.pad_t, g.pad_l, run, rows, V + c * ld, vstride);
        for (int64_t o = 0; o < Cout; ++o)
          grad_output_transform(gy + (run.n * Cout + o) * HWo, g.OH, g.OW, run, Z + o * ld, zstride);
      }
      for (int64_t point = 0; point < 16; ++point)
        reduce_point(Z + point * zstride, ld, V + point * vstride, ld, cols, gwp.data() + point * gstride, Ap, Bp,
                     true);
    });
    sum = parts[0].data();
    for (int w = 1; w < workers; ++w)
      if (!parts[w].empty())
        for (int64_t i = 0; i < 16 * gstride; ++i) sum[i] += parts[w][i];
  } else {  // layered: every tile's V and Z, then the points split over threads
    thread_local Scratch sv_all, sz_all, sg;
    const int64_t per_image = plan.per_image, images = plan.chunk;
    const int64_t lda = (images * per_image + 31) / 32 * 32, va = C * lda + kStagger, za = Cout * lda + kStagger;
    float* V = sv_all.get(16 * va);
    float* Z = sz_all.get(16 * za);
    sum = sg.get(16 * gstride);
    // no zero fill: the first batch chunk's products are stored, later ones added
    const int t = get_num_threads();
    const SmallPlane sp = small_plane(g, th, tw);
    for (int64_t n0 = 0; n0 < g.N; n0 += images) {
      const int64_t nimg = std::min(images, g.N - n0), ctiles = nimg * per_image;
      parallel_for(nimg * (C + Cout), std::min<int64_t>(t, nimg * (C + Cout)), [&](int64_t item, int) {
        thread_local Scratch sr;
        const int64_t n = item / (C + Cout), ch = item % (C + Cout);
        if (ch < C) {
          if (sp.ok)
            input_transform_small(x + ((n0 + n) * C + ch) * HWi, sp, V + ch * lda + n * per_image, va);
          else
            input_transform_plane(x + ((n0 + n) * C + ch) * HWi, g.H, g.W, g.pad_t, g.pad_l, th, tw,
                                  sr.get(plan.plane_len), V + ch * lda + n * per_image, va);
          return;
        }
        if (sp.ok)
          return grad_output_transform_small(gy + ((n0 + n) * Cout + ch - C) * HWo, sp,
                                             Z + (ch - C) * lda + n * per_image, za);
        for (int64_t ty = 0; ty < th; ++ty)
          grad_output_transform(gy + ((n0 + n) * Cout + ch - C) * HWo, g.OH, g.OW,
                                Run{n, ty, 0, tw, (n * th + ty) * tw}, Z + (ch - C) * lda, za);
      });
      parallel_for(16, std::min(t, 16), [&](int64_t point, int) {
        thread_local Scratch sa, sb;
        const int64_t chunk = 256;
        float* Ap = sa.get(o_panels * kMR * chunk);
        float* Bp = sb.get(c_panels * kNR * chunk);
        for (int64_t j0 = 0; j0 < ctiles; j0 += chunk)
          reduce_point(Z + point * za + j0, lda, V + point * va + j0, lda, std::min(chunk, ctiles - j0),
                       sum + point * gstride, Ap, Bp, n0 > 0 || j0 > 0);
      });
    }
  }
  parallel_for(Cout, workers_for(64.0 * C * Cout, Cout),
               [&](int64_t o, int) { weight_output_transform(sum, gstride, C, o, gw); });
}

}  // namespace fastconv

#endif  // x86
