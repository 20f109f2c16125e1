// A prepared convolution layer: its weights copied once, every algorithm's transformed form of them made on first
// use and kept (prepared.hpp), the geometry checked per input shape by the one shape check.  fastconv.Conv2dPlan
// wraps it; the functional conv2d stays stateless.
#pragma once

#include <cstdint>
#include <vector>

#include "core/geometry.hpp"
#include "core/prepared.hpp"
#include "ops/conv.hpp"

namespace fastconv {

template <class T>
class ConvPlan {
 public:
  // w: [Cout][Cin/groups][kh][kw]; b: [Cout] or null.  Both are copied.
  ConvPlan(const T* w, int64_t Cout, int64_t Cin_g, int64_t kh, int64_t kw, const T* b, int64_t sh, int64_t sw,
           int64_t dh, int64_t dw, int64_t groups)
      : Cout_(Cout), Cin_g_(Cin_g), kh_(kh), kw_(kw), sh_(sh), sw_(sw), dh_(dh), dw_(dw), groups_(groups) {
    // The shape check on a 1x1-extent stand-in input: the weight's and the options' own errors, at construction.
    const int64_t C = checked_mul(Cin_g, groups, "input channels");
    conv_geom(0, C, effective_kernel(kh, dh), effective_kernel(kw, dw), Cout, Cin_g, kh, kw, sh, sw, 0, 0, 0, 0, dh, dw,
              groups);
    w_.assign(w, w + checked_mul(checked_mul(checked_mul(Cout, Cin_g, "weight"), kh, "weight"), kw, "weight"));
    if (b) b_.assign(b, b + Cout);
  }

  // The geometry for an input (N, C, H, W) with padding (top, bottom, left, right).
  ConvGeom geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t pt, int64_t pb, int64_t pl, int64_t pr) const {
    return conv_geom(N, C, H, W, Cout_, Cin_g_, kh_, kw_, sh_, sw_, pt, pb, pl, pr, dh_, dw_, groups_);
  }

  void forward(const T* x, T* y, const ConvGeom& g, const Epilogue<T>& ep) {
    conv2d_forward<T>(x, w_.data(), bias(), y, g, ep, PrepRef{&prep_, 0});
  }

  // Any of gx, gw, gb may be null.
  void backward(const T* gy, const T* x, T* gx, T* gw, T* gb, const ConvGeom& g) {
    conv2d_backward<T>(gy, x, w_.data(), gx, gw, gb, g, PrepRef{&prep_, 0});
  }

  const std::vector<T>& weight() const { return w_; }
  const T* bias() const { return b_.empty() ? nullptr : b_.data(); }
  // Bytes of the transformed weights made so far (the copy of the weights not counted).
  size_t prepared_bytes() const { return prep_.bytes(); }

 private:
  int64_t Cout_, Cin_g_, kh_, kw_, sh_, sw_, dh_, dw_, groups_;
  std::vector<T> w_, b_;
  PreparedWeights prep_;
};

}  // namespace fastconv
