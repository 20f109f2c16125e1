// Shared helpers for the binding files: array aliases and shape access.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/geometry.hpp"
#include "runtime/result_cache.hpp"

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

// Results of kCachedMinBytes or more live in result_cache's blocks (their base
// is a capsule that hands the block back when the array and its views are gone).
template <class T>
carray<T> new_array(const std::vector<py::ssize_t>& dims) {
  int64_t count = 1;
  for (py::ssize_t d : dims) count = checked_mul(count, d, "result size");
  const size_t bytes = static_cast<size_t>(checked_mul(count, sizeof(T), "result size"));
  if (bytes < kCachedMinBytes) return carray<T>(dims);
  auto owned = std::make_unique<ResultBlock>();  // first: nothing to hand back if this throws
  *owned = result_alloc(bytes);
  void* const p = owned->p;
  py::capsule base;
  try {
    base = py::capsule(owned.get(), [](void* o) {
      ResultBlock* own = static_cast<ResultBlock*>(o);
      result_free(*own);
      delete own;
    });
  } catch (...) {
    result_free(*owned);
    throw;
  }
  owned.release();  // the capsule's now
  return carray<T>(dims, static_cast<T*>(p), base);
}
template <class T>
carray<T> new_array(std::initializer_list<py::ssize_t> shape) {
  return new_array<T>(std::vector<py::ssize_t>(shape));
}
// A result of a's shape.
template <class T, class A>
carray<T> new_array_like(const A& a) {
  return new_array<T>(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

// An array that must have the convolution output's shape (a gradient, a residual).
template <class T>
void check_output_shape(const carray<T>& a, const char* name, int64_t N, int64_t C, int64_t H, int64_t W) {
  if (a.ndim() != 4 || a.shape(0) != N || a.shape(1) != C || a.shape(2) != H || a.shape(3) != W)
    throw std::invalid_argument(
        std::string(name) + ": expected shape (" + std::to_string(N) + ", " + std::to_string(C) + ", " +
        std::to_string(H) + ", " + std::to_string(W) + "), got " +
        std::string(py::str(py::tuple(py::cast(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()))))));
}

void bind_geometry(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_solver(py::module_& m);
void bind_interpolate(py::module_& m);
void bind_norm(py::module_& m);
void bind_linear(py::module_& m);
void bind_plan(py::module_& m);

}  // namespace fastconv::bind
