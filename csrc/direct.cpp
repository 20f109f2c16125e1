#include "direct.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "geometry.hpp"
#include "parallel.hpp"

#ifdef __AVX512F__
#include "direct_store_avx512.hpp"
#endif

namespace fastconv {

// The phase buffer pads every padded row with kChains vectors per column phase,
// so its size grows with the column stride: beyond 8, im2col is the better tool.
constexpr int64_t kMaxDirectColumnStride = 8;

bool use_direct(const ConvGeom& g) { return g.C / g.groups == 1 && g.sw <= kMaxDirectColumnStride; }

namespace {

// One vector register through the GCC/Clang vector extension, as wide as the
// target's widest (64 bytes with AVX-512, 32 with AVX, 16 otherwise: a wider
// one would be passed in memory), and the same code for float and double.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
template <class T>
struct VecOf {
  typedef T type __attribute__((vector_size(kVecBytes)));
};
template <class T>
using Vec = typename VecOf<T>::type;
template <class T>
constexpr int64_t kLanes = kVecBytes / sizeof(T);

}  // namespace

std::string direct_kernel_name() { return "vector extension, " + std::to_string(kVecBytes * 8) + "-bit vectors"; }

namespace {

template <class T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// An integer vector of Vec<T>'s shape, for lane masks.
template <class T>
struct BitsOf {
  using elem = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  typedef elem type __attribute__((vector_size(kVecBytes)));
};
template <class T>
using BitsVec = typename BitsOf<T>::type;

// v with the lanes whose mask is 0 set to +0.0 (NaN and Inf included).
template <class T>
inline Vec<T> masked(Vec<T> v, BitsVec<T> keep) {
  BitsVec<T> b;
  std::memcpy(&b, &v, sizeof v);
  b &= keep;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// Stores the first n values of v: whole vectors as vector stores, the partial
// one masked where AVX-512 is available (a library copy per block costs about as
// much as the block's arithmetic).  0 <= n <= RC * V.
template <class T>
inline void store_part(T* dst, Vec<T> v, int64_t n) {
#ifdef __AVX512F__
  masked_store_avx512(dst, v, n);
  return;
#endif
  for (int64_t k = 0; k < n; ++k) dst[k] = v[k];
}

// Vector r of a row block whose first n values are to be stored.
template <class T>
inline void store_vec(T* dst, Vec<T> v, int64_t r, int64_t n) {
  constexpr int64_t V = kLanes<T>;
  if ((r + 1) * V <= n)
    std::memcpy(dst + r * V, &v, sizeof v);
  else if (r * V < n)
    store_part<T>(dst + r * V, v, n - r * V);
}

// dst[0, n) = src[0, n) for short runs, without a library call per run.
template <class T>
inline void copy_run(const T* src, int64_t n, T* dst) {
  constexpr int64_t V = kLanes<T>;
  int64_t k = 0;
  for (; k + V <= n; k += V) std::memcpy(dst + k, src + k, sizeof(Vec<T>));
  for (; k < n; ++k) dst[k] = src[k];
}

// At most this many accumulator vectors per block: with a 4-cycle FMA latency
// and two FMA pipes, eight independent chains keep both pipes busy, and they
// fit the register file beside their operands.
constexpr int kChains = 8;

int pow2_at_least(int64_t n, int cap) {
  int p = 1;
  while (p < cap && p < n) p *= 2;
  return p;
}

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The zero-padded input plane, split into column phases.  Padded column c
// (input column c - pl) is stored in phase c % sw at position c / sw; tap j of
// output column ow reads padded column ow*sw + j*dw, i.e. phase (j*dw) % sw at
// position ow + (j*dw) / sw.  So for every stride, each tap of a run of output
// columns is one unit-stride vector load.  A padded row holds its sw phases one
// after another, each `ld` long; ld leaves kChains vectors of zeros after the
// last used position, so blocks may read past the end of an output row.
template <class T>
struct Phases {
  int64_t rows, sw, len, ld;
  std::vector<int64_t> offs;  // tap (i, j) -> offset from its output position's row start

  explicit Phases(const ConvGeom& g) : sw(g.sw) {
    rows = checked_add(checked_mul(g.OH - 1, g.sh, "direct workspace"), (g.kh - 1) * g.dh + 1, "direct workspace");
    const int64_t width =
        checked_add(checked_mul(g.OW - 1, g.sw, "direct workspace"), (g.kw - 1) * g.dw + 1, "direct workspace");
    len = (width + sw - 1) / sw;
    ld = round_up(len + kChains * kLanes<T>, kLanes<T>);
    checked_mul(checked_mul(rows, sw, "direct workspace"), ld, "direct workspace");
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) offs.push_back((i * g.dh * sw + (j * g.dw) % sw) * ld + (j * g.dw) / sw);
  }
  int64_t size() const { return rows * sw * ld; }
  int64_t row(const ConvGeom& g, int64_t oh) const { return oh * g.sh * sw * ld; }

  // Writes the input's positions only: a buffer zeroed once keeps its zero
  // padding across the planes of a call.
  void fill(const T* x, const ConvGeom& g, std::vector<T>& buf) const {
    if (buf.size() != static_cast<size_t>(size())) buf.assign(size(), T(0));
    // Input columns whose padded column lies inside the phases.
    const int64_t end = std::min(g.W, sw * len - g.pl);
    if (end <= 0) return;
    for (int64_t rho = 0; rho < rows; ++rho) {
      const int64_t ih = rho - g.pt;
      if (ih < 0 || ih >= g.H) continue;
      const T* src = x + ih * g.W;
      T* dst = buf.data() + rho * sw * ld;
      if (sw == 1) {
        copy_run(src, end, dst + g.pl);
      } else {
        for (int64_t iw = 0; iw < end; ++iw) {
          const int64_t c = iw + g.pl;
          dst[(c % sw) * ld + c / sw] = src[iw];
        }
      }
    }
  }
};

// --- Forward: RO output channels x RC vectors of one output row.
// src is the block's first output column in the phase buffer (its row offset
// added); tap t reads src + offs[t] and the RC*V values after it.  w holds RO
// rows of `taps` weights; b (null: no bias) RO values.  Row o of the result
// goes to y + o * ystride, its first `valid` values only.
template <class T, int RO, int RC>
void forward_block(const T* src, const int64_t* offs, int64_t taps, const T* w, const T* b, T* y, int64_t ystride,
                   int64_t valid) {
  constexpr int64_t V = kLanes<T>;
  Vec<T> acc[RO][RC];
  for (int o = 0; o < RO; ++o)
    for (int r = 0; r < RC; ++r) acc[o][r] = Vec<T>{} + (b ? b[o] : T(0));
  for (int64_t t = 0; t < taps; ++t) {
    const T* s = src + offs[t];
    Vec<T> xv[RC];
    for (int r = 0; r < RC; ++r) xv[r] = load(s + r * V);
    for (int o = 0; o < RO; ++o) {
      const T wv = w[o * taps + t];
      for (int r = 0; r < RC; ++r) acc[o][r] += wv * xv[r];
    }
  }
  for (int o = 0; o < RO; ++o)
    for (int r = 0; r < RC; ++r) store_vec<T>(y + o * ystride, acc[o][r], r, valid);
}

// Output channels [c0, c1) of one group ((c1 - c0) a multiple of RO); w, b and
// y start at the group's first output channel.
template <class T, int RO, int RC>
void forward_channels(const T* buf, const Phases<T>& ph, const ConvGeom& g, const T* w, const T* b, T* y, int64_t c0,
                      int64_t c1) {
  constexpr int64_t block = RC * kLanes<T>;
  const int64_t taps = g.kh * g.kw, P = g.OH * g.OW;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const T* row = buf + ph.row(g, oh);
    for (int64_t ow0 = 0; ow0 < g.OW; ow0 += block) {
      const int64_t valid = std::min(block, g.OW - ow0);
      for (int64_t oc = c0; oc < c1; oc += RO)
        forward_block<T, RO, RC>(row + ow0, ph.offs.data(), taps, w + oc * taps, b ? b + oc : nullptr,
                                 y + oc * P + oh * g.OW + ow0, P, valid);
    }
  }
}

template <class T>
void forward_group(const T* buf, const Phases<T>& ph, const ConvGeom& g, const T* w, const T* b, T* y) {
  const int64_t Cog = g.Cout / g.groups, chunks = (g.OW + kLanes<T> - 1) / kLanes<T>;
  // Four channels share each loaded input vector; a lone channel (depthwise)
  // gets its independent chains from more columns instead.
  const int64_t main = Cog / 4 * 4;
  if (main > 0) {
    if (chunks <= 1)
      forward_channels<T, 4, 1>(buf, ph, g, w, b, y, 0, main);
    else
      forward_channels<T, 4, 2>(buf, ph, g, w, b, y, 0, main);
  }
  if (main == Cog) return;
  switch (pow2_at_least(chunks, kChains)) {
    case 1:
      forward_channels<T, 1, 1>(buf, ph, g, w, b, y, main, Cog);
      break;
    case 2:
      forward_channels<T, 1, 2>(buf, ph, g, w, b, y, main, Cog);
      break;
    case 4:
      forward_channels<T, 1, 4>(buf, ph, g, w, b, y, main, Cog);
      break;
    default:
      forward_channels<T, 1, 8>(buf, ph, g, w, b, y, main, Cog);
      break;
  }
}

// --- Weight gradient: gw[t] += sum over the plane of gy * (input under tap t),
// TB taps at once so each loaded gy vector feeds TB * RC chains.  gyb holds gy
// with rows `ldy` apart, zero from column OW on (at least RC*V - 1 zeros).
template <class T, int TB, int RC>
void weight_block(const T* gyb, int64_t ldy, const T* buf, const Phases<T>& ph, const ConvGeom& g, const int64_t* offs,
                  T* gw) {
  constexpr int64_t V = kLanes<T>, block = RC * V;
  Vec<T> acc[TB][RC] = {};
  // Lanes at or past OW hold zero gy, but the input under them can be a real
  // Inf or NaN (a column other windows use): 0 * Inf would reach gw, where torch
  // sums valid positions only.  The row's last block therefore clears those
  // input lanes with a bit mask.
  const int64_t tail0 = (g.OW - 1) / block * block;
  using Elem = typename BitsOf<T>::elem;
  Elem lanes[RC * V];
  for (int64_t k = 0; k < RC * V; ++k) lanes[k] = tail0 + k < g.OW ? ~Elem(0) : Elem(0);
  BitsVec<T> keep[RC];
  std::memcpy(keep, lanes, sizeof keep);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const T* grow = gyb + oh * ldy;
    const T* xrow = buf + ph.row(g, oh);
    for (int64_t ow0 = 0; ow0 < tail0; ow0 += block) {
      Vec<T> gv[RC];
      for (int r = 0; r < RC; ++r) gv[r] = load(grow + ow0 + r * V);
      for (int t = 0; t < TB; ++t) {
        const T* s = xrow + offs[t] + ow0;
        for (int r = 0; r < RC; ++r) acc[t][r] += gv[r] * load(s + r * V);
      }
    }
    Vec<T> gv[RC];
    for (int r = 0; r < RC; ++r) gv[r] = load(grow + tail0 + r * V);
    for (int t = 0; t < TB; ++t) {
      const T* s = xrow + offs[t] + tail0;
      for (int r = 0; r < RC; ++r) acc[t][r] += gv[r] * masked<T>(load(s + r * V), keep[r]);
    }
  }
  for (int t = 0; t < TB; ++t) {
    for (int r = 1; r < RC; ++r) acc[t][0] += acc[t][r];
    T sum = 0;
    for (int64_t k = 0; k < V; ++k) sum += acc[t][0][k];
    gw[t] += sum;
  }
}

template <class T, int RC>
void weight_channel(const T* gyb, int64_t ldy, const T* buf, const Phases<T>& ph, const ConvGeom& g, T* gw) {
  const int64_t taps = g.kh * g.kw;
  const int64_t* offs = ph.offs.data();
  int64_t t = 0;
  for (; t + 4 <= taps; t += 4) weight_block<T, 4, RC>(gyb, ldy, buf, ph, g, offs + t, gw + t);
  switch (taps - t) {
    case 3:
      weight_block<T, 3, RC>(gyb, ldy, buf, ph, g, offs + t, gw + t);
      break;
    case 2:
      weight_block<T, 2, RC>(gyb, ldy, buf, ph, g, offs + t, gw + t);
      break;
    case 1:
      weight_block<T, 1, RC>(gyb, ldy, buf, ph, g, offs + t, gw + t);
      break;
    default:
      break;
  }
}

// --- Input gradient, gathered rather than scattered: input column c = r + sw*q
// (padded coordinates) of phase r receives from every tap j with
// (j*dw) % sw == r the output column ow = q - (j*dw) / sw, and from every tap
// row i with (rho - i*dh) divisible by sh the output row (rho - i*dh) / sh.  A
// (row, phase) pair thus has a fixed list of (gy offset, tap) pairs, and RC
// vectors of consecutive q are sums of unit-stride loads.  gy planes sit
// `plane` apart in gyb with a zero margin before column 0 (folded into offs)
// and zeros after column OW.  PAR channels accumulate separately for more
// independent chains when RC alone gives few.
template <class T, int RC, int PAR>
void input_block(const T* gyb, int64_t plane, const int64_t* offs, const int64_t* tap, int64_t pairs, const T* w,
                 int64_t taps, int64_t cog, T* out, int64_t n, int64_t dst_stride) {
  constexpr int64_t V = kLanes<T>;
  Vec<T> acc[PAR][RC] = {};
  const int64_t full = cog / PAR * PAR;
  for (int64_t p = 0; p < pairs; ++p) {
    const T* base = gyb + offs[p];
    const T* wp = w + tap[p];
    for (int64_t oc = 0; oc < full; oc += PAR)
      for (int c = 0; c < PAR; ++c) {
        const T* src = base + (oc + c) * plane;
        const T wv = wp[(oc + c) * taps];
        for (int r = 0; r < RC; ++r) acc[c][r] += wv * load(src + r * V);
      }
    for (int64_t oc = full; oc < cog; ++oc) {
      const T* src = base + oc * plane;
      const T wv = wp[oc * taps];
      for (int r = 0; r < RC; ++r) acc[0][r] += wv * load(src + r * V);
    }
  }
  for (int c = 1; c < PAR; ++c)
    for (int r = 0; r < RC; ++r) acc[0][r] += acc[c][r];
  if (dst_stride == 1) {
    for (int r = 0; r < RC; ++r) store_vec<T>(out, acc[0][r], r, n);
  } else {
    T v[RC * V];
    std::memcpy(v, acc[0], sizeof v);
    for (int64_t k = 0; k < n; ++k) out[k * dst_stride] = v[k];
  }
}

template <class T>
using InputBlockFn = void (*)(const T*, int64_t, const int64_t*, const int64_t*, int64_t, const T*, int64_t, int64_t,
                              T*, int64_t, int64_t);

template <class T>
InputBlockFn<T> input_block_for(int rc, int64_t cog) {
  int par = 1;
  while (par < 4 && 2 * par <= cog && 2 * par * rc <= kChains) par *= 2;
  switch (rc * 10 + par) {
    case 11:
      return input_block<T, 1, 1>;
    case 12:
      return input_block<T, 1, 2>;
    case 14:
      return input_block<T, 1, 4>;
    case 21:
      return input_block<T, 2, 1>;
    case 22:
      return input_block<T, 2, 2>;
    case 24:
      return input_block<T, 2, 4>;
    case 41:
      return input_block<T, 4, 1>;
    case 42:
      return input_block<T, 4, 2>;
    default:
      return input_block<T, 8, 1>;
  }
}

// Everything about the input gradient's gathers that is the same for every
// plane: per input row ih and phase r the (gy offset, tap) pairs, one list
// after another (pairs of (ih, r) start at first[ih * sw + r]), and per phase
// its positions [qlo, qhi) and block function.  Built once per call: the
// divisions it needs would cost more than a row's arithmetic.
template <class T>
struct Gathers {
  std::vector<int64_t> first, offs, tap, qlo, qhi;
  std::vector<int64_t> span;
  std::vector<InputBlockFn<T>> block;

  Gathers() = default;
  Gathers(const ConvGeom& g, int64_t ldg, int64_t margin) {
    const int64_t Cog = g.Cout / g.groups;
    for (int64_t r = 0; r < g.sw; ++r) {
      // padded columns c = r + sw*q inside [pl, pl + W)
      const int64_t lo = g.pl > r ? (g.pl - r + g.sw - 1) / g.sw : 0, end = g.pl + g.W - r;
      const int64_t hi = end > 0 ? (end + g.sw - 1) / g.sw : 0;
      const int rc = pow2_at_least((hi - lo + kLanes<T> - 1) / kLanes<T>, kChains);
      qlo.push_back(lo);
      qhi.push_back(hi);
      span.push_back(rc * kLanes<T>);
      block.push_back(input_block_for<T>(rc, Cog));
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

double direct_flops(const ConvGeom& g) { return 2.0 * g.N * g.Cout * g.OH * g.OW * g.kh * g.kw; }

}  // namespace

template <class T>
void direct_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g) {
  const int64_t G = g.groups, Cog = g.Cout / G, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  const Phases<T> ph(g);
  const int workers = workers_for(direct_flops(g), g.N * G);
  std::vector<std::vector<T>> bufs(workers);
  parallel_for(g.N * G, workers, [&](int64_t item, int wk) {
    const int64_t n = item / G, gi = item % G;
    ph.fill(x + (n * g.C + gi) * HW, g, bufs[wk]);
    forward_group(bufs[wk].data(), ph, g, w + gi * Cog * taps, b ? b + gi * Cog : nullptr,
                  y + (n * g.Cout + gi * Cog) * P);
  });
}

template <class T>
void direct_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, const ConvGeom& g) {
  constexpr int64_t V = kLanes<T>;
  const int64_t G = g.groups, Cog = g.Cout / G, taps = g.kh * g.kw, P = g.OH * g.OW, HW = g.H * g.W;
  if (gw) std::fill(gw, gw + g.Cout * taps, T(0));
  if (g.N == 0 || (!gx && !gw)) return;
  const Phases<T> ph(g);
  // gy copies: a zero margin before each row for the input gradient's
  // gathers, and zeros after it up to the longest block any kernel reads.
  const int64_t margin = ((g.kw - 1) * g.dw) / g.sw;
  const int64_t qmax = (g.pl + g.W + g.sw - 1) / g.sw;
  const int64_t ldg = margin + std::max(round_up(g.OW, 2 * V), qmax + kChains * V);
  const int64_t gy_plane = checked_mul(g.OH, ldg, "direct workspace");
  checked_mul(gy_plane, Cog, "direct workspace");
  const int workers = workers_for(2 * direct_flops(g), g.N * G);
  const Gathers<T> gathers = gx ? Gathers<T>(g, ldg, margin) : Gathers<T>();
  std::vector<Scratch<T>> scratch(workers);
  std::vector<std::vector<T>> gw_part(gw ? workers : 0);
  parallel_for(g.N * G, workers, [&](int64_t item, int wk) {
    Scratch<T>& s = scratch[wk];
    const int64_t n = item / G, gi = item % G;
    const T* gyg = gy + (n * g.Cout + gi * Cog) * P;
    if (s.gyb.empty()) s.gyb.assign(Cog * gy_plane, T(0));  // margins stay zero
    for (int64_t oc = 0; oc < Cog; ++oc)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        copy_run(gyg + oc * P + oh * g.OW, g.OW, s.gyb.data() + oc * gy_plane + oh * ldg + margin);
    if (gw) {
      auto& part = gw_part[wk];
      if (part.empty()) part.assign(g.Cout * taps, T(0));
      ph.fill(x + (n * g.C + gi) * HW, g, s.buf);
      for (int64_t oc = gi * Cog; oc < (gi + 1) * Cog; ++oc) {
        const T* gyb = s.gyb.data() + (oc - gi * Cog) * gy_plane + margin;
        if (g.OW <= V)
          weight_channel<T, 1>(gyb, ldg, s.buf.data(), ph, g, part.data() + oc * taps);
        else
          weight_channel<T, 2>(gyb, ldg, s.buf.data(), ph, g, part.data() + oc * taps);
      }
    }
    if (gx) input_group(s.gyb.data(), gy_plane, gathers, g, w + gi * Cog * taps, gx + (n * g.C + gi) * HW);
  });
  if (gw) reduce_into(gw, gw_part, g.Cout * taps);
}

#define FASTCONV_INSTANTIATE(T)                                                       \
  template void direct_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&); \
  template void direct_backward<T>(const T*, const T*, const T*, T*, T*, const ConvGeom&);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
