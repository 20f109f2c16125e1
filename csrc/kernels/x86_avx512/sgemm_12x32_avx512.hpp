// The AVX-512 single-precision GEMM micro-kernel shared by the packed sgemm
// (sgemm_avx512.cpp) and the Winograd convolution (winograd_avx512.cpp).
//
// Contract of sgemm_micro<MR>:
//   C[r][j] (+)= sum_k a[k*MR + r] * b[k*ldb + j]   for r < rows, j < cols
//   a: an MR-row micro-panel, k-major (MR floats per k), zero-padded past `rows`;
//   b: kNR = 32 floats per k at stride ldb (ldb = 32 for a packed panel, or the
//      row stride of a plain row-major matrix); all 32 are read, so the caller
//      makes them readable, though only the first `cols` reach C;
//   C: row-major with leading dimension ldc, read only when `accumulate`;
//      rows <= MR and cols <= 32 valid entries are written through masks, nothing
//      else is touched;  kc >= 1.
//   prefetch: optional; when given, the kc * MR floats from there (the next
//      micro-panel of a, typically) are prefetched into L1, one 48-byte step per
//      k.  Micro-panels streamed from L3 stall the kernel otherwise: measured
//      on the Winograd point GEMMs, 168 -> 214 GF/s per core.
// Register budget: MR x 32 accumulators = 2*MR zmm (24 for MR = 12), plus two for
// the row of b and one broadcast: fits the 32 zmm registers with no spills.  MR
// is 12 for the body of a matrix; 4 and 8 serve short edge panels without
// paying for 12 rows.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fastconv {

constexpr int64_t kNR = 32;

template <int MR>
__attribute__((target("avx512f"))) void sgemm_micro(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                                                    int64_t ldc, bool accumulate, int64_t rows, int64_t cols,
                                                    const float* prefetch = nullptr) {
  __m512 acc[MR][2];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b + k * ldb), b1 = _mm512_loadu_ps(b + k * ldb + 16);
    const float* ak = a + k * MR;
    if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(prefetch + k * MR), _MM_HINT_T0);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(ak[r]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xFFFF) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    if (r >= rows) break;
    float* cr = c + r * ldc;
    __m512 v0 = acc[r][0], v1 = acc[r][1];
    if (accumulate) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, m0, v0);
    _mm512_mask_storeu_ps(cr + 16, m1, v1);
  }
}

}  // namespace fastconv
