// Weights as the algorithms use them, made once per prepared layer (fastconv.Conv2dPlan) instead of once per call:
// the implicit GEMM's packed panels, the adjoint's rotated weights, the strided input gradient's phase panels,
// Winograd's transformed points, and whether the weights are all finite.  At batch 1 on small maps these
// transforms cost as much as the convolution (a 512 -> 512 3x3 layer at 7x7: packing its 9.4 MB of weights took
// longer than the GEMM; ONNX Runtime packs once, when its session is made).
//
// An algorithm asks for a form by key; without a store (the stateless functional API) it makes the form into its
// own scratch on every call, as before.  A store is safe to share between threads: a form is made once, under a
// lock, and never changes or moves afterwards, so concurrent calls read it freely.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#include "runtime/cpu_features.hpp"

namespace fastconv {

// Which transform a prepared form holds.  The level is part of every key (panel sizes differ between levels, and
// tests switch levels within a process).
enum class Prep : int {
  implicit_panels,  // a: panel rows, b: 1 if channel tiles; forward weights, or the adjoint's (ns)
  adjoint_weights,  // the stride-1 input gradient's rotated, per-group transposed weights
  strided_phases,   // the strided input gradient's packed phase weights
  winograd_points,  // the generic Winograd's U; a: panel rows, b: adjoint
  winograd_avx512,  // the AVX-512 Winograd's U; b: adjoint
  finite,           // one value: 1 if every weight is finite
};

struct PrepKey {
  Prep kind;
  int ns;  // namespace: 0 for the layer's own weights, 1 for a derived weight (the adjoint's packing)
  int64_t a, b;

  bool operator==(const PrepKey& o) const { return kind == o.kind && ns == o.ns && a == o.a && b == o.b; }
};

class PreparedWeights {
 public:
  PreparedWeights() = default;
  PreparedWeights(const PreparedWeights&) = delete;
  PreparedWeights& operator=(const PreparedWeights&) = delete;

  // The form `key` (at the active level) of `count` values of T, made by make(out) on first request; `out` is
  // 64-byte aligned and uninitialised.  The pointer stays valid for the store's life.
  template <class T, class Make>
  const T* get(PrepKey key, int64_t count, Make&& make) {
    const int level = static_cast<int>(active_level());
    std::lock_guard<std::mutex> lock(m_);
    for (const Entry& e : entries_)
      if (e.key == key && e.level == level && e.bytes == static_cast<size_t>(count) * sizeof(T))
        return reinterpret_cast<const T*>(e.data.get());
    const size_t bytes = static_cast<size_t>(count) * sizeof(T);
    Entry e{key, level, bytes, Block(static_cast<char*>(::operator new(bytes ? bytes : 1, std::align_val_t(64))))};
    make(reinterpret_cast<T*>(e.data.get()));
    entries_.push_back(std::move(e));
    bytes_ += bytes;
    return reinterpret_cast<const T*>(entries_.back().data.get());
  }

  // Bytes held by every form made so far.
  size_t bytes() const {
    std::lock_guard<std::mutex> lock(m_);
    return bytes_;
  }

 private:
  struct Free {
    void operator()(char* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  using Block = std::unique_ptr<char, Free>;
  struct Entry {
    PrepKey key;
    int level;
    size_t bytes;
    Block data;
  };
  mutable std::mutex m_;
  std::vector<Entry> entries_;
  size_t bytes_ = 0;
};

// A store and the namespace an algorithm's keys go into: the adjoint forward of an input gradient packs the
// adjoint's weights, which must not meet the forward's own packing of the same shape.
struct PrepRef {
  PreparedWeights* store = nullptr;
  int ns = 0;

  explicit operator bool() const { return store != nullptr; }
  PrepRef derived() const { return PrepRef{store, ns + 1}; }
};

// The form `key` of `count` values: from the store when there is one, else made into `scratch` now.
template <class T, class Make>
const T* prepared(PrepRef prep, Prep kind, int64_t a, int64_t b, int64_t count, std::vector<T>& scratch, Make&& make) {
  if (prep) return prep.store->get<T>(PrepKey{kind, prep.ns, a, b}, count, make);
  scratch.resize(static_cast<size_t>(count));
  make(scratch.data());
  return scratch.data();
}

}  // namespace fastconv
