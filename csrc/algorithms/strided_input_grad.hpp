// A strided layer's input gradient as sub-pixel phases on the implicit GEMM's channel-vector tiles.
#pragma once

#include <cstdint>

#include "core/conv_geom.hpp"
#include "core/prepared.hpp"

namespace fastconv {

// True when a strided layer's input gradient runs as sub-pixel phases on the
// implicit GEMM with input channels in the vectors (strided_input_grad; the
// FASTCONV_IMPLICIT_GEMM switch as above); elem_bytes: sizeof the dtype.
bool use_strided_input_grad(const ConvGeom& g, int64_t elem_bytes);

// gx (overwritten) for use_strided_input_grad geometries.  gy's zero padding
// meets the weights (0 * Inf), so the caller keeps non-finite weights off it,
// as off the adjoint forward.
template <class T>
void strided_input_grad(const T* gy, const T* w, T* gx, const ConvGeom& g, PrepRef prep = {});

}  // namespace fastconv
