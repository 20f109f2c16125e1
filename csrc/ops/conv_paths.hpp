// Which algorithm runs each pass of a convolution (forward, input gradient, weight gradient), and why: the one
// place that chooses.  Each algorithm says where it can run and where it gains on its own (use_direct,
// use_implicit_gemm, winograd_suits, ... beside its code and measurements); the rules here rank them against one
// another, for a geometry, a dtype, the active level (the FASTCONV_CPU cap and FASTCONV_* switches, read on every
// call) and whether the weights are prepared (fastconv.Conv2dPlan).  ops/conv.cpp runs what they return;
// fastconv.explain_conv2d prints it.
#pragma once

#include <cstdint>
#include <string>

#include "core/conv_geom.hpp"

namespace fastconv {

enum class ConvAlgo : int {
  none,                   // nothing to compute: an empty batch
  winograd_phases,        // F(2x2, 3x3) Winograd on the d x d phases of a dilated 3x3 layer
  winograd,               // F(2x2, 3x3) Winograd (the input gradient on the adjoint weights)
  direct,                 // the direct kernels: one input channel per group
  implicit_gemm,          // the implicit GEMM (forward, weight gradient)
  adjoint_implicit_gemm,  // a stride-1 input gradient as the adjoint forward on the implicit GEMM
  strided_phases,         // a strided input gradient as sub-pixel phases on the implicit GEMM
  im2col_gemm,            // im2col + GEMM (the input gradient through col2im)
};
constexpr int kConvAlgos = 8;
const char* algo_name(ConvAlgo a);

enum class ConvPass : int { forward, input_grad, weight_grad };

// Arrays a path multiplies differently from a plain sum of products (Winograd's transforms, zero padding met by
// the weights): where one holds Inf or NaN the path would not give torch's answer, and the pass is chosen again
// with that array known non-finite.
enum : unsigned { kNeedX = 1, kNeedW = 2, kNeedGy = 4 };

struct Finite {
  bool x = true, w = true, gy = true;
  bool holds(unsigned needs) const {
    return (!(needs & kNeedX) || x) && (!(needs & kNeedW) || w) && (!(needs & kNeedGy) || gy);
  }
};

struct ConvPath {
  ConvAlgo algo = ConvAlgo::none;
  unsigned needs = 0;  // kNeed* of the arrays that must be finite
};

// elem_bytes: sizeof the dtype (4: float32, 8: float64).  `why`, when given, receives the reason in a sentence.
ConvPath choose_forward(const ConvGeom& g, int64_t elem_bytes, bool prepared, const Finite& f = {},
                        std::string* why = nullptr);
ConvPath choose_input_grad(const ConvGeom& g, int64_t elem_bytes, bool prepared, const Finite& f = {},
                           std::string* why = nullptr);
ConvPath choose_weight_grad(const ConvGeom& g, int64_t elem_bytes, bool prepared, const Finite& f = {},
                            std::string* why = nullptr);

// Whether a plan's im2col forward (the path choose_forward names im2col_gemm) runs on the level's packed GEMM with
// the weights packed once (the implicit GEMM's panels) instead of the BLAS GEMM, which packs them on every call.
bool plan_packs_gemm(const ConvGeom& g, int64_t elem_bytes);
// Columns of one im2col GEMM tile of g on one thread (ops/conv.cpp's tiling, before threads cut it): what decides
// whether a plan's packed GEMM puts the channels or the positions in the vectors (plan_gemm_channels).
int64_t im2col_tile_columns(const ConvGeom& g, int64_t elem_bytes);

// The stride-1 layer whose forward is g's input gradient: gy convolved with the rotated, per-group transposed
// weight, padding d (k - 1) - p on each side (negative where p exceeds the kernel's reach).
ConvGeom adjoint_geom(const ConvGeom& g);

// A 3x3 stride-1 layer dilated by d >= 2 that splits into d*d undilated layers (ops/conv.cpp runs them): their
// geometry in pg for N*d*d images, or false.
bool dilated_phases(const ConvGeom& g, ConvGeom& pg);

// The algorithm each pass last ran on the calling thread, recorded by the operators as they run it.
void record_path(ConvPass pass, ConvAlgo algo);
ConvAlgo last_path(ConvPass pass);

}  // namespace fastconv
