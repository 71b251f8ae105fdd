// Kernel test driver for cross-built targets (no Python on the target): every SIMD
// microkernel in kernels/ukernels.inc, and every int8 GEMM microkernel this CPU can run,
// against the plain generic kernels (the oracle) over edge sizes. Prints the ISA each group
// ran and ends with "N passed, N failed"; exits 1 when any case failed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cpu.h"
#include "executor.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/int8_gemm.h"
#include "kernels/ukernels.h"
#include "plan_cases.h"

using namespace kiln;

namespace {

int g_passed = 0, g_failed = 0;
std::mt19937 g_rng(1234);

std::vector<float> randv(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g_rng);
  return v;
}

// One case: got vs want within atol + rtol * |want| everywhere (NaN must match NaN).
bool check(const std::string& what, const float* got, const float* want, size_t n,
           float atol, float rtol) {
  for (size_t i = 0; i < n; ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!both_nan && !(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]))) {
      std::printf("  FAIL %s: [%zu] got %.9g want %.9g\n", what.c_str(), i, got[i], want[i]);
      ++g_failed;
      return false;
    }
  }
  ++g_passed;
  return true;
}

bool check_i32(const std::string& what, const int32_t* got, const int32_t* want, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (got[i] != want[i]) {
      std::printf("  FAIL %s: [%zu] got %d want %d\n", what.c_str(), i, got[i], want[i]);
      ++g_failed;
      return false;
    }
  ++g_passed;
  return true;
}

struct Group {
  const char* family;
  int before_passed, before_failed;
  explicit Group(const char* f) : family(f), before_passed(g_passed), before_failed(g_failed) {}
  void done(const char* isa, const char* kernel) const {
    std::printf("[%-12s] isa=%-13s %-42s %4d passed, %d failed\n", family, isa, kernel,
                g_passed - before_passed, g_failed - before_failed);
  }
};

const size_t kLengths[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100};

const Activation kActs[] = {Activation::none,       Activation::relu,
                            Activation::leaky_relu, Activation::clip,
                            Activation::sigmoid,    Activation::silu,
                            Activation::hard_sigmoid, Activation::hard_swish,
                            Activation::gelu_erf,   Activation::gelu_tanh,
                            Activation::tanh,       Activation::exp};

void act_params(Activation a, float* alpha, float* beta) {
  *alpha = a == Activation::clip ? -0.5f : a == Activation::hard_sigmoid ? 0.2f : 0.1f;
  *beta = a == Activation::clip ? 0.5f : 0.5f;
}

// ---- elementwise ---------------------------------------------------------------------------

void test_vunary(const char* name, const char* isa, f32_vunary_fn fn) {
  Group g("vunary");
  for (size_t n : kLengths) {
    auto x = randv(n + 1);
    std::vector<float> got(n + 1, 7.0f), want(n + 1, 7.0f);
    fn(n, x.data(), got.data());
    kiln_f32_vrelu_ukernel__generic(n, x.data(), want.data());
    check(std::string(name) + " n=" + std::to_string(n), got.data(), want.data(), n + 1, 0, 0);
  }
  g.done(isa, name);
}

void test_vbinary(const char* name, const char* isa, f32_vbinary_fn fn) {
  Group g("vbinary");
  for (size_t n : kLengths) {
    auto a = randv(n + 1), b = randv(n + 1);
    std::vector<float> got(n + 1, 7.0f), want(n + 1, 7.0f);
    fn(n, a.data(), b.data(), got.data());
    kiln_f32_vadd_ukernel__generic(n, a.data(), b.data(), want.data());
    check(std::string(name) + " n=" + std::to_string(n), got.data(), want.data(), n + 1, 0, 0);
  }
  g.done(isa, name);
}

void test_vact(const char* name, const char* isa, f32_vact_fn fn) {
  Group g("vact");
  for (Activation act : kActs)
    for (size_t n : {size_t(1), size_t(3), size_t(4), size_t(7), size_t(17), size_t(64)}) {
      float alpha, beta;
      act_params(act, &alpha, &beta);
      auto x = randv(n + 1, -6.0f, 6.0f);
      auto want = x;
      fn(n, x.data(), act, alpha, beta);
      kiln_f32_vact_ukernel__generic(n, want.data(), act, alpha, beta);
      check(std::string(name) + " act=" + std::to_string(int(act)) + " n=" + std::to_string(n),
            x.data(), want.data(), n + 1, 2e-6f, 2e-5f);
    }
  g.done(isa, name);
}

void test_vsoftmax(const char* name, const char* isa, f32_vsoftmax_fn fn) {
  Group g("vsoftmax");
  for (size_t n : {size_t(1), size_t(3), size_t(8), size_t(17), size_t(64), size_t(131)}) {
    auto x = randv(n + 1, -20.0f, 20.0f);
    std::vector<float> got(n + 1, 7.0f), want(n + 1, 7.0f);
    double s_got = 0.0, s_want = 0.0;
    fn(n, x.data(), got.data(), &s_got);
    kiln_f32_vsoftmax_ukernel__generic(n, x.data(), want.data(), &s_want);
    check(std::string(name) + " n=" + std::to_string(n), got.data(), want.data(), n + 1, 1e-7f,
          2e-5f);
  }
  g.done(isa, name);
}

// Columns of len x n blocks, rows `stride` apart (n + 3 here: the floats between columns
// blocks stay untouched), vector tails of every size; a column holding a NaN clears *finite.
void test_vsoftmax_cols(const char* name, const char* isa, f32_vsoftmax_cols_fn fn) {
  Group g("vsoftmax_cols");
  for (size_t len : {size_t(1), size_t(2), size_t(16), size_t(37)})
    for (size_t n : {size_t(1), size_t(3), size_t(4), size_t(9), size_t(33)}) {
      const size_t stride = n + 3;
      auto x = randv(len * stride, -20.0f, 20.0f);
      std::vector<float> got(len * stride, 7.0f), want(len * stride, 7.0f);
      bool ok_got = false, ok_want = false;
      fn(n, len, stride, x.data(), got.data(), &ok_got);
      kiln_f32_vsoftmax_cols_ukernel__generic(n, len, stride, x.data(), want.data(), &ok_want);
      const std::string what = std::string(name) + " len=" + std::to_string(len) + " n=" +
                               std::to_string(n);
      if (!ok_got || !ok_want) {
        std::printf("  FAIL %s: finite columns reported non-finite\n", what.c_str());
        ++g_failed;
      }
      check(what, got.data(), want.data(), got.size(), 1e-7f, 2e-5f);
      x[(len / 2) * stride + n - 1] = std::numeric_limits<float>::quiet_NaN();
      fn(n, len, stride, x.data(), got.data(), &ok_got);
      if (ok_got) {
        std::printf("  FAIL %s: a NaN column reported finite\n", what.c_str());
        ++g_failed;
      }
    }
  g.done(isa, name);
}

void test_vbinop(const char* name, const char* isa, f32_vbinop_fn fn) {
  Group g("vbinop");
  for (int op = 0; op < 5; ++op)  // add, sub, mul, div, prelu
    for (size_t sa : {0, 1})
      for (size_t sb : {0, 1})
        for (size_t n : {size_t(1), size_t(5), size_t(8), size_t(19)}) {
          auto a = randv(n + 1), b = randv(n + 1, 0.5f, 2.0f);
          std::vector<float> got(n + 1, 7.0f), want(n + 1, 7.0f);
          fn(n, a.data(), sa, b.data(), sb, got.data(), BinaryOp(op));
          kiln_f32_vbinop_ukernel__generic(n, a.data(), sa, b.data(), sb, want.data(),
                                           BinaryOp(op));
          check(std::string(name) + " op=" + std::to_string(op) + " sa=" + std::to_string(sa) +
                    " sb=" + std::to_string(sb) + " n=" + std::to_string(n),
                got.data(), want.data(), n + 1, 0, 1e-6f);
        }
  g.done(isa, name);
}

// Rows of every length around the panel width into panels `stride` apart (stride > nr: the
// floats between panels must stay untouched), with and without the ReLU.
void test_vaffine_panels(const char* name, const char* isa, f32_vaffine_panels_fn fn) {
  Group g("vaffine_panels");
  for (size_t nr : {size_t(16), size_t(32)})
    for (bool relu : {false, true})
      for (size_t n : {size_t(1), size_t(5), nr - 1, nr, nr + 3, 3 * nr + 7}) {
        const size_t stride = nr + 5, panels = (n + nr - 1) / nr;
        auto x = randv(n);
        std::vector<float> got(panels * stride, 7.0f), want(panels * stride, 7.0f);
        fn(n, x.data(), 1.3f, -0.2f, relu, got.data(), nr, stride);
        kiln_f32_vaffine_panels_ukernel__generic(n, x.data(), 1.3f, -0.2f, relu, want.data(),
                                                 nr, stride);
        check(std::string(name) + " nr=" + std::to_string(nr) + " relu=" +
                  std::to_string(relu) + " n=" + std::to_string(n),
              got.data(), want.data(), got.size(), 1e-6f, 1e-6f);
      }
  g.done(isa, name);
}

// LRN over one plane from windows of 1, 3 and 5 planes, at the betas with their own path
// (0.75, 0.5) and one through pow.
void test_vlrn(const char* name, const char* isa, f32_vlrn_fn fn) {
  Group g("vlrn");
  for (float beta : {0.75f, 0.5f, 0.6f})
    for (size_t count : {size_t(1), size_t(3), size_t(5)})
      for (size_t n : {size_t(1), size_t(3), size_t(8), size_t(17), size_t(64)}) {
        std::vector<std::vector<float>> planes;
        std::vector<const float*> window;
        for (size_t w = 0; w < count; ++w) planes.push_back(randv(n + 1, -8.0f, 8.0f));
        for (auto& p : planes) window.push_back(p.data());
        const float* x = window[count / 2];
        std::vector<float> got(n + 1, 7.0f), want(n + 1, 7.0f);
        fn(n, window.data(), count, x, 1.0f, 2e-3f, beta, got.data());
        kiln_f32_vlrn_ukernel__generic(n, window.data(), count, x, 1.0f, 2e-3f, beta,
                                       want.data());
        check(std::string(name) + " beta=" + std::to_string(beta) + " count=" +
                  std::to_string(count) + " n=" + std::to_string(n),
              got.data(), want.data(), n + 1, 1e-7f, 2e-6f);
      }
  g.done(isa, name);
}

// ---- SGEMM ---------------------------------------------------------------------------------

// The tile kernel on packed panels against plain loops with the shared scalar epilogue.
void test_gemm_tile(const char* name, const char* isa, sgemm_ukernel_fn fn, size_t MR,
                    size_t NR) {
  Group g("gemm tile");
  int variant = 0;
  for (size_t m = 1; m <= MR; ++m)
    for (size_t n : {size_t(1), size_t(3), NR / 4, NR / 4 + 1, NR / 2 + 1, NR - 1, NR})
      for (size_t kc : {size_t(1), size_t(7), size_t(33)}) {
        ++variant;
        const size_t ldc = NR + 3;
        auto a = randv(kc * MR), b = randv(kc * NR), c0 = randv(MR * ldc);
        auto bias = randv(MR * ldc), res = randv(MR * ldc);
        Epilogue ep;
        ep.bias_kind = BiasKind(variant % 4);
        ep.bias = bias.data();
        ep.residual = variant % 3 == 0 ? res.data() : nullptr;
        ep.act = kActs[variant % 12];
        act_params(ep.act, &ep.alpha, &ep.beta);
        GemmTile t{nullptr, ldc, n, 0, 0, variant % 2 == 1, variant % 5 != 0, &ep};
        auto got = c0;
        t.c = got.data();
        fn(m, kc, a.data(), b.data(), t);
        auto want = c0;
        for (size_t r = 0; r < m; ++r)
          for (size_t j = 0; j < n; ++j) {
            float v = 0.0f;
            for (size_t k = 0; k < kc; ++k) v += a[k * MR + r] * b[k * NR + j];
            if (t.accumulate) v += c0[r * ldc + j];
            if (t.last) v = epilogue_value(ep, ldc, r, j, v);
            want[r * ldc + j] = v;
          }
        check(std::string(name) + " m=" + std::to_string(m) + " n=" + std::to_string(n) +
                  " kc=" + std::to_string(kc),
              got.data(), want.data(), got.size(), 1e-5f, 1e-4f);
      }
  g.done(isa, name);
}

// The blocked SGEMM (packing, blocking, the active ISA's tile kernel) against sgemm_reference.
void test_sgemm() {
  Group g("sgemm");
  const size_t sizes[][3] = {{1, 1, 1},   {1, 17, 5},  {2, 3, 1},    {5, 1, 7},   {7, 13, 3},
                             {6, 16, 16}, {13, 31, 9}, {17, 29, 64}, {31, 7, 97}, {64, 65, 33},
                             {97, 19, 257}, {3, 130, 11}};
  int variant = 0;
  for (const auto& s : sizes)
    for (int trans = 0; trans < 4; ++trans) {
      ++variant;
      const size_t M = s[0], N = s[1], K = s[2];
      const bool ta = trans & 1, tb = trans & 2;
      auto A = randv(M * K), B = randv(K * N), bias = randv(M * N), res = randv(M * N);
      Epilogue ep;
      ep.bias_kind = BiasKind(variant % 4);
      ep.bias = bias.data();
      ep.residual = variant % 3 == 0 ? res.data() : nullptr;
      ep.act = kActs[variant % 12];
      act_params(ep.act, &ep.alpha, &ep.beta);
      std::vector<float> got(M * N), want(M * N);
      sgemm(ta, tb, M, N, K, A.data(), ta ? M : K, B.data(), tb ? K : N, got.data(), N, ep,
            nullptr);
      sgemm_reference(ta, tb, M, N, K, A.data(), ta ? M : K, B.data(), tb ? K : N, want.data(),
                      N, ep, nullptr);
      check("sgemm M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                std::to_string(K) + " trans=" + std::to_string(trans),
            got.data(), want.data(), got.size(), 1e-4f, 1e-4f);
    }
  g.done(isa_name(active_isa()), sgemm_kernel_name());
}

// [n][c][p] -> [n][p][c] for images of `channels` planes of `pixels`.
std::vector<float> to_nhwc(const std::vector<float>& v, size_t n, size_t channels, size_t pixels) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < n; ++i)
    for (size_t c = 0; c < channels; ++c)
      for (size_t q = 0; q < pixels; ++q)
        out[(i * pixels + q) * channels + c] = v[(i * channels + c) * pixels + q];
  return out;
}

// The implicit-GEMM conv (the tile kernel reading A in place through per-k offsets, the
// product transposed into NCHW) against the reference loops: pads, dilation, groups, batch,
// a 1x1, strides 2 and 3 (the input split into stride phases), with and without a residual.
void test_conv_implicit() {
  Group g("conv implicit");
  struct Shape {
    size_t n, c, h, w, k, kh, kw, pt, pl, pb, pr, dh, dw, groups, sh = 1, sw = 1;
  };
  const Shape shapes[] = {{1, 5, 7, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1},
                          {2, 6, 6, 5, 20, 3, 3, 2, 0, 1, 1, 1, 2, 2},
                          {1, 16, 7, 7, 37, 1, 1, 0, 0, 0, 0, 1, 1, 1},
                          {1, 3, 12, 13, 8, 5, 5, 2, 2, 2, 2, 1, 1, 1},
                          {1, 9, 15, 14, 21, 3, 3, 1, 1, 1, 1, 1, 1, 1, 2, 2},
                          {2, 4, 13, 17, 6, 4, 3, 2, 1, 0, 1, 2, 1, 2, 3, 2}};
  int variant = 0;
  for (const Shape& s : shapes) {
    Conv2dParams p;
    p.N = s.n, p.C = s.c, p.H = s.h, p.W = s.w, p.K = s.k, p.kh = s.kh, p.kw = s.kw;
    p.pad_top = s.pt, p.pad_left = s.pl, p.pad_bottom = s.pb, p.pad_right = s.pr;
    p.dilation_h = s.dh, p.dilation_w = s.dw, p.groups = s.groups;
    p.stride_h = s.sh, p.stride_w = s.sw;
    const size_t out = p.N * p.K * p.out_h() * p.out_w();
    auto x = randv(p.N * p.C * p.H * p.W), w = randv(p.K * (p.C / p.groups) * p.kh * p.kw);
    auto bias = randv(p.K), res = randv(out);
    for (int with_residual = 0; with_residual < 2; ++with_residual, ++variant) {
      Epilogue ep;
      ep.bias_kind = BiasKind::per_row;
      ep.bias = bias.data();
      ep.residual = with_residual ? res.data() : nullptr;
      ep.act = variant % 2 ? Activation::relu : Activation::silu;
      std::vector<float> got(out), want(out);
      Conv2d conv(p, w.data(), ConvAlgo::implicit);
      conv.run(x.data(), got.data(), ep, nullptr);
      conv2d_reference(p, x.data(), w.data(), want.data(), ep);
      check("conv implicit " + std::to_string(p.C) + "->" + std::to_string(p.K) + " " +
                std::to_string(p.kh) + "x" + std::to_string(p.kw) + " s" +
                std::to_string(p.stride_h) + std::to_string(p.stride_w) +
                (with_residual ? " residual" : ""),
            got.data(), want.data(), out, 1e-4f, 1e-4f);
      // The same in NHWC (input, output and residual): A read with a pixel stride, the tile
      // stored as it is.
      const size_t ohw = p.out_h() * p.out_w();
      auto x_nhwc = to_nhwc(x, p.N, p.C, p.H * p.W), res_nhwc = to_nhwc(res, p.N, p.K, ohw);
      if (with_residual) ep.residual = res_nhwc.data();
      Conv2d nhwc(p, w.data(), ConvAlgo::implicit, nullptr, nullptr, true);
      ConvLayout layout;
      layout.nhwc_in = layout.nhwc_out = layout.nhwc_residual = true;
      nhwc.run(x_nhwc.data(), got.data(), ep, nullptr, nullptr, layout);
      const auto want_nhwc = to_nhwc(want, p.N, p.K, ohw);
      check("conv implicit NHWC " + std::to_string(p.C) + "->" + std::to_string(p.K) + " " +
                std::to_string(p.kh) + "x" + std::to_string(p.kw) + " s" +
                std::to_string(p.stride_h) + std::to_string(p.stride_w) +
                (with_residual ? " residual" : ""),
            got.data(), want_nhwc.data(), out, 1e-4f, 1e-4f);
    }
  }
  g.done(isa_name(active_isa()), sgemm_kernel_name());
}

// ---- depthwise conv and pooling planes ------------------------------------------------------

struct PlaneShape {
  size_t oh, ow, kh, kw, sh, sw, dh, dw;
};
const PlaneShape kPlanes[] = {
    {1, 1, 3, 3, 1, 1, 1, 1}, {3, 5, 3, 3, 1, 1, 1, 1}, {4, 9, 3, 3, 2, 2, 1, 1},
    {2, 17, 5, 5, 1, 1, 1, 1}, {3, 7, 5, 5, 2, 2, 1, 1}, {5, 3, 2, 3, 1, 1, 1, 1},
    {2, 13, 3, 3, 1, 1, 2, 2}, {3, 6, 7, 7, 1, 1, 1, 1}, {2, 5, 3, 3, 3, 3, 1, 1},
    {1, 4, 1, 1, 1, 1, 1, 1}, {6, 11, 2, 2, 2, 2, 1, 1}, {3, 31, 3, 1, 1, 2, 1, 1},
    // one vector wide (NEON's 4 lanes), stride 1: output rows in groups (11 -> 6 + 5); a 5x5
    // plane of 7 rows, 9 wide (two vectors and a tail), grouped too
    {11, 4, 3, 3, 1, 1, 1, 1}, {9, 3, 5, 5, 1, 1, 1, 1}, {7, 9, 5, 5, 1, 1, 1, 1}};

// A zero-padded input plane for a shape with `slack` readable floats after each row.
std::vector<float> plane_input(const PlaneShape& s, size_t slack, size_t* stride, float fill) {
  const size_t rows = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1;
  const size_t cols = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
  *stride = cols + slack;
  std::vector<float> x(rows * *stride + slack, fill);
  auto v = randv(rows * *stride);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) x[r * *stride + c] = v[r * *stride + c];
  return x;
}

// The unpadded input a shape reads, less one row / column on each side (padding 1), or with
// `unpadded` none and one more column than the outputs read; and the plane's fields for it.
struct PlaneInput {
  size_t pad, in_h, in_w;
};
PlaneInput plane_input_size(const PlaneShape& s, bool unpadded) {
  const size_t rows = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1;
  const size_t cols = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
  const size_t pad = unpadded ? 0 : std::min<size_t>(1, std::min(rows, cols) / 2);
  return {pad, rows - 2 * pad, cols - 2 * pad + (unpadded ? 1 : 0)};
}
DwConvPlane dw_plane(const PlaneShape& s, const PlaneInput& in, int variant) {
  DwConvPlane p{};
  p.in_h = in.in_h;
  p.in_w = in.in_w;
  p.pad_top = p.pad_left = in.pad;
  p.oh = s.oh, p.ow = s.ow, p.kh = s.kh, p.kw = s.kw;
  p.sh = s.sh, p.sw = s.sw, p.dh = s.dh, p.dw = s.dw;
  p.act = kActs[(variant * 5) % 12];
  act_params(p.act, &p.alpha, &p.beta);
  return p;
}

void test_dwconv(const char* name, const char* isa, dwconv_plane_fn fn) {
  Group g("dwconv");
  int variant = 0;
  for (const PlaneShape& s : kPlanes)
    for (int flavor = 0; flavor < 4; ++flavor) {
      ++variant;
      const PlaneInput in = plane_input_size(s, flavor == 3);
      auto x = randv(in.in_h * in.in_w);
      auto w = randv(s.kh * s.kw), res = randv(s.oh * s.ow);
      DwConvPlane p = dw_plane(s, in, variant);
      p.x = x.data();
      p.w = w.data();
      p.residual = flavor == 1 ? res.data() : nullptr;
      p.bias = 0.25f;
      p.has_prologue = flavor == 2;
      p.in_relu = variant % 2 == 0;
      p.in_scale = 0.75f;
      p.in_shift = -0.125f;
      std::vector<float> rows_buf(dwconv_scratch_floats(p), 0.0f);
      p.rows = rows_buf.data();
      std::vector<float> got(s.oh * s.ow + 1, 7.0f), want(s.oh * s.ow + 1, 7.0f);
      p.y = got.data();
      fn(p);
      p.y = want.data();
      kiln_f32_dwconv_ukernel__generic(p);
      check(std::string(name) + " " + std::to_string(s.kh) + "x" + std::to_string(s.kw) + " s" +
                std::to_string(s.sw) + " d" + std::to_string(s.dw) + " ow=" +
                std::to_string(s.ow) + " flavor=" + std::to_string(flavor),
            got.data(), want.data(), got.size(), 1e-5f, 1e-4f);
    }
  // The blocked form: channels in lanes, 1..kDwConvBlockChannels of them, per-channel bias
  // and prologue, against the generic kernel taking each channel as a plane.
  for (const PlaneShape& s : kPlanes)
    for (size_t channels : {size_t{1}, size_t{3}, size_t{4}, size_t{7}, kDwConvBlockChannels}) {
      ++variant;
      const PlaneInput in = plane_input_size(s, false);
      const size_t out = s.oh * s.ow;
      auto x = randv(channels * in.in_h * in.in_w), w = randv(channels * s.kh * s.kw);
      auto res = randv(channels * out), bias = randv(channels), scale = randv(channels);
      auto shift = randv(channels);
      DwConvPlane p = dw_plane(s, in, variant);
      p.x = x.data();
      p.w = w.data();
      p.residual = variant % 2 ? res.data() : nullptr;
      p.channels = channels;
      p.biases = variant % 3 ? bias.data() : nullptr;
      p.in_scales = variant % 4 < 2 ? scale.data() : nullptr;
      p.in_shifts = p.in_scales ? shift.data() : nullptr;
      p.in_relu = variant % 8 < 4;
      std::vector<float> rows_buf(dwconv_block_scratch_floats(p), 3.0f);
      p.rows = rows_buf.data();
      std::vector<float> got(channels * out + 1, 7.0f), want(channels * out + 1, 7.0f);
      p.y = got.data();
      fn(p);
      p.y = want.data();
      kiln_f32_dwconv_ukernel__generic(p);
      check(std::string(name) + " blocked " + std::to_string(channels) + "ch " +
                std::to_string(s.kh) + "x" + std::to_string(s.kw) + " s" + std::to_string(s.sw),
            got.data(), want.data(), got.size(), 1e-5f, 1e-4f);
    }
  // The NHWC form: pixels S floats apart with the channels from the second on, tap-major
  // weights, a range of output rows (the rows outside it left alone), against the generic.
  for (const PlaneShape& s : kPlanes)
    for (size_t channels : {size_t{3}, size_t{4}, size_t{7}, size_t{16}, size_t{21}}) {
      ++variant;
      const PlaneInput in = plane_input_size(s, variant % 3 == 0);
      const size_t S = channels + 2, out = s.oh * s.ow * S;
      auto x = randv(in.in_h * in.in_w * S), w = randv(s.kh * s.kw * S), res = randv(out);
      auto bias = randv(S);
      DwConvPlane p = dw_plane(s, in, variant);
      p.x = x.data() + 1;
      p.w = w.data() + 1;
      p.residual = variant % 2 ? res.data() + 1 : nullptr;
      p.biases = variant % 3 ? bias.data() + 1 : nullptr;
      p.nhwc_stride = S;
      p.channels = channels;
      p.oy0 = s.oh > 1 ? 1 : 0;
      p.oy1 = s.oh;
      std::vector<float> got(out + 1, 7.0f), want(out + 1, 7.0f);
      p.y = got.data() + 1;
      fn(p);
      p.y = want.data() + 1;
      kiln_f32_dwconv_ukernel__generic(p);
      check(std::string(name) + " nhwc " + std::to_string(channels) + "ch " +
                std::to_string(s.kh) + "x" + std::to_string(s.kw) + " s" + std::to_string(s.sw) +
                " d" + std::to_string(s.dw),
            got.data(), want.data(), got.size(), 1e-5f, 1e-4f);
    }
  g.done(isa, name);
}

// Packed panels times a vector against plain loops, K with and without a remainder of 4.
void test_gemv(const char* name, const char* isa, f32_gemv_fn fn, size_t mr) {
  Group g("gemv");
  for (size_t K : {1, 3, 4, 37, 256})
    for (size_t panels : {1, 3}) {
      auto a = randv(panels * K * mr), v = randv(K);
      std::vector<float> got(panels * mr + 1, 7.0f), want(panels * mr + 1, 7.0f);
      for (size_t p = 0; p < panels; ++p)
        for (size_t r = 0; r < mr; ++r) {
          double acc = 0;
          for (size_t k = 0; k < K; ++k) acc += double(a[(p * K + k) * mr + r]) * v[k];
          want[p * mr + r] = float(acc);
        }
      fn(panels, K, a.data(), v.data(), got.data());
      check(std::string(name) + " K=" + std::to_string(K) + " panels=" + std::to_string(panels),
            got.data(), want.data(), got.size(), 1e-5f, 1e-4f);
    }
  g.done(isa, name);
}

void test_pool(const char* name, const char* isa, pool_plane_fn fn) {
  Group g("pool");
  for (const PlaneShape& s : kPlanes)
    for (PoolKind kind : {PoolKind::max, PoolKind::avg}) {
      // The plane the windows span, its first row and column padding (the kernels read the
      // plane in place and handle the padding themselves), nothing readable past it.
      const size_t rows = (s.oh - 1) * s.sh + (s.kh - 1) * s.dh + 1;
      const size_t cols = (s.ow - 1) * s.sw + (s.kw - 1) * s.dw + 1;
      const size_t pt = s.kh > 1 ? 1 : 0, pl = s.kw > 1 ? 1 : 0;
      auto x = randv((rows - pt) * (cols - pl));
      auto inv_h = randv(s.oh, 0.1f, 1.0f), inv_w = randv(s.ow, 0.1f, 1.0f);
      PoolPlane p{x.data(), rows - pt, cols - pl, pt, pl, nullptr, s.oh, s.ow, s.kh, s.kw,
                  s.sh, s.sw, s.dh, s.dw, kind, inv_h.data(), inv_w.data()};
      std::vector<float> got(s.oh * s.ow + 1, 7.0f), want(s.oh * s.ow + 1, 7.0f);
      p.y = got.data();
      fn(p);
      p.y = want.data();
      kiln_f32_pool_ukernel__generic(p);
      check(std::string(name) + (kind == PoolKind::max ? " max " : " avg ") +
                std::to_string(s.kh) + "x" + std::to_string(s.kw) + " s" + std::to_string(s.sw) +
                " ow=" + std::to_string(s.ow),
            got.data(), want.data(), got.size(), 1e-6f, 1e-5f);
    }
  g.done(isa, name);
}

// ---- Winograd transforms -------------------------------------------------------------------

void test_winograd(const char* name, const char* isa, const WinogradKernels& k) {
  Group g("winograd");
  const WinogradKernels ref = select_f32_wino43(Isa::generic);
  if (ref.tiles != k.tiles) {
    // The generic transforms work on 16 tiles; wider ISAs are checked tile group by group.
    std::printf("  note: %s works on %zu tiles, the oracle on %zu\n", name, k.tiles, ref.tiles);
  }
  const size_t T = k.tiles;
  for (int rep = 0; rep < 3; ++rep) {
    const size_t vs = T + 5;
    auto d = randv(36 * T);
    std::vector<float> got(36 * vs, 0.0f), want(36 * vs, 0.0f);
    k.input(d.data(), got.data(), vs);
    // oracle: the generic transform on each group of 16 tiles
    for (size_t t0 = 0; t0 < T; t0 += ref.tiles) {
      std::vector<float> dd(36 * ref.tiles), vv(36 * vs, 0.0f);
      for (size_t i = 0; i < 36; ++i)
        for (size_t t = 0; t < ref.tiles; ++t) dd[i * ref.tiles + t] = d[i * T + t0 + t];
      ref.input(dd.data(), vv.data(), vs);
      for (size_t i = 0; i < 36; ++i)
        for (size_t t = 0; t < ref.tiles; ++t) want[i * vs + t0 + t] = vv[i * vs + t];
    }
    check(std::string(name) + " input", got.data(), want.data(), got.size(), 1e-5f, 1e-5f);

    const size_t ms = T + 3;
    auto m = randv(36 * ms);
    std::vector<float> yo(16 * T), yw(16 * T);
    k.output(m.data(), ms, yo.data());
    for (size_t t0 = 0; t0 < T; t0 += ref.tiles) {
      std::vector<float> y16(16 * ref.tiles);
      ref.output(m.data() + t0, ms, y16.data());
      for (size_t i = 0; i < 16; ++i)
        for (size_t t = 0; t < ref.tiles; ++t) yw[i * T + t0 + t] = y16[i * ref.tiles + t];
    }
    check(std::string(name) + " output", yo.data(), yw.data(), yo.size(), 1e-5f, 1e-5f);

    for (size_t n : {size_t(1), T / 2 + 1, T}) {
      const size_t rs = 4 * n + 7;
      auto src = randv(6 * rs);
      std::vector<float> dg(36 * T, 0.0f), dw(36 * T, 0.0f);
      k.gather(src.data(), rs, n, dg.data());
      for (size_t r = 0; r < 6; ++r)
        for (size_t s = 0; s < 6; ++s)
          for (size_t t = 0; t < n; ++t) dw[(r * 6 + s) * T + t] = src[r * rs + 4 * t + s];
      check(std::string(name) + " gather n=" + std::to_string(n), dg.data(), dw.data(),
            dg.size(), 0, 0);
      for (size_t rows = 1; rows <= 4; rows += 3) {
        const size_t ds = 4 * n + 5;
        auto y = randv(16 * T), res = randv(4 * ds);
        std::vector<float> sg(4 * ds, 7.0f), sw(4 * ds, 7.0f);
        const float* r = rep % 2 ? res.data() : nullptr;
        // every other pass clamps (a fused Relu6-like Clip), the others store as they are
        const float lo = rows == 1 ? 0.0f : -INFINITY, hi = rows == 1 ? 0.9f : INFINITY;
        k.scatter(y.data(), n, rows, 0.5f, r, sg.data(), ds, lo, hi);
        for (size_t i = 0; i < rows; ++i)
          for (size_t t = 0; t < n; ++t)
            for (size_t j = 0; j < 4; ++j)
              sw[i * ds + 4 * t + j] = std::min(
                  std::max(y[(i * 4 + j) * T + t] + 0.5f + (r ? r[i * ds + 4 * t + j] : 0.0f),
                           lo),
                  hi);
        check(std::string(name) + " scatter n=" + std::to_string(n) + " rows=" +
                  std::to_string(rows),
              sg.data(), sw.data(), sg.size(), 1e-6f, 1e-6f);
      }
    }
  }
  g.done(isa, name);
}

// ---- int8 GEMM -----------------------------------------------------------------------------

void test_int8(const char* name, const char* isa, int8_ukernel_fn fn) {
  Group g("int8 gemm");
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127);
  for (size_t rows = 1; rows <= kInt8Mr; ++rows)
    for (size_t cols : {size_t(1), size_t(5), size_t(16), size_t(17), size_t(32)})
      for (auto [nseg, seg_len] : {std::pair<size_t, size_t>{1, 4}, {1, 36}, {3, 8}}) {
        const size_t K = nseg * seg_len;
        std::vector<int8_t> B(K * kInt8Nr);
        for (auto& v : B) v = int8_t(s8(g_rng));
        // extremes too: 255 x -128 must not saturate
        if (rows == 1) std::fill(B.begin(), B.end(), int8_t(-128));
        const PackedInt8B pb = pack_int8_b(B.data(), K, kInt8Nr, kInt8Nr);
        std::vector<std::vector<uint8_t>> segs(rows * nseg, std::vector<uint8_t>(seg_len));
        std::vector<const uint8_t*> ptrs;
        for (auto& s : segs) {
          for (auto& v : s) v = rows == 1 ? 255 : uint8_t(u8(g_rng));
          ptrs.push_back(s.data());
        }
        const size_t ldc = 40;
        std::vector<int32_t> got(rows * ldc, 7), want(rows * ldc, 7);
        fn(rows, nseg, seg_len, ptrs.data(), pb.panels.data(), got.data(), ldc, cols);
        kiln_u8s8_gemm_ukernel__generic(rows, nseg, seg_len, ptrs.data(), pb.panels.data(),
                                        want.data(), ldc, cols);
        check_i32(std::string(name) + " rows=" + std::to_string(rows) + " cols=" +
                      std::to_string(cols) + " K=" + std::to_string(K),
                  got.data(), want.data(), got.size());
      }
  g.done(isa, name);
}

// The whole fused int8 GEMM (the active kernel) against plain int32 loops.
void test_int8_fused() {
  Group g("int8 fused");
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127);
  const size_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {7, 33, 13}, {50, 70, 36}, {13, 129, 100}};
  for (const auto& s : sizes) {
    const size_t M = s[0], N = s[1], K = s[2];
    std::vector<uint8_t> A(M * K);
    std::vector<int8_t> B(K * N);
    for (auto& v : A) v = uint8_t(u8(g_rng));
    for (auto& v : B) v = int8_t(s8(g_rng));
    const PackedInt8B pb = pack_int8_b(B.data(), K, N, N);
    std::vector<int32_t> got(M * N, 7), want(M * N, 0);
    Int8GemmIO io;
    io.fill = int8_rows_of(A.data(), K, K, pb.Kq);
    io.epilogue = [&](size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                      size_t ldacc) {
      for (size_t r = 0; r < rows; ++r)
        std::memcpy(&got[(i0 + r) * N + j0], acc + r * ldacc, cols * sizeof(int32_t));
    };
    gemm_u8s8_fused(M, pb, io, nullptr);
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j)
        for (size_t k = 0; k < K; ++k) want[i * N + j] += int32_t(A[i * K + k]) * B[k * N + j];
    check_i32("u8s8 fused M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                  std::to_string(K),
              got.data(), want.data(), got.size());
  }
  g.done(isa_name(active_isa()), int8_gemm_kernel_name());
}

// ---- whole plans ---------------------------------------------------------------------------

// Outputs recorded by `--record`: "name count" then one value per line.
std::map<std::string, std::vector<float>> read_expected(const char* path) {
  std::map<std::string, std::vector<float>> out;
  FILE* f = std::fopen(path, "r");
  if (!f) return out;
  char name[128];
  size_t n;
  while (std::fscanf(f, "%127s %zu", name, &n) == 2) {
    std::vector<float> v(n);
    for (float& x : v)
      if (std::fscanf(f, "%f", &x) != 1) break;
    out[name] = v;
  }
  std::fclose(f);
  return out;
}

void test_plans(const char* expected_path, const char* record_path) {
  Group g("whole plans");
  FILE* rec = record_path ? std::fopen(record_path, "w") : nullptr;
  const auto expected = expected_path ? read_expected(expected_path)
                                      : std::map<std::string, std::vector<float>>{};
  for (const plans::Case& c : plans::kCases) {
    std::vector<float> got;
    try {
      got = c.run();
    } catch (const std::exception& e) {
      std::printf("  FAIL plan %s: %s\n", c.name, e.what());
      ++g_failed;
      continue;
    }
    if (rec) {
      std::fprintf(rec, "%s %zu\n", c.name, got.size());
      for (float x : got) std::fprintf(rec, "%.9g\n", x);
      continue;  // a recording is not a check
    }
    auto it = expected.find(c.name);
    if (it == expected.end() || it->second.size() != got.size()) {
      std::printf("  FAIL plan %s: no recorded output of %zu values in %s\n", c.name,
                  got.size(), expected_path ? expected_path : "(none given)");
      ++g_failed;
      continue;
    }
    check(std::string("plan ") + c.name, got.data(), it->second.data(), got.size(), c.atol,
          c.rtol);
  }
  if (rec) std::fclose(rec);
  g.done(isa_name(active_isa()), rec ? "(recording)" : "vs outputs recorded on x86");
}

}  // namespace

// kernel_driver [--expect FILE] [--record FILE]: the plan outputs are compared with FILE, or
// written to it (on the machine whose outputs are the reference).
int main(int argc, char** argv) {
  const char* expect = nullptr;
  const char* record = nullptr;
  for (int a = 1; a + 1 < argc; a += 2) {
    if (std::strcmp(argv[a], "--expect") == 0) expect = argv[a + 1];
    else if (std::strcmp(argv[a], "--record") == 0) record = argv[a + 1];
  }
  const CpuFeatures& f = cpu_features();
  std::printf("cpu: best isa=%s  asimd=%d dotprod=%d i8mm=%d  avx2=%d avx512f=%d\n",
              isa_name(best_isa()), f.asimd, f.asimd_dotprod, f.i8mm, f.avx2, f.avx512f);
  const Isa best = best_isa();
  // An ISA this CPU runs: its best one, or AVX2 on an AVX-512 CPU.
  auto runnable = [&](Isa isa) {
    return isa != Isa::generic && (isa == best || (isa == Isa::avx2 && best == Isa::avx512));
  };
  auto skipped = [&](const char* family, const char* name, const char* isa) {
    std::printf("[%-12s] isa=%-13s %-42s skipped: this CPU lacks it\n", family, isa, name);
  };
#define KILN_UKERNEL(kind, name, isa_)                                     \
  if (Isa::isa_ != Isa::generic) {                                         \
    if (runnable(Isa::isa_)) test_##kind(#name, #isa_, name);              \
    else skipped(#kind, #name, #isa_);                                     \
  }
#define KILN_GEMM_UKERNEL(name, isa_, mr, nr)                              \
  if (runnable(Isa::isa_)) test_gemm_tile(#name, #isa_, name, mr, nr);     \
  else if (Isa::isa_ != Isa::generic) skipped("gemm tile", #name, #isa_);
#define KILN_DWCONV_UKERNEL(name, isa_)                                    \
  if (runnable(Isa::isa_)) test_dwconv(#name, #isa_, name);                \
  else if (Isa::isa_ != Isa::generic) skipped("dwconv", #name, #isa_);
#define KILN_GEMV_UKERNEL(name, isa_, mr)                                  \
  if (runnable(Isa::isa_)) test_gemv(#name, #isa_, name, mr);              \
  else if (Isa::isa_ != Isa::generic) skipped("gemv", #name, #isa_);
#define KILN_POOL_UKERNEL(name, isa_)                                      \
  if (runnable(Isa::isa_)) test_pool(#name, #isa_, name);                  \
  else if (Isa::isa_ != Isa::generic) skipped("pool", #name, #isa_);
#define KILN_DIRECTCONV_UKERNEL(name, isa_, kb, nv, lanes)
#define KILN_FMA_PROBE(name, isa_)
#define KILN_WINO_UKERNEL(suffix, isa_, tiles)                                           \
  if (runnable(Isa::isa_))                                                               \
    test_winograd("kiln_f32_wino43_*" #suffix, #isa_, select_f32_wino43(Isa::isa_));     \
  else if (Isa::isa_ != Isa::generic) skipped("winograd", "kiln_f32_wino43_*" #suffix, #isa_);
  // int8 GEMM kernels need a feature beyond their ISA (the list's third column).
#define KILN_INT8_LOOPS(isa_, range)
#define KILN_INT8_GEMM_UKERNEL(name, isa_, feature)                                       \
  if (Isa::isa_ != Isa::generic) {                                                        \
    if (runnable(Isa::isa_) && int8_feature_here(Int8Feature::feature))                          \
      test_int8(#name, #isa_ "+" #feature, name);                                         \
    else                                                                                  \
      skipped("int8 gemm", #name, #isa_ "+" #feature);                                    \
  }
#include "kernels/ukernels.inc"
#undef KILN_UKERNEL
#undef KILN_GEMM_UKERNEL
#undef KILN_DWCONV_UKERNEL
#undef KILN_GEMV_UKERNEL
#undef KILN_POOL_UKERNEL
#undef KILN_DIRECTCONV_UKERNEL
#undef KILN_FMA_PROBE
#undef KILN_WINO_UKERNEL
#undef KILN_INT8_LOOPS
#undef KILN_INT8_GEMM_UKERNEL

  test_sgemm();
  test_conv_implicit();
  test_int8_fused();
  if (expect || record) test_plans(expect, record);

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
