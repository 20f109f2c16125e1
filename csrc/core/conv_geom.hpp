// A convolution's geometry (ConvGeom) and the one shape check that makes it, shared by the forward, the
// backward, the transposed convolution, prepared layers and every algorithm.
#pragma once

#include <cstdint>

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

}  // namespace fastconv
