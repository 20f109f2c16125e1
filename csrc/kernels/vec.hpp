// A width-generic vector layer over the GCC/Clang vector extension: the one
// vocabulary every dispatched micro-kernel is written in, so the same source
// becomes SSE2, AVX2, AVX-512 or NEON code by the flags its translation unit is
// compiled with (kernels/isa_kernels.cpp, once per level), and a test on any
// machine exercises the logic every level shares.
//
// Included only inside an ISA namespace (fastconv::isa_<level>), after that
// unit has defined kVecBytes: every function here must be inlined into, or
// private to, code built with that level's flags.  A template outside the ISA
// namespace (std::min, std::copy) would be emitted once per unit with different
// flags and the linker keeps any one copy, so an AVX-512 copy could serve an
// AVX2 CPU; hence plain loops and memcpy (a libc call) only.
#pragma once

// Expects <cstdint>, <cstring>, <type_traits> and <utility> included at file scope.

template <class T>
struct VecOf {
  typedef T type __attribute__((vector_size(kVecBytes)));
};
// kVecBytes / sizeof(T) lanes of T, held in one register of the level.
template <class T>
using Vec = typename VecOf<T>::type;
template <class T>
constexpr int64_t kLanes = kVecBytes / static_cast<int64_t>(sizeof(T));
// Half as many lanes (narrow rows two to a vector).
template <class T>
struct HalfOf {
  typedef T type __attribute__((vector_size(kVecBytes / 2)));
};
template <class T>
using HalfVec = typename HalfOf<T>::type;

// An unsigned vector of Vec<T>'s shape, for lane masks.
template <class T>
struct BitsOf {
  using elem = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  typedef elem type __attribute__((vector_size(kVecBytes)));
};
template <class T>
using BitsVec = typename BitsOf<T>::type;

template <class T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
inline void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// s in every lane.  Ones times s, an exact identity the compilers fold into
// one broadcast; `Vec<T>{} + s` is an add of +0.0 (not an identity for -0.0),
// which GCC and Clang both emit, and a lane-by-lane fill became inserts inside
// a GEMM loop.  In hot loops, prefer `scalar * vector`.
template <class T>
inline Vec<T> broadcast(T s) {
  return (Vec<T>{} + T(1)) * s;
}

// v with the lanes whose mask is 0 set to +0.0 (NaN and Inf included).
template <class T>
inline Vec<T> masked(Vec<T> v, BitsVec<T> keep) {
  BitsVec<T> b;
  std::memcpy(&b, &v, sizeof v);
  b &= keep;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// Stores of Chunk, Chunk / 2, ..., 1 lanes covering the first n < 2 Chunk of
// lanes: fixed-size copies, each one or two moves.
template <class T, int64_t Chunk>
inline void store_chunks(T* dst, const T* lanes, int64_t n) {
  if constexpr (Chunk >= 1) {
    if (n >= Chunk) {
      std::memcpy(dst, lanes, Chunk * sizeof(T));
      dst += Chunk, lanes += Chunk, n -= Chunk;
    }
    store_chunks<T, Chunk / 2>(dst, lanes, n);
  }
}

// The first n lanes of v (0 <= n < kLanes), through a write mask where the level
// has one; in fixed-size pieces elsewhere: a lane-by-lane loop becomes a
// library memmove call (GCC's loop-idiom pass), which cost 13% of a Winograd
// layer, more than its transforms.
template <class T>
inline void store_first(T* dst, Vec<T> v, int64_t n) {
#if FASTCONV_HAS_MASKED_STORE
  masked_store(dst, v, n);
#else
  // Lane by lane into a buffer of its own, not memcpy(&v): v is the caller's
  // accumulator once inlined, and taking its address made GCC keep the whole
  // accumulator array on the stack inside the caller's hot loop (a depthwise
  // layer's 8-vector rows at AVX2: every multiply-add loaded and stored its
  // accumulator; 4,999 stack references in the AVX2 unit, 694 without).
  T lanes[kLanes<T>];
  for (int64_t k = 0; k < kLanes<T>; ++k) lanes[k] = v[k];
  store_chunks<T, kLanes<T> / 2>(dst, lanes, n);
#endif
}

// Vector r of a run whose first n values are to be stored.
template <class T>
inline void store_vec(T* dst, Vec<T> v, int64_t r, int64_t n) {
  constexpr int64_t V = kLanes<T>;
  if ((r + 1) * V <= n)
    store(dst + r * V, v);
  else if (r * V < n)
    store_first<T>(dst + r * V, v, n - r * V);
}

// Lanes [0, V/2) from lo and [V/2, V) from hi: two rows of a narrow map in one
// vector, two half-width loads joined in registers (one insert).  Not two
// memcpy into one vector: that is two stores and a wider load, which the CPU
// cannot forward (an 8x8 layer at AVX-512 ran 3x slower).
template <class T, int64_t... L>
inline Vec<T> join_halves(const T* lo, const T* hi, std::integer_sequence<int64_t, L...>) {
  HalfVec<T> a, b;
  std::memcpy(&a, lo, sizeof a);
  std::memcpy(&b, hi, sizeof b);
#if defined(__clang__) || __GNUC__ >= 12
  return __builtin_shufflevector(a, b, L...);
#else
  Vec<T> v;
  for (int64_t k = 0; k < kLanes<T> / 2; ++k) v[k] = a[k], v[k + kLanes<T> / 2] = b[k];
  return v;
#endif
}

template <class T>
inline Vec<T> load_halves(const T* lo, const T* hi) {
  return join_halves<T>(lo, hi, std::make_integer_sequence<int64_t, kLanes<T>>{});
}

// Lanes [0, n0) of v at lo and lanes [V/2, V/2 + n1) at hi, 0 <= n0, n1 <= V/2.
// The halves are split off in registers first: lane reads of v itself (the
// caller's accumulator) made GCC keep every accumulator of the AVX-512 tile
// on the stack.
template <class T>
inline void store_half(T* dst, HalfVec<T> h, int64_t n) {
  constexpr int64_t H = kLanes<T> / 2;
  if (n == H) {
    std::memcpy(dst, &h, sizeof h);
  } else if (n > 0) {
    T lanes[H];
    for (int64_t k = 0; k < H; ++k) lanes[k] = h[k];
    store_chunks<T, H / 2>(dst, lanes, n);
  }
}

template <class T, int64_t... L>
inline void store_halves(T* lo, T* hi, Vec<T> v, int64_t n0, int64_t n1, std::integer_sequence<int64_t, L...>) {
  constexpr int64_t H = kLanes<T> / 2;
#if defined(__clang__) || __GNUC__ >= 12
  store_half<T>(lo, __builtin_shufflevector(v, v, L...), n0);
  store_half<T>(hi, __builtin_shufflevector(v, v, (L + H)...), n1);
#else
  HalfVec<T> a, b;
  for (int64_t k = 0; k < H; ++k) a[k] = v[k], b[k] = v[k + H];
  store_half<T>(lo, a, n0);
  store_half<T>(hi, b, n1);
#endif
}

template <class T>
inline void store_halves(T* lo, T* hi, Vec<T> v, int64_t n0, int64_t n1) {
  store_halves<T>(lo, hi, v, n0, n1, std::make_integer_sequence<int64_t, kLanes<T> / 2>{});
}

// The sum of v's lanes.
template <class T>
inline T reduce_add(Vec<T> v) {
  T s = 0;
  for (int64_t k = 0; k < kLanes<T>; ++k) s += v[k];
  return s;
}

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// Lanes of a (indices 0 .. lanes - 1) and b (lanes .. 2 lanes - 1), picked by
// Idx: one or two permutes.  GCC before 12 has only __builtin_shuffle.
template <class T, int64_t... Idx>
inline Vec<T> pick(Vec<T> a, Vec<T> b) {
  static_assert(sizeof...(Idx) == kLanes<T>, "one index per lane");
#if defined(__clang__) || __GNUC__ >= 12
  return __builtin_shufflevector(a, b, Idx...);
#else
  return __builtin_shuffle(a, b, BitsVec<T>{static_cast<typename BitsOf<T>::elem>(Idx)...});
#endif
}

// Rows r and r + B of a lanes x lanes block, their off-diagonal B x B blocks
// (lanes with bit B set in row r, clear in row r + B) swapped.
template <class T, int64_t B, int64_t... L>
inline void swap_blocks(Vec<T>& lo, Vec<T>& hi, std::integer_sequence<int64_t, L...>) {
  constexpr int64_t V = kLanes<T>;
  const Vec<T> a = lo, b = hi;
  lo = pick<T, ((L & B) ? V + L - B : L)...>(a, b);
  hi = pick<T, ((L & B) ? V + L : L + B)...>(a, b);
}

// r[0 .. lanes) transposed in registers: the off-diagonal blocks swapped at
// half the width, then within each quadrant, down to single lanes (lanes
// log2(lanes) permutes of two registers).
template <class T, int64_t B = kLanes<T> / 2>
inline void transpose_block(Vec<T>* r) {
  for (int64_t i = 0; i < kLanes<T>; ++i)
    if (!(i & B)) swap_blocks<T, B>(r[i], r[i | B], std::make_integer_sequence<int64_t, kLanes<T>>{});
  if constexpr (B > 1) transpose_block<T, B / 2>(r);
}

// Even lanes (0, 2, ...) of the pair a, b, and the odd ones: a stride-2 gather
// of two vectors' worth of values.
template <class T, int64_t... L>
inline void split_pairs(Vec<T> a, Vec<T> b, Vec<T>& even, Vec<T>& odd, std::integer_sequence<int64_t, L...>) {
  even = pick<T, (2 * L)...>(a, b);
  odd = pick<T, (2 * L + 1)...>(a, b);
}
