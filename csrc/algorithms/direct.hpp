// Direct convolution for one input channel per group: depthwise convolutions and
// single-channel inputs (the first layer on grey-scale images).  Their im2col
// GEMM has a reduction of only kh*kw, so packing dominates; here every output
// vector is a sum over taps of unit-stride vector loads from a zero-padded copy
// of the input plane, accumulated in registers.
#pragma once

#include <cstdint>
#include <string>

#include "core/conv_geom.hpp"
#include "core/epilogue.hpp"

namespace fastconv {

// True when the direct kernels serve this convolution (one input channel per
// group, column stride at most 8).
bool use_direct(const ConvGeom& g);

// Whether the forward of a use_direct(g) depthwise layer puts the channels in the vectors (narrow maps;
// FASTCONV_DIRECT_VECTORS=channels or positions forces it either way where it can take the layer).
bool direct_channel_vectors(const ConvGeom& g, int64_t elem_bytes);

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
