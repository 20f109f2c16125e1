#include "../gemm.hpp"
#include "../parallel.hpp"
#include "common.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastconv's C++ kernels (private; use the fastconv package)";
  // fastconv schedules its own threads around single-threaded GEMMs.
  fastconv::blas_set_threads(1);
  m.def("get_num_threads", &fastconv::get_num_threads);
  m.def("set_num_threads", &fastconv::set_num_threads, py::arg("n"));
  fastconv::bind::bind_geometry(m);
  fastconv::bind::bind_conv(m);
  fastconv::bind::bind_pool(m);
  fastconv::bind::bind_solver(m);
}
