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
//   - `scratch` holds at least 16 * (len + 1) floats; no alignment is assumed.
// Vectorisation: rows are first split into even and odd columns, so every
// transform below is a set of unit-stride loops over tiles, which the
// compiler turns into vector code for the level; only the split (input) and
// the final interleave (output) are strided.
#pragma once

// Expects vec.hpp.

// e[m] = x[2m + c0], o[m] = x[2m + c0 + 1] for m < n, zero where the column lies
// outside [0, W) or the row is absent (x null).
inline void winograd_split(const float* x, int64_t W, int64_t c0, int64_t n, float* e, float* o) {
  // m with c0 + 2m + par in [0, W): [lo, hi) for par 0 (e) and 1 (o); zeros around, a branch-free strided
  // copy inside (vectorised with permutes).
  auto range = [&](int64_t par, int64_t& lo, int64_t& hi) {
    const int64_t first = -(c0 + par);  // smallest m with c0 + 2m + par >= 0 is ceil(first / 2)
    lo = first <= 0 ? 0 : (first + 1) / 2;
    const int64_t last = W - 1 - c0 - par;  // largest m with c0 + 2m + par < W is floor(last / 2)
    hi = last < 0 ? 0 : last / 2 + 1;
    if (!x) lo = hi = 0;
    lo = imin(lo, n);
    hi = imin(hi, n);
    if (hi < lo) hi = lo;
  };
  int64_t elo, ehi, olo, ohi;
  range(0, elo, ehi);
  range(1, olo, ohi);
  for (int64_t m = 0; m < elo; ++m) e[m] = 0.0f;
  for (int64_t m = ehi; m < n; ++m) e[m] = 0.0f;
  for (int64_t m = 0; m < olo; ++m) o[m] = 0.0f;
  for (int64_t m = ohi; m < n; ++m) o[m] = 0.0f;
  if (ehi > elo) {
    const float* src = x + c0 + 2 * elo;
    float* dst = e + elo;
    for (int64_t m = 0; m < ehi - elo; ++m) dst[m] = src[2 * m];
  }
  if (ohi > olo) {
    const float* src = x + c0 + 2 * olo + 1;
    float* dst = o + olo;
    for (int64_t m = 0; m < ohi - olo; ++m) dst[m] = src[2 * m];
  }
}

// V = B^T d B for the run's tiles of one channel plane x (H x W).
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
inline void winograd_input_run(const float* x, int64_t H, int64_t W, int64_t pad_t, int64_t pad_l, int64_t ty,
                               int64_t tx0, int64_t len, float* out, int64_t point_stride, float* scratch) {
  const int64_t n = len + 1;
  float *e[4], *o[4], *re[4], *ro[4];
  for (int i = 0; i < 4; ++i) {
    e[i] = scratch + (2 * i) * n;
    o[i] = scratch + (2 * i + 1) * n;
    re[i] = scratch + (8 + 2 * i) * n;
    ro[i] = scratch + (9 + 2 * i) * n;
    const int64_t iy = 2 * ty - pad_t + i;
    winograd_split(iy >= 0 && iy < H ? x + iy * W : nullptr, W, 2 * tx0 - pad_l, n, e[i], o[i]);
  }
  // Vertical (B^T d): r0 = d0 - d2, r1 = d1 + d2, r2 = d2 - d1, r3 = d1 - d3, on even and odd columns.
  for (int64_t m = 0; m < n; ++m) {
    re[0][m] = e[0][m] - e[2][m], ro[0][m] = o[0][m] - o[2][m];
    re[1][m] = e[1][m] + e[2][m], ro[1][m] = o[1][m] + o[2][m];
    re[2][m] = e[2][m] - e[1][m], ro[2][m] = o[2][m] - o[1][m];
    re[3][m] = e[1][m] - e[3][m], ro[3][m] = o[1][m] - o[3][m];
  }
  // Horizontal on each r: columns (c0 - c2, c1 + c2, c2 - c1, c1 - c3) of tile k are
  // (e[k] - e[k+1], o[k] + e[k+1], e[k+1] - o[k], o[k] - o[k+1]).
  for (int a = 0; a < 4; ++a) {
    const float *E = re[a], *O = ro[a];
    float* v0 = out + (4 * a + 0) * point_stride;
    float* v1 = out + (4 * a + 1) * point_stride;
    float* v2 = out + (4 * a + 2) * point_stride;
    float* v3 = out + (4 * a + 3) * point_stride;
    for (int64_t k = 0; k < len; ++k) {
      v0[k] = E[k] - E[k + 1];
      v1[k] = O[k] + E[k + 1];
      v2[k] = E[k + 1] - O[k];
      v3[k] = O[k] - O[k + 1];
    }
  }
}

// One output channel's run: y = A^T m A + bias, m[p] = in[p * point_stride + k];
// A^T = [1 1 1 0; 0 1 -1 -1].  y is the channel's OH x OW plane.
inline void winograd_output_run(const float* in, int64_t point_stride, int64_t ty, int64_t tx0, int64_t len, float bias,
                                float* y, int64_t OH, int64_t OW, float* scratch) {
  float* y0 = scratch;        // even output columns of the row being written
  float* y1 = scratch + len;  // odd ones
  for (int r = 0; r < 2; ++r) {
    const int64_t oy = 2 * ty + r;
    if (oy >= OH) break;
    // q_j = row r of A^T m: r = 0: m0j + m1j + m2j, r = 1: m1j - m2j - m3j (m_ij = point 4i + j).
    const float* m0 = in;
    const float* m1 = in + 4 * point_stride;
    const float* m2 = in + 8 * point_stride;
    const float* m3 = in + 12 * point_stride;
    for (int64_t k = 0; k < len; ++k) {
      float q[4];
      for (int j = 0; j < 4; ++j) {
        const int64_t at = j * point_stride + k;
        q[j] = r == 0 ? m0[at] + m1[at] + m2[at] : m1[at] - m2[at] - m3[at];
      }
      y0[k] = q[0] + q[1] + q[2] + bias;
      y1[k] = q[1] - q[2] - q[3] + bias;
    }
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
  float *e0 = scratch, *o0 = scratch + len, *e1 = scratch + 2 * len, *o1 = scratch + 3 * len;
  winograd_split(2 * ty < OH ? gy + 2 * ty * OW : nullptr, OW, 2 * tx0, len, e0, o0);
  winograd_split(2 * ty + 1 < OH ? gy + (2 * ty + 1) * OW : nullptr, OW, 2 * tx0, len, e1, o1);
  for (int a = 0; a < 4; ++a) {
    // h_a = A row a applied down the tile's two rows: (r0, r0 + r1, r0 - r1, -r1).
    const float c0 = a == 3 ? 0.0f : 1.0f, c1 = a == 0 ? 0.0f : a == 1 ? 1.0f : -1.0f;
    float* z0 = out + (4 * a + 0) * point_stride;
    float* z1 = out + (4 * a + 1) * point_stride;
    float* z2 = out + (4 * a + 2) * point_stride;
    float* z3 = out + (4 * a + 3) * point_stride;
    for (int64_t k = 0; k < len; ++k) {
      const float he = c0 * e0[k] + c1 * e1[k], ho = c0 * o0[k] + c1 * o1[k];
      z0[k] = he;
      z1[k] = he + ho;
      z2[k] = he - ho;
      z3[k] = -ho;
    }
  }
}

// U = G g G^T for the kernels of one output channel and C input channels:
// kernel c's tap t at k[c * c_stride + t] (rotated by 180 degrees when
// `rotate`, for the adjoint), U[p] at out[p * point_stride + c].
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].  The taps are first copied
// tap-major into scratch (9 * C floats), so the transform runs over channels
// with unit strides.
inline void winograd_weight_run(const float* k, int64_t c_stride, bool rotate, int64_t C, float* out,
                                int64_t point_stride, float* scratch) {
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < 9; ++t) scratch[t * C + c] = k[c * c_stride + (rotate ? 8 - t : t)];
  const float* g[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) g[i][j] = scratch + (i * 3 + j) * C;
  for (int64_t c = 0; c < C; ++c) {
    float t[4][3];  // G g
    for (int j = 0; j < 3; ++j) {
      const float g0 = g[0][j][c], g1 = g[1][j][c], g2 = g[2][j][c];
      t[0][j] = g0;
      t[1][j] = 0.5f * (g0 + g1 + g2);
      t[2][j] = 0.5f * (g0 - g1 + g2);
      t[3][j] = g2;
    }
    for (int a = 0; a < 4; ++a) {
      out[(4 * a + 0) * point_stride + c] = t[a][0];
      out[(4 * a + 1) * point_stride + c] = 0.5f * (t[a][0] + t[a][1] + t[a][2]);
      out[(4 * a + 2) * point_stride + c] = 0.5f * (t[a][0] - t[a][1] + t[a][2]);
      out[(4 * a + 3) * point_stride + c] = t[a][2];
    }
  }
}
