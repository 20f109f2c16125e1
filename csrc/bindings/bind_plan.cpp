// fastconv.Conv2dPlan's native half: a ConvPlan per dtype (plan.hpp).
#include <optional>

#include "common.hpp"
#include "ops/plan.hpp"

namespace fastconv::bind {

namespace {

template <class T>
void bind_typed(py::module_& m, const std::string& suffix) {
  using Plan = ConvPlan<T>;
  py::class_<Plan>(m, ("ConvPlan_" + suffix).c_str())
      .def(py::init(
               [](const carray<T>& w, const std::optional<carray<T>>& b, pair_t stride, pair_t dil, int64_t groups) {
                 require_ndim(w, 4, "weight");
                 if (b && (b->ndim() != 1 || b->shape(0) != w.shape(0)))
                   fail("bias: expected shape (" + std::to_string(w.shape(0)) + ",), got " + std::to_string(b->ndim()) +
                        "-D with " + std::to_string(b->size()) + " elements");
                 return new Plan(w.data(), w.shape(0), w.shape(1), w.shape(2), w.shape(3), b ? b->data() : nullptr,
                                 stride[0], stride[1], dil[0], dil[1], groups);
               }),
           py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("dilation"), py::arg("groups"))
      .def("forward",
           [](Plan& p, const carray<T>& x, quad_t pad, const std::optional<carray<T>>& residual, bool relu,
              std::optional<double> cap) {
             require_ndim(x, 4, "input");
             const ConvGeom g = p.geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), pad[0], pad[1], pad[2], pad[3]);
             if (residual) check_output_shape(*residual, "residual", g.N, g.Cout, g.OH, g.OW);
             auto y = new_array<T>({g.N, g.Cout, g.OH, g.OW});
             Epilogue<T> ep;
             ep.residual = residual ? residual->data() : nullptr;
             ep.relu = relu;
             if (cap) ep.capped = true, ep.cap = static_cast<T>(*cap);
             {
               py::gil_scoped_release release;
               p.forward(x.data(), y.mutable_data(), g, ep);
             }
             return y;
           })
      .def("backward",
           [](Plan& p, const carray<T>& gy, const carray<T>& x, quad_t pad, bool need_input, bool need_weight,
              bool need_bias) {
             require_ndim(x, 4, "input");
             const ConvGeom g = p.geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), pad[0], pad[1], pad[2], pad[3]);
             check_output_shape(gy, "grad_output", g.N, g.Cout, g.OH, g.OW);
             py::object gx = py::none(), gw = py::none(), gb = py::none();
             T *gxp = nullptr, *gwp = nullptr, *gbp = nullptr;
             if (need_input) {
               auto a = new_array<T>({g.N, g.C, g.H, g.W});
               gxp = a.mutable_data();
               gx = a;
             }
             if (need_weight) {
               auto a = new_array<T>({g.Cout, g.C / g.groups, g.kh, g.kw});
               gwp = a.mutable_data();
               gw = a;
             }
             if (need_bias) {
               auto a = new_array<T>({g.Cout});
               gbp = a.mutable_data();
               gb = a;
             }
             {
               py::gil_scoped_release release;
               p.backward(gy.data(), x.data(), gxp, gwp, gbp, g);
             }
             return py::make_tuple(gx, gw, gb);
           })
      .def_property_readonly("prepared_bytes", &Plan::prepared_bytes);
}

}  // namespace

void bind_plan(py::module_& m) {
  bind_typed<float>(m, "float32");
  bind_typed<double>(m, "float64");
}

}  // namespace fastconv::bind
