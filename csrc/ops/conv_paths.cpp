// The one place that chooses a convolution's algorithms (conv_paths.hpp): the rules that rank Winograd, the
// direct kernels, the implicit GEMM and im2col + GEMM against one another, with the measurements behind them,
// and the reasons fastconv.explain_conv2d prints.
#include "ops/conv_paths.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

#include "algorithms/direct.hpp"
#include "algorithms/implicit_gemm.hpp"
#include "algorithms/strided_input_grad.hpp"
#include "algorithms/winograd.hpp"
#include "core/geometry.hpp"
#include "kernels/table.hpp"
#include "kernels/x86_avx512/sgemm_avx512.hpp"
#include "runtime/cpu_features.hpp"

namespace fastconv {

namespace {

constexpr int64_t kWinogradMinChannels = 16;
// Few output channels (a DenseNet layer's growth of 12) make im2col the bottleneck: each output
// value needs C*9 column values written and read for only Cout multiply-adds each.  Measured at
// 48 -> 12 channels, 32x32, batch 64: Winograd 3.7 ms forward against im2col's 17 ms (AVX-512).
constexpr int64_t kWinogradMinOutChannels = 8;

// 3x3, stride 1, undilated, one group, enough channels on both sides for the
// transforms to pay off: F(2x2, 3x3) Winograd (float32; winograd.hpp says which
// implementation serves each level and which widths it takes).
bool winograd_eligible(const ConvGeom& g) {
  return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1 &&
         g.C >= kWinogradMinChannels && g.Cout >= kWinogradMinOutChannels && winograd_enabled();
}

// The forward and the input gradient (the same operator on the adjoint).
bool use_winograd(const ConvGeom& g) { return winograd_eligible(g) && winograd_suits(g.N, g.C, g.Cout, g.OH, g.OW); }

bool use_winograd_weight_grad(const ConvGeom& g) {
  return winograd_eligible(g) && winograd_weight_grad_suits(g.N, g.C, g.Cout, g.OH, g.OW);
}

// Where the generic (avx2, neon) Winograd takes a layer the implicit GEMM also
// serves, the implicit GEMM wins on few channels.  Measured at avx2, batch 64,
// forward time Winograd / implicit: 16 -> 16 channels at 32x32 1.55-1.9, 32 ->
// 32 at 16x16 1.22-1.37, at 32x32 1.15; few output channels too (DenseNet's
// growth of 12 at 32x32, batch 64, forward / weight gradient): 48 -> 12 1.9 /
// 1.5, 64 -> 16 1.6 / 1.3, 48 -> 24 1.4 / 1.2, while 64 -> 32 ties forward.  And
// maps of at most 64 positions (its row vectors keep every column; forward /
// input gradient, one thread): 64 -> 64 at 8x8 1.21 / 1.17, at 7x7 1.15 / 1.18,
// 48 -> 64 at 8x8 1.06 / 1.33; but 64 -> 128 at 8x8 1.02 / 1.13, 128 -> 64
// 1.10 / 0.92, 96 -> 96 0.91 / 0.89, 128 -> 128 0.91 / 0.80, 64 -> 64 at 12x12
// 0.94, at 16x16 0.87 / 0.90, at 56x56 (batch 8) 0.71.  The AVX-512 Winograd
// beats it or ties everywhere measured.
// Asked of the forward geometry, and of the adjoint's for an input gradient.
bool implicit_beats_winograd(const ConvGeom& g) {
  const bool small_map = g.OH * g.OW <= 64 && g.C * g.Cout <= 64 * 64;
  return !sgemm_avx512_enabled() && !winograd_forced() && (g.C <= 32 || g.Cout <= 24 || small_map) &&
         use_implicit_gemm(g);
}

// A prepared layer keeps Winograd's U and the implicit GEMM's packed panels, so neither pays a transform per call,
// and the implicit GEMM wins while there are few tiles.  Plan against plan at avx2, Winograd time / implicit GEMM
// time, forward: 512 -> 512 channels at 7x7, batch 1 (16 tiles) 1.21, batch 8 (128) 0.80; at 4x4, batch 1 (4)
// 1.93, batch 8 (32) 1.00; 256 -> 512 at 4x4, batch 1 1.60, batch 8 0.84; 256 -> 256 at 14x14, batch 1 (49) 0.68;
// 64 -> 64 at 56x56, batch 1 0.60.  So from 32 tiles on Winograd takes maps of any size, below it the implicit GEMM
// where it can; the few-channel rule of implicit_beats_winograd holds for both.
constexpr double kPreparedWinogradMinTiles = 32;

double tile_count(const ConvGeom& g) { return double(g.N) * double((g.OH + 1) / 2) * double((g.OW + 1) / 2); }

// Whether Winograd serves g's forward (against = g) or its input gradient (against = the adjoint geometry, whose
// implicit GEMM it competes with).
bool on_winograd(const ConvGeom& g, const ConvGeom& against, bool prepared) {
  if (!prepared || winograd_forced()) return use_winograd(g) && !implicit_beats_winograd(against);
  const bool many_tiles = tile_count(g) >= kPreparedWinogradMinTiles;
  if (!many_tiles && use_implicit_gemm(against, sizeof(float), true)) return false;
  return winograd_eligible(g) && (many_tiles || use_winograd(g)) && !implicit_beats_winograd(against);
}

// Against the Winograd weight gradient (3x3, batch 64, time Winograd /
// implicit): AVX-512 16 -> 16 channels at 32x32 1.98, 32 -> 32 at 16x16 1.37, at
// 32x32 1.18, 32 -> 64 at 16x16 1.05; but 64 -> 64 at 16x16 0.87, 48 -> 12 at
// 32x32 0.89 (one vector of output channels: the broadcasts bound it), 128 ->
// 128 at 8x8 0.77.  avx2: 16 -> 16 2.59, 32 -> 32 1.57 (16x16) and 1.58
// (32x32), 48 -> 12 1.63, 64 -> 32 1.40, 32 -> 64 1.35, 64 -> 64 at 8x8 1.36,
// at 16x16 0.96, at 56x56 (batch 8) 1.03; 128 -> 128 at 8x8 0.92, at 28x28 0.74.
// Asked only where use_implicit_weight_grad(g) holds.
bool implicit_weight_grad_beats_winograd(const ConvGeom& g) {
  if (winograd_forced()) return false;
  return sgemm_avx512_enabled() ? g.C <= 32 : (g.C <= 32 || g.Cout <= 32 || g.C * g.Cout <= 64 * 64);
}

std::string num(int64_t v) { return std::to_string(v); }
std::string hw(int64_t h, int64_t w) { return num(h) + "x" + num(w); }

// What keeps Winograd off g (the forward's geometry; `against` the implicit GEMM's it competes with).
std::string winograd_declined(const ConvGeom& g, const ConvGeom& against, bool f32, bool prepared) {
  if (!f32) return "Winograd is float32 only";
  if (!(g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.groups == 1))
    return "Winograd takes 3x3 stride-1 undilated layers of one group only";
  if (g.C < kWinogradMinChannels || g.Cout < kWinogradMinOutChannels)
    return "Winograd needs at least " + num(kWinogradMinChannels) + " input and " + num(kWinogradMinOutChannels) +
           " output channels, got " + num(g.C) + " -> " + num(g.Cout);
  if (!winograd_enabled()) return "Winograd is off (FASTCONV_WINOGRAD=0, or no Winograd at this level)";
  if (prepared && !winograd_forced() && tile_count(g) < kPreparedWinogradMinTiles &&
      use_implicit_gemm(against, sizeof(float), true))
    return "prepared weights with " + num(int64_t(tile_count(g))) + " output tiles (< " +
           num(int64_t(kPreparedWinogradMinTiles)) + "): the implicit GEMM's packed panels win";
  if (implicit_beats_winograd(against))
    return "the implicit GEMM beats this level's Winograd on few channels or small maps (" + num(against.C) + " -> " +
           num(against.Cout) + " at " + hw(against.OH, against.OW) + ")";
  return "Winograd's transforms do not pay on " + num(g.N) + " images of " + hw(g.OH, g.OW) + " at " + num(g.C) +
         " -> " + num(g.Cout) + " channels (winograd_suits)";
}

const char* kNonFinite = " (Inf or NaN in the data keeps it off the faster path)";

// The reason is built only when asked for: the operators call the choice on every convolution.
template <class Text>
void say(std::string* why, Text&& text) {
  if (why) *why = text();
}

}  // namespace

// The stride-1 layer whose forward is g's input gradient: gy convolved with
// the rotated, per-group transposed weight, padding d (k - 1) - p on each side
// (negative where p exceeds the kernel's reach).
ConvGeom adjoint_geom(const ConvGeom& g) {
  const int64_t eh = g.dh * (g.kh - 1), ew = g.dw * (g.kw - 1);
  return ConvGeom{g.N,  g.Cout, g.OH,      g.OW,      g.C,       g.kh,      g.kw,     1,   1,
                  g.dh, g.dw,   eh - g.pt, eh - g.pb, ew - g.pl, ew - g.pr, g.groups, g.H, g.W};
}

// A 3x3 stride-1 layer dilated by d >= 2 (both ways) with padding d*q on every
// side, q <= 2, over maps whose sides are multiples of d, is d*d undilated
// layers with padding q, one per phase (a, b) of input and output alike:
// y[a::d, b::d] = conv(x[a::d, b::d], w, padding q).  Gathered as d*d images
// of (H/d) x (W/d) per image, the phases run on Winograd where an undilated
// layer of that geometry would (DeepLab's and dilated ResNets' "same" layers).
// Measured against the dilated layer on the implicit GEMM or im2col (batch 8,
// d = 2 unless said; forward / input gradient): avx2 64 -> 64 channels at 28x28
// 1.23-1.40 / 1.23, 128 -> 128 at 28x28 1.36 / 1.36, at 24x24 1.38 / 1.42,
// 256 -> 256 at 24x24 1.12 / 1.11, batch 4 d = 4 at 48x48 1.11 / 1.23; AVX-512
// 1.29-2.29.  But at avx2 on phase maps of 8x8 or less, 256 -> 256 channels
// at 16x16 0.98 / 0.98 and d = 4 at 32x32 0.83 / 0.83 (against 1.51 / 1.44 at
// 128 -> 128): there the phases must keep to 128 x 128 channels.  Returns the
// phases' geometry for N images (N d^2 of them), or false.
bool dilated_phases(const ConvGeom& g, ConvGeom& pg) {
  const int64_t d = g.dh;
  if (d < 2 || g.dw != d || g.kh != 3 || g.kw != 3 || g.sh != 1 || g.sw != 1 || g.groups != 1) return false;
  const int64_t p = g.pt;
  if (g.pb != p || g.pl != p || g.pr != p || p % d != 0 || p / d > 2 || g.H % d != 0 || g.W % d != 0 || g.N == 0)
    return false;
  const int64_t q = p / d;
  pg = g;  // 3x3, stride 1, one group
  pg.N = checked_mul(g.N, d * d, "dilated phases");
  pg.H = g.H / d, pg.W = g.W / d, pg.OH = g.OH / d, pg.OW = g.OW / d;
  pg.dh = pg.dw = 1;
  pg.pt = pg.pb = pg.pl = pg.pr = q;
  if (!sgemm_avx512_enabled() && !winograd_forced() && pg.OH * pg.OW <= 64 && g.C * g.Cout > 128 * 128) return false;
  return winograd_eligible(pg);
}

const char* algo_name(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::none:
      return "none";
    case ConvAlgo::winograd_phases:
      return "winograd_phases";
    case ConvAlgo::winograd:
      return "winograd";
    case ConvAlgo::direct:
      return "direct";
    case ConvAlgo::implicit_gemm:
      return "implicit_gemm";
    case ConvAlgo::adjoint_implicit_gemm:
      return "adjoint_implicit_gemm";
    case ConvAlgo::strided_phases:
      return "strided_phases";
    case ConvAlgo::im2col_gemm:
      return "im2col_gemm";
  }
  return "?";
}

// A plan's im2col GEMM on the level's packed tiles, the weights packed once: where those tiles have 32 vector
// registers (8 x 3 at AVX-512) they match a BLAS kernel's rate, and the weights are no longer packed per call
// (fastconv's AVX-512 SGEMM packs them with scalar loads: half a small map's time).  Plan against plan at avx512
// on a Zen 4, 2 threads, float32 (against fastconv's SGEMM) / float64 (OpenBLAS's SkylakeX DGEMM): 3x3/2 256 -> 512
// channels at 14, batch 1 1.39x / 1.13x, batch 8 1.20x / 1.06x; 1x1/2 256 -> 512 at 14 1.40x / 1.16x; 1x1 960 ->
// 320 at 7x7 1.26x / 1.04x; 1024 -> 256 at 14, batch 8 1.15x / 1.01x; 64 -> 256 at 56 1.01x.  The avx2 tiles (6 x 2,
// 16 registers) lost to OpenBLAS's Haswell kernels on the same layers, 0.57-0.91x, so other levels keep the BLAS.
// FASTCONV_PLAN_GEMM (read on every call): packed or blas forces either, for tests and comparisons.
bool plan_packs_gemm(const ConvGeom& g, int64_t elem_bytes) {
  (void)g, (void)elem_bytes;
  if (const char* v = std::getenv("FASTCONV_PLAN_GEMM")) {
    if (std::strcmp(v, "packed") == 0) return true;
    if (std::strcmp(v, "blas") == 0) return false;
  }
  return active_level() == CpuLevel::avx512;
}

ConvPath choose_forward(const ConvGeom& g, int64_t elem_bytes, bool prepared, const Finite& f, std::string* why) {
  if (g.N == 0)
    return say(why, [&] { return std::string("an empty batch: nothing to compute"); }), ConvPath{ConvAlgo::none, 0};
  const bool f32 = elem_bytes == 4;
  const char* fallback = "";
  ConvGeom pg;
  if (f32 && dilated_phases(g, pg) && on_winograd(pg, pg, prepared)) {
    if (f.x && f.w) {
      say(why, [&] {
        return std::string("a 3x3 layer dilated by " + num(g.dh) + " splits into " + num(g.dh * g.dh) +
                           " undilated phases of " + hw(pg.OH, pg.OW) + ", which Winograd takes");
      });
      return {ConvAlgo::winograd_phases, kNeedX | kNeedW};
    }
    fallback = kNonFinite;
  }
  if (f32 && on_winograd(g, g, prepared)) {
    if (f.x && f.w) {
      say(why, [&] {
        return std::string(std::string("3x3 stride 1, ") + num(g.C) + " -> " + num(g.Cout) + " channels, " +
                           num(int64_t(tile_count(g))) + " output tiles: Winograd (" + winograd_kernel_name() +
                           (prepared ? ", transformed weights kept by the plan)" : ")"));
      });
      return {ConvAlgo::winograd, kNeedX | kNeedW};
    }
    fallback = kNonFinite;
  }
  if (use_direct(g)) {
    say(why, [&] {
      return std::string("one input channel per group (" + num(g.C) + " channels in " + num(g.groups) +
                         " groups): the direct kernels, a sum over the taps in registers" +
                         (direct_channel_vectors(g, elem_bytes)
                              ? ", with the channels in the vectors (output rows of " + num(g.OW) + " fill few lanes)"
                              : std::string()) +
                         fallback);
    });
    return {ConvAlgo::direct, 0};
  }
  if (use_implicit_gemm(g, elem_bytes, prepared)) {
    say(why, [&] {
      return std::string("a reduction of " + num(g.C / g.groups * g.kh * g.kw) +
                         " (channels x taps) the implicit GEMM keeps in place, no column matrix" +
                         (prepared ? std::string(", panels packed once by the plan") : std::string()) + "; " +
                         winograd_declined(g, g, f32, prepared) + fallback);
    });
    return {ConvAlgo::implicit_gemm, 0};
  }
  const bool pointwise =
      g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.OH == g.H && g.OW == g.W;
  say(why, [&] {
    const int64_t K = g.C / g.groups * g.kh * g.kw, cols = im2col_tile_columns(g, elem_bytes);
    const bool packed = prepared && K > kSmallK && plan_packs_gemm(g, elem_bytes);
    const bool chans = packed && plan_gemm_channels(g.Cout / g.groups, cols, K, elem_bytes);
    return std::string(std::string(pointwise ? "a 1x1 stride-1 layer: one GEMM of the input itself"
                                             : "im2col + GEMM: no specialised algorithm takes this layer") +
                       (packed ? ", on the packed tiles with the weights packed once by the plan" : "") +
                       (packed ? std::string(", output ") + (chans ? "channels" : "positions") +
                                     " in the vectors (tiles of " + num(cols) + " positions)"
                               : std::string()) +
                       "; " + winograd_declined(g, g, f32, prepared) + fallback);
  });
  return {ConvAlgo::im2col_gemm, 0};
}

ConvPath choose_input_grad(const ConvGeom& g, int64_t elem_bytes, bool prepared, const Finite& f, std::string* why) {
  const bool f32 = elem_bytes == 4;
  const char* fallback = "";
  ConvGeom pg;
  if (f32 && dilated_phases(g, pg) && on_winograd(pg, adjoint_geom(pg), prepared)) {
    if (f.gy && f.w) {
      say(why, [&] {
        return std::string("a 3x3 layer dilated by " + num(g.dh) + ": its " + num(g.dh * g.dh) +
                           " undilated phases on Winograd with the adjoint weights");
      });
      return {ConvAlgo::winograd_phases, kNeedGy | kNeedW};
    }
    fallback = kNonFinite;
  }
  const ConvGeom ga = adjoint_geom(g);
  if (g.N > 0 && g.sh == 1 && g.sw == 1) {
    const bool winograd = f32 && g.pt <= 2 && g.pl <= 2 && on_winograd(g, ga, prepared);
    if (ga.pt >= 0 && ga.pb >= 0 && ga.pl >= 0 && ga.pr >= 0 && !winograd &&
        use_implicit_gemm(ga, elem_bytes, prepared)) {
      if (f.w) {
        say(why, [&] {
          return std::string("stride 1: the forward of the adjoint layer (" + num(ga.C) + " -> " + num(ga.Cout) +
                             " channels, rotated weights) on the implicit GEMM; " +
                             winograd_declined(g, ga, f32, prepared) + fallback);
        });
        return {ConvAlgo::adjoint_implicit_gemm, kNeedW};
      }
      fallback = kNonFinite;
    }
  }
  if (g.N > 0 && (g.sh > 1 || g.sw > 1) && use_strided_input_grad(g, elem_bytes)) {
    if (f.w) {
      say(why, [&] {
        return std::string(
            "stride " + hw(g.sh, g.sw) + ": " + num(g.sh * g.sw) +
            " sub-pixel phases, each a stride-1 GEMM of the taps that meet it (implicit GEMM channel tiles)" +
            fallback);
      });
      return {ConvAlgo::strided_phases, kNeedW};
    }
    fallback = kNonFinite;
  }
  if (f32 && g.N > 0 && g.pt <= 2 && g.pl <= 2 && (use_winograd(g) || (prepared && on_winograd(g, ga, true)))) {
    if (f.gy && f.w) {
      say(why, [&] {
        return std::string("3x3 stride 1: Winograd on the adjoint weights (") + winograd_kernel_name() + ")" + fallback;
      });
      return {ConvAlgo::winograd, kNeedGy | kNeedW};
    }
    fallback = kNonFinite;
  }
  if (use_direct(g)) {
    if (f.w) {
      say(why, [&] {
        return std::string("one input channel per group: the direct kernels' gathers" + std::string(fallback));
      });
      return {ConvAlgo::direct, kNeedW};
    }
    fallback = kNonFinite;
  }
  say(why, [&] {
    std::string note;
    if (g.sh > 1 || g.sw > 1)
      note =
          "; sub-pixel phases need at least two taps a phase each way, enough channels and a phase's weights "
          "within L2";
    else if (f32 && g.N > 0)
      note = "; " + winograd_declined(g, ga, f32, prepared);
    return "GEMM of the weights and gy, then col2im: no specialised algorithm takes this layer" + note + fallback;
  });
  return {ConvAlgo::im2col_gemm, 0};
}

ConvPath choose_weight_grad(const ConvGeom& g, int64_t elem_bytes, bool prepared, const Finite& f, std::string* why) {
  (void)prepared;  // the weight gradient reads no prepared weights
  const bool f32 = elem_bytes == 4;
  const char* fallback = "";
  ConvGeom pg;
  if (f32 && dilated_phases(g, pg) && use_winograd_weight_grad(pg) &&
      !(use_implicit_weight_grad(pg) && implicit_weight_grad_beats_winograd(pg))) {
    if (f.gy && f.x) {
      say(why, [&] {
        return std::string("a 3x3 layer dilated by " + num(g.dh) + ": the Winograd weight gradient over its " +
                           num(g.dh * g.dh) + " undilated phases");
      });
      return {ConvAlgo::winograd_phases, kNeedGy | kNeedX};
    }
    fallback = kNonFinite;
  }
  const bool winograd = f32 && use_winograd_weight_grad(g);
  if (g.N > 0 && use_implicit_weight_grad(g) && !(winograd && !implicit_weight_grad_beats_winograd(g))) {
    say(why, [&] {
      return std::string(
          "sums of " + num(g.C / g.groups * g.kh * g.kw) + " x " + num(g.Cout / g.groups) +
          " (taps x output channels) fit in L2: the implicit GEMM's weight gradient over real positions" +
          (winograd ? ", which beats Winograd's here" : "") + fallback);
    });
    return {ConvAlgo::implicit_gemm, 0};
  }
  if (winograd && g.N > 0) {
    if (f.gy && f.x) {
      say(why, [&] { return std::string("3x3 stride 1: the Winograd weight gradient" + std::string(fallback)); });
      return {ConvAlgo::winograd, kNeedGy | kNeedX};
    }
    fallback = kNonFinite;
  }
  if (use_direct(g)) {
    say(why, [&] { return std::string("one input channel per group: the direct kernels" + std::string(fallback)); });
    return {ConvAlgo::direct, 0};
  }
  say(why, [&] {
    const double sums = double(g.C / g.groups) * double(g.kh * g.kw) * double(g.Cout / g.groups);
    const std::string note = g.kh * g.kw == 1 ? "a 1x1 layer: one GEMM of gy and the input per image"
                             : g.C / g.groups >= 2
                                 ? "im2col + GEMM of gy and the columns: the implicit weight gradient declines it (" +
                                       num(int64_t(sums)) +
                                       " sums of channels x taps x output channels past its L2 budget, a column "
                                       "stride above 8, or FASTCONV_IMPLICIT_GEMM=0)"
                                 : "im2col + GEMM of gy and the columns";
    return note + fallback;
  });
  return {ConvAlgo::im2col_gemm, 0};
}

namespace {
thread_local ConvAlgo last[3] = {ConvAlgo::none, ConvAlgo::none, ConvAlgo::none};
}

void record_path(ConvPass pass, ConvAlgo algo) { last[int(pass)] = algo; }
ConvAlgo last_path(ConvPass pass) { return last[int(pass)]; }

}  // namespace fastconv
