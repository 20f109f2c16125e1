// The one shape check of every convolution (after PyTorch's slow_conv2d_shape_check): ConvGeom from the
// arguments, each refusal naming the argument and the values received.
#include "core/conv_geom.hpp"

#include <string>

#include "core/geometry.hpp"

namespace fastconv {

namespace {

std::string dims(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

void check_common(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh, int64_t kw,
                  int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t groups) {
  if (sh <= 0 || sw <= 0) fail("stride must be positive, got " + dims(sh, sw));
  if (dh <= 0 || dw <= 0) fail("dilation must be positive, got " + dims(dh, dw));
  if (groups <= 0) fail("groups must be positive, got " + std::to_string(groups));
  if (kh <= 0 || kw <= 0) fail("weight: kernel size must be positive, got " + dims(kh, kw));
  if (N < 0 || C <= 0 || H <= 0 || W <= 0)
    fail("input: expected non-empty channel and spatial dimensions, got shape (" + std::to_string(N) + ", " +
         std::to_string(C) + ", " + std::to_string(H) + ", " + std::to_string(W) + ")");
  if (Cout <= 0) fail("weight: out_channels must be positive, got " + std::to_string(Cout));
  if (C % groups != 0)
    fail("groups: input channels " + std::to_string(C) + " are not divisible by groups " + std::to_string(groups));
  if (Cout % groups != 0)
    fail("groups: weight out_channels " + std::to_string(Cout) + " are not divisible by groups " +
         std::to_string(groups));
  if (weight_in * groups != C)
    fail("weight: expected weight.shape[1] * groups == input channels, got weight.shape[1]=" +
         std::to_string(weight_in) + ", groups=" + std::to_string(groups) + ", input channels=" + std::to_string(C));
  // Every buffer size the kernels will form, checked once here.
  checked_mul(checked_mul(checked_mul(N, C, "input"), H, "input"), W, "input");
  checked_mul(checked_mul(checked_mul(Cout, weight_in, "weight"), kh, "weight"), kw, "weight");
}

// Along an axis with one output position the stride is never used (only
// window 0 exists), so it becomes 1: a stride of 2**31 on a small input then
// costs nothing, where the direct kernels would size buffers by it.
void single_output_strides(ConvGeom& g) {
  if (g.OH == 1) g.sh = 1;
  if (g.OW == 1) g.sw = 1;
}

}  // namespace

ConvGeom conv_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh, int64_t kw,
                   int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw,
                   int64_t groups) {
  check_common(N, C, H, W, Cout, weight_in, kh, kw, sh, sw, dh, dw, groups);
  if (pt < 0 || pb < 0 || pl < 0 || pr < 0)
    fail("padding must be non-negative, got (left=" + std::to_string(pl) + ", right=" + std::to_string(pr) +
         ", top=" + std::to_string(pt) + ", bottom=" + std::to_string(pb) + ")");
  ConvGeom g{N, C, H, W, Cout, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, groups, 0, 0};
  g.OH = conv_out(H, kh, sh, pt, pb, dh);
  g.OW = conv_out(W, kw, sw, pl, pr, dw);
  single_output_strides(g);
  checked_mul(checked_mul(checked_mul(N, Cout, "output"), g.OH, "output"), g.OW, "output");
  checked_mul(checked_mul(weight_in * kh * kw, g.OH, "columns"), g.OW, "columns");
  return g;
}

ConvGeom conv_geom_with_output(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t weight_in, int64_t kh,
                               int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw,
                               int64_t groups, int64_t OH, int64_t OW) {
  check_common(N, C, H, W, Cout, weight_in, kh, kw, sh, sw, dh, dw, groups);
  if (pt < 0 || pl < 0) fail("padding must be non-negative, got " + dims(pt, pl));
  if (OH <= 0 || OW <= 0) fail("output size must be positive, got " + dims(OH, OW));
  checked_mul(checked_mul(checked_mul(N, Cout, "output"), OH, "output"), OW, "output");
  checked_mul(checked_mul(weight_in * kh * kw, OH, "columns"), OW, "columns");
  // Implied trailing padding may be negative when the last input rows are not covered; the
  // traversal never reads past OH/OW so that is harmless.
  ConvGeom g{N, C, H, W, Cout, kh, kw, sh, sw, dh, dw, pt, 0, pl, 0, groups, OH, OW};
  single_output_strides(g);
  return g;
}

}  // namespace fastconv
