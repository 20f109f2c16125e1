// The size solver's dynamic programmes (solver.hpp): counting, the cheapest designs, receptive-field bounds and
// Pareto fronts, and the limits that refuse a space too large.
#include "solver/solver.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <queue>
#include <unordered_map>

#include "core/geometry.hpp"
#include "runtime/parallel.hpp"

namespace fastconv {

std::string to_string(__int128 v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  unsigned __int128 u = neg ? -(unsigned __int128)v : (unsigned __int128)v;
  std::string s;
  while (u) {
    s.push_back(char('0' + int(u % 10)));
    u /= 10;
  }
  if (neg) s.push_back('-');
  std::reverse(s.begin(), s.end());
  return s;
}

namespace {

using i128 = __int128;
constexpr i128 kInf = std::numeric_limits<i128>::max();

// r = a * b for non-negative counts, true on overflow.  Not the builtin: on
// 128 bits Clang lowers it to compiler-rt's __muloti4, which libgcc lacks, so a
// Clang build on Linux would not load.
bool mul_overflow(i128 a, i128 b, i128* r) {
  if (a != 0 && b > kInf / a) return true;
  *r = a * b;
  return false;
}
// Limits of the search space, each refused with a message before the work
// starts (documented in README, "Solver limits"):
constexpr int64_t kMaxChoices = 5'000'000;  // (kernel, stride, padding, dilation) choices of one layer kind
constexpr int64_t kMaxStates = 20'000'000;  // total reachable sizes over all layers
constexpr int64_t kMaxSize = (int64_t(1) << 31) - 1;
constexpr double kMaxTransitions = 1e9;                      // (size, choice class) steps of one DP pass, ~seconds each
constexpr double kMaxTableBytes = double(int64_t(2) << 30);  // count and cost tables
constexpr double kMaxEnumeration = 2e9;            // choices scanned by the top-k phase: top x layers x choices
constexpr int64_t kDenseSizes = int64_t(1) << 20;  // sizes indexed by a table; larger ones hashed

struct Choice {
  int64_t k, s, p, d, m;
};

// (s, m) classes of choices: every choice in a class maps a size to the same size.
// With a receptive-field bound the class is (s, m, span) instead: span = d (k - 1)
// decides how far the field grows.
struct Group {
  int64_t s, m;
  uint64_t mult;         // how many choices fall in the class
  int64_t kmin;          // the smallest kernel among them: the cheapest under every objective
  int64_t p = 0, d = 1;  // lossless mode, where every class is one choice: its padding and dilation
  int64_t span = 0;      // d (k - 1) of the class (when the receptive field is tracked)
};

void check_range(const Range& r, int64_t min_value, const char* name) {
  if (r.lo > r.hi)
    fail(std::string(name) + ": range is reversed, got " + std::to_string(r.lo) + ":" + std::to_string(r.hi));
  if (r.lo < min_value)
    fail(std::string(name) + ": values must be at least " + std::to_string(min_value) + ", got " +
         std::to_string(r.lo) + ":" + std::to_string(r.hi));
  if (r.hi - r.lo > 1'000'000)
    fail(std::string(name) + ": range " + std::to_string(r.lo) + ":" + std::to_string(r.hi) + " is too wide");
}

// Choices of one layer kind in lexicographic (k, s, p, d) order: the order of
// their indices is the tie-break order.
std::vector<Choice> enumerate_choices(LayerKind kind, const SolveSpec& sp) {
  std::vector<Choice> out;
  const bool conv = kind == LayerKind::conv;
  const Range K = conv ? sp.kernel : sp.pool_kernel, S = conv ? sp.stride : sp.pool_stride,
              P = conv ? sp.padding : sp.pool_padding, D = conv ? sp.dilation : Range{1, 1};
  const double n =
      double(K.hi - K.lo + 1) * double(S.hi - S.lo + 1) * double(P.hi - P.lo + 1) * double(D.hi - D.lo + 1);
  // 40 bytes a choice plus the grouping's sort keys: the limit keeps a refused space to a fraction of a second
  // and a few hundred MB (the transition limit refuses any space this large a layer later anyway).
  if (n > double(kMaxChoices))
    fail("search space too large: the " + std::string(conv ? "kernel, stride, padding and dilation" : "pool") +
         " ranges give more than " + std::to_string(kMaxChoices / 1'000'000) +
         " million choices per layer; narrow them");
  for (int64_t k = K.lo; k <= K.hi; ++k)
    for (int64_t s = S.lo; s <= S.hi; ++s)
      for (int64_t p = P.lo; p <= P.hi; ++p) {
        if (!conv && p > k / 2) continue;  // torch: pool padding at most half the kernel
        for (int64_t d = D.lo; d <= D.hi; ++d) {
          const int64_t e = effective_kernel(k, d);
          out.push_back({k, s, p, d, checked_add(checked_mul(2, p, "padding"), -e, "padding")});
        }
      }
  return out;
}

// Classes in (s, m) order.  A sorted vector rather than a map: tens of millions
// of choices group in a second instead of a quarter of a minute.
std::vector<Group> group_choices(const std::vector<Choice>& choices, bool by_span) {
  std::vector<std::array<int64_t, 4>> keys;  // (s, m, span, k)
  keys.reserve(choices.size());
  for (const Choice& c : choices) keys.push_back({c.s, c.m, by_span ? c.d * (c.k - 1) : 0, c.k});
  std::sort(keys.begin(), keys.end());
  std::vector<Group> out;
  for (const auto& [s, m, span, k] : keys) {
    if (out.empty() || out.back().s != s || out.back().m != m || out.back().span != span) {
      Group g{s, m, 0, k};  // k ascending: the first is the cheapest
      g.span = span;
      out.push_back(g);
    }
    out.back().mult += 1;
  }
  return out;
}

// A reachable state of one layer: its feature-map size and, in lossless mode or
// under a receptive-field bound, the input pixels between two of its positions
// (S, the product of the strides so far) and the width of one position's
// receptive field (W), which decide whether the next layer leaves holes in it
// and whether the bound holds; both 0 otherwise.
struct StateKey {
  int64_t h, w, S, W;
};

struct KeyHash {
  size_t operator()(const std::array<int64_t, 4>& k) const {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int64_t v : k) x = (x ^ uint64_t(v)) * 0xbf58476d1ce4e5b9ull, x ^= x >> 31;
    return size_t(x);
  }
};

// Lossless mode: every choice its own class, in choice order, keeping what the
// lossless checks need.
std::vector<Group> single_choices(const std::vector<Choice>& choices) {
  std::vector<Group> out;
  out.reserve(choices.size());
  for (const Choice& c : choices) out.push_back(Group{c.s, c.m, 1, c.k, c.p, c.d, c.d * (c.k - 1)});
  return out;
}

// Reachable states of one layer.  Square problems outside lossless mode stay on
// the diagonal and index sizes below kDenseSizes by a table; larger sizes and
// other problems hash (a table as long as the largest size would be 8 GiB at
// 2**31).
struct States {
  bool square, full;  // full: lossless mode, keys include S and W
  std::vector<StateKey> list;
  std::vector<int32_t> dense;  // size -> index, square sizes below kDenseSizes
  std::unordered_map<uint64_t, int32_t> hashed;
  std::unordered_map<std::array<int64_t, 4>, int32_t, KeyHash> hashed_full;

  States(bool sq, bool lossless) : square(sq && !lossless), full(lossless) {}
  static uint64_t key(int64_t h, int64_t w) { return (uint64_t(h) << 32) | uint64_t(w); }
  bool is_dense(int64_t h) const { return square && h < kDenseSizes; }

  int32_t find(const StateKey& k) const {
    if (full) {
      auto it = hashed_full.find({k.h, k.w, k.S, k.W});
      return it == hashed_full.end() ? -1 : it->second;
    }
    if (is_dense(k.h)) return k.h < int64_t(dense.size()) ? dense[k.h] : -1;
    auto it = hashed.find(key(k.h, k.w));
    return it == hashed.end() ? -1 : it->second;
  }
  void insert(const StateKey& k) {
    if (find(k) >= 0) return;
    const int32_t idx = int32_t(list.size());
    list.push_back(k);
    if (full) {
      hashed_full.emplace(std::array<int64_t, 4>{k.h, k.w, k.S, k.W}, idx);
    } else if (is_dense(k.h)) {
      if (k.h >= int64_t(dense.size()))
        dense.resize(std::min<int64_t>(kDenseSizes, std::max<int64_t>(k.h + 1, dense.size() * 2)), -1);
      dense[k.h] = idx;
    } else {
      hashed.emplace(key(k.h, k.w), idx);
    }
  }
};

[[noreturn]] void too_large(const std::string& what, double amount, double limit) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g (limit %.3g)", amount, limit);
  fail("search space too large: " + what + " " + buf +
       "; narrow the kernel, stride, padding or dilation ranges, or use fewer layers");
}

// Applies one (s, m) class to a size; false when the layer is not allowed there.
inline bool step(int64_t h, int64_t w, int64_t s, int64_t m, bool exact, int64_t& oh, int64_t& ow) {
  const int64_t hm = h + m;
  if (hm < 0 || (exact && hm % s != 0)) return false;
  oh = hm / s + 1;
  if (w == h) {  // square states: one division, not two
    ow = oh;
    return true;
  }
  const int64_t wm = w + m;
  if (wm < 0 || (exact && wm % s != 0)) return false;
  ow = wm / s + 1;
  return true;
}

// Whether every row of an n-row input lies under some tap of some window of a
// (k, s, p, d) layer: rows o*s + j*d of the padded input (o < out, j < k) must
// cover the real rows [p, p + n).  Stricter than conv_dropped (shapes.
// dropped_pixels), which counts a row inside a window's extent as read even
// when it falls in a dilated window's hole: lossless mode needs every row to
// reach the next layer.  Taps with the same j*d mod s lie on one lattice; per
// lattice the progressions [j*d, j*d + (out-1)*s] come in order of j, so one
// sweep per lattice finds the first uncovered row.
bool reads_every_row(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) {
  const int64_t span = (k - 1) * d + 1, padded = n + 2 * p;
  if (padded < span) return false;
  const int64_t out = (padded - span) / s + 1, reach = (out - 1) * s;  // tap j covers j*d, j*d + s, .., j*d + reach
  if (d == 1 && s <= k) return reach + k >= p + n;                     // windows touch or overlap: one run from 0
  std::vector<std::pair<int64_t, int64_t>> taps;                       // (lattice j*d mod s, start j*d), sorted
  taps.reserve(size_t(k));
  for (int64_t j = 0; j < k; ++j) taps.push_back({(j * d) % s, j * d});
  std::sort(taps.begin(), taps.end());
  size_t t = 0;
  for (int64_t c = 0; c < s && c < p + n; ++c) {
    // the real rows of lattice c: from the first r >= p with r % s == c to the last r < p + n
    const int64_t first = p + ((c - p % s) % s + s) % s;
    if (first >= p + n) continue;
    const int64_t last = first + (p + n - 1 - first) / s * s;
    while (t < taps.size() && taps[t].first < c) ++t;
    int64_t next = first;  // the first row of the lattice not yet covered
    for (; t < taps.size() && taps[t].first == c && taps[t].second <= next; ++t)
      next = std::max(next, taps[t].second + reach + s);
    if (next <= last) return false;
  }
  return true;
}

// What advance() checks beyond the sizes.
struct Track {
  bool lossless;   // every row read, no holes
  bool field;      // S and W kept (lossless mode or a receptive-field bound)
  int64_t max_rf;  // 0: none
};

// One layer choice applied to a state; false when the layer is not allowed
// there.  Lossless mode also requires every input row and column to be read
// and the receptive field to stay hole-free: the shifted copies j * d * S of a
// W-wide field touch or overlap only when d * S <= W.  A receptive-field bound
// prunes a state once W exceeds it (W never shrinks).  `span` is d (k - 1).
inline bool advance(const StateKey& a, int64_t k, int64_t s, int64_t p, int64_t d, int64_t span, int64_t m, bool exact,
                    const Track& t, StateKey& b) {
  if (!step(a.h, a.w, s, m, exact, b.h, b.w)) return false;
  b.S = b.W = 0;
  if (!t.field) return true;
  if (t.lossless) {
    if (!reads_every_row(a.h, k, s, p, d) || (a.w != a.h && !reads_every_row(a.w, k, s, p, d))) return false;
    if (k > 1 && double(d) * double(a.S) > double(a.W)) return false;
  }
  b.W = checked_add(a.W, checked_mul(span, a.S, "receptive field"), "receptive field");
  if (t.max_rf > 0 && b.W > t.max_rf) return false;
  b.S = checked_mul(a.S, s, "receptive field");
  return true;
}

// A layer's cost under one objective, for a choice of kernel k, stride s and
// m = 2p - d(k-1) - 1 producing an oh x ow map: the one definition every pass
// uses.  All four grow with k at fixed (s, m), so a class's smallest kernel is
// its cheapest choice under each of them at once.
struct LayerCost {
  LayerKind kind;
  i128 cin_cout, cout;

  static bool spatial(int64_t k, int64_t s, int64_t m) { return !(k == 1 && s == 1 && m == -1); }

  // The part of the cost that does not depend on the output size: cost =
  // factor * oh * ow when by_area(o), cost = factor otherwise.
  i128 factor(Objective o, int64_t k, int64_t s, int64_t m) const {
    if (o == Objective::kernel) return k;
    if (o == Objective::depth) return spatial(k, s, m) ? 1 : 0;
    if (kind == LayerKind::pool) return 0;
    i128 r;
    if (mul_overflow(cin_cout, i128(k) * k, &r) || (o == Objective::params && __builtin_add_overflow(r, cout, &r)))
      fail("objective: a layer's cost overflows 128 bits");
    return r;
  }
  bool by_area(Objective o) const { return o == Objective::macs && kind == LayerKind::conv; }

  i128 operator()(Objective o, int64_t k, int64_t s, int64_t m, int64_t oh, int64_t ow) const {
    i128 r = factor(o, k, s, m);
    if (by_area(o) && mul_overflow(r, i128(oh) * ow, &r)) fail("objective: a layer's MAC count overflows 128 bits");
    return r;
  }
};

inline i128 add_cost(i128 a, i128 b) {
  i128 r;
  if (a == kInf || b == kInf) return kInf;
  if (__builtin_add_overflow(a, b, &r) || r == kInf) fail("objective: a design's total cost overflows 128 bits");
  return r;
}

// acc += mult * src over `limbs` 64-bit limbs.  The limb count is sized from an
// upper bound on the number of designs, so the top carry is always zero.
inline void mul_add(uint64_t* acc, const uint64_t* src, uint64_t mult, int limbs) {
  unsigned __int128 carry = 0;
  for (int i = 0; i < limbs; ++i) {
    const unsigned __int128 t = (unsigned __int128)src[i] * mult + acc[i] + carry;
    acc[i] = uint64_t(t);
    carry = t >> 64;
  }
}

void validate(const SolveSpec& sp) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0 || v > kMaxSize) fail(std::string(name) + " must be a positive size, got " + std::to_string(v));
  };
  positive(sp.in_h, "input");
  positive(sp.in_w, "input");
  positive(sp.out_h, "output");
  positive(sp.out_w, "output");
  if (sp.layers.empty()) fail("channels: at least one block is needed");
  for (const auto& l : sp.layers)
    if (l.in_channels <= 0 || l.out_channels <= 0 || l.in_channels > kMaxSize || l.out_channels > kMaxSize)
      fail("channels must be positive, got " + std::to_string(l.in_channels) + " -> " + std::to_string(l.out_channels));
  check_range(sp.kernel, 1, "kernel");
  check_range(sp.stride, 1, "stride");
  check_range(sp.padding, 0, "padding");
  check_range(sp.dilation, 1, "dilation");
  check_range(sp.pool_kernel, 1, "pool_kernel");
  check_range(sp.pool_stride, 1, "pool_stride");
  check_range(sp.pool_padding, 0, "pool_padding");
  if (sp.top < 0 || sp.top > 100000) fail("top must be between 0 and 100000, got " + std::to_string(sp.top));
  if (sp.min_rf < 0 || sp.max_rf < 0 || (sp.max_rf > 0 && sp.min_rf > sp.max_rf))
    fail("min_rf and max_rf: need 0 <= min_rf <= max_rf, got min_rf=" + std::to_string(sp.min_rf) +
         ", max_rf=" + std::to_string(sp.max_rf));
  if (!sp.pareto.empty()) {
    if (sp.pareto.size() < 2 || sp.pareto.size() > size_t(kObjectives))
      fail("pareto: needs two to four objectives, got " + std::to_string(sp.pareto.size()));
    for (size_t i = 0; i < sp.pareto.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (sp.pareto[i] == sp.pareto[j]) fail("pareto: an objective is named twice");
  }
}

int kind_index(LayerKind k) { return k == LayerKind::conv ? 0 : 1; }

constexpr double kMaxFrontPoints = 20e6;  // cost vectors kept over all states (64 bytes each)

using Point = std::array<i128, kObjectives>;  // costs under sp.pareto, in its order; unused entries 0

// Keeps the points no other point dominates (at most as large on every
// objective and smaller on one), one per distinct vector, in lexicographic
// order.  After the sort a point can only be dominated by one before it, which
// is no larger on the first objective: with two objectives a sweep keeps the
// points whose second cost falls; with more, each is checked against those kept.
void keep_non_dominated(std::vector<Point>& pts, int n) {
  std::sort(pts.begin(), pts.end());
  pts.erase(std::unique(pts.begin(), pts.end()), pts.end());
  size_t kept = 0;
  i128 lowest = kInf;
  for (size_t i = 0; i < pts.size(); ++i) {
    bool dominated;
    if (n == 2) {
      dominated = pts[i][1] >= lowest;
      if (!dominated) lowest = pts[i][1];
    } else {
      dominated = false;
      for (size_t q = 0; q < kept && !dominated; ++q) {
        bool le = true;
        for (int o = 1; o < n && le; ++o) le = pts[q][o] <= pts[i][o];
        dominated = le;
      }
    }
    if (!dominated) pts[kept++] = pts[i];
  }
  pts.resize(kept);
}

// The exact Pareto front over sp.pareto: per state, the non-dominated vectors
// of costs-to-go, built backward over the (s, m) classes as the cost pass is;
// then one design per vector of the first layer's front, found walking forward
// over the real choices in index order and taking the first whose remainder
// lies on the next state's front (a design on the front has its remainder on
// the front of every state it passes, or a cheaper remainder would dominate it).
template <class MakeDesign>
std::vector<Design> pareto_front(const SolveSpec& sp, const std::vector<Choice> (&choices)[2],
                                 const std::vector<Group> (&groups)[2], const std::vector<States>& states,
                                 const std::vector<LayerCost>& costs, const Track& track, MakeDesign&& make_design,
                                 SolveProgress* progress) {
  const int64_t L = int64_t(sp.layers.size());
  const int n = int(sp.pareto.size());
  auto vector_of = [&](const LayerCost& cost, int64_t k, int64_t s, int64_t m, int64_t oh, int64_t ow) {
    Point c{};
    for (int o = 0; o < n; ++o) c[o] = cost(sp.pareto[o], k, s, m, oh, ow);
    return c;
  };
  auto plus = [&](const Point& a, const Point& b) {
    Point r{};
    for (int o = 0; o < n; ++o) r[o] = add_cost(a[o], b[o]);
    return r;
  };
  std::vector<std::vector<std::vector<Point>>> front(L + 1);
  for (int64_t l = 0; l <= L; ++l) front[l].resize(states[l].list.size());
  for (size_t i = 0; i < states[L].list.size(); ++i)
    if (states[L].list[i].h == sp.out_h && states[L].list[i].w == sp.out_w && states[L].list[i].W >= sp.min_rf)
      front[L][i].push_back(Point{});
  if (progress) {
    double work = 0;
    for (int64_t l = 0; l < L; ++l)
      work += double(states[l].list.size()) * groups[kind_index(sp.layers[l].kind)].size();
    progress->done.store(0);
    progress->total.store(int64_t(work));
    progress->phase.store(3);
  }
  double points = 1;
  for (int64_t l = L - 1; l >= 0; --l) {
    const auto& gs = groups[kind_index(sp.layers[l].kind)];
    const auto& cur = states[l].list;
    const States& next = states[l + 1];
    const int64_t chunk = 16;
    const int64_t items = (int64_t(cur.size()) + chunk - 1) / chunk;
    const int workers = workers_for(double(cur.size()) * gs.size() * 50, items);
    std::vector<std::vector<Point>> scratch(std::max(1, workers));
    parallel_for(items, workers, [&](int64_t item, int worker) {
      std::vector<Point>& cand = scratch[worker];
      const int64_t i0 = item * chunk, i1 = std::min<int64_t>(i0 + chunk, cur.size());
      for (int64_t i = i0; i < i1; ++i) {
        cand.clear();
        for (const Group& g : gs) {
          StateKey to;
          if (!advance(cur[i], g.kmin, g.s, g.p, g.d, g.span, g.m, sp.exact, track, to)) continue;
          const int32_t j = next.find(to);
          if (j < 0 || front[l + 1][j].empty()) continue;
          const Point c = vector_of(costs[l], g.kmin, g.s, g.m, to.h, to.w);
          for (const Point& q : front[l + 1][j]) cand.push_back(plus(c, q));
        }
        keep_non_dominated(cand, n);
        front[l][i].assign(cand.begin(), cand.end());
      }
      if (progress) progress->done.fetch_add(int64_t((i1 - i0) * gs.size()));
    });
    for (const auto& f : front[l]) points += double(f.size());
    if (points > kMaxFrontPoints) too_large("Pareto cost vectors over all sizes", points, kMaxFrontPoints);
  }

  std::vector<Design> out;
  const auto& top = front[0][0];
  double widest = 0;
  for (const auto& l : sp.layers) widest = std::max(widest, double(choices[kind_index(l.kind)].size()));
  if (double(top.size()) * double(L) * widest > kMaxEnumeration)
    too_large("Pareto designs (front x layers x choices)", double(top.size()) * double(L) * widest, kMaxEnumeration);
  if (progress) {
    progress->done.store(0);
    progress->total.store(int64_t(top.size()));
  }
  for (const Point& target : top) {
    std::vector<int32_t> path;
    Point rest = target;
    int32_t state = 0;
    for (int64_t l = 0; l < L; ++l) {
      const auto& cs = choices[kind_index(sp.layers[l].kind)];
      const auto& ahead = front[l + 1];
      const StateKey a = states[l].list[state];
      int32_t taken = -1;
      for (int32_t ci = 0; ci < int32_t(cs.size()) && taken < 0; ++ci) {
        const Choice& c = cs[ci];
        StateKey to;
        if (!advance(a, c.k, c.s, c.p, c.d, c.d * (c.k - 1), c.m, sp.exact, track, to)) continue;
        const int32_t j = states[l + 1].find(to);
        if (j < 0 || ahead[j].empty()) continue;
        const Point c_cost = vector_of(costs[l], c.k, c.s, c.m, to.h, to.w);
        Point r{};
        bool fits = true;
        for (int o = 0; o < n && fits; ++o) {
          fits = c_cost[o] <= rest[o];
          r[o] = rest[o] - c_cost[o];
        }
        if (!fits || !std::binary_search(ahead[j].begin(), ahead[j].end(), r)) continue;
        taken = ci;
        rest = r;
        state = j;
      }
      // Unreachable: the front was built from these steps.
      if (taken < 0) fail("internal error: a Pareto point has no design");
      path.push_back(taken);
    }
    out.push_back(make_design(path, target[0]));
    if (progress) progress->done.fetch_add(1);
  }
  return out;
}

}  // namespace

SolveResult solve(const SolveSpec& sp, SolveProgress* progress) {
  validate(sp);
  const int64_t L = int64_t(sp.layers.size());
  if (progress) {  // phase 0: enumerating the choices is its first step, each layer's sizes the others
    progress->phase.store(0);
    progress->total.store(L + 1);
    progress->done.store(0);
  }
  const std::vector<Choice> choices[2] = {enumerate_choices(LayerKind::conv, sp),
                                          enumerate_choices(LayerKind::pool, sp)};
  const bool lossless = sp.lossless;
  const Track track{lossless, lossless || sp.min_rf > 0 || sp.max_rf > 0, sp.max_rf};
  const std::vector<Group> groups[2] = {lossless ? single_choices(choices[0]) : group_choices(choices[0], track.field),
                                        lossless ? single_choices(choices[1]) : group_choices(choices[1], track.field)};

  std::vector<LayerCost> costs;
  for (const auto& l : sp.layers) costs.push_back({l.kind, i128(l.in_channels) * l.out_channels, i128(l.out_channels)});
  const Objective obj = sp.objective;

  // Forward: every size each layer can see.
  const bool square = sp.in_h == sp.in_w && sp.out_h == sp.out_w;
  std::vector<States> states(L + 1, States(square, track.field));
  states[0].insert(StateKey{sp.in_h, sp.in_w, track.field ? 1 : 0, track.field ? 1 : 0});
  int64_t total_states = 1;
  double work = 0;
  if (progress) progress->done.store(1);
  for (int64_t l = 0; l < L; ++l) {
    const auto& gs = groups[kind_index(sp.layers[l].kind)];
    // Checked before the layer runs: the backward pass does the same steps again.
    const double layer_work = double(states[l].list.size()) * double(gs.size());
    if (work + layer_work > kMaxTransitions) too_large("size transitions per pass", work + layer_work, kMaxTransitions);
    for (size_t i = 0; i < states[l].list.size(); ++i)
      for (const Group& g : gs) {
        const StateKey a = states[l].list[i];
        StateKey b;
        if (!advance(a, g.kmin, g.s, g.p, g.d, g.span, g.m, sp.exact, track, b)) continue;
        if (b.h > kMaxSize || b.w > kMaxSize) fail("padding: sizes grow past 2^31 in this search space");
        states[l + 1].insert(b);
      }
    total_states += int64_t(states[l + 1].list.size());
    if (total_states > kMaxStates)
      fail("search space too large: more than " + std::to_string(kMaxStates) +
           " reachable feature-map sizes; narrow the padding range or use square sizes");
    work += layer_work;
    if (progress) progress->done.store(l + 2);
  }

  // Limbs from an upper bound on the design count: the product of choices per layer.
  double bits = 1;
  for (const auto& l : sp.layers) bits += std::log2(double(std::max<size_t>(1, choices[kind_index(l.kind)].size())));
  const int limbs = int(bits / 64) + 2;
  const double table_bytes = double(total_states) * (double(limbs) * sizeof(uint64_t) + sizeof(i128));
  if (table_bytes > kMaxTableBytes) too_large("count and cost tables of (bytes)", table_bytes, kMaxTableBytes);
  double widest = 0;
  for (const auto& l : sp.layers) widest = std::max(widest, double(choices[kind_index(l.kind)].size()));
  const double enumeration = double(sp.top) * double(L) * widest;
  if (enumeration > kMaxEnumeration)
    too_large("top-k enumeration (top x layers x choices)", enumeration, kMaxEnumeration);

  std::vector<std::vector<uint64_t>> cnt(L + 1);
  std::vector<std::vector<i128>> best(L + 1);
  for (int64_t l = 0; l <= L; ++l) {
    cnt[l].assign(states[l].list.size() * limbs, 0);
    best[l].assign(states[l].list.size(), kInf);
  }
  // The final states of the target size (one; with the field tracked, one per
  // receptive field, those below min_rf left out).
  int32_t target = -1;
  for (size_t i = 0; i < states[L].list.size(); ++i)
    if (states[L].list[i].h == sp.out_h && states[L].list[i].w == sp.out_w && states[L].list[i].W >= sp.min_rf) {
      cnt[L][i * limbs] = 1;
      best[L][i] = 0;
      target = int32_t(i);
    }
  if (progress) {
    progress->done.store(0);
    progress->total.store(int64_t(work));
    progress->phase.store(1);
  }

  // Backward: count and cheapest cost-to-go per (layer, size).
  for (int64_t l = L - 1; l >= 0 && target >= 0; --l) {
    const auto& gs = groups[kind_index(sp.layers[l].kind)];
    const auto& cur = states[l].list;
    const States& next = states[l + 1];
    const LayerCost& cost = costs[l];
    std::vector<i128> factor(gs.size());
    for (size_t gi = 0; gi < gs.size(); ++gi) factor[gi] = cost.factor(obj, gs[gi].kmin, gs[gi].s, gs[gi].m);
    const bool by_area = cost.by_area(obj);
    const int64_t chunk = 16;
    const int64_t items = (int64_t(cur.size()) + chunk - 1) / chunk;
    const int workers = workers_for(double(cur.size()) * gs.size() * 20, items);
    parallel_for(items, workers, [&](int64_t item, int) {
      const int64_t i0 = item * chunk, i1 = std::min<int64_t>(i0 + chunk, cur.size());
      for (int64_t i = i0; i < i1; ++i) {
        const StateKey a = cur[i];
        uint64_t* acc = &cnt[l][size_t(i) * limbs];
        i128 b = kInf;
        for (size_t gi = 0; gi < gs.size(); ++gi) {
          const Group& g = gs[gi];
          StateKey to;
          if (!advance(a, g.kmin, g.s, g.p, g.d, g.span, g.m, sp.exact, track, to)) continue;
          const int64_t oh = to.h, ow = to.w;
          const int32_t j = next.find(to);
          const i128 rest = best[l + 1][j];
          if (rest == kInf) continue;
          mul_add(acc, &cnt[l + 1][size_t(j) * limbs], g.mult, limbs);
          i128 c = factor[gi];
          if (by_area && mul_overflow(c, i128(oh) * ow, &c)) fail("objective: a layer's MAC count overflows 128 bits");
          b = std::min(b, add_cost(c, rest));
        }
        best[l][i] = b;
      }
      if (progress) progress->done.fetch_add(int64_t((i1 - i0) * gs.size()));
    });
  }

  SolveResult result;
  result.count.assign(cnt[0].begin(), cnt[0].begin() + limbs);
  if (target < 0 || best[0][0] == kInf) return result;

  // A whole design from one choice index per layer, with its cost under every objective.
  auto make_design = [&](const std::vector<int32_t>& path, i128 ranked) {
    Design d;
    d.cost = ranked;
    d.costs.fill(0);
    int64_t h = sp.in_h, w = sp.in_w;
    for (int64_t l = 0; l < L; ++l) {
      const auto& lay = sp.layers[l];
      const Choice& c = choices[kind_index(lay.kind)][path[l]];
      int64_t oh = 0, ow = 0;  // the path was built from valid steps
      step(h, w, c.s, c.m, sp.exact, oh, ow);
      for (int o = 0; o < kObjectives; ++o)
        d.costs[o] = add_cost(d.costs[o], costs[l](Objective(o), c.k, c.s, c.m, oh, ow));
      d.layers.push_back({lay.kind, c.k, c.s, c.p, c.d, h, w, oh, ow, lay.in_channels, lay.out_channels});
      h = oh;
      w = ow;
    }
    return d;
  };
  // The front last, so the progress phases run in their order.
  auto with_front = [&]() -> SolveResult& {
    if (!sp.pareto.empty())
      result.front = pareto_front(sp, choices, groups, states, costs, track, make_design, progress);
    return result;
  };
  if (sp.top == 0) return with_front();

  // Best-first enumeration of whole designs in (cost, lexicographic) order.  With
  // the exact cost-to-go as heuristic every popped node lies on one of the first
  // `top` designs, so at most top*L nodes are expanded; each expansion keeps only
  // its `top` best children, since any design through a worse child is beaten by
  // one through each of those.
  struct Node {
    i128 f, g;
    int32_t layer, state;
    std::vector<int32_t> path;
  };
  auto worse = [](const Node& a, const Node& b) {
    if (a.f != b.f) return a.f > b.f;
    return a.path > b.path;
  };
  std::priority_queue<Node, std::vector<Node>, decltype(worse)> open(worse);
  open.push(Node{best[0][0], 0, 0, 0, {}});
  if (progress) {
    progress->done.store(0);
    progress->total.store(sp.top * L);  // at most top x L expansions
    progress->phase.store(2);
  }
  while (!open.empty() && int64_t(result.designs.size()) < sp.top) {
    Node node = open.top();
    open.pop();
    if (node.layer == L) {
      result.designs.push_back(make_design(node.path, node.g));
      continue;
    }
    if (progress) progress->done.fetch_add(1);
    const StateKey a = states[node.layer].list[node.state];
    const auto& cs = choices[kind_index(sp.layers[node.layer].kind)];
    const States& next = states[node.layer + 1];
    const auto& next_best = best[node.layer + 1];
    const LayerCost& cost = costs[node.layer];
    // Max-heap of the best `top` children by (f, choice index).
    std::priority_queue<std::tuple<i128, int32_t, int32_t, i128>> keep;
    for (int32_t ci = 0; ci < int32_t(cs.size()); ++ci) {
      const Choice& c = cs[ci];
      StateKey to;
      if (!advance(a, c.k, c.s, c.p, c.d, c.d * (c.k - 1), c.m, sp.exact, track, to)) continue;
      const int64_t oh = to.h, ow = to.w;
      const int32_t j = next.find(to);
      if (j < 0 || next_best[j] == kInf) continue;
      const i128 g = add_cost(node.g, cost(obj, c.k, c.s, c.m, oh, ow));
      const i128 f = add_cost(g, next_best[j]);
      if (int64_t(keep.size()) < sp.top) {
        keep.emplace(f, ci, j, g);
      } else if (std::make_pair(f, ci) < std::make_pair(std::get<0>(keep.top()), std::get<1>(keep.top()))) {
        keep.pop();
        keep.emplace(f, ci, j, g);
      }
    }
    while (!keep.empty()) {
      const auto [f, ci, j, g] = keep.top();
      keep.pop();
      Node child{f, g, node.layer + 1, j, node.path};
      child.path.push_back(ci);
      open.push(std::move(child));
    }
  }
  return with_front();
}

}  // namespace fastconv
