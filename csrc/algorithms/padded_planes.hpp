// What the direct kernels, the implicit GEMM and the strided input gradient share: the zero-padded input
// planes split into column (and row) phases that let every tap of a run of output positions be one unit-stride
// vector load, the per-thread buffers kept between calls, and small arithmetic.  Internal to algorithms/.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/conv_geom.hpp"
#include "core/geometry.hpp"
#include "kernels/table.hpp"

namespace fastconv::detail {

// The phase buffer pads every padded row with kDirectChains vectors per column phase,
// so its size grows with the column stride: beyond 8, im2col is the better tool.
constexpr int64_t kMaxDirectColumnStride = 8;

inline int64_t pow2_at_least(int64_t n, int64_t cap) {
  int64_t p = 1;
  while (p < cap && p < n) p *= 2;
  return p;
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

inline double direct_flops(const ConvGeom& g) { return 2.0 * g.N * g.Cout * g.OH * g.OW * g.kh * g.kw; }

// n values from src to dst in fixed-size moves: std::copy is a library memmove call, and on 7x7 maps the calls
// (one per row of each plane) took an eighth of a depthwise layer's time.
template <class T>
inline void copy_row(const T* src, int64_t n, T* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) std::memcpy(dst + i, src + i, 8 * sizeof(T));
  if (n - i >= 4) std::memcpy(dst + i, src + i, 4 * sizeof(T)), i += 4;
  if (n - i >= 2) std::memcpy(dst + i, src + i, 2 * sizeof(T)), i += 2;
  if (n - i >= 1) dst[i] = src[i];
}

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
        copy_row(src, end, plane + row_at(rho, 0) + g.pl);
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

// Per-thread buffers kept between calls: fresh vectors per call and worker
// cost page faults and zero fills on every call (the weight gradient of a
// 3 -> 64 channel 32x32 image: half its time).  n values of slot `slot`, zeroed
// when `zero`.
template <class T>
inline T* thread_buffer(int slot, int64_t n, bool zero) {
  thread_local std::vector<T> bufs[2];
  std::vector<T>& b = bufs[slot];
  if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
  if (zero) std::fill(b.begin(), b.begin() + n, T(0));
  return b.data();
}

}  // namespace fastconv::detail
