// fastconv._core's size rules (core/geometry.hpp): what fastconv.shapes and the layer specs compute sizes with.
#include "common.hpp"
#include "core/geometry.hpp"

namespace fastconv::bind {

void bind_geometry(py::module_& m) {
  m.def("conv_out", &conv_out, py::arg("n"), py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"),
        py::arg("pad_after"), py::arg("dilation"));
  m.def("conv_dropped", &conv_dropped, py::arg("n"), py::arg("kernel_size"), py::arg("stride"), py::arg("pad_before"),
        py::arg("pad_after"), py::arg("dilation"));
  m.def(
      "same_padding",
      [](int64_t n, int64_t k, int64_t s, int64_t d) {
        const SamePad p = same_padding(n, k, s, d);
        return py::make_tuple(p.before, p.after, p.out);
      },
      py::arg("n"), py::arg("kernel_size"), py::arg("stride"), py::arg("dilation"));
  m.def("pool_out", &pool_out, py::arg("n"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("ceil_mode"));
  m.def("conv_transpose_out", &conv_transpose_out, py::arg("n"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("output_padding"), py::arg("dilation"));
}

}  // namespace fastconv::bind
