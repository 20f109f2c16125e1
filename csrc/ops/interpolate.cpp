// Separable resampling (nearest, bilinear, bicubic) forward and backward, planes spread over the threads.
#include "ops/interpolate.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "core/geometry.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

namespace {

void check_taps(const Taps& t, const char* axis) {
  for (int64_t i = 0; i < t.out * t.taps; ++i)
    if (t.index[i] < 0 || t.index[i] >= t.in)
      fail(std::string("fastconv internal error: ") + axis + " tap " + std::to_string(t.index[i]) + " outside [0, " +
           std::to_string(t.in) + ")");
}

// What forward and backward both need: checked taps, weights in the compute
// type (once per call), plane sizes and the threads worth using.
template <class T>
struct Plan {
  std::vector<T> rw, cw;
  int64_t in_plane, out_plane;
  int workers;

  Plan(int64_t planes, const Taps& rows, const Taps& cols) {
    check_taps(rows, "row");
    check_taps(cols, "column");
    rw.assign(rows.weight, rows.weight + rows.out * rows.taps);
    cw.assign(cols.weight, cols.weight + cols.out * cols.taps);
    in_plane = rows.in * cols.in;
    out_plane = rows.out * cols.out;
    workers = workers_for(double(planes) * out_plane * rows.taps * cols.taps, planes);
  }
};

// One input row's horizontal pass: ar[ow] = sum_j cw[ow, j] * xr[index[ow, j]].
// TW is the tap count when it is a compile-time 1, 2 or 4 (nearest, bilinear,
// bicubic), so the tap loop unrolls; 0 reads it from `taps`.
template <class T, int TW>
void across_row(const T* xr, const int64_t* index, const T* cw, int64_t out, int64_t taps, T* ar) {
  const int64_t tw = TW > 0 ? TW : taps;
  for (int64_t ow = 0; ow < out; ++ow) {
    T acc = 0;
    for (int64_t j = 0; j < tw; ++j) acc += cw[ow * tw + j] * xr[index[ow * tw + j]];
    ar[ow] = acc;
  }
}

template <class T>
using AcrossFn = void (*)(const T*, const int64_t*, const T*, int64_t, int64_t, T*);

template <class T>
AcrossFn<T> across_for(int64_t taps) {
  switch (taps) {
    case 1:
      return across_row<T, 1>;
    case 2:
      return across_row<T, 2>;
    case 4:
      return across_row<T, 4>;
    default:
      return across_row<T, 0>;
  }
}

}  // namespace

template <class T>
void interpolate_forward(const T* x, T* y, int64_t planes, const Taps& rows, const Taps& cols) {
  const Plan<T> plan(planes, rows, cols);
  const std::vector<T>&rw = plan.rw, &cw = plan.cw;
  const int64_t in_plane = plan.in_plane, out_plane = plan.out_plane;
  const int workers = plan.workers;
  // Per worker: each input row's horizontal pass (cols.out values), computed
  // once per plane when a first output row needs it, then combined vertically
  // with contiguous rows (vectorised).  A row that no output reads is never
  // computed, which matters when shrinking.
  std::vector<std::vector<T>> across(workers);
  std::vector<std::vector<int64_t>> stamp(workers);
  const AcrossFn<T> across_fn = across_for<T>(cols.taps);
  parallel_for(planes, workers, [&](int64_t plane, int wk) {
    const T* xp = x + plane * in_plane;
    T* yp = y + plane * out_plane;
    std::vector<T>& a = across[wk];
    std::vector<int64_t>& seen = stamp[wk];
    if (a.empty()) {
      a.resize(static_cast<size_t>(rows.in * cols.out));
      seen.assign(static_cast<size_t>(rows.in), -1);
    }
    for (int64_t oh = 0; oh < rows.out; ++oh) {
      T* yr = yp + oh * cols.out;
      for (int64_t i = 0; i < rows.taps; ++i) {
        const int64_t ih = rows.index[oh * rows.taps + i];
        T* ar = a.data() + ih * cols.out;
        if (seen[ih] != plane) {
          across_fn(xp + ih * cols.in, cols.index, cw.data(), cols.out, cols.taps, ar);
          seen[ih] = plane;
        }
        const T wr = rw[oh * rows.taps + i];
        if (i == 0)
          for (int64_t ow = 0; ow < cols.out; ++ow) yr[ow] = wr * ar[ow];
        else
          for (int64_t ow = 0; ow < cols.out; ++ow) yr[ow] += wr * ar[ow];
      }
    }
  });
}

template <class T>
void interpolate_backward(const T* gy, T* gx, int64_t planes, const Taps& rows, const Taps& cols) {
  const Plan<T> plan(planes, rows, cols);
  const std::vector<T>&rw = plan.rw, &cw = plan.cw;
  const int64_t in_plane = plan.in_plane, out_plane = plan.out_plane;
  // The forward pass transposed, in the opposite order: first the vertical
  // adjoint, contiguous rows of cols.out values summed into one buffer row per
  // input row (vectorised), then the horizontal scatter once per input row
  // rather than once per output row and vertical tap.  A plane's work stays
  // inside the plane: planes are independent work items, zeroed where they are
  // written.
  std::vector<std::vector<T>> down(plan.workers);
  parallel_for(planes, plan.workers, [&](int64_t plane, int wk) {
    const T* gp = gy + plane * out_plane;
    T* xp = gx + plane * in_plane;
    std::vector<T>& d = down[wk];
    d.assign(static_cast<size_t>(rows.in * cols.out), T(0));
    for (int64_t oh = 0; oh < rows.out; ++oh) {
      const T* gr = gp + oh * cols.out;
      for (int64_t i = 0; i < rows.taps; ++i) {
        const T wr = rw[oh * rows.taps + i];
        T* dr = d.data() + rows.index[oh * rows.taps + i] * cols.out;
        for (int64_t ow = 0; ow < cols.out; ++ow) dr[ow] += wr * gr[ow];
      }
    }
    std::fill(xp, xp + in_plane, T(0));
    for (int64_t ih = 0; ih < rows.in; ++ih) {
      const T* dr = d.data() + ih * cols.out;
      T* xr = xp + ih * cols.in;
      for (int64_t ow = 0; ow < cols.out; ++ow) {
        const T g = dr[ow];
        for (int64_t j = 0; j < cols.taps; ++j) xr[cols.index[ow * cols.taps + j]] += cw[ow * cols.taps + j] * g;
      }
    }
  });
}

#define FASTCONV_INSTANTIATE(T)                                                          \
  template void interpolate_forward<T>(const T*, T*, int64_t, const Taps&, const Taps&); \
  template void interpolate_backward<T>(const T*, T*, int64_t, const Taps&, const Taps&);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
