// fastconv._core's init: the run-time services (threads, the result cache, CPU levels, show_config's facts),
// then each area's bind_* function.
#include <exception>
#include <new>

#include "algorithms/direct.hpp"
#include "algorithms/gemm.hpp"
#include "algorithms/winograd.hpp"
#include "common.hpp"
#include "runtime/cpu_features.hpp"
#include "runtime/parallel.hpp"
#include "runtime/result_cache.hpp"

namespace py = pybind11;

// fastconv's pool for threadpoolctl (fastconv._threadpoolctl): plain C symbols it
// finds in this library to tell it from other extensions named _core.
extern "C" __attribute__((visibility("default"))) int fastconv_get_num_threads() { return fastconv::get_num_threads(); }
extern "C" __attribute__((visibility("default"))) void fastconv_set_num_threads(int n) {
  if (n >= 1 && n <= fastconv::kMaxThreads) fastconv::set_num_threads(n);
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastconv's C++ kernels (private; use the fastconv package)";
  // Sizes that fit int64 can still exceed memory (padding 2**31 makes a valid,
  // 170 GB output): say so instead of pybind11's bare "std::bad_alloc".
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::bad_alloc&) {
      PyErr_SetString(PyExc_MemoryError,
                      "fastconv: not enough memory for this call's result or workspace (the sizes are valid but "
                      "too large; check padding, dilation and output sizes)");
    }
  });
  // fastconv schedules its own threads around single-threaded GEMMs.
  fastconv::blas_set_threads(1);
  // OpenBLAS picks its kernels on first use; use it now, while fastconv._blas
  // still has OPENBLAS_CORETYPE set for this import.
  fastconv::sgemm_seconds(1, 1, 1);
  m.def("empty_cache", &fastconv::result_cache_clear);
  m.def("_cache_bytes", &fastconv::result_cache_bytes);
  m.def("_cache_limit", &fastconv::result_cache_limit);
  m.def("_set_cache_default_limit", &fastconv::result_cache_set_default_limit, py::arg("bytes"));
  m.def("get_num_threads", &fastconv::get_num_threads);
  m.def("set_num_threads", &fastconv::set_num_threads, py::arg("n"));
  m.def(
      "_pool_selftest",
      [](int64_t rounds, int max_workers, uint64_t seed) {
        py::gil_scoped_release release;
        return fastconv::pool_selftest(rounds, max_workers, seed);
      },
      py::arg("rounds"), py::arg("max_workers"), py::arg("seed"));
  m.def("blas_core_name", &fastconv::blas_core_name);
  // FASTCONV_CPU is checked now: a level this CPU lacks fails the import with
  // a message naming what is missing, never an illegal instruction later.
  fastconv::active_level();
  m.def("cpu_features", &fastconv::cpu_features);
  m.def("cpu_level", [] { return std::string(fastconv::level_name(fastconv::cpu_level())); });
  m.def("active_level", [] { return std::string(fastconv::level_name(fastconv::active_level())); });
  m.def("_set_active_level", &fastconv::set_active_level, py::arg("name"));
  m.def("build_target", &fastconv::build_target);
  m.def("direct_kernel_name", &fastconv::direct_kernel_name);
  m.def("winograd_enabled", &fastconv::winograd_enabled);
  m.def("winograd_kernel_name", &fastconv::winograd_kernel_name);
  m.def("sgemm_kernel_name", &fastconv::sgemm_kernel_name);
  m.def(
      "fastconv_sgemm_seconds",
      [](int64_t n, int repeats) {
        py::gil_scoped_release release;
        return fastconv::fastconv_sgemm_seconds(n, repeats);
      },
      py::arg("n"), py::arg("repeats"));
  m.def(
      "sgemm_seconds",
      [](int64_t n, int threads, int repeats) {
        py::gil_scoped_release release;
        return fastconv::sgemm_seconds(n, threads, repeats);
      },
      py::arg("n"), py::arg("threads"), py::arg("repeats"));
  fastconv::bind::bind_geometry(m);
  fastconv::bind::bind_conv(m);
  fastconv::bind::bind_pool(m);
  fastconv::bind::bind_solver(m);
  fastconv::bind::bind_interpolate(m);
  fastconv::bind::bind_norm(m);
  fastconv::bind::bind_linear(m);
  fastconv::bind::bind_plan(m);
}
