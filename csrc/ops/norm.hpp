// Fused passes for the layers around convolutions (fastconv.nn): BatchNorm2d
// statistics, its affine apply with an optional ReLU, its backward, and ReLU.
// Each reads and writes every element once, threaded over (image, channel)
// planes, where NumPy needs several passes and temporaries.
#pragma once

#include <cstdint>

namespace fastconv {

// Per channel of x (N x C x HW): mean and biased variance, accumulated in double
// around a per-channel shift (the channel's first value), so a large mean does
// not swamp the variance.
template <class T>
void batch_norm_stats(const T* x, int64_t N, int64_t C, int64_t HW, double* mean, double* var);

// y = x * scale[c] + shift[c], then max(y, 0) when `relu`.  y may be x.
template <class T>
void channel_affine(const T* x, const T* scale, const T* shift, bool relu, T* y, int64_t N, int64_t C, int64_t HW);

// BatchNorm2d backward from x, the statistics used (mean, inv_std per channel)
// and gamma (null: 1).  `batch`: the statistics came from this batch (training),
// so gx gets the terms through the mean and variance.  gx, dgamma, dbeta may be
// null to skip; dgamma and dbeta are overwritten.  `relu_out` (null: none) is the
// output of a ReLU fused after the norm: gy is zeroed where it is <= 0.
template <class T>
void batch_norm_backward(const T* gy, const T* x, const T* relu_out, const double* mean, const double* inv_std,
                         const T* gamma, bool batch, T* gx, T* dgamma, T* dbeta, int64_t N, int64_t C, int64_t HW);

// y = max(x, 0) (NaN stays NaN, as torch); gx = 0 where y <= 0, else gy (a NaN output passes it, as torch).
template <class T>
void relu_forward(const T* x, T* y, int64_t n);
template <class T>
void relu_backward(const T* gy, const T* y, T* gx, int64_t n);
// y = a + b, then max(y, 0) when `relu` (NaN kept): a residual block's sum
// and the ReLU after it in one pass.  y may be a or b; x == y makes relu_forward in place.
template <class T>
void add_relu(const T* a, const T* b, T* y, int64_t n, bool relu);

}  // namespace fastconv
