// What a convolution's forward does to its output after the bias, in the pass
// that wrote it: y = relu(y + residual).  A residual block's sum and the ReLU
// after it (or a ReLU after a convolution alone) then cost no pass of their
// own over activations that have already left the cache.
#pragma once

#include <cstdint>

namespace fastconv {

// max(v, 0) with NaN kept (as torch): the one rectifier of every fused pass.
template <class T>
inline T rectify(T v) {
  return v <= T(0) ? T(0) : v;
}

template <class T>
struct Epilogue {
  const T* residual = nullptr;  // null: none; else the output's shape and layout
  bool relu = false;

  bool active() const { return residual != nullptr || relu; }

  // Finishes y[offset, offset + len) of the output whose base is y, adding
  // `bias` first (operators whose kernels leave the bias out pass their run's;
  // the sums in the order y + bias + residual): residual offsets are the
  // output's, so every operator passes its own run of y.
  void apply(T* y, int64_t offset, int64_t len, T bias = T(0)) const {
    T* out = y + offset;
    if (residual) {
      const T* r = residual + offset;
      if (relu)
        for (int64_t i = 0; i < len; ++i) out[i] = rectify(out[i] + bias + r[i]);
      else
        for (int64_t i = 0; i < len; ++i) out[i] = out[i] + bias + r[i];
    } else if (relu) {
      for (int64_t i = 0; i < len; ++i) out[i] = rectify(out[i] + bias);
    } else {
      for (int64_t i = 0; i < len; ++i) out[i] += bias;
    }
  }
};

}  // namespace fastconv
