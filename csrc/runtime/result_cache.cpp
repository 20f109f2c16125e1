// Large result arrays kept for reuse after they are freed (no fresh mmap and page faults per call).
#include "runtime/result_cache.hpp"

#include <pthread.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace fastconv {

namespace {

// Kept blocks, oldest first.  Arrays may be freed by any Python thread, and
// some only at interpreter exit: the cache is never destroyed, so a block
// freed after static destructors have run still finds it.
struct Cache {
  std::mutex mutex;
  std::vector<ResultBlock> kept;
  size_t kept_bytes = 0;
};

Cache& cache() {
  static Cache* c = [] {
    Cache* made = new Cache;
    // A fork while another thread holds the lock would leave the child's copy
    // locked forever: held across the fork, released on both sides.
    pthread_atfork([] { cache().mutex.lock(); }, [] { cache().mutex.unlock(); }, [] { cache().mutex.unlock(); });
    return made;
  }();
  return *c;
}

std::atomic<size_t> g_default_limit{size_t(256) << 20};

size_t cache_limit() {
  const size_t fallback = g_default_limit.load(std::memory_order_relaxed);
  const char* v = std::getenv("FASTCONV_CACHE_MB");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(v, &end, 10);
  if (*end != '\0' || mb > (1ull << 20)) return fallback;  // unreadable: the default
  return static_cast<size_t>(mb) << 20;
}

// Sizes in 64 KiB steps, so results that differ by a few rows share blocks.
size_t block_size(size_t bytes) { return (bytes + (size_t(64) << 10) - 1) / (size_t(64) << 10) * (size_t(64) << 10); }

}  // namespace

void result_cache_set_default_limit(size_t bytes) noexcept { g_default_limit.store(bytes, std::memory_order_relaxed); }
size_t result_cache_limit() noexcept { return cache_limit(); }

ResultBlock result_alloc(size_t bytes) {
  const size_t size = block_size(bytes);
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    std::vector<ResultBlock>& kept = c.kept;
    size_t best = kept.size();
    for (size_t i = 0; i < kept.size(); ++i)
      if (kept[i].bytes >= size && kept[i].bytes - size <= size / 4 &&
          (best == kept.size() || kept[i].bytes < kept[best].bytes))
        best = i;
    if (best < kept.size()) {
      const ResultBlock block = kept[best];
      c.kept_bytes -= block.bytes;
      kept.erase(kept.begin() + static_cast<std::ptrdiff_t>(best));
      return block;
    }
  }
  void* p = std::aligned_alloc(64, size);
  if (!p) throw std::bad_alloc();
  return ResultBlock{p, size};
}

void result_free(ResultBlock block) noexcept {
  if (!block.p) return;
  const size_t size = block.bytes, limit = cache_limit();
  std::vector<void*> drop;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    std::vector<ResultBlock>& kept = c.kept;
    if (size > limit) {
      drop.push_back(block.p);
    } else {
      // The oldest blocks make room (the newest is the likeliest to be asked for again).
      while (c.kept_bytes + size > limit && !kept.empty()) {
        drop.push_back(kept.front().p);
        c.kept_bytes -= kept.front().bytes;
        kept.erase(kept.begin());
      }
      try {
        kept.push_back(block);
        c.kept_bytes += size;
      } catch (...) {
        drop.push_back(block.p);
      }
    }
  }
  for (void* q : drop) std::free(q);
}

size_t result_cache_clear() noexcept {
  std::vector<ResultBlock> blocks;
  size_t bytes;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    blocks.swap(c.kept);
    bytes = c.kept_bytes;
    c.kept_bytes = 0;
  }
  for (const ResultBlock& b : blocks) std::free(b.p);
  return bytes;
}

size_t result_cache_bytes() noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.kept_bytes;
}

}  // namespace fastconv
