// Shared helpers for the binding files: array aliases and shape access.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

namespace fastconv::bind {

namespace py = pybind11;

template <class T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

using pair_t = std::array<int64_t, 2>;
using quad_t = std::array<int64_t, 4>;

// Python has already validated ndim; this is the last line of defence.
template <class T>
void require_ndim(const carray<T>& a, py::ssize_t ndim, const char* name) {
  if (a.ndim() != ndim)
    throw std::invalid_argument(std::string(name) + ": expected a " + std::to_string(ndim) +
                                "-D array, got ndim=" + std::to_string(a.ndim()));
}

template <class T>
carray<T> new_array(std::initializer_list<py::ssize_t> shape) {
  return carray<T>(std::vector<py::ssize_t>(shape));
}

void bind_geometry(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_solver(py::module_& m);
void bind_interpolate(py::module_& m);
void bind_norm(py::module_& m);
void bind_linear(py::module_& m);

}  // namespace fastconv::bind
