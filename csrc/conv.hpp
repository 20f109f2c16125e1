// Convolution operators: loops, tiling and threading around im2col + GEMM.
#pragma once

#include <cstdint>

#include "epilogue.hpp"
#include "prepared.hpp"

namespace fastconv {

struct ConvGeom {
  int64_t N, C, H, W;              // input
  int64_t Cout;                    // output channels
  int64_t kh, kw, sh, sw, dh, dw;  // kernel, stride, dilation
  int64_t pt, pb, pl, pr;          // padding top, bottom, left, right
  int64_t groups;
  int64_t OH, OW;  // output grid
};

// The one shape check shared by forward, backward and transposed convolution
// (after PyTorch's slow_conv2d_shape_check).  `weight_in` is weight.shape[1].
// Throws std::invalid_argument naming the argument and the values received.
ConvGeom conv_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw,
                   int64_t groups);

// Like conv_geom, but the output grid is given: for a transposed convolution the
// "conv output" is the transposed input, whose size is not implied by H, W.
ConvGeom conv_geom_with_output(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh,
                               int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                               int64_t groups, int64_t OH, int64_t OW);

// y[N, Cout, OH, OW] = conv(x[N, C, H, W], w[Cout, C/groups, kh, kw]) + b, finished by `ep`.  With `prep` (a
// prepared layer's store, prepared.hpp) the algorithms take their transformed weights from it, made on first use.
template <class T>
void conv2d_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep = {},
                    PrepRef prep = {});

// Any of gx, gw, gb may be null to skip that gradient; `prep` as for the forward.
template <class T>
void conv2d_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, const ConvGeom& g, PrepRef prep = {});

// unfold / fold: x[N, C, H, W] <-> cols[N, C*kh*kw, OH*OW].  fold accumulates
// overlapping windows into a zero-filled output.
template <class T>
void unfold(const T* x, T* cols, const ConvGeom& g);
template <class T>
void fold(const T* cols, T* x, const ConvGeom& g);

}  // namespace fastconv

namespace fastconv {

// Transposed convolution = the input-gradient of the convolution whose output is
// x.  `g` describes that convolution: g.C/g.H/g.W are the transposed output,
// g.Cout/g.OH/g.OW the transposed input (see conv_geom_with_output).
template <class T>
void conv_transpose2d_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g);
template <class T>
void conv_transpose2d_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, T* gb, const ConvGeom& g);

}  // namespace fastconv
