// Direct convolution tiles for one input channel per group (depthwise layers,
// grey-scale first layers), written once on the vector layer (vec.hpp) and
// compiled per level.  Included inside an ISA namespace by isa_kernels.cpp.
//
// Contract (V = kLanes<T> values per vector):
//   - Inputs come from the phase buffer described by DirectPlane (table.hpp),
//     which the operator pads with kDirectChains * V zeros after each phase row,
//     so a block may load past its output row's end; no load needs alignment.
//   - Forward blocks are RO output channels x RC vectors of one output row:
//     RO = 4 channels share each loaded input vector; a lone channel (depthwise)
//     gets its independent chains from up to 8 vectors of columns instead, or,
//     on rows of at most two vectors, from RR rows x RC vectors (RR * RC <= 8).
//     Only the block's first `valid` columns are stored.
//   - Weight-gradient blocks take TB = 4 taps at once, so each loaded gy vector
//     feeds TB * RC accumulators; lanes past OW must not reach gw even when the
//     input under them is Inf or NaN (torch sums valid positions only), so the
//     last block of a row clears those input lanes with a bit mask.
//   - Input-gradient blocks sum (gy offset, tap) pairs over RC vectors of one
//     phase row, PAR channels in separate accumulators when RC alone gives few
//     chains; stores are strided by the column stride.
#pragma once

// Expects vec.hpp and table.hpp.

// --- The phase planes' fill (direct.cpp's Phases).  even[i] = src[2i] for
// i < (n + 1) / 2 and odd[i] = src[2i + 1] for i < n / 2: one input row split
// into its two column phases (stride-2 layers; a scalar strided copy took a
// third of the weight gradient of a 16 -> 32 channel 3x3/2 layer).  Reads
// src[0, n) only.
template <class T>
void deinterleave2(const T* src, int64_t n, T* even, T* odd) {
  constexpr int64_t V = kLanes<T>;
  int64_t i = 0;
  for (; 2 * i + 2 * V <= n; i += V) {
    Vec<T> e, o;
    split_pairs<T>(load(src + 2 * i), load(src + 2 * i + V), e, o, std::make_integer_sequence<int64_t, V>{});
    store(even + i, e);
    store(odd + i, o);
  }
  for (; 2 * i < n; ++i) {
    even[i] = src[2 * i];
    if (2 * i + 1 < n) odd[i] = src[2 * i + 1];
  }
}

inline int64_t pow2_at_least(int64_t n, int64_t cap) {
  int64_t p = 1;
  while (p < cap && p < n) p *= 2;
  return p;
}

// --- Forward.  R rows of RC vectors of accumulators to y, rows ystride apart, the
// first `valid` columns of each.
// At AVX2, full blocks with constant indices and partial ones through a row
// buffer: the rolled store_vec loop below (its lane copy indexes the
// accumulators at run time) made GCC keep every accumulator on the stack
// around the taps (batch 64, 1 -> 32 channels at 28x28, two blocks per
// 26-wide row: 1.12x; batch 8, 1 -> 16 at 224x224: 1.26x).  Not at SSE2, where the block is inlined into its caller
// and the row buffer put the accumulators on the stack inside the taps (2x slower); nor with masked stores.
template <class T, int R, int RC>
inline void store_block(const Vec<T> (&acc)[R][RC], T* y, int64_t ystride, int64_t valid) {
  constexpr int64_t V = kLanes<T>;
  if constexpr (kVecBytes == 32) {
    if (valid == RC * V) {
#pragma GCC unroll 8
      for (int o = 0; o < R; ++o)
#pragma GCC unroll 8
        for (int r = 0; r < RC; ++r) store(y + o * ystride + r * V, acc[o][r]);
    } else {
      T row[RC * V];
#pragma GCC unroll 8
      for (int o = 0; o < R; ++o) {
#pragma GCC unroll 8
        for (int r = 0; r < RC; ++r) store(row + r * V, acc[o][r]);
        store_chunks<T, RC * V / 2>(y + o * ystride, row, valid);
      }
    }
    return;
  }
  for (int o = 0; o < R; ++o)
    for (int r = 0; r < RC; ++r) store_vec<T>(y + o * ystride, acc[o][r], r, valid);
}

// src is the block's first output column in the phase buffer (its
// row offset added); tap t reads src + offs[t] and the RC*V values after it.  w
// holds RO rows of `taps` weights; b (null: no bias) RO values.  Row o of the
// result goes to y + o * ystride.
template <class T, int RO, int RC>
inline void direct_forward_block(const T* src, const int64_t* offs, int64_t taps, const T* w, const T* b, T* y,
                                 int64_t ystride, int64_t valid) {
  constexpr int64_t V = kLanes<T>;
  Vec<T> acc[RO][RC];
#pragma GCC unroll 8
  for (int o = 0; o < RO; ++o) {
    const Vec<T> bv = broadcast<T>(b ? b[o] : T(0));
#pragma GCC unroll 8
    for (int r = 0; r < RC; ++r) acc[o][r] = bv;
  }
  for (int64_t t = 0; t < taps; ++t) {
    const T* s = src + offs[t];
    Vec<T> xv[RC];
    for (int r = 0; r < RC; ++r) xv[r] = load(s + r * V);
    for (int o = 0; o < RO; ++o) {
      const T wv = w[o * taps + t];
      for (int r = 0; r < RC; ++r) acc[o][r] += wv * xv[r];
    }
  }
  store_block<T, RO, RC>(acc, y, ystride, valid);
}

// Output channels [c0, c1) of one group, (c1 - c0) a multiple of RO.
template <class T, int RO, int RC>
void direct_forward_channels(const T* buf, DirectPlane ph, const ConvGeom& g, const T* w, const T* b, T* y, int64_t c0,
                             int64_t c1) {
  constexpr int64_t block = RC * kLanes<T>;
  const int64_t taps = g.kh * g.kw, P = g.OH * g.OW;
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const T* row = buf + oh * ph.row_step;
    for (int64_t ow = 0; ow < g.OW; ow += block) {
      // A row at least one block wide ends in a whole block that overlaps the one before: the
      // overlapped columns are computed twice, in the same order, so both stores write the same values.
      const int64_t ow0 = g.OW >= block ? imin(ow, g.OW - block) : ow, valid = imin(block, g.OW - ow0);
      for (int64_t oc = c0; oc < c1; oc += RO)
        direct_forward_block<T, RO, RC>(row + ow0, ph.offs, taps, w + oc * taps, b ? b + oc : nullptr,
                                        y + oc * P + oh * g.OW + ow0, P, valid);
    }
  }
}

// One channel, RR output rows x RC vectors of columns: a lone channel on a narrow map (7x7, 14x14: one or two
// vectors a row) takes its independent chains from rows, since one row's vectors alone left a single
// multiply-add chain per tap, latency-bound (a depthwise 960-channel 7x7 layer ran at a third of ONNX
// Runtime's speed).  Rows [oh0, oh0 + RR) of one channel; `valid` columns of each are stored.
template <class T, int RR, int RC>
inline void direct_forward_rows_block(const T* src, int64_t row_step, const int64_t* offs, int64_t taps, const T* w,
                                      T bias, T* y, int64_t ldy, int64_t valid) {
  constexpr int64_t V = kLanes<T>;
  Vec<T> acc[RR][RC];
  const Vec<T> bv = broadcast<T>(bias);
#pragma GCC unroll 8
  for (int r = 0; r < RR; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < RC; ++c) acc[r][c] = bv;
  for (int64_t t = 0; t < taps; ++t) {
    const T* s = src + offs[t];
    const Vec<T> wv = broadcast<T>(w[t]);
#pragma GCC unroll 8
    for (int r = 0; r < RR; ++r)
#pragma GCC unroll 8
      for (int c = 0; c < RC; ++c) acc[r][c] += wv * load(s + r * row_step + c * V);
  }
  store_block<T, RR, RC>(acc, y, ldy, valid);
}

// Output channels [c0, c1) of one group, one channel at a time, in blocks of RR rows (a plane taller than
// RR ends in a block that overlaps the one before; overlapped rows are computed twice in the same order, so
// both stores write the same values) and one block of RC vectors per row (RC * V >= OW).
template <class T, int RR, int RC>
void direct_forward_channel_rows(const T* buf, DirectPlane ph, const ConvGeom& g, const T* w, const T* b, T* y,
                                 int64_t c0, int64_t c1) {
  const int64_t taps = g.kh * g.kw, P = g.OH * g.OW;
  for (int64_t oc = c0; oc < c1; ++oc)
    for (int64_t oh = 0; oh < g.OH; oh += RR) {
      const int64_t oh0 = imin(oh, g.OH - RR);
      direct_forward_rows_block<T, RR, RC>(buf + oh0 * ph.row_step, ph.row_step, ph.offs, taps, w + oc * taps,
                                           b ? b[oc] : T(0), y + oc * P + oh0 * g.OW, g.OW, g.OW);
    }
}

template <class T>
void direct_forward_group(const T* buf, DirectPlane ph, const ConvGeom& g, const T* w, const T* b, T* y) {
  const int64_t Cog = g.Cout / g.groups, chunks = (g.OW + kLanes<T> - 1) / kLanes<T>;
  const int64_t main = Cog / 4 * 4;
  if (main > 0) {
    if (chunks <= 1)
      direct_forward_channels<T, 4, 1>(buf, ph, g, w, b, y, 0, main);
    else
      direct_forward_channels<T, 4, 2>(buf, ph, g, w, b, y, 0, main);
  }
  if (main == Cog) return;
  // Narrow rows: kDirectChains chains from RR rows of RC vectors (RR at most the plane's height).
  if (chunks <= 2 && g.OH >= 2) {
    const int64_t rr = imin(kDirectChains / pow2_at_least(chunks, 2), g.OH >= 8 ? 8 : g.OH >= 4 ? 4 : 2);
    switch (pow2_at_least(chunks, 2) * 10 + rr) {
      case 12:
        return direct_forward_channel_rows<T, 2, 1>(buf, ph, g, w, b, y, main, Cog);
      case 14:
        return direct_forward_channel_rows<T, 4, 1>(buf, ph, g, w, b, y, main, Cog);
      case 18:
        return direct_forward_channel_rows<T, 8, 1>(buf, ph, g, w, b, y, main, Cog);
      case 22:
        return direct_forward_channel_rows<T, 2, 2>(buf, ph, g, w, b, y, main, Cog);
      default:
        return direct_forward_channel_rows<T, 4, 2>(buf, ph, g, w, b, y, main, Cog);
    }
  }
  switch (pow2_at_least(chunks, kDirectChains)) {
    case 1:
      direct_forward_channels<T, 1, 1>(buf, ph, g, w, b, y, main, Cog);
      break;
    case 2:
      direct_forward_channels<T, 1, 2>(buf, ph, g, w, b, y, main, Cog);
      break;
    case 4:
      direct_forward_channels<T, 1, 4>(buf, ph, g, w, b, y, main, Cog);
      break;
    default:
      direct_forward_channels<T, 1, 8>(buf, ph, g, w, b, y, main, Cog);
      break;
  }
}

// --- Forward with the channels in the vectors: V channels of a depthwise layer (one input and one output channel
// per group) interleaved as [padded row][padded column][V], so every tap of every output position is one vector
// load times one vector of V channels' weights, whatever the map's width; a block of V positions then holds a
// V x V tile that one in-register transpose turns back into V channels' rows (MLAS's NCHWc depthwise kernels put
// the channels in the vectors so, in their layout between layers).  On rows a vector or two wide the row blocks
// above fill few lanes and, at batch 8, spend more on each plane's fill and setup than on its taps.
//
// Contract (V = kLanes<T>):
//   x    nc input planes (1 <= nc <= V) of H x W, `hw` (>= H * W) values apart; y their output planes, OH * OW
//        apart.
//   w    taps x V values: w[t * V + l] is channel l's tap t, t = i * kw + j; lanes from nc on are zero.
//   b    V biases (lanes from nc on zero), or null.
//   offs taps offsets: tap (i, j) at (i * dh * Wp + j * dw) * V, Wp = pl + W + pr.
//   buf  (pt + H + pb) * Wp * V values, any contents (overwritten: the interleaved padded input).
//   g    pads >= 0, any kernel, stride and dilation.
// Positions past OH * OW in the last block repeat the last one and are never stored.
template <class T>
void direct_forward_chanvec(const T* x, int64_t hw, int64_t nc, const T* w, const T* b, const int64_t* offs, T* y,
                            const ConvGeom& g, T* buf) {
  constexpr int64_t V = kLanes<T>;
  const int64_t Hp = g.pt + g.H + g.pb, Wp = g.pl + g.W + g.pr, P = g.OH * g.OW, taps = g.kh * g.kw;
  const int64_t HW = g.H * g.W;
  const Vec<T> zero{};
  for (int64_t r = 0; r < Hp; ++r) {  // the padding: whole rows above and below, columns beside each input row
    T* const row = buf + r * Wp * V;
    const bool pad_row = r < g.pt || r >= g.pt + g.H;
    for (int64_t c = 0; c < Wp; ++c)
      if (pad_row || c < g.pl || c >= g.pl + g.W) store(row + c * V, zero);
  }
  // The planes transposed V positions at a time, positions running on across input rows (a 7-wide row is less
  // than a vector: row by row, every value moved alone), each position to its padded place.
  int64_t ih = 0, iw = 0, q = 0;
  for (; q + V <= HW; q += V) {
    Vec<T> r[V];
    for (int64_t l = 0; l < V; ++l) r[l] = l < nc ? load(x + l * hw + q) : zero;
    transpose_block<T>(r);
    for (int64_t l = 0; l < V; ++l) {
      store(buf + ((g.pt + ih) * Wp + g.pl + iw) * V, r[l]);
      if (++iw == g.W) iw = 0, ++ih;
    }
  }
  for (; q < HW; ++q) {
    T* const d = buf + ((g.pt + ih) * Wp + g.pl + iw) * V;
    for (int64_t l = 0; l < V; ++l) d[l] = l < nc ? x[l * hw + q] : T(0);
    if (++iw == g.W) iw = 0, ++ih;
  }
  const Vec<T> bias = b ? load(b) : zero;
  int64_t oh = 0, ow = 0;  // the block's next position
  for (int64_t p0 = 0; p0 < P; p0 += V) {
    const T* sp[V];
    for (int64_t l = 0; l < V; ++l) {
      sp[l] = buf + (oh * g.sh * Wp + ow * g.sw) * V;
      if (p0 + l + 1 < P && ++ow == g.OW) ow = 0, ++oh;
    }
    Vec<T> acc[V];
#pragma GCC unroll 16
    for (int64_t l = 0; l < V; ++l) acc[l] = bias;
    for (int64_t t = 0; t < taps; ++t) {
      const Vec<T> wv = load(w + t * V);
      const int64_t o = offs[t];
#pragma GCC unroll 16
      for (int64_t l = 0; l < V; ++l) acc[l] += load(sp[l] + o) * wv;
    }
    transpose_block<T>(acc);  // acc[l]: channel l's positions p0 .. p0 + V - 1
    const int64_t n = imin(V, P - p0);
    if (n == V) {
      for (int64_t l = 0; l < nc; ++l) store(y + l * P + p0, acc[l]);
    } else {
      for (int64_t l = 0; l < nc; ++l) store_first(y + l * P + p0, acc[l], n);
    }
  }
}

// --- Weight gradient, TB taps of one output channel.
template <class T, int TB, int RC>
void direct_weight_block(const T* gyb, int64_t ldy, const T* buf, DirectPlane ph, const ConvGeom& g,
                         const int64_t* offs, T* gw) {
  constexpr int64_t V = kLanes<T>, block = RC * V;
  Vec<T> acc[TB][RC] = {};
  const int64_t tail0 = (g.OW - 1) / block * block;
  using Elem = typename BitsOf<T>::elem;
  Elem lanes[RC * V];
  for (int64_t k = 0; k < RC * V; ++k) lanes[k] = tail0 + k < g.OW ? ~Elem(0) : Elem(0);
  BitsVec<T> keep[RC];
  std::memcpy(keep, lanes, sizeof keep);
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    const T* grow = gyb + oh * ldy;
    const T* xrow = buf + oh * ph.row_step;
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
    gw[t] += reduce_add<T>(acc[t][0]);
  }
}

template <class T, int RC>
void direct_weight_taps(const T* gyb, int64_t ldy, const T* buf, DirectPlane ph, const ConvGeom& g, T* gw) {
  const int64_t taps = g.kh * g.kw;
  int64_t t = 0;
  for (; t + 4 <= taps; t += 4) direct_weight_block<T, 4, RC>(gyb, ldy, buf, ph, g, ph.offs + t, gw + t);
  switch (taps - t) {
    case 3:
      direct_weight_block<T, 3, RC>(gyb, ldy, buf, ph, g, ph.offs + t, gw + t);
      break;
    case 2:
      direct_weight_block<T, 2, RC>(gyb, ldy, buf, ph, g, ph.offs + t, gw + t);
      break;
    case 1:
      direct_weight_block<T, 1, RC>(gyb, ldy, buf, ph, g, ph.offs + t, gw + t);
      break;
    default:
      break;
  }
}

template <class T>
void direct_weight_channel(const T* gyb, int64_t ldy, const T* buf, DirectPlane ph, const ConvGeom& g, T* gw) {
  if (g.OW <= kLanes<T>)
    direct_weight_taps<T, 1>(gyb, ldy, buf, ph, g, gw);
  else
    direct_weight_taps<T, 2>(gyb, ldy, buf, ph, g, gw);
}

// --- Input gradient, gathered rather than scattered (direct.cpp builds the
// pairs).  gy planes sit `plane` apart in gyb; n values go to out, dst_stride
// apart.
template <class T, int RC, int PAR>
void direct_input_block(const T* gyb, int64_t plane, const int64_t* offs, const int64_t* tap, int64_t pairs, const T* w,
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
DirectInputBlock<T> direct_input_block_for(int64_t rc, int64_t cog) {
  int64_t par = 1;
  while (par < 4 && 2 * par <= cog && 2 * par * rc <= kDirectChains) par *= 2;
  switch (rc * 10 + par) {
    case 11:
      return direct_input_block<T, 1, 1>;
    case 12:
      return direct_input_block<T, 1, 2>;
    case 14:
      return direct_input_block<T, 1, 4>;
    case 21:
      return direct_input_block<T, 2, 1>;
    case 22:
      return direct_input_block<T, 2, 2>;
    case 24:
      return direct_input_block<T, 2, 4>;
    case 41:
      return direct_input_block<T, 4, 1>;
    case 42:
      return direct_input_block<T, 4, 2>;
    default:
      return direct_input_block<T, 8, 1>;
  }
}
