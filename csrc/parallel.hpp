// Minimal fork-join over a counter of work items.  fastconv owns all of its
// parallelism: OpenBLAS runs single-threaded inside each work item, which keeps
// small GEMMs from paying OpenBLAS's thread wake-up and lets tiles of different
// images run side by side.
#pragma once

#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace fastconv {

int get_num_threads();
void set_num_threads(int n);

// Runs fn(item, worker) for item in [0, n_items) on up to `workers` threads.
// Worker t gets the contiguous block [t*n/W, (t+1)*n/W): a static split, so a
// per-worker partial sum covers the same items on every call and results are
// bit-identical run to run for a given thread count.  Worker ids are dense in
// [0, workers) so callers can index per-thread scratch.  The first exception
// thrown is rethrown after all threads have joined.
template <class Fn>
void parallel_for(int64_t n_items, int workers, Fn&& fn) {
  if (n_items <= 0) return;
  if (workers > n_items) workers = static_cast<int>(n_items);
  if (workers <= 1) {
    for (int64_t i = 0; i < n_items; ++i) fn(i, 0);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](int worker) {
    try {
      const int64_t begin = n_items * worker / workers, end = n_items * (worker + 1) / workers;
      for (int64_t i = begin; i < end; ++i) fn(i, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int t = 1; t < workers; ++t) pool.emplace_back(run, t);
  run(0);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// Threads worth using for `flops` of work: below ~1 MFLOP a thread start costs
// more than it saves.
inline int workers_for(double flops, int64_t n_items) {
  int t = get_num_threads();
  if (flops < 1e6) t = 1;
  if (t > n_items) t = static_cast<int>(n_items < 1 ? 1 : n_items);
  return t;
}

}  // namespace fastconv
