// fastconv._core's convolutions: conv2d and conv_transpose2d forward and backward, unfold/fold, per dtype, and
// explain_conv2d (the paths ops/conv_paths.cpp chooses).
#include <optional>

#include "common.hpp"
#include "core/geometry.hpp"
#include "ops/conv.hpp"
#include "ops/conv_paths.hpp"

namespace fastconv::bind {

namespace {

ConvGeom geom_for(const py::array& x, const py::array& w, pair_t stride, quad_t pad, pair_t dil, int64_t groups) {
  // pad is (top, bottom, left, right); Python converts the user's forms.
  return conv_geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(1), w.shape(2), w.shape(3),
                   stride[0], stride[1], pad[0], pad[1], pad[2], pad[3], dil[0], dil[1], groups);
}

template <class T>
void check_bias(const std::optional<carray<T>>& b, int64_t n) {
  if (b && (b->ndim() != 1 || b->shape(0) != n))
    throw std::invalid_argument("bias: expected shape (" + std::to_string(n) + ",), got ndim=" +
                                std::to_string(b->ndim()) + " with " + std::to_string(b->size()) + " elements");
}

// Transposed convolution seen as the input-gradient of a convolution: its
// output (N, Cout, Hout, Wout) is that convolution's input.
ConvGeom transpose_geom(const py::array& x, const py::array& w, pair_t stride, pair_t pad, pair_t out_pad, pair_t dil,
                        int64_t groups) {
  if (groups <= 0) fail("groups must be positive, got " + std::to_string(groups));
  if (x.shape(1) != w.shape(0))
    fail("weight: expected weight.shape[0] == input channels, got weight.shape[0]=" + std::to_string(w.shape(0)) +
         ", input channels=" + std::to_string(x.shape(1)));
  if (x.shape(1) % groups != 0)
    fail("groups: input channels " + std::to_string(x.shape(1)) + " are not divisible by groups " +
         std::to_string(groups));
  const int64_t Hout = conv_transpose_out(x.shape(2), w.shape(2), stride[0], pad[0], out_pad[0], dil[0]);
  const int64_t Wout = conv_transpose_out(x.shape(3), w.shape(3), stride[1], pad[1], out_pad[1], dil[1]);
  const int64_t Cout = checked_mul(w.shape(1), groups, "output channels");
  return conv_geom_with_output(x.shape(0), Cout, Hout, Wout, x.shape(1), w.shape(1), w.shape(2), w.shape(3), stride[0],
                               stride[1], pad[0], pad[1], dil[0], dil[1], groups, x.shape(2), x.shape(3));
}

template <class T>
void bind_typed(py::module_& m, const std::string& suffix) {
  m.def(("conv2d_forward_" + suffix).c_str(),
        [](const carray<T>& x, const carray<T>& w, const std::optional<carray<T>>& b, pair_t stride, quad_t pad,
           pair_t dil, int64_t groups, const std::optional<carray<T>>& residual, bool relu) {
          require_ndim(x, 4, "input");
          require_ndim(w, 4, "weight");
          const ConvGeom g = geom_for(x, w, stride, pad, dil, groups);
          check_bias(b, g.Cout);
          if (residual) check_output_shape(*residual, "residual", g.N, g.Cout, g.OH, g.OW);
          auto y = new_array<T>({g.N, g.Cout, g.OH, g.OW});
          const T* bp = b ? b->data() : nullptr;
          Epilogue<T> ep;
          ep.residual = residual ? residual->data() : nullptr;
          ep.relu = relu;
          {
            py::gil_scoped_release release;
            conv2d_forward<T>(x.data(), w.data(), bp, y.mutable_data(), g, ep);
          }
          return y;
        });
  m.def(("conv2d_backward_" + suffix).c_str(),
        [](const carray<T>& gy, const carray<T>& x, const carray<T>& w, pair_t stride, quad_t pad, pair_t dil,
           int64_t groups, bool need_input, bool need_weight, bool need_bias) {
          require_ndim(x, 4, "input");
          require_ndim(w, 4, "weight");
          const ConvGeom g = geom_for(x, w, stride, pad, dil, groups);
          check_output_shape(gy, "grad_output", g.N, g.Cout, g.OH, g.OW);
          py::object gx = py::none(), gw = py::none(), gb = py::none();
          T *gxp = nullptr, *gwp = nullptr, *gbp = nullptr;
          if (need_input) {
            auto a = new_array<T>({g.N, g.C, g.H, g.W});
            gxp = a.mutable_data();
            gx = a;
          }
          if (need_weight) {
            auto a = new_array<T>({w.shape(0), w.shape(1), w.shape(2), w.shape(3)});
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
            conv2d_backward<T>(gy.data(), x.data(), w.data(), gxp, gwp, gbp, g);
          }
          return py::make_tuple(gx, gw, gb);
        });
  m.def(("conv_transpose2d_forward_" + suffix).c_str(),
        [](const carray<T>& x, const carray<T>& w, const std::optional<carray<T>>& b, pair_t stride, pair_t pad,
           pair_t out_pad, int64_t groups, pair_t dil) {
          require_ndim(x, 4, "input");
          require_ndim(w, 4, "weight");
          const ConvGeom g = transpose_geom(x, w, stride, pad, out_pad, dil, groups);
          check_bias(b, g.C);
          auto y = new_array<T>({g.N, g.C, g.H, g.W});
          const T* bp = b ? b->data() : nullptr;
          {
            py::gil_scoped_release release;
            conv_transpose2d_forward<T>(x.data(), w.data(), bp, y.mutable_data(), g);
          }
          return y;
        });
  m.def(("conv_transpose2d_backward_" + suffix).c_str(),
        [](const carray<T>& gy, const carray<T>& x, const carray<T>& w, pair_t stride, pair_t pad, pair_t out_pad,
           int64_t groups, pair_t dil, bool need_bias) {
          require_ndim(x, 4, "input");
          require_ndim(w, 4, "weight");
          const ConvGeom g = transpose_geom(x, w, stride, pad, out_pad, dil, groups);
          check_output_shape(gy, "grad_output", g.N, g.C, g.H, g.W);
          auto gx = new_array<T>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
          auto gw = new_array<T>({w.shape(0), w.shape(1), w.shape(2), w.shape(3)});
          py::object gb = py::none();
          T* gbp = nullptr;
          if (need_bias) {
            auto a = new_array<T>({g.C});
            gbp = a.mutable_data();
            gb = a;
          }
          {
            py::gil_scoped_release release;
            conv_transpose2d_backward<T>(gy.data(), x.data(), w.data(), gx.mutable_data(), gw.mutable_data(), gbp, g);
          }
          return py::make_tuple(gx, gw, gb);
        });
  m.def(("unfold_" + suffix).c_str(), [](const carray<T>& x, pair_t kernel, pair_t dil, pair_t pad, pair_t stride) {
    require_ndim(x, 4, "input");
    const ConvGeom g = conv_geom(x.shape(0), x.shape(1), x.shape(2), x.shape(3), 1, x.shape(1), kernel[0], kernel[1],
                                 stride[0], stride[1], pad[0], pad[0], pad[1], pad[1], dil[0], dil[1], 1);
    auto cols = new_array<T>({g.N, g.C * g.kh * g.kw, g.OH * g.OW});
    {
      py::gil_scoped_release release;
      unfold<T>(x.data(), cols.mutable_data(), g);
    }
    return cols;
  });
  m.def(("fold_" + suffix).c_str(), [](const carray<T>& cols, pair_t out_size, pair_t kernel, pair_t dil, pair_t pad,
                                       pair_t stride) {
    require_ndim(cols, 3, "input");
    const int64_t kk = checked_mul(kernel[0], kernel[1], "kernel_size");
    if (kernel[0] <= 0 || kernel[1] <= 0)
      fail("kernel_size must be positive, got (" + std::to_string(kernel[0]) + ", " + std::to_string(kernel[1]) + ")");
    if (cols.shape(1) % kk != 0)
      fail("input: expected size(1) divisible by kernel_size product " + std::to_string(kk) + ", got " +
           std::to_string(cols.shape(1)));
    const int64_t C = cols.shape(1) / kk;
    if (C <= 0) fail("input: size(1) must be positive, got " + std::to_string(cols.shape(1)));
    const ConvGeom g = conv_geom(cols.shape(0), C, out_size[0], out_size[1], 1, C, kernel[0], kernel[1], stride[0],
                                 stride[1], pad[0], pad[0], pad[1], pad[1], dil[0], dil[1], 1);
    if (cols.shape(2) != g.OH * g.OW)
      fail("input: expected size(2) == " + std::to_string(g.OH * g.OW) + " sliding blocks for output_size (" +
           std::to_string(out_size[0]) + ", " + std::to_string(out_size[1]) + "), got " +
           std::to_string(cols.shape(2)));
    auto x = new_array<T>({g.N, C, g.H, g.W});
    {
      py::gil_scoped_release release;
      fold<T>(cols.data(), x.mutable_data(), g);
    }
    return x;
  });
}

}  // namespace

void bind_conv(py::module_& m) {
  bind_typed<float>(m, "float32");
  bind_typed<double>(m, "float64");
  // For fastconv.explain_conv2d: each pass's algorithm and reason, from the rules the operators run (conv_paths.hpp),
  // for the active level and switches; data assumed finite.
  m.def(
      "explain_conv2d",
      [](quad_t x, quad_t w, pair_t stride, quad_t pad, pair_t dil, int64_t groups, int64_t elem_bytes, bool prepared) {
        if (elem_bytes != 4 && elem_bytes != 8)
          fail("dtype: float32 or float64, got " + std::to_string(elem_bytes) + "-byte elements");
        const ConvGeom g = conv_geom(x[0], x[1], x[2], x[3], w[0], w[1], w[2], w[3], stride[0], stride[1], pad[0],
                                     pad[1], pad[2], pad[3], dil[0], dil[1], groups);
        py::list out;
        std::string why;
        const ConvPath f = choose_forward(g, elem_bytes, prepared, {}, &why);
        out.append(py::make_tuple("forward", algo_name(f.algo), why));
        const ConvPath gx = choose_input_grad(g, elem_bytes, prepared, {}, &why);
        out.append(py::make_tuple("input_grad", algo_name(gx.algo), why));
        const ConvPath gw = choose_weight_grad(g, elem_bytes, prepared, {}, &why);
        out.append(py::make_tuple("weight_grad", algo_name(gw.algo), why));
        return py::make_tuple(out, py::make_tuple(g.OH, g.OW));
      },
      py::arg("x"), py::arg("w"), py::arg("stride"), py::arg("pad"), py::arg("dil"), py::arg("groups"),
      py::arg("elem_bytes"), py::arg("prepared"));
  // The algorithm each pass last ran on this thread (tests compare it with explain_conv2d).
  m.def("_last_conv_paths", [] {
    return py::make_tuple(algo_name(last_path(ConvPass::forward)), algo_name(last_path(ConvPass::input_grad)),
                          algo_name(last_path(ConvPass::weight_grad)));
  });
}

}  // namespace fastconv::bind
