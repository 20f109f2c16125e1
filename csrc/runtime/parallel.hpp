// Minimal fork-join over a counter of work items.  fastconv owns all of its
// parallelism: OpenBLAS runs single-threaded inside each work item, which keeps
// small GEMMs from paying OpenBLAS's thread wake-up and lets tiles of different
// images run side by side.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace fastconv {

// Upper bound of set_num_threads: far above any CPU fastconv runs on, low enough
// that a typo cannot ask for millions of threads.
constexpr int kMaxThreads = 1024;

int get_num_threads();
void set_num_threads(int n);

// Runs task(w) for every worker w in [0, workers): w = 0 on the calling thread,
// the others on a persistent pool (threads are created once, on first need).
// When another call is using the pool (several Python threads at once, or a
// task that calls parallel_run itself), the caller runs all w itself, in order: the same partition, so per-worker
// partial sums and therefore results are bit-identical either way.  The first exception thrown by any w is rethrown
// after all have finished.
void parallel_run(int workers, const std::function<void(int)>& task);

// Runs fn(item, worker) for item in [0, n_items).  Worker w gets the contiguous
// block [w*n/W, (w+1)*n/W): a static split, so a per-worker partial sum covers
// the same items on every call and results are reproducible for a given thread
// count.  Worker ids are dense in [0, workers) for per-thread scratch.
template <class Fn>
void parallel_for(int64_t n_items, int workers, Fn&& fn) {
  if (n_items <= 0) return;
  if (workers > n_items) workers = static_cast<int>(n_items);
  if (workers <= 1) {
    for (int64_t i = 0; i < n_items; ++i) fn(i, 0);
    return;
  }
  parallel_run(workers, [&](int w) {
    const int64_t begin = n_items * w / workers, end = n_items * (w + 1) / workers;
    for (int64_t i = begin; i < end; ++i) fn(i, w);
  });
}

// Threads worth using for `flops` of work: below ~1 MFLOP waking a pool thread
// costs more than it saves.
inline int workers_for(double flops, int64_t n_items) {
  int t = get_num_threads();
  if (flops < 1e6) t = 1;
  if (t > n_items) t = static_cast<int>(n_items < 1 ? 1 : n_items);
  return t;
}

// Operator buffers kept between calls (per calling thread, so no page faults or
// zero fills per call) are kept up to this many bytes per thread and released
// beyond: many threads on a wide layer would keep hundreds of MiB.
constexpr size_t kKeptBufferBytes = size_t(64) << 20;

template <class T>
void release_if_large(std::vector<T>& v) {
  if (v.capacity() * sizeof(T) > kKeptBufferBytes) std::vector<T>().swap(v);
}

// Adds per-worker partial sums into dst; a worker that got no item left its part empty.
template <class T>
void reduce_into(T* dst, const std::vector<std::vector<T>>& parts, int64_t n) {
  for (const auto& part : parts)
    if (!part.empty())
      for (int64_t i = 0; i < n; ++i) dst[i] += part[i];
}

}  // namespace fastconv

namespace fastconv {

// Test hook (fastconv._core._pool_selftest): `rounds` parallel_run calls with
// worker counts drawn from [1, max_workers] by a seeded generator, tasks of a
// few hundred nanoseconds so that rounds follow each other as fast as the pool
// allows.  Checks that every worker id of a round ran exactly once before the
// call returned and that no id ran after it; returns the number of rounds that
// broke this.
int64_t pool_selftest(int64_t rounds, int max_workers, uint64_t seed);

}  // namespace fastconv
