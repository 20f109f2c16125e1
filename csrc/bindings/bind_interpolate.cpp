// fastconv._core's resampling (ops/interpolate.hpp): the tap tables Python builds, applied per dtype.
#include "common.hpp"
#include "core/geometry.hpp"
#include "ops/interpolate.hpp"

namespace fastconv::bind {

namespace {

// (out, taps) index and weight tables of one axis, as Python computed them.
Taps taps_of(const carray<int64_t>& index, const carray<double>& weight, int64_t in, const char* axis) {
  if (index.ndim() != 2 || weight.ndim() != 2 || index.shape(0) != weight.shape(0) || index.shape(1) != weight.shape(1))
    fail(std::string("fastconv internal error: malformed ") + axis + " taps");
  return Taps{index.data(), weight.data(), index.shape(0), index.shape(1), in};
}

template <class T>
void bind_typed(py::module_& m, const std::string& suffix) {
  m.def(("interpolate_forward_" + suffix).c_str(),
        [](const carray<T>& x, const carray<int64_t>& ri, const carray<double>& rw, const carray<int64_t>& ci,
           const carray<double>& cw) {
          require_ndim(x, 4, "input");
          const Taps rows = taps_of(ri, rw, x.shape(2), "row"), cols = taps_of(ci, cw, x.shape(3), "column");
          const int64_t planes = checked_mul(x.shape(0), x.shape(1), "input");
          checked_mul(checked_mul(planes, rows.out, "output"), cols.out, "output");
          auto y = new_array<T>({x.shape(0), x.shape(1), rows.out, cols.out});
          {
            py::gil_scoped_release release;
            interpolate_forward<T>(x.data(), y.mutable_data(), planes, rows, cols);
          }
          return y;
        });
  m.def(("interpolate_backward_" + suffix).c_str(),
        [](const carray<T>& gy, int64_t H, int64_t W, const carray<int64_t>& ri, const carray<double>& rw,
           const carray<int64_t>& ci, const carray<double>& cw) {
          require_ndim(gy, 4, "grad_output");
          const Taps rows = taps_of(ri, rw, H, "row"), cols = taps_of(ci, cw, W, "column");
          if (gy.shape(2) != rows.out || gy.shape(3) != cols.out)
            fail("grad_output: expected spatial size (" + std::to_string(rows.out) + ", " + std::to_string(cols.out) +
                 "), got (" + std::to_string(gy.shape(2)) + ", " + std::to_string(gy.shape(3)) + ")");
          const int64_t planes = checked_mul(gy.shape(0), gy.shape(1), "grad_output");
          checked_mul(checked_mul(planes, H, "input"), W, "input");
          auto gx = new_array<T>({gy.shape(0), gy.shape(1), H, W});
          {
            py::gil_scoped_release release;
            interpolate_backward<T>(gy.data(), gx.mutable_data(), planes, rows, cols);
          }
          return gx;
        });
}

}  // namespace

void bind_interpolate(py::module_& m) {
  bind_typed<float>(m, "float32");
  bind_typed<double>(m, "float64");
}

}  // namespace fastconv::bind
