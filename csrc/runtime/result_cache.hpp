// Memory for large result arrays, kept for reuse after they are freed.
//
// glibc maps every allocation of 32 MiB or more afresh (and macOS's allocator
// far smaller ones), so a result of that size costs the kernel a page fault
// and a zeroed page per 4 KiB on every call: a third of a 3 -> 32 channel 3x3
// convolution of one 512x512 image (avx2, 2 threads).  ONNX Runtime hands out
// its arena's memory for the same reason.  Blocks of kCachedMinBytes or more
// come from here: freed ones are kept, up to FASTCONV_CACHE_MB megabytes in all
// (read at every free; default: the budget the package sets at import, the
// smaller of 256 MiB and an eighth of a cgroup memory limit; 0 keeps none), and the smallest kept block
// that fits a request within a quarter of its size is handed out again.
#pragma once

#include <cstddef>

namespace fastconv {

constexpr size_t kCachedMinBytes = size_t(4) << 20;

// A block of `bytes` >= what was asked (a kept block may be up to a quarter larger).
struct ResultBlock {
  void* p;
  size_t bytes;
};

// 64-byte aligned; throws std::bad_alloc.  The block goes back whole to result_free.
ResultBlock result_alloc(size_t bytes);
void result_free(ResultBlock block) noexcept;
// Frees every kept block; returns how many bytes were kept.
size_t result_cache_clear() noexcept;
size_t result_cache_bytes() noexcept;
// The budget when FASTCONV_CACHE_MB is unset, and the one in force now.
void result_cache_set_default_limit(size_t bytes) noexcept;
size_t result_cache_limit() noexcept;

}  // namespace fastconv
