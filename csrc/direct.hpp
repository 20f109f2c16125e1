// Direct convolution for one input channel per group: depthwise convolutions and
// single-channel inputs (the first layer on grey-scale images).  Their im2col
// GEMM has a reduction of only kh*kw, so packing dominates; here every output
// vector is a sum over taps of unit-stride vector loads from a zero-padded copy
// of the input plane, accumulated in registers.
#pragma once

#include <string>

#include "conv.hpp"

namespace fastconv {

// True when the direct kernels serve this convolution (one input channel per
// group, column stride at most 8).
bool use_direct(const ConvGeom& g);

// True when the implicit GEMM serves this convolution's forward: one group of
// several input channels, a short reduction C*kh*kw, rows at least half a tile
// wide.  FASTCONV_IMPLICIT_GEMM=0 turns it off, =1 takes every layer of one
// group (tests reach the edge cases so).
// elem_bytes: sizeof the dtype (the rules budget the planes the tiles read).
// prepared: the weights are packed once for many calls (a plan), so long reductions pay no packing per call.
bool use_implicit_gemm(const ConvGeom& g, int64_t elem_bytes = 4, bool prepared = false);

// y = conv(x, w) + b on the packed GEMM kernel, B read in place from padded
// input planes (no column matrix); b may be null.
template <class T>
void implicit_gemm_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep = {},
                           PrepRef prep = {});

// True when the implicit GEMM serves this convolution's weight gradient (one
// group, column stride 1, compact planes keep most columns); the same
// FASTCONV_IMPLICIT_GEMM switch.
bool use_implicit_weight_grad(const ConvGeom& g);
// Where the Winograd weight gradient (float32, 3x3) also serves and use_implicit_weight_grad(g) holds,
// whether this one is faster.
bool implicit_weight_grad_beats_winograd(const ConvGeom& g);

// gw (overwritten) for use_implicit_weight_grad(g) geometries: the sum of exactly the products of the
// convolution, so non-finite values propagate as in any direct sum.
template <class T>
void implicit_gemm_weight_grad(const T* x, const T* gy, T* gw, const ConvGeom& g);

// True when a strided layer's input gradient runs as sub-pixel phases on the
// implicit GEMM with input channels in the vectors (strided_input_grad; the
// FASTCONV_IMPLICIT_GEMM switch as above); elem_bytes: sizeof the dtype.
bool use_strided_input_grad(const ConvGeom& g, int64_t elem_bytes);

// gx (overwritten) for use_strided_input_grad geometries.  gy's zero padding
// meets the weights (0 * Inf), so the caller keeps non-finite weights off it,
// as off the adjoint forward.
template <class T>
void strided_input_grad(const T* gy, const T* w, T* gx, const ConvGeom& g, PrepRef prep = {});

// Which vector width this build's direct kernels use (for show_config).
std::string direct_kernel_name();

// y = conv(x, w) + b for use_direct(g) geometries; b may be null.
template <class T>
void direct_forward(const T* x, const T* w, const T* b, T* y, const ConvGeom& g, const Epilogue<T>& ep = {});

// Input gradient gx and/or weight gradient gw (either may be null; both are
// overwritten) for use_direct(g) geometries.
template <class T>
void direct_backward(const T* gy, const T* x, const T* w, T* gx, T* gw, const ConvGeom& g);

}  // namespace fastconv
