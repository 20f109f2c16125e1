// Separable resampling of image planes (nearest, bilinear, bicubic): every
// output row oh reads TH input rows through (rows[oh*TH + i], row_w[oh*TH + i]),
// every output column ow reads TW input columns through (cols, col_w); the
// output is the sum over both tap sets of the weights' product times the input.
// Which taps and weights a mode uses (torch's coordinate rules) is computed by
// the caller; every index must lie in the input (checked before any work).
#pragma once

#include <cstdint>

namespace fastconv {

struct Taps {
  const int64_t* index;  // out x taps, input positions
  const double* weight;  // out x taps
  int64_t out, taps, in;
};

// y[plane, oh, ow] = sum_i sum_j row_w * col_w * x[plane, rows, cols]; planes x (rows.in x cols.in) -> planes x
// (rows.out x cols.out).
template <class T>
void interpolate_forward(const T* x, T* y, int64_t planes, const Taps& rows, const Taps& cols);

// gx (overwritten) = the adjoint of interpolate_forward applied to gy.
template <class T>
void interpolate_backward(const T* gy, T* gx, int64_t planes, const Taps& rows, const Taps& cols);

}  // namespace fastconv
