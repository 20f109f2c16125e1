#include "parallel.hpp"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace fastconv {

namespace {

int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}
std::atomic<int> g_threads{default_threads()};

// Fork-join pool.  Helper threads wait for a new generation of work, first
// spinning for up to kSpin (a futex wake-up costs tens of microseconds, as much
// as a small convolution), then sleeping on a condition variable; helpers with
// an id beyond this round's worker count skip it.  Helpers are detached and
// never joined: the pool lives for the whole process.
constexpr std::chrono::microseconds kSpin{100};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

template <class Pred>
bool spin_until(Pred&& done) {
  const auto start = std::chrono::steady_clock::now();
  while (!done()) {
    cpu_relax();
    if (std::chrono::steady_clock::now() - start > kSpin) return false;
  }
  return true;
}

class Pool {
 public:
  void run(int workers, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> owner(busy_, std::try_to_lock);
    if (!owner.owns_lock()) {  // another caller has the pool: same partition, on this thread
      std::exception_ptr first;
      for (int w = 0; w < workers; ++w) try {
          task(w);
        } catch (...) {
          if (!first) first = std::current_exception();
        }
      if (first) std::rethrow_exception(first);
      return;
    }
    while (helpers_ < workers - 1) std::thread(&Pool::helper, this, ++helpers_).detach();
    task_ = &task;
    active_.store(workers - 1, std::memory_order_relaxed);
    pending_.store(workers - 1, std::memory_order_relaxed);
    error_ = nullptr;
    {
      std::lock_guard<std::mutex> lock(m_);  // no helper can miss the wake-up
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    std::exception_ptr mine;
    try {
      task(0);
    } catch (...) {
      mine = std::current_exception();
    }
    auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(finished)) {
      std::unique_lock<std::mutex> lock(m_);
      done_.wait(lock, finished);
    }
    task_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void helper(int id) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t now = seen;
      auto posted = [&] { return (now = generation_.load(std::memory_order_acquire)) != seen; };
      if (!spin_until(posted)) {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, posted);
      }
      seen = now;
      if (id > active_.load(std::memory_order_relaxed)) continue;  // not needed this round
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

  std::mutex busy_;  // held by the caller that owns the pool for one run
  std::mutex m_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> active_{0}, pending_{0};
  int helpers_ = 0;
  std::exception_ptr error_;
};

Pool* g_pool = new Pool();  // never destroyed: detached helpers may still be waiting at exit

// A forked child has none of the parent's helper threads: give it a fresh pool.
[[maybe_unused]] const int g_atfork = pthread_atfork(nullptr, nullptr, [] { g_pool = new Pool(); });

}  // namespace

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n <= 0) throw std::invalid_argument("n must be a positive number of threads, got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

void parallel_run(int workers, const std::function<void(int)>& task) { g_pool->run(workers, task); }

}  // namespace fastconv
