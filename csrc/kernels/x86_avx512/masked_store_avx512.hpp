// AVX-512's masked partial store, for the vector layer (vec.hpp) of the avx512
// build of isa_kernels.cpp: the first n lanes of v (n < 16 floats / 8 doubles).
// The only x86 header among the generic micro-kernels, included by that build
// alone.
// Expects <immintrin.h> included at file scope (this file is included inside
// the ISA namespace).
#pragma once

#define FASTCONV_HAS_MASKED_STORE 1

inline void masked_store(float* dst, __m512 v, int64_t n) {
  _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << n) - 1), v);
}

inline void masked_store(double* dst, __m512d v, int64_t n) {
  _mm512_mask_storeu_pd(dst, static_cast<__mmask8>((1u << n) - 1), v);
}
