#include "parallel.hpp"

#include <atomic>
#include <stdexcept>
#include <string>

namespace fastconv {

namespace {
int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}
std::atomic<int> g_threads{default_threads()};
}  // namespace

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n <= 0) throw std::invalid_argument("n must be a positive number of threads, got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

}  // namespace fastconv
