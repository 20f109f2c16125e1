// One level's dispatch table.  CMake compiles this file once per level with
// that level's flags and these definitions:
//   FASTCONV_ISA_NS        the namespace (isa_sse2, isa_avx2, isa_avx512, isa_neon, isa_generic)
//   FASTCONV_VEC_BYTES     bytes per vector register (16, 32, 64)
//   FASTCONV_VEC_REGS      vector registers the level has (16 or 32)
//   FASTCONV_LEVEL         the level it serves ("portable", "avx2", "avx512", "neon")
//   FASTCONV_ISA_NAME      what the flags enable, for show_config
//   FASTCONV_ISA_AVX512    1 in the AVX-512 build (masked partial stores)
// Everything below lives in fastconv::FASTCONV_ISA_NS, so no function compiled
// with one level's flags can be picked by the linker for another level's code
// (see vec.hpp).
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "table.hpp"

#if FASTCONV_ISA_AVX512
#include <immintrin.h>
#endif

#ifndef FASTCONV_ISA_NS
#error "kernels/isa_kernels.cpp is compiled by CMake once per level, with FASTCONV_ISA_NS and its flags"
#endif

namespace fastconv {
namespace FASTCONV_ISA_NS {

constexpr int kVecBytes = FASTCONV_VEC_BYTES;
constexpr int kVecRegisters = FASTCONV_VEC_REGS;

// Internal linkage for every kernel: nothing here is interposable or shared
// with another unit, so blocks inline into their loops and never go through the
// PLT.
namespace {

#if FASTCONV_ISA_AVX512
#include "x86_avx512/masked_store_avx512.hpp"
#endif
#include "vec.hpp"
// after vec.hpp:
#include "direct_tiles.hpp"
#include "packed_gemm.hpp"
#include "small_k_gemm.hpp"
#include "winograd_tiles.hpp"

template <class T>
LevelKernels<T> level_kernels() {
  LevelKernels<T> k;
  k.lanes = kLanes<T>;
  k.direct_forward_group = direct_forward_group<T>;
  k.direct_forward_chanvec = direct_forward_chanvec<T>;
  k.direct_weight_channel = direct_weight_channel<T>;
  k.direct_input_block = direct_input_block_for<T>;
  k.gemm_small_k = gemm_small_k<T>;
  k.packed_rows = kPackedRows;
  k.packed_rows2 = kPackedRows2;
  k.packed_cols = kPackedVecs * kLanes<T>;
  k.gemm_packed = gemm_packed<T>;
  k.gemm_packed_rows = gemm_packed_rows<T>;
  k.gemm_packed_vecs = gemm_packed_vecs<T>;
  k.chan_width = kPackedVecs * kLanes<T>;
  k.chan_width2 = kPackedVecs2 * kLanes<T>;
  k.chan_vectors_pay = kVecBytes >= 32;  // AVX2 and AVX-512: vbroadcastss and FMA
  k.gemm_packed_channels = gemm_packed_channels<T>;
  k.tn_rows = kTnRows;
  k.gemm_tn_rows = gemm_tn_rows<T>;
  k.transpose_lanes = transpose_lanes<T>;
  k.deinterleave2 = deinterleave2<T>;
  return k;
}

}  // namespace

const KernelTable& table() {
  static const KernelTable t{FASTCONV_LEVEL, FASTCONV_ISA_NAME, level_kernels<float>(), level_kernels<double>(),
                             WinogradTiles{winograd_input_run, winograd_output_run, winograd_grad_run,
                                           winograd_weight_run, winograd_weight_grad_run}};
  return t;
}

}  // namespace FASTCONV_ISA_NS
}  // namespace fastconv
