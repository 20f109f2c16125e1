// fastconv._core's fused normalisation passes (ops/norm.hpp): BatchNorm2d statistics, apply and backward, ReLU.
#include <optional>

#include "common.hpp"
#include "core/geometry.hpp"
#include "ops/norm.hpp"

namespace fastconv::bind {

namespace {

template <class T>
void check_same(const carray<T>& a, const carray<T>& b, const char* name) {
  if (a.size() != b.size() || a.ndim() != b.ndim())
    fail(std::string(name) + ": expected the input's shape, got " + std::to_string(a.size()) + " elements");
}

template <class T>
void bind_typed(py::module_& m, const std::string& suffix) {
  m.def(("batch_norm_stats_" + suffix).c_str(), [](const carray<T>& x) {
    require_ndim(x, 4, "input");
    const int64_t N = x.shape(0), C = x.shape(1), HW = checked_mul(x.shape(2), x.shape(3), "input");
    auto mean = new_array<double>({C}), var = new_array<double>({C});
    {
      py::gil_scoped_release release;
      batch_norm_stats<T>(x.data(), N, C, HW, mean.mutable_data(), var.mutable_data());
    }
    return py::make_tuple(mean, var);
  });
  m.def(("channel_affine_" + suffix).c_str(),
        [](const carray<T>& x, const carray<T>& scale, const carray<T>& shift, bool relu) {
          require_ndim(x, 4, "input");
          const int64_t N = x.shape(0), C = x.shape(1), HW = checked_mul(x.shape(2), x.shape(3), "input");
          if (scale.size() != C || shift.size() != C) fail("scale/shift: expected one value per channel");
          auto y = new_array<T>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
          {
            py::gil_scoped_release release;
            channel_affine<T>(x.data(), scale.data(), shift.data(), relu, y.mutable_data(), N, C, HW);
          }
          return y;
        });
  m.def(("batch_norm_backward_" + suffix).c_str(),
        [](const carray<T>& gy, const carray<T>& x, std::optional<carray<T>> relu_out, const carray<double>& mean,
           const carray<double>& inv_std, std::optional<carray<T>> gamma, bool batch, bool need_gx) {
          require_ndim(x, 4, "input");
          check_same(gy, x, "grad_output");
          if (relu_out) check_same(*relu_out, x, "relu_out");
          const int64_t N = x.shape(0), C = x.shape(1), HW = checked_mul(x.shape(2), x.shape(3), "input");
          if (mean.size() != C || inv_std.size() != C || (gamma && gamma->size() != C))
            fail("mean/inv_std/weight: expected one value per channel");
          auto dgamma = new_array<T>({C}), dbeta = new_array<T>({C});
          py::object gx_obj = py::none();
          carray<T> gx;
          if (need_gx) {
            gx = new_array<T>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
            gx_obj = gx;
          }
          {
            py::gil_scoped_release release;
            batch_norm_backward<T>(gy.data(), x.data(), relu_out ? relu_out->data() : nullptr, mean.data(),
                                   inv_std.data(), gamma ? gamma->data() : nullptr, batch,
                                   need_gx ? gx.mutable_data() : nullptr, dgamma.mutable_data(), dbeta.mutable_data(),
                                   N, C, HW);
          }
          return py::make_tuple(gx_obj, dgamma, dbeta);
        });
  m.def(("relu_forward_" + suffix).c_str(), [](const carray<T>& x) {
    auto y = new_array_like<T>(x);
    {
      py::gil_scoped_release release;
      relu_forward<T>(x.data(), y.mutable_data(), x.size());
    }
    return y;
  });
  m.def(("add_relu_" + suffix).c_str(), [](const carray<T>& a, const carray<T>& b, bool relu) {
    check_same(b, a, "add_relu: second operand");
    auto y = new_array_like<T>(a);
    {
      py::gil_scoped_release release;
      add_relu<T>(a.data(), b.data(), y.mutable_data(), a.size(), relu);
    }
    return y;
  });
  m.def(("relu_backward_" + suffix).c_str(), [](const carray<T>& gy, const carray<T>& y) {
    check_same(gy, y, "grad_output");
    auto gx = new_array_like<T>(y);
    {
      py::gil_scoped_release release;
      relu_backward<T>(gy.data(), y.data(), gx.mutable_data(), y.size());
    }
    return gx;
  });
}

}  // namespace

void bind_norm(py::module_& m) {
  bind_typed<float>(m, "float32");
  bind_typed<double>(m, "float64");
}

}  // namespace fastconv::bind
