// Convolution operators: loops, tiling and threading around im2col + GEMM.
#pragma once

#include <cstdint>

#include "core/conv_geom.hpp"
#include "core/epilogue.hpp"
#include "core/prepared.hpp"

namespace fastconv {

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
