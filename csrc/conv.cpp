#include "conv.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "geometry.hpp"
#include "im2col.hpp"
#include "parallel.hpp"

namespace fastconv {

namespace {

std::string dims(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

void check_common(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh, int64_t kw,
                  int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t groups) {
  if (sh <= 0 || sw <= 0) fail("stride must be positive, got " + dims(sh, sw));
  if (dh <= 0 || dw <= 0) fail("dilation must be positive, got " + dims(dh, dw));
  if (groups <= 0) fail("groups must be positive, got " + std::to_string(groups));
  if (kh <= 0 || kw <= 0) fail("weight: kernel size must be positive, got " + dims(kh, kw));
  if (N < 0 || C <= 0 || H <= 0 || W <= 0)
    fail("input: expected non-empty channel and spatial dimensions, got shape (" + std::to_string(N) + ", " +
         std::to_string(C) + ", " + std::to_string(H) + ", " + std::to_string(W) + ")");
  if (Cout <= 0) fail("weight: out_channels must be positive, got " + std::to_string(Cout));
  if (C % groups != 0)
    fail("groups: input channels " + std::to_string(C) + " are not divisible by groups " + std::to_string(groups));
  if (Cout % groups != 0)
    fail("groups: weight out_channels " + std::to_string(Cout) + " are not divisible by groups " +
         std::to_string(groups));
  if (weight_in * groups != C)
    fail("weight: expected weight.shape[1] * groups == input channels, got weight.shape[1]=" +
         std::to_string(weight_in) + ", groups=" + std::to_string(groups) + ", input channels=" + std::to_string(C));
  // Every buffer size the kernels will form, checked once here.
  checked_mul(checked_mul(checked_mul(N, C, "input"), H, "input"), W, "input");
  checked_mul(checked_mul(checked_mul(Cout, weight_in, "weight"), kh, "weight"), kw, "weight");
}

}  // namespace

ConvGeom conv_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw,
                   int64_t groups) {
  check_common(N, C, H, W, Cout, weight_in, kh, kw, sh, sw, dh, dw, groups);
  if (pt < 0 || pb < 0 || pl < 0 || pr < 0)
    fail("padding must be non-negative, got (left=" + std::to_string(pl) + ", right=" + std::to_string(pr) +
         ", top=" + std::to_string(pt) + ", bottom=" + std::to_string(pb) + ")");
  ConvGeom g{N, C, H, W, Cout, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, groups, 0, 0};
  g.OH = conv_out(H, kh, sh, pt, pb, dh);
  g.OW = conv_out(W, kw, sw, pl, pr, dw);
  checked_mul(checked_mul(checked_mul(N, Cout, "output"), g.OH, "output"), g.OW, "output");
  checked_mul(checked_mul(weight_in * kh * kw, g.OH, "columns"), g.OW, "columns");
  return g;
}

ConvGeom conv_geom_with_output(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh,
                               int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                               int64_t groups, int64_t OH, int64_t OW) {
  check_common(N, C, H, W, Cout, weight_in, kh, kw, sh, sw, dh, dw, groups);
  if (pt < 0 || pl < 0) fail("padding must be non-negative, got " + dims(pt, pl));
  if (OH <= 0 || OW <= 0) fail("output size must be positive, got " + dims(OH, OW));
  checked_mul(checked_mul(checked_mul(N, Cout, "output"), OH, "output"), OW, "output");
  checked_mul(checked_mul(weight_in * kh * kw, OH, "columns"), OW, "columns");
  // Implied trailing padding may be negative when the last input rows are not covered; the
  // traversal never reads past OH/OW so that is harmless.
  return ConvGeom{N, C, H, W, Cout, kh, kw, sh, sw, dh, dw, pt, 0, pl, 0, groups, OH, OW};
}

namespace {

PlaneGeom plane_of(const ConvGeom& g, int64_t channels) {
  return PlaneGeom{channels, g.H, g.W, g.kh, g.kw, g.pt, g.pl, g.sh, g.sw, g.dh, g.dw, g.OH, g.OW};
}

// A 1x1, stride-1, unpadded convolution reads the input itself as its column matrix.
bool is_pointwise(const ConvGeom& g) {
  return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.OH == g.H && g.OW == g.W;
}

// Columns per tile: the K x tile column buffer is kept near 512 KiB so that it
// stays in L2 while the GEMM streams over it, but never below 64 columns, where
// the GEMM's own packing overhead starts to dominate.
int64_t choose_tile(int64_t K, int64_t P, size_t elem, int64_t min_items, int64_t images) {
  int64_t tile = static_cast<int64_t>((512 * 1024) / (static_cast<size_t>(K) * elem));
  tile = std::max<int64_t>(64, tile / 16 * 16);
  tile = std::min(tile, P);
  // Enough tiles to keep every thread busy when there are few images.
  if (images < min_items) {
    const int64_t want = (min_items + images - 1) / images;
    tile = std::min(tile, std::max<int64_t>(16, (P + want - 1) / want));
  }
  return std::max<int64_t>(1, tile);
}

// --- Direct kernel for one input channel per group (depthwise, and C_in/groups == 1).
// A GEMM with K = kh*kw would spend its time packing; walking the taps keeps the
// inner loop a unit-stride axpy over an output row when stride is 1.
//
// Visits, for tap (i, j) and every output row oh whose input row is inside the
// image, the valid output-column run [lo, hi) and the input row pointer offset
// such that input column = ow*sw + base.
template <class Fn>
void for_each_tap_row(const PlaneGeom& p, Fn&& fn) {
  for (int64_t i = 0; i < p.kh; ++i)
    for (int64_t j = 0; j < p.kw; ++j) {
      int64_t lo, hi;
      valid_ow_range(p, j, 0, p.OW, lo, hi);
      if (lo >= hi) continue;
      const int64_t base = j * p.dw - p.pad_l;
      for (int64_t oh = 0; oh < p.OH; ++oh) {
        const int64_t ih = oh * p.sh - p.pad_t + i * p.dh;
        if (ih < 0 || ih >= p.H) continue;
        fn(i * p.kw + j, oh, ih, lo, hi, base);
      }
    }
}

template <class T>
void direct_forward_plane(const T* x, const T* w, T bias, T* y, const PlaneGeom& p) {
  std::fill(y, y + p.OH * p.OW, bias);
  for_each_tap_row(p, [&](int64_t tap, int64_t oh, int64_t ih, int64_t lo, int64_t hi, int64_t base) {
    const T wv = w[tap];
    const T* xr = x + ih * p.W + base;
    T* yr = y + oh * p.OW;
    if (p.sw == 1)
      for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow];
    else
      for (int64_t ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow * p.sw];
  });
}

// gx += w (*) gy scattered back; gw += gy . x per tap.
template <class T>
void direct_backward_plane(const T* gy, const T* x, const T* w, T* gx, T* gw, const PlaneGeom& p) {
  for_each_tap_row(p, [&](int64_t tap, int64_t oh, int64_t ih, int64_t lo, int64_t hi, int64_t base) {
    const T* gyr = gy + oh * p.OW;
    if (gx) {
      const T wv = w[tap];
      T* gxr = gx + ih * p.W + base;
      if (p.sw == 1)
        for (int64_t ow = lo; ow < hi; ++ow) gxr[ow] += wv * gyr[ow];
      else
        for (int64_t ow = lo; ow < hi; ++ow) gxr[ow * p.sw] += wv * gyr[ow];
    }
    if (gw) {
      const T* xr = x + ih * p.W + base;
      T acc = 0;
      if (p.sw == 1)
        for (int64_t ow = lo; ow < hi; ++ow) acc += gyr[ow] * xr[ow];
      else
        for (int64_t ow = lo; ow < hi; ++ow) acc += gyr[ow] * xr[ow * p.sw];
      gw[tap] += acc;
    }
  });
}

// One input channel per group and few outputs per group (depthwise): walk taps.
// With many outputs per input channel (e.g. a 1 -> 32 stem) a K = kh*kw GEMM
// over a shared column tile reuses each loaded input far better.
bool use_direct(const ConvGeom& g) { return g.C / g.groups == 1 && g.Cout / g.groups <= 4; }

double conv_flops(const ConvGeom& g) { return 2.0 * g.N * g.Cout * g.OH * g.OW * (g.C / g.groups) * g.kh * g.kw; }

// Adds per-worker partial sums into dst; a worker that got no item left its part empty.
template <class T>
void reduce_into(T* dst, const std::vector<std::vector<T>>& parts, int64_t n) {
  for (const auto& part : parts)
    if (!part.empty())
      for (int64_t i = 0; i < n; ++i) dst[i] += part[i];
}

}  // namespace

template <class T>
void conv2d_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g) {
  const int64_t G = g.groups, Cg = g.C / G, Cog = g.Cout / G, P = g.OH * g.OW, HW = g.H * g.W;
  if (g.N == 0) return;
  const PlaneGeom pg = plane_of(g, Cg);
  const int64_t K = Cg * g.kh * g.kw;
  const int64_t images = g.N * G;
  if (use_direct(g)) {
    const int workers = workers_for(conv_flops(g), images * Cog);
    parallel_for(images * Cog, workers, [&](int64_t item, int) {
      const int64_t n = item / g.Cout, oc = item % g.Cout, gi = oc / Cog;
      direct_forward_plane(x + (n * g.C + gi) * HW, w + oc * K, b ? b[oc] : T(0), y + (n * g.Cout + oc) * P, pg);
    });
    return;
  }
  const bool pointwise = is_pointwise(g);
  const int threads = get_num_threads();
  const int64_t tile = choose_tile(K, P, sizeof(T), threads, images);
  const int64_t ntiles = (P + tile - 1) / tile;
  check_blas_dims(Cog, tile, K, "conv2d");
  const int workers = workers_for(conv_flops(g), images * ntiles);
  std::vector<std::vector<T>> cols(workers);
  parallel_for(images * ntiles, workers, [&](int64_t item, int worker) {
    const int64_t t = item % ntiles, ng = item / ntiles, n = ng / G, gi = ng % G;
    const int64_t c0 = t * tile, cnt = std::min(tile, P - c0);
    const T* xg = x + (n * g.C + gi * Cg) * HW;
    T* yg = y + (n * g.Cout + gi * Cog) * P + c0;
    const T* B;
    int64_t ldb;
    if (pointwise) {
      B = xg + c0;
      ldb = P;
    } else {
      auto& col = cols[worker];
      if (col.size() < static_cast<size_t>(K * tile)) col.resize(K * tile);
      im2col_tile(xg, pg, c0, cnt, col.data());
      B = col.data();
      ldb = cnt;
    }
    gemm<T>(false, false, Cog, cnt, K, T(1), w + gi * Cog * K, K, B, ldb, T(0), yg, P);
    if (b)
      for (int64_t oc = 0; oc < Cog; ++oc) {
        const T bv = b[gi * Cog + oc];
        T* row = yg + oc * P;
        for (int64_t c = 0; c < cnt; ++c) row[c] += bv;
      }
  });
}

template <class T>
void conv2d_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, const ConvGeom& g) {
  const int64_t G = g.groups, Cg = g.C / G, Cog = g.Cout / G, P = g.OH * g.OW, HW = g.H * g.W;
  const int64_t K = Cg * g.kh * g.kw;
  if (gx) std::fill(gx, gx + g.N * g.C * HW, T(0));
  if (gw) std::fill(gw, gw + g.Cout * K, T(0));
  if (gb) {
    std::fill(gb, gb + g.Cout, T(0));
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t oc = 0; oc < g.Cout; ++oc) {
        const T* row = gy + (n * g.Cout + oc) * P;
        T acc = 0;
        for (int64_t p = 0; p < P; ++p) acc += row[p];
        gb[oc] += acc;
      }
  }
  if (g.N == 0 || (!gx && !gw)) return;
  const PlaneGeom pg = plane_of(g, Cg);
  const int64_t images = g.N * G;
  const int threads = get_num_threads();

  if (use_direct(g)) {
    // Items are (image, group): each owns one gx plane, so no two items race on it.
    const int workers = workers_for(2 * conv_flops(g), images);
    std::vector<std::vector<T>> gw_part(workers);
    parallel_for(images, workers, [&](int64_t item, int worker) {
      const int64_t n = item / G, gi = item % G;
      T* gwp = nullptr;
      if (gw) {
        auto& part = gw_part[worker];
        if (part.empty()) part.assign(g.Cout * K, T(0));
        gwp = part.data();
      }
      for (int64_t oc = gi * Cog; oc < (gi + 1) * Cog; ++oc)
        direct_backward_plane(gy + (n * g.Cout + oc) * P, x ? x + (n * g.C + gi) * HW : nullptr, w + oc * K,
                              gx ? gx + (n * g.C + gi) * HW : nullptr, gwp ? gwp + oc * K : nullptr, pg);
    });
    if (gw) reduce_into(gw, gw_part, g.Cout * K);
    return;
  }

  const bool pointwise = is_pointwise(g);
  const int64_t tile = choose_tile(K, P, sizeof(T), threads, images);
  const int64_t ntiles = (P + tile - 1) / tile;
  check_blas_dims(K, tile, Cog, "conv2d_backward");
  // With fewer images than threads, an image's tiles are split into `splits`
  // ranges; ranges after the first accumulate grad_input into private planes
  // (col2im scatters, so two ranges of one image would race on shared pixels).
  const int64_t splits = std::min<int64_t>(ntiles, images >= threads ? 1 : (threads + images - 1) / images);
  const int workers = workers_for(2 * conv_flops(g), images * splits);
  std::vector<std::vector<T>> cols(workers), gcols(workers), gw_part(workers);
  std::vector<std::vector<T>> gx_private(gx && splits > 1 ? images * (splits - 1) : 0);
  parallel_for(images * splits, workers, [&](int64_t item, int worker) {
    const int64_t s = item % splits, ng = item / splits, n = ng / G, gi = ng % G;
    const int64_t t0 = s * ntiles / splits, t1 = (s + 1) * ntiles / splits;
    const T* xg = x ? x + (n * g.C + gi * Cg) * HW : nullptr;  // null when only grad_input is wanted
    const T* gyg = gy + (n * g.Cout + gi * Cog) * P;
    const T* wg = w + gi * Cog * K;
    T* gxg = nullptr;
    if (gx) {
      if (s == 0) {
        gxg = gx + (n * g.C + gi * Cg) * HW;
      } else {
        auto& priv = gx_private[ng * (splits - 1) + s - 1];
        priv.assign(Cg * HW, T(0));
        gxg = priv.data();
      }
    }
    T* gwp = nullptr;
    if (gw) {
      auto& part = gw_part[worker];
      if (part.empty()) part.assign(g.Cout * K, T(0));
      gwp = part.data() + gi * Cog * K;
    }
    auto& col = cols[worker];
    auto& gcol = gcols[worker];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t c0 = t * tile, cnt = std::min(tile, P - c0);
      if (gw) {
        const T* B;
        int64_t ldb;
        if (pointwise) {
          B = xg + c0;
          ldb = P;
        } else {
          if (col.size() < static_cast<size_t>(K * tile)) col.resize(K * tile);
          im2col_tile(xg, pg, c0, cnt, col.data());
          B = col.data();
          ldb = cnt;
        }
        gemm<T>(false, true, Cog, K, cnt, T(1), gyg + c0, P, B, ldb, T(1), gwp, K);
      }
      if (gxg) {
        if (pointwise) {
          gemm<T>(true, false, K, cnt, Cog, T(1), wg, K, gyg + c0, P, T(1), gxg + c0, P);
        } else {
          if (gcol.size() < static_cast<size_t>(K * tile)) gcol.resize(K * tile);
          gemm<T>(true, false, K, cnt, Cog, T(1), wg, K, gyg + c0, P, T(0), gcol.data(), cnt);
          col2im_tile_add(gcol.data(), pg, c0, cnt, gxg);
        }
      }
    }
  });
  if (gx && splits > 1)
    for (int64_t ng = 0; ng < images; ++ng) {
      T* dst = gx + ((ng / G) * g.C + (ng % G) * Cg) * HW;
      for (int64_t s = 1; s < splits; ++s) {
        const auto& priv = gx_private[ng * (splits - 1) + s - 1];
        if (priv.empty()) continue;  // a split with no tiles
        for (int64_t i = 0; i < Cg * HW; ++i) dst[i] += priv[i];
      }
    }
  if (gw) reduce_into(gw, gw_part, g.Cout * K);
}

template <class T>
void unfold(const T* x, T* cols, const ConvGeom& g) {
  const PlaneGeom pg = plane_of(g, g.C);
  const int64_t P = g.OH * g.OW, HW = g.H * g.W, rows = g.C * g.kh * g.kw;
  const int workers = workers_for(double(g.N) * rows * P, g.N);
  parallel_for(g.N, workers, [&](int64_t n, int) { im2col_tile(x + n * g.C * HW, pg, 0, P, cols + n * rows * P); });
}

template <class T>
void fold(const T* cols, T* x, const ConvGeom& g) {
  const PlaneGeom pg = plane_of(g, g.C);
  const int64_t P = g.OH * g.OW, HW = g.H * g.W, rows = g.C * g.kh * g.kw;
  std::fill(x, x + g.N * g.C * HW, T(0));
  const int workers = workers_for(double(g.N) * rows * P, g.N);
  parallel_for(g.N, workers, [&](int64_t n, int) { col2im_tile_add(cols + n * rows * P, pg, 0, P, x + n * g.C * HW); });
}

template <class T>
void conv_transpose2d_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g) {
  conv2d_backward<T>(x, nullptr, w, y, nullptr, nullptr, g);
  if (!b) return;
  const int64_t HW = g.H * g.W;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t c = 0; c < g.C; ++c) {
      T* plane = y + (n * g.C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) plane[i] += b[c];
    }
}

template <class T>
void conv_transpose2d_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, const ConvGeom& g) {
  // The transposed op's input gradient is the forward convolution of gy; its
  // weight gradient is the convolution's weight gradient with the roles of
  // image and output gradient swapped.
  if (gx) conv2d_forward<T>(gy, w, nullptr, gx, g);
  if (gw) conv2d_backward<T>(x, gy, w, nullptr, gw, nullptr, g);
  if (gb) {
    const int64_t HW = g.H * g.W;
    std::fill(gb, gb + g.C, T(0));
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t c = 0; c < g.C; ++c) {
        const T* plane = gy + (n * g.C + c) * HW;
        T acc = 0;
        for (int64_t i = 0; i < HW; ++i) acc += plane[i];
        gb[c] += acc;
      }
  }
}

#define FASTCONV_INSTANTIATE(T)                                                                 \
  template void conv2d_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&);           \
  template void conv2d_backward<T>(const T*, const T*, const T*, T*, T*, T*, const ConvGeom&);  \
  template void unfold<T>(const T*, T*, const ConvGeom&);                                       \
  template void fold<T>(const T*, T*, const ConvGeom&);                                         \
  template void conv_transpose2d_forward<T>(const T*, const T*, const T*, T*, const ConvGeom&); \
  template void conv_transpose2d_backward<T>(const T*, const T*, const T*, T*, T*, T*, const ConvGeom&);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
