// Fused passes for the layers around convolutions: BatchNorm2d statistics, apply (with ReLU) and backward, ReLU.
#include "ops/norm.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/epilogue.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

namespace {

// Element-wise work is memory-bound: threads only for arrays worth it.
int elementwise_workers(int64_t elements, int64_t items) { return workers_for(4.0 * double(elements), items); }

constexpr int64_t kChunk = 1 << 16;  // elements per work item of the flat passes

// The per-plane sums run kLanes independent double accumulators: one running
// sum is a chain of dependent adds, 4 cycles an element (measured: a 64 x 48
// x 32 x 32 norm's backward 1.2x slower than torch's); lanes vectorise.
constexpr int64_t kLanes = 8;

inline double lane_sum(const double (&v)[kLanes]) {
  double s = 0;
  for (int64_t k = 0; k < kLanes; ++k) s += v[k];
  return s;
}

}  // namespace

template <class T>
void batch_norm_stats(const T* x, int64_t N, int64_t C, int64_t HW, double* mean, double* var) {
  // Items are (image, channel) planes; each writes its own partial sums, summed per channel after.
  std::vector<double> s1(N * C), s2(N * C);
  parallel_for(N * C, elementwise_workers(N * C * HW, N * C), [&](int64_t item, int) {
    const int64_t c = item % C;
    const T* p = x + item * HW;
    const double shift = HW > 0 && N > 0 ? double(x[c * HW]) : 0.0;  // channel c's first value (image 0)
    double a[kLanes] = {}, b[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= HW; i += kLanes)
      for (int64_t k = 0; k < kLanes; ++k) {
        const double d = double(p[i + k]) - shift;
        a[k] += d;
        b[k] += d * d;
      }
    for (int64_t k = 0; i + k < HW; ++k) {
      const double d = double(p[i + k]) - shift;
      a[k] += d;
      b[k] += d * d;
    }
    s1[item] = lane_sum(a);
    s2[item] = lane_sum(b);
  });
  const double M = double(N) * double(HW);
  for (int64_t c = 0; c < C; ++c) {
    double a = 0, b = 0;
    for (int64_t n = 0; n < N; ++n) a += s1[n * C + c], b += s2[n * C + c];
    const double shift = HW > 0 && N > 0 ? double(x[c * HW]) : 0.0;
    const double m = M > 0 ? a / M : 0.0;
    mean[c] = shift + m;
    var[c] = M > 0 ? std::max(0.0, b / M - m * m) : 0.0;
  }
}

template <class T>
void channel_affine(const T* x, const T* scale, const T* shift, bool relu, T* y, int64_t N, int64_t C, int64_t HW) {
  parallel_for(N * C, elementwise_workers(N * C * HW, N * C), [&](int64_t item, int) {
    const int64_t c = item % C;
    const T a = scale[c], b = shift[c];
    const T* p = x + item * HW;
    T* q = y + item * HW;
    if (relu)
      for (int64_t i = 0; i < HW; ++i) q[i] = rectify(p[i] * a + b);
    else
      for (int64_t i = 0; i < HW; ++i) q[i] = p[i] * a + b;
  });
}

template <class T>
void batch_norm_backward(const T* gy, const T* x, const T* relu_out, const double* mean, const double* inv_std,
                         const T* gamma, bool batch, T* gx, T* dgamma, T* dbeta, int64_t N, int64_t C, int64_t HW) {
  // Pass 1: per channel, sum(g) and sum(g * xhat), g = gy masked by the fused ReLU.
  std::vector<double> sg(N * C), sgx(N * C);
  const int workers = elementwise_workers(N * C * HW, N * C);
  parallel_for(N * C, workers, [&](int64_t item, int) {
    const int64_t c = item % C;
    const double m = mean[c], is = inv_std[c];
    const T* g = gy + item * HW;
    const T* p = x + item * HW;
    const T* r = relu_out ? relu_out + item * HW : nullptr;
    // A test of r inside the sums would be an unpredictable branch (half the outputs of a ReLU are
    // zero: 5x slower).  So the masked gradient goes through a small buffer first, in a loop that
    // vectorises (every load unconditional, the test a select).
    double a[kLanes] = {}, b[kLanes] = {};
    T masked[256];
    for (int64_t i0 = 0; i0 < HW; i0 += 256) {
      const int64_t len = std::min<int64_t>(256, HW - i0);
      const T* gi = g + i0;
      if (r) {
        const T* ri = r + i0;
        for (int64_t i = 0; i < len; ++i) {
          T gl = gi[i];
          if (ri[i] <= T(0)) gl = T(0);
          masked[i] = gl;
        }
        gi = masked;
      }
      const T* pi = p + i0;
      int64_t i = 0;
      for (; i + kLanes <= len; i += kLanes)
        for (int64_t k = 0; k < kLanes; ++k) {
          const double gv = double(gi[i + k]);
          a[k] += gv;
          b[k] += gv * (double(pi[i + k]) - m);
        }
      for (int64_t k = 0; i + k < len; ++k) {
        const double gv = double(gi[i + k]);
        a[k] += gv;
        b[k] += gv * (double(pi[i + k]) - m);
      }
    }
    sg[item] = lane_sum(a);
    sgx[item] = lane_sum(b) * is;
  });
  std::vector<double> tg(C, 0.0), tgx(C, 0.0);
  for (int64_t item = 0; item < N * C; ++item) tg[item % C] += sg[item], tgx[item % C] += sgx[item];
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = T(tg[c]);
    if (dgamma) dgamma[c] = T(tgx[c]);
  }
  if (!gx) return;
  // Pass 2: gx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat)) (training), gamma * inv_std * g (eval).
  const double M = double(N) * double(HW);
  parallel_for(N * C, workers, [&](int64_t item, int) {
    const int64_t c = item % C;
    const double gm = gamma ? double(gamma[c]) : 1.0, is = inv_std[c], m = mean[c];
    const T k = T(gm * is);
    const T mg = batch && M > 0 ? T(tg[c] / M) : T(0), mgx = batch && M > 0 ? T(tgx[c] / M) : T(0);
    const T tm = T(m), ti = T(is);
    const T* g = gy + item * HW;
    const T* p = x + item * HW;
    const T* r = relu_out ? relu_out + item * HW : nullptr;
    T* out = gx + item * HW;
    const T c1 = ti * mgx, c0 = -mg + tm * c1;  // gv - mg - (x - m) * ti * mgx = gv - x * c1 + c0
    if (!batch) {
      if (r)
        for (int64_t i = 0; i < HW; ++i) {
          T gv = g[i];
          if (r[i] <= T(0)) gv = T(0);
          out[i] = k * gv;
        }
      else
        for (int64_t i = 0; i < HW; ++i) out[i] = k * g[i];
    } else if (r) {
      for (int64_t i = 0; i < HW; ++i) {
        T gv = g[i];
        if (r[i] <= T(0)) gv = T(0);
        out[i] = k * (gv - p[i] * c1 + c0);
      }
    } else {
      for (int64_t i = 0; i < HW; ++i) out[i] = k * (g[i] - p[i] * c1 + c0);
    }
  });
}

template <class T>
void relu_forward(const T* x, T* y, int64_t n) {
  const int64_t items = (n + kChunk - 1) / kChunk;
  parallel_for(items, elementwise_workers(n, items), [&](int64_t item, int) {
    const int64_t i0 = item * kChunk, i1 = std::min(n, i0 + kChunk);
    for (int64_t i = i0; i < i1; ++i) y[i] = rectify(x[i]);
  });
}

template <class T>
void relu_backward(const T* gy, const T* y, T* gx, int64_t n) {
  const int64_t items = (n + kChunk - 1) / kChunk;
  parallel_for(items, elementwise_workers(n, items), [&](int64_t item, int) {
    const int64_t i0 = item * kChunk, i1 = std::min(n, i0 + kChunk);
    for (int64_t i = i0; i < i1; ++i) {  // torch: a NaN output passes the gradient
      T g = gy[i];                       // loaded unconditionally, so the loop vectorises
      if (y[i] <= T(0)) g = T(0);
      gx[i] = g;
    }
  });
}

template <class T>
void add_relu(const T* a, const T* b, T* y, int64_t n, bool relu) {
  const int64_t items = (n + kChunk - 1) / kChunk;
  parallel_for(items, elementwise_workers(n, items), [&](int64_t item, int) {
    const int64_t i0 = item * kChunk, i1 = std::min(n, i0 + kChunk);
    if (relu)
      for (int64_t i = i0; i < i1; ++i) y[i] = rectify(a[i] + b[i]);
    else
      for (int64_t i = i0; i < i1; ++i) y[i] = a[i] + b[i];
  });
}

#define FASTCONV_INSTANTIATE(T)                                                                                        \
  template void batch_norm_stats<T>(const T*, int64_t, int64_t, int64_t, double*, double*);                            \
  template void channel_affine<T>(const T*, const T*, const T*, bool, T*, int64_t, int64_t, int64_t);                  \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const double*, const double*, const T*, bool, T*, \
                                       T*, T*, int64_t, int64_t, int64_t);                                             \
  template void relu_forward<T>(const T*, T*, int64_t);                                                                \
  template void relu_backward<T>(const T*, const T*, T*, int64_t);                                                     \
  template void add_relu<T>(const T*, const T*, T*, int64_t, bool);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
