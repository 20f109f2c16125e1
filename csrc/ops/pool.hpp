// 2-D max and average pooling with torch's semantics (padding, dilation for max,
// ceil_mode, count_include_pad, divisor_override).  Every (batch, channel) plane is
// independent, so planes are the unit of parallel work.
#pragma once

#include <cstdint>

namespace fastconv {

struct PoolGeom {
  int64_t planes, H, W;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t OH, OW;
};

// Shared validation for both pools, forward and backward.
PoolGeom pool_geom(int64_t planes, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                   int64_t pw, int64_t dh, int64_t dw, bool ceil_mode);

// indices (may be null) receive the flat h*W+w position of each maximum, as torch returns;
// -1 for a window wholly in padding (its maximum is -inf; torch returns a position past the
// plane there).  The backward refuses any other index outside the plane.
template <class T>
void max_pool2d_forward(const T* x, T* y, int64_t* indices, const PoolGeom& g);
template <class T>
void max_pool2d_backward(const T* gy, const int64_t* indices, T* gx, const PoolGeom& g);

// divisor 0 means no override; any other value (negative ones too, as torch) divides every window.
template <class T>
void avg_pool2d_forward(const T* x, T* y, const PoolGeom& g, bool count_include_pad, int64_t divisor);
template <class T>
void avg_pool2d_backward(const T* gy, T* gx, const PoolGeom& g, bool count_include_pad, int64_t divisor);

// max_unpool2d: y (planes x OP, zero-filled) receives x[plane, p] at the flat
// position indices[plane, p] of its plane, as max_pool2d's indices give them;
// a position named twice gets the later value (torch's CPU order).  The
// backward gathers gy at the same positions.  Every index must lie in
// [0, OP); one outside is refused before anything is written.
template <class T>
void max_unpool2d_forward(const T* x, const int64_t* indices, T* y, int64_t planes, int64_t P, int64_t OP);
template <class T>
void max_unpool2d_backward(const T* gy, const int64_t* indices, T* gx, int64_t planes, int64_t P, int64_t OP);

}  // namespace fastconv
