// fastconv's thread pool: fork-join over work items, sized at import by fastconv._resources (affinity, cgroup
// quotas, FASTCONV_NUM_THREADS) or set_num_threads.
#include "runtime/parallel.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace fastconv {

namespace {

const int g_cores = [] {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}();
std::atomic<int> g_threads{std::min(g_cores, kMaxThreads)};

// Fork-join pool.  A round is published as one atomic word holding both its
// generation and its worker count, so a helper can never pair one round's number
// with another round's count (two separate loads could, and then a helper ran a
// round twice and released the caller early).  The caller writes task_ and
// pending_ before the release store of the word, and does not touch them again
// until every participant has decremented pending_: only participants read them.
//
// Helpers wait for a new word, first spinning for up to kSpin (a futex wake-up
// costs tens of microseconds, as much as a small convolution) when the pool fits
// on the cores (spinning helpers beyond the core count would take the cores from
// the workers), then sleeping on a condition variable.  They are detached and
// never joined: the pool lives for the whole process.
constexpr std::chrono::microseconds kSpin{100};
constexpr int kCountBits = 16;  // kMaxThreads < 2**16
constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

template <class Pred>
bool spin_until(bool spin, Pred&& done) {
  if (!spin) return done();
  const auto start = std::chrono::steady_clock::now();
  while (!done()) {
    cpu_relax();
    if (std::chrono::steady_clock::now() - start > kSpin) return false;
  }
  return true;
}

// Runs every worker id on the calling thread, in order: the same partition as
// a pooled run, so per-worker partial sums and results are bit-identical.
void run_inline(int workers, const std::function<void(int)>& task) {
  std::exception_ptr first;
  for (int w = 0; w < workers; ++w) try {
      task(w);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  if (first) std::rethrow_exception(first);
}

class Pool {
 public:
  void run(int workers, const std::function<void(int)>& task) {
    // An atomic flag, not a mutex: a task that itself calls parallel_run (on the
    // caller or on a helper) must see "busy" and run inline, never relock.
    bool expected = false;
    if (workers <= 1 || !busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      run_inline(workers, task);
      return;
    }
    struct Release {
      std::atomic<bool>& flag;
      ~Release() { flag.store(false, std::memory_order_release); }
    } release{busy_};
    grow(workers - 1);
    const bool spin = workers <= g_cores;
    task_ = &task;
    error_ = nullptr;
    pending_.store(workers - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(m_);  // no sleeping helper can miss the wake-up
      const uint64_t gen = (round_.load(std::memory_order_relaxed) >> kCountBits) + 1;
      round_.store(gen << kCountBits | static_cast<uint64_t>(workers), std::memory_order_release);
    }
    wake_.notify_all();
    std::exception_ptr mine;
    try {
      task(0);
    } catch (...) {
      mine = std::current_exception();
    }
    auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(spin, finished)) {
      std::unique_lock<std::mutex> lock(m_);
      done_.wait(lock, finished);
    }
    task_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // Starts helpers 1..want that do not exist yet.  helpers_ counts only threads
  // that really started, so a failed start leaves the pool consistent (no round
  // is posted, the next call retries) and is reported as a clear error.
  void grow(int want) {
    while (helpers_ < want) {
      const int id = helpers_ + 1;
      const uint64_t seen = round_.load(std::memory_order_relaxed);  // no round is posted while we grow
      try {
        std::thread(&Pool::helper, this, id, seen).detach();
      } catch (const std::exception& e) {  // system_error (EAGAIN), or bad_alloc for its state
        throw std::runtime_error("fastconv could not start worker thread " + std::to_string(id) + " of " +
                                 std::to_string(want) + " (" + e.what() +
                                 "); call fastconv.set_num_threads with a smaller number");
      }
      ++helpers_;
    }
  }

  void helper(int id, uint64_t seen) {
    for (;;) {
      uint64_t now = seen;
      auto posted = [&] { return (now = round_.load(std::memory_order_acquire)) != seen; };
      const bool spin = static_cast<int>(now & kCountMask) <= g_cores;
      if (!spin_until(spin, posted)) {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, posted);
      }
      seen = now;
      // Not a participant of this round: the caller does not wait for us, and
      // task_ may already belong to a later round.  Touch nothing.
      if (id >= static_cast<int>(now & kCountMask)) continue;
      try {
        (*task_)(id);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m_);
        if (!error_) error_ = std::current_exception();
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(m_);
        done_.notify_one();
      }
    }
  }

  std::atomic<bool> busy_{false};  // set by the caller that owns the pool for one run
  std::mutex m_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* task_ = nullptr;
  std::atomic<uint64_t> round_{0};  // generation << kCountBits | worker count
  std::atomic<int> pending_{0};
  int helpers_ = 0;  // only the owning caller reads or writes it
  std::exception_ptr error_;
};

Pool* g_pool = new Pool();  // never destroyed: detached helpers may still be waiting at exit

// A forked child has none of the parent's helper threads (and the parent's pool
// may have been owned by another thread at the fork): give it a fresh pool.
[[maybe_unused]] const int g_atfork = pthread_atfork(nullptr, nullptr, [] { g_pool = new Pool(); });

}  // namespace

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n <= 0 || n > kMaxThreads)
    throw std::invalid_argument("n must be a number of threads in [1, " + std::to_string(kMaxThreads) + "], got " +
                                std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

void parallel_run(int workers, const std::function<void(int)>& task) { g_pool->run(workers, task); }

}  // namespace fastconv

namespace fastconv {

int64_t pool_selftest(int64_t rounds, int max_workers, uint64_t seed) {
  if (rounds < 0) throw std::invalid_argument("rounds must be non-negative, got " + std::to_string(rounds));
  if (max_workers < 1 || max_workers > kMaxThreads)
    throw std::invalid_argument("max_workers must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                std::to_string(max_workers));
  std::vector<std::atomic<int>> ran(static_cast<size_t>(max_workers));
  std::atomic<int64_t> late{0};
  std::atomic<int64_t> current{-1};
  int64_t bad = 0;
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t r = 0; r < rounds; ++r) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
    const int workers = 1 + static_cast<int>(state % static_cast<uint64_t>(max_workers));
    for (auto& c : ran) c.store(0, std::memory_order_relaxed);
    current.store(r, std::memory_order_release);
    parallel_run(workers, [&](int w) {
      if (current.load(std::memory_order_acquire) != r) late.fetch_add(1);
      volatile int spin = 0;
      for (int i = 0; i < 64; ++i) spin = spin + i;
      ran[static_cast<size_t>(w)].fetch_add(1, std::memory_order_relaxed);
    });
    current.store(-1, std::memory_order_release);
    bool ok = true;
    for (int w = 0; w < max_workers; ++w) ok &= ran[static_cast<size_t>(w)].load() == (w < workers ? 1 : 0);
    bad += !ok;
  }
  // A straggler from the last round would still be counted here.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return bad + late.load();
}

}  // namespace fastconv
