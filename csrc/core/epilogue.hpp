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

// min(max(v, 0), cap) with NaN kept: ReLU6 (cap 6) and its kin.
template <class T>
inline T rectify_capped(T v, T cap) {
  const T r = rectify(v);
  return r > cap ? cap : r;
}

template <class T>
struct Epilogue {
  const T* residual = nullptr;  // null: none; else the output's shape and layout
  bool relu = false;
  bool capped = false;  // with relu: also min(., cap) (a frozen model's ReLU6)
  T cap = T(0);

  bool active() const { return residual != nullptr || relu; }

  // Finishes y[offset, offset + len) of the output whose base is y, adding
  // `bias` first (operators whose kernels leave the bias out pass their run's;
  // the sums in the order y + bias + residual): residual offsets are the
  // output's, so every operator passes its own run of y.
  void apply(T* y, int64_t offset, int64_t len, T bias = T(0)) const {
    T* out = y + offset;
    if (relu && capped) {
      const T* r = residual ? residual + offset : nullptr;
      for (int64_t i = 0; i < len; ++i) out[i] = rectify_capped(out[i] + bias + (r ? r[i] : T(0)), cap);
    } else if (residual) {
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
