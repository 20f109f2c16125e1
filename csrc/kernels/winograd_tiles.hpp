// F(2x2, 3x3) Winograd transforms for one run of tiles, written once and
// compiled per level (included inside an ISA namespace by isa_kernels.cpp).
// The operator (csrc/winograd.cpp) blocks tiles, runs the 16 point GEMMs and
// threads; these do the adds.
//
// Contract, shared by the three transforms:
//   - A run is `len` consecutive 2x2 tiles of one tile row ty of one plane:
//     tile k covers outputs (2ty + a, 2(tx0 + k) + b), a, b in {0, 1}, and reads
//     the 4x4 input patch at rows 2ty - pad_t + i, columns 2(tx0 + k) - pad_l + j.
//   - Transformed values are laid out point-major: value p (0..15, p = 4a + b)
//     of tile k at out[p * point_stride + k].
//   - Positions outside the plane are zeros (padding, and the implied padding
//     after the input); nothing outside the plane is read, nothing outside the
//     run's outputs written.
//   - `scratch` holds at least 16 * (len + 32) floats; no alignment is assumed.
//   - The output transform reads whole vectors: in[p * point_stride + k] is
//     read for k < len + 15, so the caller keeps 16 floats of slack after the
//     last point's run.
// Vectorisation: rows are first split into even and odd columns, so every
// transform below runs over tiles in whole vectors of the level (vec.hpp);
// only the split (input) and the final interleave (output) are strided.
#pragma once

// Expects vec.hpp.

// Where a row's even and odd columns lie inside the plane: e[m] = x[2m + c0]
// is a real column for m in [elo, ehi), o[m] = x[2m + c0 + 1] for [olo, ohi);
// m < n.  The same for every row and channel of a run, so computed once.
struct SplitRange {
  int64_t elo, ehi, olo, ohi;
};

inline SplitRange split_range(int64_t W, int64_t c0, int64_t n) {
  auto range = [&](int64_t par, int64_t& lo, int64_t& hi) {
    const int64_t first = -(c0 + par);  // smallest m with c0 + 2m + par >= 0 is ceil(first / 2)
    lo = first <= 0 ? 0 : (first + 1) / 2;
    const int64_t last = W - 1 - c0 - par;  // largest m with c0 + 2m + par < W is floor(last / 2)
    hi = last < 0 ? 0 : last / 2 + 1;
    lo = imin(lo, n);
    hi = imin(hi, n);
    if (hi < lo) hi = lo;
  };
  SplitRange r;
  range(0, r.elo, r.ehi);
  range(1, r.olo, r.ohi);
  return r;
}

// e[m] = x[2m + c0], o[m] = x[2m + c0 + 1] for m < S (a multiple of the vector
// width), zero where the column lies outside the plane or the row is absent
// (x null).  Zero vectors first, then the strided copy inside (vectorised
// with permutes).
inline void winograd_split(const float* x, int64_t c0, const SplitRange& r, int64_t S, float* e, float* o) {
  constexpr int64_t V = kLanes<float>;
  const Vec<float> zero{};
  for (int64_t m = 0; m < S; m += V) {
    store(e + m, zero), store(o + m, zero);
    // An empty asm keeps GCC from turning the loop into two memset calls: on
    // rows of a few vectors their call overhead cost 4% of a 32 -> 32 channel
    // 16x16 backward at avx2 (measured old/new builds, 8.77 / 8.41 ms).
    __asm__ volatile("");
  }
  if (!x) return;
  const float* src = x + c0 + 2 * r.elo;
  for (int64_t m = 0; m < r.ehi - r.elo; ++m) e[r.elo + m] = src[2 * m];
  src = x + c0 + 2 * r.olo + 1;
  for (int64_t m = 0; m < r.ohi - r.olo; ++m) o[r.olo + m] = src[2 * m];
}

// Each transform works in whole vectors of the level: its scratch rows are
// winograd_row(len) floats, and `scratch` (16 * (len + 32) floats, the contract's
// size, enough for 16 rows at every level since kLanes<float> <= 16) holds them.
// Lanes past the run compute on real or zero data and are never stored.
inline int64_t winograd_row(int64_t len) {
  constexpr int64_t V = kLanes<float>;
  static_assert(V <= 16, "scratch rows assume at most 16 float lanes");
  return (len + V - 1) / V * V + V;
}

// V = B^T d B for the run's tiles of `channels` channel planes (H x W each,
// x_cstride apart); channel c's values go to out + c * out_cstride.
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
inline void winograd_input_run(const float* x, int64_t channels, int64_t x_cstride, int64_t H, int64_t W, int64_t pad_t,
                               int64_t pad_l, int64_t ty, int64_t tx0, int64_t len, float* out, int64_t out_cstride,
                               int64_t point_stride, float* scratch) {
  constexpr int64_t V = kLanes<float>;
  const int64_t S = winograd_row(len);  // > len: column k + 1 of every lane is in the row
  const int64_t c0 = 2 * tx0 - pad_l;
  const SplitRange range = split_range(W, c0, len + 1);
  float *e[4], *o[4];
  for (int i = 0; i < 4; ++i) e[i] = scratch + (2 * i) * S, o[i] = scratch + (2 * i + 1) * S;
  for (int64_t ch = 0; ch < channels; ++ch) {
    const float* xc = x + ch * x_cstride;
    for (int i = 0; i < 4; ++i) {
      const int64_t iy = 2 * ty - pad_t + i;
      winograd_split(iy >= 0 && iy < H ? xc + iy * W : nullptr, c0, range, S, e[i], o[i]);
    }
    float* v[16];
    for (int p = 0; p < 16; ++p) v[p] = out + ch * out_cstride + p * point_stride;
    for (int64_t k = 0, r = 0; k < len; k += V, ++r) {
      // Vertical (B^T d) on even and odd columns at k and k + 1: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3.
      Vec<float> E[4], E1[4], O[4], O1[4];
      {
        Vec<float> de[4], de1[4], dob[4], do1[4];
        for (int i = 0; i < 4; ++i) {
          de[i] = load(e[i] + k), de1[i] = load(e[i] + k + 1);
          dob[i] = load(o[i] + k), do1[i] = load(o[i] + k + 1);
        }
        auto vert = [](const Vec<float>* d, Vec<float>* q) {
          q[0] = d[0] - d[2], q[1] = d[1] + d[2], q[2] = d[2] - d[1], q[3] = d[1] - d[3];
        };
        vert(de, E), vert(de1, E1), vert(dob, O), vert(do1, O1);
      }
      // Horizontal: columns (c0 - c2, c1 + c2, c2 - c1, c1 - c3) of tile k are
      // (e[k] - e[k+1], o[k] + e[k+1], e[k+1] - o[k], o[k] - o[k+1]).
      for (int a = 0; a < 4; ++a) {
        store_vec(v[4 * a + 0], E[a] - E1[a], r, len);
        store_vec(v[4 * a + 1], O[a] + E1[a], r, len);
        store_vec(v[4 * a + 2], E1[a] - O[a], r, len);
        store_vec(v[4 * a + 3], O[a] - O1[a], r, len);
      }
    }
  }
}

// One output channel's run: y = A^T m A + bias, m[p] = in[p * point_stride + k];
// A^T = [1 1 1 0; 0 1 -1 -1].  y is the channel's OH x OW plane.  Reads whole
// vectors: in[p * point_stride + k] must be readable for k < len + kLanes - 1
// (the operator keeps 16 floats of slack after its product buffers).
inline void winograd_output_run(const float* in, int64_t point_stride, int64_t ty, int64_t tx0, int64_t len, float bias,
                                float* y, int64_t OH, int64_t OW, float* scratch) {
  constexpr int64_t V = kLanes<float>;
  const int64_t S = winograd_row(len);
  float* yr[2][2] = {{scratch, scratch + S}, {scratch + 2 * S, scratch + 3 * S}};  // [row][even/odd column]
  const Vec<float> b = broadcast(bias);
  for (int64_t k = 0; k < len; k += V) {
    Vec<float> q[2][4];  // rows of A^T m: m0j + m1j + m2j and m1j - m2j - m3j (m_ij = point 4i + j)
    for (int j = 0; j < 4; ++j) {
      const Vec<float> m0 = load(in + j * point_stride + k), m1 = load(in + (4 + j) * point_stride + k);
      const Vec<float> m2 = load(in + (8 + j) * point_stride + k), m3 = load(in + (12 + j) * point_stride + k);
      q[0][j] = m0 + m1 + m2;
      q[1][j] = m1 - m2 - m3;
    }
    for (int r = 0; r < 2; ++r) {
      store(yr[r][0] + k, q[r][0] + q[r][1] + q[r][2] + b);
      store(yr[r][1] + k, q[r][1] - q[r][2] - q[r][3] + b);
    }
  }
  for (int r = 0; r < 2; ++r) {
    const int64_t oy = 2 * ty + r;
    if (oy >= OH) break;
    const float *y0 = yr[r][0], *y1 = yr[r][1];
    float* row = y + oy * OW + 2 * tx0;
    const int64_t pairs = imin(len, (OW - 2 * tx0) / 2);
    for (int64_t k = 0; k < pairs; ++k) {
      row[2 * k] = y0[k];
      row[2 * k + 1] = y1[k];
    }
    if (pairs < len && 2 * (tx0 + pairs) < OW) row[2 * pairs] = y0[pairs];
  }
}

// The weight gradient's output-side transform: Z = A g A^T of each tile's 2x2
// output gradient g (zeros outside OH x OW), for one output channel's plane gy.
// A g A^T rows: (g0, g0 + g1, g0 - g1, -g1) of the columns, likewise across.
inline void winograd_grad_run(const float* gy, int64_t OH, int64_t OW, int64_t ty, int64_t tx0, int64_t len, float* out,
                              int64_t point_stride, float* scratch) {
  constexpr int64_t V = kLanes<float>;
  const int64_t S = winograd_row(len);
  float *e0 = scratch, *o0 = scratch + S, *e1 = scratch + 2 * S, *o1 = scratch + 3 * S;
  const SplitRange range = split_range(OW, 2 * tx0, len);
  winograd_split(2 * ty < OH ? gy + 2 * ty * OW : nullptr, 2 * tx0, range, S, e0, o0);
  winograd_split(2 * ty + 1 < OH ? gy + (2 * ty + 1) * OW : nullptr, 2 * tx0, range, S, e1, o1);
  for (int64_t k = 0, r = 0; k < len; k += V, ++r) {
    const Vec<float> g0e = load(e0 + k), g0o = load(o0 + k), g1e = load(e1 + k), g1o = load(o1 + k);
    // h_a = A row a applied down the tile's two rows: (r0, r0 + r1, r0 - r1, -r1).
    const Vec<float> he[4] = {g0e, g0e + g1e, g0e - g1e, -g1e};
    const Vec<float> ho[4] = {g0o, g0o + g1o, g0o - g1o, -g1o};
    for (int a = 0; a < 4; ++a) {
      store_vec(out + (4 * a + 0) * point_stride, he[a], r, len);
      store_vec(out + (4 * a + 1) * point_stride, he[a] + ho[a], r, len);
      store_vec(out + (4 * a + 2) * point_stride, he[a] - ho[a], r, len);
      store_vec(out + (4 * a + 3) * point_stride, -ho[a], r, len);
    }
  }
}

// U = G g G^T for a run of n kernels already laid out tap-major: tap t of
// kernel j at taps[t * tap_stride + j], U[p] of kernel j at
// out[p * point_stride + j].  G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
// The operator gathers (and, for the adjoint, rotates) the taps, so that the
// run can be any order of kernels its GEMM wants, such as a packed panel's.
// Reads whole vectors: taps[t * tap_stride + j] for j < n rounded up to the
// vector width, so tap_stride is at least that and those floats are readable.
inline void winograd_weight_run(const float* taps, int64_t tap_stride, int64_t n, float* out, int64_t point_stride) {
  constexpr int64_t V = kLanes<float>;
  const Vec<float> half = broadcast(0.5f);
  for (int64_t j = 0, r = 0; j < n; j += V, ++r) {
    Vec<float> t[4][3];  // G g
    for (int i = 0; i < 3; ++i) {
      const Vec<float> g0 = load(taps + i * tap_stride + j), g1 = load(taps + (3 + i) * tap_stride + j);
      const Vec<float> g2 = load(taps + (6 + i) * tap_stride + j);
      t[0][i] = g0;
      t[1][i] = half * (g0 + g1 + g2);
      t[2][i] = half * (g0 - g1 + g2);
      t[3][i] = g2;
    }
    for (int a = 0; a < 4; ++a) {
      store_vec(out + (4 * a + 0) * point_stride, t[a][0], r, n);
      store_vec(out + (4 * a + 1) * point_stride, half * (t[a][0] + t[a][1] + t[a][2]), r, n);
      store_vec(out + (4 * a + 2) * point_stride, half * (t[a][0] - t[a][1] + t[a][2]), r, n);
      store_vec(out + (4 * a + 3) * point_stride, t[a][2], r, n);
    }
  }
}

// The weight gradient's last step for a row of n kernels: taps of kernel j at
// gw[9 j + 3 i + c] = (G^T D_j G)[i][c], D_j's point p at d[p * point_stride + j]
// (the point GEMMs' sums, kernels contiguous within a point).  Vectors over
// kernels; each vector's nine tap rows are interleaved through a small buffer.
template <class X>
inline void winograd_gw_taps(const X* d, X* f) {
  X e[3][4];  // G^T d: rows (d0 + (d1 + d2) / 2, (d1 - d2) / 2, (d1 + d2) / 2 + d3)
  for (int b = 0; b < 4; ++b) {
    const X s = 0.5f * (d[4 + b] + d[8 + b]), t = 0.5f * (d[4 + b] - d[8 + b]);
    e[0][b] = d[b] + s, e[1][b] = t, e[2][b] = s + d[12 + b];
  }
  for (int i = 0; i < 3; ++i) {  // then G on the right, the same combination across
    const X s = 0.5f * (e[i][1] + e[i][2]);
    f[3 * i] = e[i][0] + s, f[3 * i + 1] = 0.5f * (e[i][1] - e[i][2]), f[3 * i + 2] = s + e[i][3];
  }
}

inline void winograd_weight_grad_run(const float* d, int64_t point_stride, int64_t n, float* gw) {
  constexpr int64_t V = kLanes<float>;
  int64_t j = 0;
  for (; j + V <= n; j += V) {
    Vec<float> dv[16], f[9];
    for (int p = 0; p < 16; ++p) dv[p] = load(d + p * point_stride + j);
    winograd_gw_taps(dv, f);
    float lanes[9][V];
    for (int t = 0; t < 9; ++t) store(lanes[t], f[t]);
    for (int64_t l = 0; l < V; ++l)
      for (int t = 0; t < 9; ++t) gw[(j + l) * 9 + t] = lanes[t][l];
  }
  for (; j < n; ++j) {
    float ds[16], f[9];
    for (int p = 0; p < 16; ++p) ds[p] = d[p * point_stride + j];
    winograd_gw_taps(ds, f);
    for (int t = 0; t < 9; ++t) gw[j * 9 + t] = f[t];
  }
}
