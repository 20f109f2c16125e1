// The implicit GEMM: a convolution's forward and weight gradient as GEMMs of the packed weights with B read in place
// from padded input planes, no column matrix written.  Several input channels per group; the direct kernels take
// one (direct.hpp).
#pragma once

#include <cstdint>
#include <vector>

#include "core/conv_geom.hpp"
#include "core/epilogue.hpp"
#include "core/prepared.hpp"

namespace fastconv {

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

// The weights (Cout x C/groups*kh*kw, each group's rows a GEMM's A) packed by pack_rows for the level's packed GEMM:
// in panels of the position-vector tile's rows (implicit_panel), or with `channels` of the channel-vector tile's
// (chan_panel_over: by channels and positions); group gi's panels at gi * round_up(Cout/groups, mr) * K.  Made once
// into a plan's store, or into `scratch` on every call without one.  The implicit GEMM and a plan's im2col GEMM share
// them; mr is set to the panel's rows.
template <class T>
const T* packed_weight_panels(const T* w, const ConvGeom& g, bool channels, PrepRef prep, std::vector<T>& scratch,
                              int64_t& mr);

// Whether a plan's im2col GEMM on the packed tiles puts the output channels in the vectors for tiles of `cols`
// columns, Cog output channels a group and reductions of K (gemm_channel_vectors in implicit_rules.hpp: where and
// why); the weights are then packed as the channel tiles take them (packed_weight_panels with `channels`).
bool plan_gemm_channels(int64_t Cog, int64_t cols, int64_t K, int64_t elem_bytes);

// True when the implicit GEMM serves this convolution's weight gradient (one
// group, column stride 1, compact planes keep most columns); the same
// FASTCONV_IMPLICIT_GEMM switch.
bool use_implicit_weight_grad(const ConvGeom& g);

// gw (overwritten) for use_implicit_weight_grad(g) geometries: the sum of exactly the products of the
// convolution, so non-finite values propagate as in any direct sum.
template <class T>
void implicit_gemm_weight_grad(const T* x, const T* gy, T* gw, const ConvGeom& g);

}  // namespace fastconv
