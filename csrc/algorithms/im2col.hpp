// im2col / col2im on one image plane stack, restricted to a range of output
// positions so that callers can work on L2-sized column tiles instead of one
// giant buffer per image.
//
// Layout contract (the same as torch.nn.functional.unfold): the column matrix is
// row-major with C*kh*kw rows, ordered (c, ki, kj), and one column per output
// position p = oh*OW + ow.  A tile holds the columns [col_begin, col_begin+count)
// of one image, with leading dimension `ld` (>= count): several images' tiles
// can sit side by side in one buffer.
//
// Padding is given before each axis only; the padding after it is implied by
// OH/OW, which the caller computed with the geometry rules (this is what lets the
// same code serve asymmetric 'same' padding and transposed convolutions).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace fastconv {

struct PlaneGeom {
  int64_t C, H, W;       // input channels and spatial size
  int64_t kh, kw;        // kernel
  int64_t pad_t, pad_l;  // padding before each axis
  int64_t sh, sw;        // stride
  int64_t dh, dw;        // dilation
  int64_t OH, OW;        // output grid
};

// Range of ow in [ow0, ow1) whose input column ow*sw - pad_l + j*dw lies in [0, W).
inline void valid_ow_range(const PlaneGeom& g, int64_t j, int64_t ow0, int64_t ow1, int64_t& lo, int64_t& hi) {
  const int64_t off = j * g.dw - g.pad_l;  // iw = ow*sw + off
  // smallest ow with ow*sw + off >= 0
  int64_t a = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
  // largest ow with ow*sw + off <= W-1, plus one
  int64_t b = (g.W - 1 - off) < 0 ? 0 : (g.W - 1 - off) / g.sw + 1;
  // Clamp into the run: a tap can see only padding for the whole run, on either side.
  lo = std::min(std::max(ow0, a), ow1);
  hi = std::max(lo, std::min(ow1, b));
}

// Visit, for every (row r of the column matrix, output row oh), the run of
// output columns [ow0, ow1) that belongs to the tile.  `fn(r, ih_or_neg, ...)`
// keeps im2col and col2im on the same traversal so they cannot disagree.
template <class Fn>
inline void for_each_tile_run(const PlaneGeom& g, int64_t col_begin, int64_t count, int64_t ld, Fn&& fn) {
  const int64_t col_end = col_begin + count;
  const int64_t oh_first = col_begin / g.OW, oh_last = (col_end - 1) / g.OW;
  int64_t r = 0;
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j, ++r)
        for (int64_t oh = oh_first; oh <= oh_last; ++oh) {
          const int64_t ow0 = oh == oh_first ? col_begin - oh * g.OW : 0;
          const int64_t ow1 = oh == oh_last ? col_end - oh * g.OW : g.OW;
          const int64_t ih = oh * g.sh - g.pad_t + i * g.dh;
          const int64_t dst = r * ld + (oh * g.OW + ow0 - col_begin);  // offset of ow0 in the tile
          fn(c, ih, j, ow0, ow1, dst);
        }
}

// Tap columns j of whole output rows have the same valid range for every row:
// computed once per tile (two divisions per run cost as much as copying a
// 16-column run of a small map).
struct RowRanges {
  int64_t lo[16], hi[16];
  bool cached;
  explicit RowRanges(const PlaneGeom& g) : cached(g.kw <= 16) {
    for (int64_t j = 0; cached && j < g.kw; ++j) valid_ow_range(g, j, 0, g.OW, lo[j], hi[j]);
  }
  void get(const PlaneGeom& g, int64_t j, int64_t ow0, int64_t ow1, int64_t& l, int64_t& h) const {
    if (cached && ow0 == 0 && ow1 == g.OW) {
      l = lo[j];
      h = hi[j];
    } else {
      valid_ow_range(g, j, ow0, ow1, l, h);
    }
  }
};

template <class T>
void im2col_tile(const T* x, const PlaneGeom& g, int64_t col_begin, int64_t count, int64_t ld, T* col) {
  const RowRanges ranges(g);
  for_each_tile_run(g, col_begin, count, ld,
                    [&](int64_t c, int64_t ih, int64_t j, int64_t ow0, int64_t ow1, int64_t dst) {
                      T* out = col + dst;
                      const int64_t len = ow1 - ow0;
                      if (ih < 0 || ih >= g.H) {
                        for (int64_t k = 0; k < len; ++k) out[k] = T(0);
                        return;
                      }
                      int64_t lo, hi;
                      ranges.get(g, j, ow0, ow1, lo, hi);
                      for (int64_t k = 0; k < lo - ow0; ++k) out[k] = T(0);
                      const T* src = x + (c * g.H + ih) * g.W + j * g.dw - g.pad_l;
                      if (g.sw == 1) {
                        std::memcpy(out + (lo - ow0), src + lo, sizeof(T) * (hi - lo));
                      } else {
                        for (int64_t ow = lo; ow < hi; ++ow) out[ow - ow0] = src[ow * g.sw];
                      }
                      for (int64_t k = hi - ow0; k < len; ++k) out[k] = T(0);
                    });
}

// Accumulates (never overwrites): several column entries map to one input
// pixel when windows overlap, so the caller zero-fills `x` once beforehand.
template <class T>
void col2im_tile_add(const T* col, const PlaneGeom& g, int64_t col_begin, int64_t count, int64_t ld, T* x) {
  const RowRanges ranges(g);
  for_each_tile_run(g, col_begin, count, ld,
                    [&](int64_t c, int64_t ih, int64_t j, int64_t ow0, int64_t ow1, int64_t dst) {
                      if (ih < 0 || ih >= g.H) return;
                      int64_t lo, hi;
                      ranges.get(g, j, ow0, ow1, lo, hi);
                      const T* in = col + dst - ow0;
                      T* xr = x + (c * g.H + ih) * g.W + j * g.dw - g.pad_l;
                      if (g.sw == 1) {
                        for (int64_t ow = lo; ow < hi; ++ow) xr[ow] += in[ow];
                      } else {
                        for (int64_t ow = lo; ow < hi; ++ow) xr[ow * g.sw] += in[ow];
                      }
                    });
}

}  // namespace fastconv
