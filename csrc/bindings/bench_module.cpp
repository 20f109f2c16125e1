// fastconv._bench_native: benchmark support kept out of the library users call (fastconv bench's peers).
#include "bench/peer_cpuid.hpp"
#include "common.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_bench_native, m) {
  m.doc() = "fastconv bench's native support (private): ONNX Runtime started on a CPU that reports no AVX-512";
  m.def("mask_avx512_cpuid", &fastconv::mask_avx512_cpuid, py::arg("on"));
}
