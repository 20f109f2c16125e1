// fastconv._core's matrix products for fastconv.nn.Linear, on fastconv's GEMM and threads.
#include "algorithms/gemm.hpp"
#include "common.hpp"
#include "core/geometry.hpp"
#include "runtime/parallel.hpp"

namespace fastconv::bind {

namespace {

// A column block's least width: narrower blocks are GEMV-like slivers that each re-read all of A.
constexpr int64_t kMinMatmulCols = 32;

// C = op(A) op(B) for fastconv.nn.Linear, on fastconv's own GEMM and threads.  NumPy's `@` would wake
// NumPy's OpenBLAS threads, which keep spinning after the call and, on a machine with few cores, slow
// the convolutions that come next (measured: a VGG training step's convolution backward passes took
// 32 ms in the step against 18 ms alone).
template <class T>
carray<T> matmul(const carray<T>& a, const carray<T>& b, bool trans_a, bool trans_b) {
  require_ndim(a, 2, "a");
  require_ndim(b, 2, "b");
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  if (K != Kb) fail("matmul: inner dimensions differ, got " + std::to_string(K) + " and " + std::to_string(Kb));
  checked_mul(M, N, "matmul output");
  auto c = new_array<T>({M, N});
  {
    py::gil_scoped_release release;
    T* cp = c.mutable_data();
    if (K == 0) {
      std::fill(cp, cp + M * N, T(0));
    } else {
      // Row blocks of C over the threads, each block one single-threaded GEMM; with fewer row blocks than
      // threads (a classifier on a few images: one row, a product with the weight matrix that reads it once)
      // column blocks instead, so every thread streams its share of B (1280 -> 1000 features, one image: one
      // thread read all 5 MB).
      const int64_t rows = std::max<int64_t>(16, (M + 63) / 64);
      const int64_t row_blocks = (M + rows - 1) / rows;
      const bool by_cols = row_blocks < get_num_threads() && N >= 2 * kMinMatmulCols;
      const int64_t cols =
          by_cols ? std::max(kMinMatmulCols, (N + 2 * get_num_threads() - 1) / (2 * get_num_threads())) : N;
      const int64_t blocks = by_cols ? (N + cols - 1) / cols : row_blocks;
      const int workers = workers_for(2.0 * double(M) * N * K, blocks);
      const int64_t lda = a.shape(1), ldb = b.shape(1);
      parallel_for(blocks, workers, [&](int64_t blk, int) {
        const int64_t i0 = by_cols ? 0 : blk * rows, m = by_cols ? M : std::min(rows, M - i0);
        const int64_t j0 = by_cols ? blk * cols : 0, n = by_cols ? std::min(cols, N - j0) : N;
        const T* ap = trans_a ? a.data() + i0 : a.data() + i0 * lda;
        const T* bp = trans_b ? b.data() + j0 * ldb : b.data() + j0;
        check_blas_dims(m, n, K, "matmul");
        gemm<T>(trans_a, trans_b, m, n, K, T(1), ap, lda, bp, ldb, T(0), cp + i0 * N + j0, N);
      });
    }
  }
  return c;
}

}  // namespace

void bind_linear(py::module_& m) {
  m.def("matmul_float32", &matmul<float>, py::arg("a"), py::arg("b"), py::arg("trans_a"), py::arg("trans_b"));
  m.def("matmul_float64", &matmul<double>, py::arg("a"), py::arg("b"), py::arg("trans_a"), py::arg("trans_b"));
}

}  // namespace fastconv::bind
