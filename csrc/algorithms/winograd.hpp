// F(2x2, 3x3) Winograd convolution for float32: the AVX-512 implementation
// (winograd_avx512.cpp, its own register kernels) on avx512, the generic one
// (winograd.cpp: transforms from the dispatch table, point GEMMs on OpenBLAS)
// on avx2 and neon.
//
// A 3x3, stride-1, undilated, single-group convolution computes each 2x2 block
// of outputs from a 4x4 input patch with 16 multiplies per channel pair instead
// of 36: y = A^T [ (G g G^T) . (B^T d B) ] A.  Over all channel pairs that is 16
// independent GEMMs (one per point of the 4x4 transformed tile), which run on the
// same register micro-kernel as fastconv's sgemm, on blocks of tiles small enough
// that transformed inputs and products stay in L2.  The transforms only add and
// halve, so results stay within a few ulps of direct summation (tests compare
// against torch at the same tolerances as the GEMM path).
#pragma once

#include <cstdint>

#include "core/epilogue.hpp"
#include "core/prepared.hpp"

namespace fastconv {

struct WinogradGeom {
  int64_t N, C, H, W;  // input
  int64_t Cout;        // output channels
  int64_t pad_t, pad_l;
  int64_t OH, OW;  // output size; padding after the input is implied by it
};

// ep over what a run of `len` 2x2 output tiles from tile (ty, tx) of image n
// wrote in each of its Cout channels, right after it was written.
inline void finish_tile_rows(const Epilogue<float>& ep, float* y, int64_t n, int64_t Cout, int64_t OH, int64_t OW,
                             int64_t ty, int64_t tx, int64_t len) {
  const int64_t c0 = 2 * tx, c1 = 2 * (tx + len) < OW ? 2 * (tx + len) : OW;
  for (int64_t o = 0; o < Cout; ++o)
    for (int64_t r = 2 * ty; r < 2 * ty + 2 && r < OH; ++r) ep.apply(y, ((n * Cout + o) * OH + r) * OW + c0, c1 - c0);
}

// True at the avx512, avx2 and neon levels unless FASTCONV_WINOGRAD=0 (read on
// every call, so a process can switch between algorithms).
bool winograd_enabled();

// FASTCONV_WINOGRAD=1: every eligible layer takes Winograd.
bool winograd_forced();

// Whether the implementation of the active level gains on the forward (and
// input gradient) of a layer of N images, C input and Cout output channels and
// an OH x OW output, and on its weight gradient: the generic one takes maps
// smaller than 8x8 only with enough tiles on wide enough channels, each with
// its own rule.  FASTCONV_WINOGRAD=1 (read on every call) makes both true for
// every layer winograd_enabled() allows.
bool winograd_suits(int64_t N, int64_t C, int64_t Cout, int64_t OH, int64_t OW);
bool winograd_weight_grad_suits(int64_t N, int64_t C, int64_t Cout, int64_t OH, int64_t OW);

// Which implementation serves the active level, for show_config.
const char* winograd_kernel_name();

// y (N x Cout x OH x OW) = conv3x3(x, w) + bias (bias may be null), finished by `ep`.
// w is [Cout][C][3][3]; with `adjoint` it is a [C][Cout][3][3] weight of the
// opposite convolution, used transposed and rotated by 180 degrees: then y is
// that convolution's input gradient when x is its output gradient.
// With `prep`, U (the transformed weights) is made once and kept there.
void winograd_f2x3(const float* x, const float* w, bool adjoint, const float* bias, float* y, const WinogradGeom& g,
                   const Epilogue<float>& ep = {}, PrepRef prep = {});

// gw ([Cout][C][3][3], overwritten) of that convolution from its input x and
// output gradient gy (N x Cout x OH x OW).
void winograd_f2x3_grad_weight(const float* x, const float* gy, float* gw, const WinogradGeom& g);

// The AVX-512 implementation (x86 only; the dispatchers above call it).
void winograd_f2x3_avx512(const float* x, const float* w, bool adjoint, const float* bias, float* y,
                          const WinogradGeom& g, const Epilogue<float>& ep, PrepRef prep);
void winograd_f2x3_grad_weight_avx512(const float* x, const float* gy, float* gw, const WinogradGeom& g);

}  // namespace fastconv
