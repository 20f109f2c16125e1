// Size rules of fastconv: the one place where conv, pool, transposed-conv and
// TensorFlow 'same' sizes are computed.  The kernels, the size-DP solver and the
// Python shape toolkit (through the bindings) all call these functions, so a rule
// can never drift between two copies.
//
// Every function validates its arguments and throws std::invalid_argument with a
// message naming the argument and the value received; products and sums that
// could overflow int64 are checked.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastconv {

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// The one overflow check for every size computation: checked_add/sub/mul fail
// with the operation and its operands in the message.
[[noreturn]] inline void overflow(const char* what, int64_t a, const char* op, int64_t b) {
  fail(std::string(what) + ": size computation " + std::to_string(a) + " " + op + " " + std::to_string(b) +
       " overflows int64");
}

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) overflow(what, a, "*", b);
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) overflow(what, a, "+", b);
  return r;
}

inline int64_t checked_sub(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) overflow(what, a, "-", b);
  return r;
}

inline void require_positive(int64_t v, const char* name) {
  if (v <= 0) fail(std::string(name) + " must be positive, got " + std::to_string(v));
}

inline void require_nonnegative(int64_t v, const char* name) {
  if (v < 0) fail(std::string(name) + " must be non-negative, got " + std::to_string(v));
}

// Effective extent of a dilated kernel: d*(k-1)+1.
inline int64_t effective_kernel(int64_t k, int64_t d) {
  require_positive(k, "kernel_size");
  require_positive(d, "dilation");
  return checked_add(checked_mul(d, k - 1, "dilation*(kernel_size-1)"), 1, "effective kernel");
}

// torch's convolution rule along one axis, with possibly unequal padding before
// and after.  Returns the number of output positions; throws when the dilated
// kernel does not fit in the padded input (torch's "kernel size can't be greater
// than actual input size").
inline int64_t conv_out(int64_t n, int64_t k, int64_t s, int64_t pad_before, int64_t pad_after, int64_t d) {
  require_nonnegative(n, "input size");
  require_positive(s, "stride");
  require_nonnegative(pad_before, "padding");
  require_nonnegative(pad_after, "padding");
  const int64_t e = effective_kernel(k, d);
  const int64_t padded = checked_add(checked_add(n, pad_before, "padded input"), pad_after, "padded input");
  if (padded < e)
    fail("kernel_size: dilated kernel extent " + std::to_string(e) + " (kernel_size " + std::to_string(k) +
         ", dilation " + std::to_string(d) + ") is larger than the padded input size " + std::to_string(padded));
  return (padded - e) / s + 1;
}

// Input rows (or columns) that no window touches: the seed's "lost features".
// Windows cover [o*s, o*s + e) in padded coordinates.  With s <= e they tile a
// prefix, and only trailing rows are lost; with s > e (a stride longer than the
// dilated kernel) the s - e rows between consecutive windows are lost too.
inline int64_t conv_dropped(int64_t n, int64_t k, int64_t s, int64_t pad_before, int64_t pad_after, int64_t d) {
  const int64_t out = conv_out(n, k, s, pad_before, pad_after, d);
  const int64_t e = effective_kernel(k, d);
  const int64_t first = pad_before, last = pad_before + n;  // the input, in padded coordinates: [first, last)
  auto overlap = [&](int64_t o) {                           // input rows inside window o
    const int64_t lo = std::max(o * s, first), hi = std::min(o * s + e, last);
    return hi > lo ? hi - lo : 0;
  };
  if (s <= e) {
    const int64_t used_end = (out - 1) * s + e;  // exclusive; no overflow: <= the padded size
    return std::max<int64_t>(0, last - std::max(used_end, first));
  }
  // Disjoint windows: those wholly inside the input read e rows each; at most
  // one window straddles each end of the input.
  const int64_t o_lo = first / s + (first % s != 0);  // first window starting at or after `first`
  const int64_t o_hi = std::min(out - 1, last >= e ? (last - e) / s : int64_t(-1));  // last ending by `last`
  int64_t covered = o_hi >= o_lo ? (o_hi - o_lo + 1) * e : 0;
  const int64_t edge_a = first / s, edge_b = (last - 1) / s;  // the windows that can straddle an end
  auto partial = [&](int64_t o) { return o < out && (o < o_lo || o > o_hi) ? overlap(o) : 0; };
  covered += partial(edge_a);
  if (edge_b != edge_a) covered += partial(edge_b);
  return n - covered;
}

// TensorFlow/Keras 'same': out = ceil(n / s); total padding
// max(0, (out-1)*s + d*(k-1) + 1 - n), the odd pixel after (bottom/right).
struct SamePad {
  int64_t before, after, out;
};

inline SamePad same_padding(int64_t n, int64_t k, int64_t s, int64_t d) {
  require_positive(n, "input size");
  require_positive(s, "stride");
  const int64_t e = effective_kernel(k, d);
  const int64_t out = n / s + (n % s != 0);  // ceil(n / s) without forming n + s - 1
  int64_t total = checked_add(checked_mul(out - 1, s, "same padding"), e, "same padding") - n;
  if (total < 0) total = 0;
  return {total / 2, total - total / 2, out};
}

// torch's pooling rule (max_pool2d / avg_pool2d), symmetric padding.  In
// ceil_mode the last window is dropped when it would start inside the right
// padding (pytorch issues 57178, 88144, 88464, 46929).
inline int64_t pool_out(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  require_nonnegative(n, "input size");
  require_positive(k, "kernel_size");
  require_positive(s, "stride");
  require_positive(d, "dilation");
  require_nonnegative(p, "padding");
  if (p > k / 2)
    fail("padding should be at most half of kernel_size (padding " + std::to_string(p) + ", kernel_size " +
         std::to_string(k) + ")");
  const int64_t e = effective_kernel(k, d);
  // torch's pooling_output_shape: floor division rounding toward -infinity; in
  // ceil mode a window may overhang the input, as long as it starts inside it.
  // p <= k / 2 keeps 2 * p in range.
  const int64_t numer =
      checked_add(checked_add(n, 2 * p, "padded input") - e, ceil_mode ? s - 1 : 0, "pooling output size");
  // Floor division, without forming -numer + s - 1 (it overflows for a huge stride).
  int64_t out = numer / s - (numer % s < 0 ? 1 : 0) + 1;
  if (ceil_mode && (out - 1) * s >= n + p) --out;
  if (out < 1)
    fail("kernel_size: pooling window extent " + std::to_string(e) + " does not fit the input size " +
         std::to_string(n) + " with padding " + std::to_string(p) + " (output size " + std::to_string(out) + ")");
  return out;
}

// torch's transposed-convolution rule: (n-1)*s - 2p + d*(k-1) + output_padding + 1,
// output_padding smaller than stride or dilation.  n == 0 (an empty batch with a zero-size axis, which torch accepts)
// may give 0.
inline int64_t conv_transpose_out(int64_t n, int64_t k, int64_t s, int64_t p, int64_t op, int64_t d) {
  require_nonnegative(n, "input size");
  require_positive(s, "stride");
  require_nonnegative(p, "padding");
  require_nonnegative(op, "output_padding");
  const int64_t e = effective_kernel(k, d);
  if (op >= s && op >= d)
    fail("output_padding must be smaller than either stride or dilation, got output_padding " + std::to_string(op) +
         ", stride " + std::to_string(s) + ", dilation " + std::to_string(d));
  const int64_t full = checked_add(checked_mul(n - 1, s, "transposed output"), checked_add(e, op, "transposed output"),
                                   "transposed output");
  const int64_t out = checked_sub(full, checked_mul(2, p, "padding"), "transposed output");
  if (out < (n == 0 ? 0 : 1))
    fail("padding: transposed convolution output size " + std::to_string(out) + " is not positive (padding " +
         std::to_string(p) + ")");
  return out;
}

}  // namespace fastconv
