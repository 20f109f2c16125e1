// fastconv._core's pooling (ops/pool.hpp): max and average pooling forward and backward, max unpooling.
#include "common.hpp"
#include "core/geometry.hpp"
#include "ops/pool.hpp"

namespace fastconv::bind {

namespace {

PoolGeom geom_for(const py::array& x, pair_t k, pair_t s, pair_t p, pair_t d, bool ceil_mode) {
  return pool_geom(x.shape(0) * x.shape(1), x.shape(2), x.shape(3), k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1],
                   ceil_mode);
}

template <class T>
void check_grad(const carray<T>& gy, const py::array& x, const PoolGeom& g) {
  if (gy.ndim() != 4 || gy.shape(0) != x.shape(0) || gy.shape(1) != x.shape(1) || gy.shape(2) != g.OH ||
      gy.shape(3) != g.OW)
    fail("grad_output: expected shape (" + std::to_string(x.shape(0)) + ", " + std::to_string(x.shape(1)) + ", " +
         std::to_string(g.OH) + ", " + std::to_string(g.OW) + ")");
}

template <class T>
void bind_typed(py::module_& m, const std::string& suffix) {
  // (output, indices), indices None unless `with_indices`: writing them costs more than the maximum.
  m.def(("max_pool2d_forward_" + suffix).c_str(),
        [](const carray<T>& x, pair_t k, pair_t s, pair_t p, pair_t d, bool ceil_mode, bool with_indices) {
          require_ndim(x, 4, "input");
          const PoolGeom g = geom_for(x, k, s, p, d, ceil_mode);
          auto y = new_array<T>({x.shape(0), x.shape(1), g.OH, g.OW});
          py::object idx_obj = py::none();
          int64_t* ip = nullptr;
          if (with_indices) {
            auto idx = new_array<int64_t>({x.shape(0), x.shape(1), g.OH, g.OW});
            ip = idx.mutable_data();
            idx_obj = idx;
          }
          {
            py::gil_scoped_release release;
            max_pool2d_forward<T>(x.data(), y.mutable_data(), ip, g);
          }
          return py::make_tuple(y, idx_obj);
        });
  m.def(("max_pool2d_backward_" + suffix).c_str(),
        [](const carray<T>& gy, const carray<int64_t>& idx, const carray<T>& x, pair_t k, pair_t s, pair_t p, pair_t d,
           bool ceil_mode) {
          require_ndim(x, 4, "input");
          const PoolGeom g = geom_for(x, k, s, p, d, ceil_mode);
          check_grad(gy, x, g);
          if (idx.size() != gy.size()) fail("indices: expected the shape of grad_output");
          auto gx = new_array<T>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
          {
            py::gil_scoped_release release;
            max_pool2d_backward<T>(gy.data(), idx.data(), gx.mutable_data(), g);
          }
          return gx;
        });
  m.def(("avg_pool2d_forward_" + suffix).c_str(),
        [](const carray<T>& x, pair_t k, pair_t s, pair_t p, bool ceil_mode, bool include_pad, int64_t divisor) {
          require_ndim(x, 4, "input");
          const PoolGeom g = geom_for(x, k, s, p, {1, 1}, ceil_mode);
          auto y = new_array<T>({x.shape(0), x.shape(1), g.OH, g.OW});
          {
            py::gil_scoped_release release;
            avg_pool2d_forward<T>(x.data(), y.mutable_data(), g, include_pad, divisor);
          }
          return y;
        });
  m.def(("avg_pool2d_backward_" + suffix).c_str(), [](const carray<T>& gy, const carray<T>& x, pair_t k, pair_t s,
                                                      pair_t p, bool ceil_mode, bool include_pad, int64_t divisor) {
    require_ndim(x, 4, "input");
    const PoolGeom g = geom_for(x, k, s, p, {1, 1}, ceil_mode);
    check_grad(gy, x, g);
    auto gx = new_array<T>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
    {
      py::gil_scoped_release release;
      avg_pool2d_backward<T>(gy.data(), gx.mutable_data(), g, include_pad, divisor);
    }
    return gx;
  });
}

template <class T>
void bind_unpool(py::module_& m, const std::string& suffix) {
  // x and indices (N, C, H, W) of one shape, checked in Python; y is (N, C, OH, OW).
  m.def(("max_unpool2d_forward_" + suffix).c_str(),
        [](const carray<T>& x, const carray<int64_t>& idx, int64_t OH, int64_t OW) {
          require_ndim(x, 4, "input");
          if (idx.size() != x.size()) fail("indices: expected the shape of input");
          const int64_t planes = checked_mul(x.shape(0), x.shape(1), "input");
          const int64_t OP = checked_mul(OH, OW, "output");
          checked_mul(planes, OP, "output");
          auto y = new_array<T>({x.shape(0), x.shape(1), OH, OW});
          {
            py::gil_scoped_release release;
            max_unpool2d_forward<T>(x.data(), idx.data(), y.mutable_data(), planes, x.shape(2) * x.shape(3), OP);
          }
          return y;
        });
  m.def(("max_unpool2d_backward_" + suffix).c_str(), [](const carray<T>& gy, const carray<int64_t>& idx) {
    require_ndim(gy, 4, "grad_output");
    if (idx.ndim() != 4 || idx.shape(0) != gy.shape(0) || idx.shape(1) != gy.shape(1))
      fail("indices: expected (N, C, H, W) with grad_output's N and C");
    const int64_t planes = checked_mul(gy.shape(0), gy.shape(1), "grad_output");
    auto gx = new_array<T>({idx.shape(0), idx.shape(1), idx.shape(2), idx.shape(3)});
    {
      py::gil_scoped_release release;
      max_unpool2d_backward<T>(gy.data(), idx.data(), gx.mutable_data(), planes, idx.shape(2) * idx.shape(3),
                               gy.shape(2) * gy.shape(3));
    }
    return gx;
  });
}

}  // namespace

void bind_pool(py::module_& m) {
  bind_unpool<float>(m, "float32");
  bind_unpool<double>(m, "float64");
  bind_typed<float>(m, "float32");
  bind_typed<double>(m, "float64");
}

}  // namespace fastconv::bind
