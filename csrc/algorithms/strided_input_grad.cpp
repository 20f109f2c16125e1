// A strided layer's input gradient as sh x sw sub-pixel phases, each a stride-1 GEMM on the implicit GEMM's
// channel-vector tiles (gemm_packed_channels) summing only the taps that meet it.
#include "algorithms/strided_input_grad.hpp"

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
#include "runtime/parallel.hpp"

namespace fastconv {

using namespace detail;

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
         chan_vectors_full(Cg, k) && double(Cog) * double(ph.plane()) * double(elem_bytes) <= kChanMaxInputBytes;
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

#define FASTCONV_INSTANTIATE(T) template void strided_input_grad<T>(const T*, const T*, T*, const ConvGeom&, PrepRef);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
