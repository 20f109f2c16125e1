// Row-major GEMM for every algorithm: float32 on fastconv's AVX-512 kernel where the CPU has it, the rest on
// OpenBLAS (single-threaded inside fastconv's own work items), with the BLAS dimension check.
#include "algorithms/gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <string>
#include <vector>

#include "core/geometry.hpp"
#include "kernels/x86_avx512/sgemm_avx512.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

void check_blas_dims(int64_t m, int64_t n, int64_t k, const char* what) {
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX)
    fail(std::string(what) + ": matrix dimension exceeds 2^31-1 (m=" + std::to_string(m) + ", n=" + std::to_string(n) +
         ", k=" + std::to_string(k) + ")");
}

namespace {
void openblas_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                    const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)m,
                    (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}
// A product with one row or one column of C as a matrix-vector product: OpenBLAS's GEMM packs the whole matrix
// operand first (a classifier's 1280 x 1000 weights times one image: 477 us on one thread, its GEMV 40-60 us).
// Returns false where C is neither.
template <class T, class Gemv>
bool as_gemv(Gemv gemv, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
             int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 1) {  // c[j] = sum_k op(a)[0][k] op(b)[k][j]; op(a)'s row 0 is a's column 0 when transposed
    // op(b) = b (K x N, ldb): c = b^T a, a GEMV on b transposed; op(b) = b^T (b is N x K): c = b a.
    gemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, (blasint)(tb ? n : k), (blasint)(tb ? k : n), alpha, b,
         (blasint)ldb, a, (blasint)(ta ? lda : 1), beta, c, 1);
    return true;
  }
  if (n == 1) {  // c[i][0] = sum_k op(a)[i][k] op(b)[k][0]; op(b)'s column 0 is b's row 0 when transposed
    gemv(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, (blasint)(ta ? k : m), (blasint)(ta ? m : k), alpha, a,
         (blasint)lda, b, (blasint)(tb ? 1 : ldb), beta, c, (blasint)ldc);
    return true;
  }
  return false;
}

}  // namespace

// float32 GEMMs of real size go to fastconv's AVX-512 kernel when the CPU has it
// (about 1.5x OpenBLAS's AVX2 kernels, which this project's machines pin through
// OPENBLAS_CORETYPE); small ones, other scalings and other CPUs go to OpenBLAS.
template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (as_gemv<float>(scipy_cblas_sgemv, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  if (alpha == 1.0f && (beta == 0.0f || beta == 1.0f) && m * n * k >= 32768 && sgemm_avx512_enabled()) {
    sgemm_avx512(ta, tb, m, n, k, a, lda, b, ldb, beta == 1.0f, c, ldc);
    return;
  }
  openblas_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                  const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (as_gemv<double>(scipy_cblas_dgemv, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)m,
                    (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void blas_set_threads(int n) { scipy_openblas_set_num_threads(n); }

const char* blas_core_name() { return scipy_openblas_get_corename(); }

const char* sgemm_kernel_name() { return sgemm_avx512_enabled() ? "fastconv AVX-512" : "OpenBLAS"; }

double sgemm_seconds(int64_t n, int threads, int repeats) {
  require_positive(n, "n");
  require_positive(repeats, "repeats");
  check_blas_dims(n, n, n, "sgemm");
  std::vector<float> a(n * n, 1.0f), c(n * n);
  scipy_openblas_set_num_threads(threads);
  std::vector<double> times;
  for (int r = 0; r <= repeats; ++r) {  // the first run warms up
    const auto t0 = std::chrono::steady_clock::now();
    openblas_sgemm(false, false, n, n, n, 1.0f, a.data(), n, a.data(), n, 0.0f, c.data(), n);
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (r > 0) times.push_back(dt.count());
  }
  scipy_openblas_set_num_threads(1);
  return *std::min_element(times.begin(), times.end());
}

double fastconv_sgemm_seconds(int64_t n, int repeats) {
  require_positive(n, "n");
  require_positive(repeats, "repeats");
  std::vector<float> a(n * n, 1.0f), c(n * n);
  const int workers = get_num_threads();
  auto once = [&] {  // column blocks of C side by side, as the convolutions run their tiles
    parallel_for(workers, workers, [&](int64_t w, int) {
      const int64_t j0 = n * w / workers, j1 = n * (w + 1) / workers;
      gemm<float>(false, false, n, j1 - j0, n, 1.0f, a.data(), n, a.data() + j0, n, 0.0f, c.data() + j0, n);
    });
  };
  std::vector<double> times;
  for (int r = 0; r <= repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    if (r > 0) times.push_back(dt.count());
  }
  return *std::min_element(times.begin(), times.end());
}

}  // namespace fastconv
