// Direct convolution for one input channel per group (depthwise layers, grey-scale first layers): the forward
// and both gradients as sums over taps of unit-stride vector loads from padded planes (padded_planes.hpp), on the
// direct tiles of the dispatch table (kernels/direct_tiles.hpp).
#include "algorithms/direct.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "algorithms/padded_planes.hpp"
#include "kernels/table.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

using namespace detail;

bool use_direct(const ConvGeom& g) { return g.C / g.groups == 1 && g.sw <= kMaxDirectColumnStride; }

std::string direct_kernel_name() {
  const KernelTable& k = kernels();
  return std::string(k.level) + " (" + k.isa + ", " + std::to_string(k.f32.lanes * 32) + "-bit vectors)";
}

namespace {

// workers_for's threshold is in GEMM flops; the direct kernels do a tenth of a GEMM's multiply-adds per second
// (one weight per tap, a plane's fill and stores per channel), so their flops count ten times: a depthwise
// 960-channel layer at 7x7 (0.85 MFLOP, a tenth of a millisecond) ran on one thread of two at batch 1.
constexpr double kDirectWorkScale = 10;

// Everything about the input gradient's gathers that is the same for every
// plane: per input row ih and phase r the (gy offset, tap) pairs, one list
// after another (pairs of (ih, r) start at first[ih * sw + r]), and per phase
// its positions [qlo, qhi) and block function.  Built once per call: the
// divisions it needs would cost more than a row's arithmetic.
template <class T>
struct Gathers {
  std::vector<int64_t> first, offs, tap, qlo, qhi;
  std::vector<int64_t> span;
  std::vector<DirectInputBlock<T>> block;

  Gathers() = default;
  Gathers(const ConvGeom& g, int64_t ldg, int64_t margin, const LevelKernels<T>& k) {
    const int64_t V = k.lanes;
    const int64_t Cog = g.Cout / g.groups;
    for (int64_t r = 0; r < g.sw; ++r) {
      // padded columns c = r + sw*q inside [pl, pl + W)
      const int64_t lo = g.pl > r ? (g.pl - r + g.sw - 1) / g.sw : 0, end = g.pl + g.W - r;
      const int64_t hi = end > 0 ? (end + g.sw - 1) / g.sw : 0;
      const int64_t rc = pow2_at_least((hi - lo + V - 1) / V, kDirectChains);
      qlo.push_back(lo);
      qhi.push_back(hi);
      span.push_back(rc * V);
      block.push_back(k.direct_input_block(rc, Cog));
    }
    for (int64_t ih = 0; ih < g.H; ++ih)
      for (int64_t r = 0; r < g.sw; ++r) {
        first.push_back(static_cast<int64_t>(offs.size()));
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t d = ih + g.pt - i * g.dh;
          if (d < 0 || d % g.sh != 0 || d / g.sh >= g.OH) continue;
          for (int64_t j = 0; j < g.kw; ++j)
            if ((j * g.dw) % g.sw == r) {
              offs.push_back((d / g.sh) * ldg + margin - (j * g.dw) / g.sw);
              tap.push_back(i * g.kw + j);
            }
        }
      }
    first.push_back(static_cast<int64_t>(offs.size()));
  }
};

template <class T>
void input_group(const T* gyb, int64_t plane, const Gathers<T>& ga, const ConvGeom& g, const T* w, T* gx) {
  const int64_t Cog = g.Cout / g.groups, taps = g.kh * g.kw;
  for (int64_t ih = 0; ih < g.H; ++ih)
    for (int64_t r = 0; r < g.sw; ++r) {
      const int64_t k = ih * g.sw + r, p0 = ga.first[k], pairs = ga.first[k + 1] - p0, span = ga.span[r];
      T* dst = gx + ih * g.W + r - g.pl;  // padded column c = r + sw*q is gx column c - pl
      for (int64_t q0 = ga.qlo[r]; q0 < ga.qhi[r]; q0 += span)
        ga.block[r](gyb + q0, plane, ga.offs.data() + p0, ga.tap.data() + p0, pairs, w, taps, Cog, dst + g.sw * q0,
                    std::min(span, ga.qhi[r] - q0), g.sw);
    }
}

// Per worker: the input's phase buffer and the gy copy.
template <class T>
struct Scratch {
  std::vector<T> buf, gyb;
};

// Depthwise layers (one input and one output channel per group) whose output rows are at most two vectors wide
// take the channels in the vectors (direct_forward_chanvec): the row blocks fill one or two vectors a row, and
// each plane's fill and setup outweighs its few taps.  Channels against row blocks, 3x3, 2 threads (one process,
// taking turns): avx2 float32 (8 lanes), depthwise 960 channels at 7x7 batch 1 1.21-1.41x, batch 8 1.26-1.71x;
// 576 at 14x14 stride 2, batch 1 1.30-1.56x, batch 8 1.47-1.77x; 384 at 14x14 batch 8 1.06-1.21x, 192 at 28x28
// stride 2 (14-wide rows) 1.18x; 5x5 40 channels at 13x13 1.24-1.36x, 7x7/2 at 9x9 1.32x; but 192 at 28x28
// (28-wide rows) 0.99x and 144 at 56x56 0.91x.  Four lanes (float64 at avx2, float32 at SSE2): 7-wide rows
// 1.10-1.33x, 14-wide 0.89-1.03x.  AVX-512 (16 lanes, rows up to 32; Zen 4, batch 1 unless said): 192 at 28x28
// 1.19x (batch 8 1.28x), at 28x28 stride 2 1.74x, 384 at 14x14 1.37x, 960 at 7x7 1.90x, 144 at 56x56 stride 2
// (28-wide rows) 1.09x (batch 8 1.52x); 144 at 56x56 (56-wide) 0.94x.  The interleaved input of a block of
// channels must stay within L2.
constexpr int64_t kChanvecMaxVectors = 2;
constexpr double kChanvecMaxBytes = 256 << 10;

bool chanvec_suits(const ConvGeom& g, int64_t lanes, int64_t elem_bytes) {
  if (g.groups != g.C || g.Cout != g.C || g.pt < 0 || g.pb < 0 || g.pl < 0 || g.pr < 0) return false;
  const double bytes = double(g.pt + g.H + g.pb) * double(g.pl + g.W + g.pr) * double(lanes) * double(elem_bytes);
  if (bytes > kChanvecMaxBytes) return false;
  if (const char* v = std::getenv("FASTCONV_DIRECT_VECTORS")) {
    if (std::strcmp(v, "channels") == 0) return true;
    if (std::strcmp(v, "positions") == 0) return false;
  }
  return g.OW <= kChanvecMaxVectors * lanes;
}

template <class T>
void chanvec_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep) {
  const LevelKernels<T>& k = kernels_for<T>();
  const int64_t V = k.lanes, C = g.C, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t blocks = (C + V - 1) / V, Wp = g.pl + g.W + g.pr;
  const int64_t vals = checked_mul(checked_mul(g.pt + g.H + g.pb, Wp, "direct workspace"), V, "direct workspace");
  // The weights (and biases) of each block of V channels interleaved, lanes past the last channel zero.
  std::vector<T> wv(static_cast<size_t>(checked_mul(checked_mul(blocks, taps, "direct weights"), V, "direct weights")),
                    T(0));
  std::vector<T> bv(b ? static_cast<size_t>(blocks * V) : 0, T(0));
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t < taps; ++t) wv[(c / V * taps + t) * V + c % V] = w[c * taps + t];
    if (b) bv[c] = b[c];
  }
  std::vector<int64_t> offs;
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) offs.push_back((i * g.dh * Wp + j * g.dw) * V);
  const int workers = workers_for(kDirectWorkScale * direct_flops(g), g.N * blocks);
  parallel_for(g.N * blocks, workers, [&](int64_t item, int) {
    const int64_t n = item / blocks, c0 = item % blocks * V, nc = std::min(V, C - c0);
    T* const buf = thread_buffer<T>(0, vals, false);
    k.direct_forward_chanvec(x + (n * C + c0) * HW, HW, nc, wv.data() + c0 * taps, b ? bv.data() + c0 : nullptr,
                             offs.data(), y + (n * C + c0) * P, g, buf);
    if (ep.active()) ep.apply(y, (n * C + c0) * P, nc * P);
  });
}

}  // namespace

bool direct_channel_vectors(const ConvGeom& g, int64_t elem_bytes) {
  return chanvec_suits(g, elem_bytes == 4 ? kernels_for<float>().lanes : kernels_for<double>().lanes, elem_bytes);
}

template <class T>
void direct_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep) {
  if (g.N > 0 && direct_channel_vectors(g, sizeof(T))) return chanvec_forward(x, w, b, y, g, ep);
  const int64_t G = g.groups, Cog = g.Cout / G, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  const LevelKernels<T>& k = kernels_for<T>();
  const Phases<T> ph(g, k.lanes);
  const DirectPlane plane = ph.plane(g);
  const int workers = workers_for(kDirectWorkScale * direct_flops(g), g.N * G);
  std::vector<std::vector<T>> bufs(workers);
  parallel_for(g.N * G, workers, [&](int64_t item, int wk) {
    const int64_t n = item / G, gi = item % G;
    ph.fill(x + (n * g.C + gi) * HW, g, bufs[wk]);
    k.direct_forward_group(bufs[wk].data(), plane, g, w + gi * Cog * taps, b ? b + gi * Cog : nullptr,
                           y + (n * g.Cout + gi * Cog) * P);
    if (ep.active()) ep.apply(y, (n * g.Cout + gi * Cog) * P, Cog * P);
  });
}

template <class T>
void direct_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, const ConvGeom& g) {
  const LevelKernels<T>& k = kernels_for<T>();
  const int64_t V = k.lanes;
  const int64_t G = g.groups, Cog = g.Cout / G, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  if (gw) std::fill(gw, gw + g.Cout * taps, T(0));
  if (g.N == 0 || (!gx && !gw)) return;
  const Phases<T> ph(g, V);
  const DirectPlane plane = ph.plane(g);
  // gy copies: a zero margin before each row for the input gradient's
  // gathers, and zeros after it up to the longest block any kernel reads.
  const int64_t margin = ((g.kw - 1) * g.dw) / g.sw;
  const int64_t qmax = (g.pl + g.W + g.sw - 1) / g.sw;
  const int64_t ldg = margin + std::max(round_up(g.OW, 2 * V), qmax + kDirectChains * V);
  const int64_t gy_plane = checked_mul(g.OH, ldg, "direct workspace");
  checked_mul(gy_plane, Cog, "direct workspace");
  const int workers = workers_for(kDirectWorkScale * 2 * direct_flops(g), g.N * G);
  const Gathers<T> gathers = gx ? Gathers<T>(g, ldg, margin, k) : Gathers<T>();
  std::vector<Scratch<T>> scratch(workers);
  std::vector<std::vector<T>> gw_part(gw ? workers : 0);
  parallel_for(g.N * G, workers, [&](int64_t item, int wk) {
    Scratch<T>& s = scratch[wk];
    const int64_t n = item / G, gi = item % G;
    const T* gyg = gy + (n * g.Cout + gi * Cog) * P;
    if (s.gyb.empty()) s.gyb.assign(Cog * gy_plane, T(0));  // margins stay zero
    for (int64_t oc = 0; oc < Cog; ++oc)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        std::copy(gyg + oc * P + oh * g.OW, gyg + oc * P + (oh + 1) * g.OW,
                  s.gyb.data() + oc * gy_plane + oh * ldg + margin);
    if (gw) {
      auto& part = gw_part[wk];
      if (part.empty()) part.assign(g.Cout * taps, T(0));
      ph.fill(x + (n * g.C + gi) * HW, g, s.buf);
      for (int64_t oc = gi * Cog; oc < (gi + 1) * Cog; ++oc) {
        const T* gyb = s.gyb.data() + (oc - gi * Cog) * gy_plane + margin;
        k.direct_weight_channel(gyb, ldg, s.buf.data(), plane, g, part.data() + oc * taps);
      }
    }
    if (gx) input_group(s.gyb.data(), gy_plane, gathers, g, w + gi * Cog * taps, gx + (n * g.C + gi) * HW);
  });
  if (gw) reduce_into(gw, gw_part, g.Cout * taps);
}

#define FASTCONV_INSTANTIATE(T)                                                                           \
  template void direct_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&, const Epilogue<T>&); \
  template void direct_backward<T>(const T*, const T*, const T*, T*, T*, const ConvGeom&);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
