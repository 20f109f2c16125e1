// Exhaustive size-DP over (layer, feature-map size): counts every per-layer choice
// of (kernel, stride, padding, dilation) that chains an input size to a target
// size, finds the cheapest designs and returns the top k.
//
// Method.  A choice acts on a size only through m = 2p - d(k-1) - 1 and s:
// out = floor((n + m) / s) + 1, valid when n + m >= 0 (and, in exact mode,
// (n + m) % s == 0).  So the counting and cost DPs run over (s, m) groups, each
// carrying its multiplicity and the smallest kernel that realises it (every
// objective grows with k).  The top-k designs are then enumerated best-first over
// the real choices with the exact cost-to-go as heuristic, which pops complete
// designs in (cost, lexicographic) order.
//
// Pareto fronts.  With several objectives the same backward pass keeps, per
// state, every non-dominated vector of costs-to-go instead of one minimum (the
// smallest kernel of a class is still the cheapest under every objective); each
// point of the first layer's front is then walked forward in choice order, so
// the design kept for a cost vector is the lexicographically smallest reaching
// it exactly.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace fastconv {

struct Range {
  int64_t lo, hi;
};

enum class LayerKind { conv, pool };
// params and macs count convs only; kernel sums every layer's kernel; depth
// counts the layers that act on space (all but a 1x1 stride-1 unpadded layer).
enum class Objective { params, macs, kernel, depth };
constexpr int kObjectives = 4;

struct SolveLayer {
  LayerKind kind;
  int64_t in_channels, out_channels;
};

struct SolveSpec {
  int64_t in_h, in_w, out_h, out_w;
  std::vector<SolveLayer> layers;
  Range kernel, stride, padding, dilation;       // conv
  Range pool_kernel, pool_stride, pool_padding;  // pool (dilation 1, padding <= kernel/2)
  bool exact = false;
  // Lossless: every layer reads every input row and column, and no receptive
  // field at any depth has holes (a layer's dilation times the stride so far
  // never exceeds the receptive field so far).
  bool lossless = false;
  // Receptive field of one output in input pixels, 1 + sum(d_i (k_i - 1) *
  // prod(s_j, j < i)) over every layer (pools included), kept in [min_rf,
  // max_rf]; 0: no bound.
  int64_t min_rf = 0, max_rf = 0;
  Objective objective = Objective::params;
  int64_t top = 1;
  // Two to four distinct objectives: the exact Pareto front over them is
  // returned as well; empty: none.
  std::vector<Objective> pareto;
};

struct DesignLayer {
  LayerKind kind;
  int64_t kernel, stride, padding, dilation;
  int64_t in_h, in_w, out_h, out_w;
  int64_t in_channels, out_channels;
};

struct Design {
  __int128 cost;                            // under the ranking objective (a front's: its first)
  std::array<__int128, kObjectives> costs;  // under every objective, in Objective order
  std::vector<DesignLayer> layers;
};

struct SolveResult {
  std::vector<uint64_t> count;  // little-endian 64-bit limbs, exact
  std::vector<Design> designs;  // best first
  std::vector<Design> front;    // one per non-dominated cost vector, in lexicographic order of the vectors
};

// Polled from another thread to draw a progress bar.  Phases: 0 choices and
// reachable sizes (done/total in steps: the choices, then each layer), 1 counting and costs (in size transitions), 2
// the top designs (in expansions, of at most top x layers), 3 the Pareto front (in size transitions, then
// front designs).
struct SolveProgress {
  std::atomic<int64_t> done{0}, total{0};
  std::atomic<int> phase{0};
};

// Throws std::invalid_argument naming the offending option.
SolveResult solve(const SolveSpec& spec, SolveProgress* progress = nullptr);

std::string to_string(__int128 v);

}  // namespace fastconv
