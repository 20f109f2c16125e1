// Whether an array holds only finite values.  Fast paths that combine values
// differently from a plain sum of products (Winograd's transforms subtract
// inputs, the direct kernels multiply zero padding by every tap) give NaN where
// torch gives Inf or a finite value, so they take an operand only when it is
// finite; the im2col + GEMM path handles the rest with torch's propagation.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace fastconv {

// Tests exponent bits as integers: the loop vectorises (a floating-point
// reduction would not, without -ffast-math) and costs one read of the array.
template <class T>
bool all_finite(const T* p, int64_t n) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr U exp = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    U b;
    std::memcpy(&b, p + i, sizeof b);
    bad |= U((b & exp) == exp);
  }
  return bad == 0;
}

}  // namespace fastconv
