// Single-precision 2-D max / average pooling, NCHW.
//
//   max: y[n, c, oy, ox] = max over the window of x (padding never wins)
//   avg: y[n, c, oy, ox] = sum over the window of x / count, where count is the number of
//        window positions inside the input, or (count_include_pad) inside the padded input.
//   window rows: iy = oy * stride_h - pad_top + ky * dilation_h, ky < kh; same for columns.
// The output size is the caller's (it knows floor / ceil mode); windows past the padded
// input (ceil mode) are clipped.
#pragma once
#include <cstddef>

namespace kiln {

class ThreadPool;

enum class PoolKind : int { max = 0, avg };

struct Pool2dParams {
  size_t N = 1, C = 0, H = 0, W = 0;
  size_t kh = 1, kw = 1;
  size_t stride_h = 1, stride_w = 1;
  size_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  size_t dilation_h = 1, dilation_w = 1;
  size_t out_h = 0, out_w = 0;
  bool count_include_pad = false;

  // Output size with floor (ceil_mode false) or ceil rounding, as ONNX defines it.
  void set_output(bool ceil_mode);
  // Throws std::invalid_argument naming the first bad parameter (zero sizes, a window that
  // starts past the padded input, padding not smaller than the dilated kernel).
  void validate() const;
};

void pool2d(PoolKind kind, const Pool2dParams& p, const float* x, float* y, ThreadPool* pool);

// Plain loops, the oracle.
void pool2d_reference(PoolKind kind, const Pool2dParams& p, const float* x, float* y);

}  // namespace kiln
