// The direct kernels' partial-vector store on AVX-512: the first n lanes of v
// (n < 16 floats / 8 doubles) through a write mask.  A library copy per block
// costs about as much as the block's arithmetic; elsewhere direct.cpp stores
// lane by lane.  Included only when the target has AVX-512F.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fastconv {

inline void masked_store_avx512(float* dst, __m512 v, int64_t n) {
  _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << n) - 1), v);
}

inline void masked_store_avx512(double* dst, __m512d v, int64_t n) {
  _mm512_mask_storeu_pd(dst, static_cast<__mmask8>((1u << n) - 1), v);
}

}  // namespace fastconv
