// 2-D pooling drivers: output size, parameter checks, per-plane padding and the reference.
#include "kernels/pool.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm_driver.h"
#include "kernels/ukernels.h"
#include "threadpool.h"

namespace kiln {

namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("pool2d: " + what); }

size_t out_size(size_t in, size_t pad_a, size_t pad_b, size_t k, size_t d, size_t s, bool ceil) {
  const size_t ek = (k - 1) * d + 1, padded = in + pad_a + pad_b;
  if (padded < ek) return 0;
  size_t out = (ceil ? (padded - ek + s - 1) / s : (padded - ek) / s) + 1;
  // The last window must start inside the input or its leading padding.
  if (ceil && out > 1 && (out - 1) * s >= in + pad_a) --out;
  return out;
}

// 1 / (number of window taps along one axis that count), for every output index.
std::vector<float> inverse_counts(size_t out, size_t in, size_t pad_a, size_t pad_b, size_t k,
                                  size_t d, size_t s, bool include_pad) {
  std::vector<float> inv(out);
  const long lo = include_pad ? -long(pad_a) : 0;
  const long hi = include_pad ? long(in + pad_b) : long(in);
  for (size_t o = 0; o < out; ++o) {
    size_t count = 0;
    for (size_t t = 0; t < k; ++t) {
      const long i = long(o * s + t * d) - long(pad_a);
      count += i >= lo && i < hi;
    }
    inv[o] = count ? 1.0f / float(count) : 0.0f;
  }
  return inv;
}

}  // namespace

void Pool2dParams::set_output(bool ceil_mode) {
  out_h = out_size(H, pad_top, pad_bottom, kh, dilation_h, stride_h, ceil_mode);
  out_w = out_size(W, pad_left, pad_right, kw, dilation_w, stride_w, ceil_mode);
}

void Pool2dParams::validate() const {
  if (N == 0 || C == 0 || H == 0 || W == 0) bad("input sizes must be non-zero");
  if (kh == 0 || kw == 0) bad("kernel size must be non-zero");
  if (stride_h == 0 || stride_w == 0) bad("strides must be >= 1");
  if (dilation_h == 0 || dilation_w == 0) bad("dilations must be >= 1");
  const size_t ekh = (kh - 1) * dilation_h + 1, ekw = (kw - 1) * dilation_w + 1;
  if (pad_top >= ekh || pad_bottom >= ekh || pad_left >= ekw || pad_right >= ekw)
    bad("padding must be smaller than the (dilated) kernel " + std::to_string(ekh) + "x" +
        std::to_string(ekw));
  if (out_h == 0 || out_w == 0)
    bad("the kernel " + std::to_string(ekh) + "x" + std::to_string(ekw) +
        " is larger than the padded input");
  if ((out_h - 1) * stride_h >= H + pad_top || (out_w - 1) * stride_w >= W + pad_left)
    bad("the output size has windows starting past the padded input");
}

void pool2d_reference(PoolKind kind, const Pool2dParams& p, const float* x, float* y) {
  p.validate();
  const auto inv_h = inverse_counts(p.out_h, p.H, p.pad_top, p.pad_bottom, p.kh, p.dilation_h,
                                    p.stride_h, p.count_include_pad);
  const auto inv_w = inverse_counts(p.out_w, p.W, p.pad_left, p.pad_right, p.kw, p.dilation_w,
                                    p.stride_w, p.count_include_pad);
  for (size_t nc = 0; nc < p.N * p.C; ++nc)
    for (size_t oy = 0; oy < p.out_h; ++oy)
      for (size_t ox = 0; ox < p.out_w; ++ox) {
        float acc = kind == PoolKind::max ? -std::numeric_limits<float>::infinity() : 0.0f;
        for (size_t ky = 0; ky < p.kh; ++ky) {
          const long iy = long(oy * p.stride_h + ky * p.dilation_h) - long(p.pad_top);
          if (iy < 0 || iy >= long(p.H)) continue;
          for (size_t kx = 0; kx < p.kw; ++kx) {
            const long ix = long(ox * p.stride_w + kx * p.dilation_w) - long(p.pad_left);
            if (ix < 0 || ix >= long(p.W)) continue;
            const float v = x[(nc * p.H + iy) * p.W + ix];
            acc = kind == PoolKind::max ? std::max(acc, v) : acc + v;
          }
        }
        y[(nc * p.out_h + oy) * p.out_w + ox] =
            kind == PoolKind::max ? acc : acc * inv_h[oy] * inv_w[ox];
      }
}

void pool2d(PoolKind kind, const Pool2dParams& p, const float* x, float* y, ThreadPool* pool) {
  p.validate();
  const auto inv_h = inverse_counts(p.out_h, p.H, p.pad_top, p.pad_bottom, p.kh, p.dilation_h,
                                    p.stride_h, p.count_include_pad);
  const auto inv_w = inverse_counts(p.out_w, p.W, p.pad_left, p.pad_right, p.kw, p.dilation_w,
                                    p.stride_w, p.count_include_pad);
  const pool_plane_fn kernel = select_f32_pool(active_isa());
  const size_t planes = p.N * p.C;
  // Each plane read where it lies: the kernels handle the padding (kernels/pool_ukernel.h).
  auto run = [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const PoolPlane plane{x + i * p.H * p.W, p.H, p.W, p.pad_top, p.pad_left,
                            y + i * p.out_h * p.out_w, p.out_h, p.out_w, p.kh, p.kw, p.stride_h,
                            p.stride_w, p.dilation_h, p.dilation_w, kind, inv_h.data(),
                            inv_w.data()};
      kernel(plane);
    }
  };
  const size_t work = planes * (p.H * p.W + p.out_h * p.out_w * p.kh * p.kw);
  if (pool) pool->parallel_for(planes, 1, run, work);
  else run(0, planes);
}

}  // namespace kiln
