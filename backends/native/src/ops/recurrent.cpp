// LSTM (ONNX opset 7-22) with the default activations (sigmoid, tanh, tanh), float32.
//
// Per direction and batch row, one step t computes the four gate pre-activations
//   g = W x_t + R h_{t-1} + Wb + Rb            (gate order i, o, f, c in W, R, B)
//   i = s(g_i + P_i * c_{t-1}),  f = s(g_f + P_f * c_{t-1})   (f = 1 - i with input_forget)
//   c_t = f * c_{t-1} + i * tanh(g_c)
//   o = s(g_o + P_o * c_t),      h_t = o * tanh(c_t)
// `clip` bounds every pre-activation to [-clip, clip]. A row with sequence_lens[b] = L runs
// steps 0..L-1 (backward: L-1..0); Y is zero past L and Y_h / Y_c hold the state at the last
// step run. layout=1 puts batch first in X, Y, initial and final states.
#include <cmath>

#include "ops/common.h"

namespace kiln::ops {
namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

struct LstmShape {
  int64_t seq, batch, input, hidden, dirs;
  bool batch_first;
  // Offsets of element (t, b) rows in X / Y and of (d, b) rows in the states.
  size_t x_row(int64_t t, int64_t b) const {
    return static_cast<size_t>(batch_first ? (b * seq + t) : (t * batch + b)) * input;
  }
  size_t y_row(int64_t t, int64_t d, int64_t b) const {
    return static_cast<size_t>(batch_first ? ((b * seq + t) * dirs + d)
                                           : ((t * dirs + d) * batch + b)) * hidden;
  }
  size_t state_row(int64_t d, int64_t b) const {
    return static_cast<size_t>(batch_first ? (b * dirs + d) : (d * batch + b)) * hidden;
  }
};

void check_shape(const OpContext& c, const Tensor* t, const Shape& want, const char* what) {
  if (t != nullptr && t->shape != want)
    c.fail(std::string(what) + " has shape " + shape_str(t->shape) + ", expected " +
           shape_str(want));
}

void lstm(OpContext& c) {
  const Tensor& x = c.in(0);
  const Tensor& w = c.in(1);
  const Tensor& r = c.in(2);
  for (size_t i = 0; i < c.n_inputs(); ++i) {
    const Tensor* t = c.input(i);
    if (t != nullptr && i != 4 && t->dtype != DType::f32)
      c.fail("LSTM input " + std::to_string(i) + " must be float32, got " +
             dtype_name(t->dtype));
  }
  const std::string direction = c.node.attr_s("direction", "forward");
  int64_t dirs = direction == "bidirectional" ? 2 : 1;
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional")
    c.fail("direction '" + direction + "' is not forward, reverse or bidirectional");
  const bool batch_first = c.node.attr_i("layout", 0) == 1;
  const bool couple = c.node.attr_i("input_forget", 0) != 0;
  const float clip = c.node.attr_f("clip", 0.0f);
  if (x.rank() != 3) c.fail("X must have rank 3, got " + shape_str(x.shape));
  if (w.rank() != 3 || r.rank() != 3) c.fail("W and R must have rank 3");
  LstmShape s{batch_first ? x.shape[1] : x.shape[0], batch_first ? x.shape[0] : x.shape[1],
              x.shape[2], r.shape[2], dirs, batch_first};
  const int64_t H = s.hidden;
  const int64_t hs = c.node.attr_i("hidden_size", H);
  if (hs != H) c.fail("hidden_size " + std::to_string(hs) + " does not match R's last dim");
  check_shape(c, &w, {dirs, 4 * H, s.input}, "W");
  check_shape(c, &r, {dirs, 4 * H, H}, "R");
  const Tensor* bias = c.input(3);
  const Tensor* lens_t = c.input(4);
  const Tensor* h0 = c.input(5);
  const Tensor* c0 = c.input(6);
  const Tensor* peep = c.input(7);
  check_shape(c, bias, {dirs, 8 * H}, "B");
  const Shape state = batch_first ? Shape{s.batch, dirs, H} : Shape{dirs, s.batch, H};
  check_shape(c, h0, state, "initial_h");
  check_shape(c, c0, state, "initial_c");
  check_shape(c, peep, {dirs, 3 * H}, "P");
  std::vector<int64_t> lens(static_cast<size_t>(s.batch), s.seq);
  if (lens_t != nullptr) {
    lens = read_ints(*lens_t, c.node, "sequence_lens");
    if (static_cast<int64_t>(lens.size()) != s.batch)
      c.fail("sequence_lens has " + std::to_string(lens.size()) + " entries, batch is " +
             std::to_string(s.batch));
    for (int64_t L : lens)
      if (L < 0 || L > s.seq)
        c.fail("sequence_lens value " + std::to_string(L) + " is outside [0, " +
               std::to_string(s.seq) + "]");
  }
  const Shape y_shape = batch_first ? Shape{s.batch, s.seq, dirs, H}
                                    : Shape{s.seq, dirs, s.batch, H};
  float* y = c.wants_output(0) ? c.output(0, DType::f32, y_shape).ptr<float>() : nullptr;
  float* yh = c.wants_output(1) ? c.output(1, DType::f32, state).ptr<float>() : nullptr;
  float* yc = c.wants_output(2) ? c.output(2, DType::f32, state).ptr<float>() : nullptr;
  if (y != nullptr) std::fill(y, y + s.seq * dirs * s.batch * H, 0.0f);

  std::vector<float> h(H), cell(H), gates(4 * H);
  auto bound = [clip](float v) {
    return clip > 0.0f ? std::min(clip, std::max(-clip, v)) : v;
  };
  for (int64_t d = 0; d < dirs; ++d) {
    const bool backward = direction == "reverse" || d == 1;
    const float* W = w.ptr<float>() + d * 4 * H * s.input;
    const float* R = r.ptr<float>() + d * 4 * H * H;
    const float* Wb = bias ? bias->ptr<float>() + d * 8 * H : nullptr;
    const float* P = peep ? peep->ptr<float>() + d * 3 * H : nullptr;
    for (int64_t b = 0; b < s.batch; ++b) {
      const size_t srow = s.state_row(d, b);
      for (int64_t k = 0; k < H; ++k) {
        h[k] = h0 ? h0->ptr<float>()[srow + k] : 0.0f;
        cell[k] = c0 ? c0->ptr<float>()[srow + k] : 0.0f;
      }
      const int64_t L = lens[static_cast<size_t>(b)];
      for (int64_t step = 0; step < L; ++step) {
        const int64_t t = backward ? L - 1 - step : step;
        const float* xt = x.ptr<float>() + s.x_row(t, b);
        for (int64_t g = 0; g < 4 * H; ++g) {
          float acc = Wb ? Wb[g] + Wb[4 * H + g] : 0.0f;
          const float* wr = W + g * s.input;
          for (int64_t k = 0; k < s.input; ++k) acc += wr[k] * xt[k];
          const float* rr = R + g * H;
          for (int64_t k = 0; k < H; ++k) acc += rr[k] * h[k];
          gates[g] = acc;
        }
        for (int64_t k = 0; k < H; ++k) {
          const float cp = cell[k];
          const float gi = sigmoid(bound(gates[k] + (P ? P[k] * cp : 0.0f)));
          const float pf = P ? P[2 * H + k] * cp : 0.0f;
          const float gf = couple ? 1.0f - gi : sigmoid(bound(gates[2 * H + k] + pf));
          const float gc = std::tanh(bound(gates[3 * H + k]));
          const float cn = gf * cp + gi * gc;
          const float go = sigmoid(bound(gates[H + k] + (P ? P[H + k] * cn : 0.0f)));
          cell[k] = cn;
          h[k] = go * std::tanh(cn);
        }
        if (y != nullptr) std::copy(h.begin(), h.end(), y + s.y_row(t, d, b));
      }
      if (yh != nullptr) std::copy(h.begin(), h.end(), yh + srow);
      if (yc != nullptr) std::copy(cell.begin(), cell.end(), yc + srow);
    }
  }
}

}  // namespace

KILN_REGISTER_OP("", "LSTM", simple_kernel(lstm));

}  // namespace kiln::ops
