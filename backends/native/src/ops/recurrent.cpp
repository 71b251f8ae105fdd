// LSTM, GRU and RNN (ONNX opset 7-22) with the default activations, float32: one driver
// (shapes, directions, sequence lengths, initial and final states, layout) and one cell per
// op. G is the op's gate count (LSTM 4, GRU 3, RNN 1); W is [dirs, G*H, I], R [dirs, G*H, H],
// B [dirs, 2*G*H] (input biases, then recurrent ones).
//
// LSTM, gate order i, o, f, c:
//   g = W x_t + R h_{t-1} + Wb + Rb
//   i = s(g_i + P_i * c_{t-1}),  f = s(g_f + P_f * c_{t-1})   (f = 1 - i with input_forget)
//   c_t = f * c_{t-1} + i * tanh(g_c)
//   o = s(g_o + P_o * c_t),      h_t = o * tanh(c_t)
// GRU, gate order z, r, h:
//   z = s(Wz x + Rz h + Wbz + Rbz),  r = s(Wr x + Rr h + Wbr + Rbr)
//   n = tanh(Wh x + Rh (r * h) + Rbh + Wbh)            (linear_before_reset = 0)
//   n = tanh(Wh x + r * (Rh h + Rbh) + Wbh)            (linear_before_reset = 1)
//   h_t = (1 - z) * n + z * h_{t-1}
// RNN: h_t = tanh(W x + R h_{t-1} + Wb + Rb).
// com.microsoft DynamicQuantizeLSTM (onnxruntime's dynamic quantizer writes it for LSTM) is
// the LSTM with W [dirs, I, 4H] and R [dirs, H, 4H] int8 or uint8, each with its scales and
// zero points; each product quantizes its float operand to u8 as DynamicQuantizeLinear does
// (X once for every step, h at every step), multiplies in int32 and scales back by
// a_scale * w_scale, as onnxruntime computes it: the two agree to the rounding of h.
// `clip` bounds every pre-activation to [-clip, clip]. A row with sequence_lens[b] = L runs
// steps 0..L-1 (backward: L-1..0); Y is zero past L and Y_h / Y_c hold the state at the last
// step run. layout=1 puts batch first in X, Y, initial and final states.
#include <algorithm>
#include <cmath>

#include "kernels/gemm.h"
#include "kernels/int8_gemm.h"
#include "ops/common.h"

namespace kiln::ops {
namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

struct LstmShape {
  int64_t seq, batch, input, hidden, dirs;
  bool batch_first;
  // Row of element (t, b) in X ([seq * batch, input] in either layout); offsets of (t, d, b)
  // rows in Y and of (d, b) rows in the states.
  size_t x_index(int64_t t, int64_t b) const {
    return static_cast<size_t>(batch_first ? (b * seq + t) : (t * batch + b));
  }
  size_t y_row(int64_t t, int64_t d, int64_t b) const {
    return static_cast<size_t>(batch_first ? ((b * seq + t) * dirs + d)
                                           : ((t * dirs + d) * batch + b)) * hidden;
  }
  size_t state_row(int64_t d, int64_t b) const {
    return static_cast<size_t>(batch_first ? (b * dirs + d) : (d * batch + b)) * hidden;
  }
};

// The number of directions the op's `direction` names (a kiln error for any other name).
int64_t directions(const OpContext& c) {
  const std::string direction = c.node.attr_s("direction", "forward");
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional")
    c.fail("direction '" + direction + "' is not forward, reverse or bidirectional");
  return direction == "bidirectional" ? 2 : 1;
}

void check_shape(const OpContext& c, const Tensor* t, const Shape& want, const char* what) {
  if (t != nullptr && t->shape != want)
    c.fail(std::string(what) + " has shape " + shape_str(t->shape) + ", expected " +
           shape_str(want));
}

// One direction's weights for a cell step.
struct DirWeights {
  const float* W;   // [G*H, I]
  const float* R;   // [G*H, H]
  const float* Wb;  // [G*H] input biases, or null
  const float* Rb;  // [G*H] recurrent biases, or null
};

// out[0, n) = R[first .. first+n) . v + Rb + add (Rb and add may be null): the recurrent product
// of one step, on R packed once per run (pack_b keeps a GEMM-ready copy).
struct RecurrentWeights {
  std::unique_ptr<PackedB> owned;  // packed for this run (R computed at run time)
  const PackedB* packed;           // R rows [first, first + n) as the B operand
  const float* Rb;                 // their recurrent biases, or null
  size_t n;
};

// The row ranges of R one step multiplies, in units of H: LSTM all four gates; GRU z and r,
// then h (its product needs r first); RNN the one gate.
using RowParts = std::vector<std::pair<int64_t, int64_t>>;

// Weights packed once when they are constants, per direction: R's row parts, and W (G*H x
// input, the input projections' B) when W is a constant too.
struct PackedDirection {
  std::vector<std::unique_ptr<PackedB>> r;
  std::unique_ptr<PackedB> w;
};
using PackedR = std::vector<PackedDirection>;

RecurrentWeights pack_recurrent(const DirWeights& dw, int64_t first, int64_t n, int64_t H,
                                const PackedB* prepacked) {
  RecurrentWeights rw{nullptr, prepacked, dw.Rb ? dw.Rb + first : nullptr,
                      static_cast<size_t>(n)};
  if (!rw.packed) {
    rw.owned = pack_b(true, static_cast<size_t>(H), static_cast<size_t>(n), dw.R + first * H,
                      static_cast<size_t>(H));
    rw.packed = rw.owned.get();
  }
  return rw;
}

// Direction d's weights packed at build, or null (none packed, or not for this run's shape).
const PackedDirection* prepacked(const PackedR* pre, int64_t d) {
  return pre && static_cast<size_t>(d) < pre->size() ? &(*pre)[static_cast<size_t>(d)]
                                                      : nullptr;
}

// The prepacked part of R for direction d, or null.
const PackedB* prepacked_part(const PackedR* pre, int64_t d, size_t part) {
  const PackedDirection* dir = prepacked(pre, d);
  return dir && part < dir->r.size() ? dir->r[part].get() : nullptr;
}

// out[M, n] (row stride ldc) = v[M, H] . R part + Rb + add; add may be null or alias out.
void recurrent_product(const RecurrentWeights& rw, size_t M, const float* v, const float* add,
                       float* out, size_t ldc, ThreadPool* pool) {
  Epilogue ep;
  if (rw.Rb) {
    ep.bias_kind = BiasKind::per_col;
    ep.bias = rw.Rb;
  }
  ep.residual = add;
  sgemm_packed(false, M, v, rw.packed->K(), *rw.packed, out, ldc, ep, pool);
}

// The shared driver. Per direction: the input projections W x_t + Wb of every step as one
// GEMM (xw, [rows of X] x G*H), project(d, xw, pool), then step(M, xs, h, cell, gates)
// advances the M running rows one time step: xs holds their input projections [M, G*H] (the
// step may overwrite them), h and cell their states [M, H] (updated in place), gates is
// scratch of the same size as xs. make_step(d, pool) builds direction d's step (its R
// packed, or the prepacked one), with the pool its products may split across (null: run on
// the calling thread). H is the hidden size (the op read it from R); r_bytes the size of one
// direction's R as a step reads it. The op has checked W and R and the types of its inputs.
//
// Two directions on a pool of two threads run at once, one per thread, when one direction's
// R fits in half of a core's L2: then each core keeps its direction's R cached across steps
// and no step pays a fork and a join. A larger R is streamed from L3 every step; split per
// step instead, each core takes a fixed half of R's columns and keeps that in its L2
// (ddddocr's LSTM, H = 512, R 4 MiB per direction: 4.9-6.1 ms split per step, 9.1-9.9 ms
// with a direction per thread; best of 48 runs each at 2 threads, on a 2 MiB L2).
template <typename Project, typename MakeStep>
void run_recurrent(OpContext& c, int64_t G, bool has_cell, int64_t H, size_t r_bytes,
                   Project&& project, MakeStep&& make_step) {
  const Tensor& x = c.in(0);
  const std::string direction = c.node.attr_s("direction", "forward");
  const int64_t dirs = directions(c);
  const bool batch_first = c.node.attr_i("layout", 0) == 1;
  if (x.rank() != 3) c.fail("X must have rank 3, got " + shape_str(x.shape));
  LstmShape s{batch_first ? x.shape[1] : x.shape[0], batch_first ? x.shape[0] : x.shape[1],
              x.shape[2], H, dirs, batch_first};
  const int64_t hs = c.node.attr_i("hidden_size", H);
  if (hs != H) c.fail("hidden_size " + std::to_string(hs) + " does not match R's shape");
  const Tensor* bias = c.input(3);
  const Tensor* lens_t = c.input(4);
  const Tensor* h0 = c.input(5);
  const Tensor* c0 = has_cell ? c.input(6) : nullptr;
  check_shape(c, bias, {dirs, 2 * G * H}, "B");
  const Shape state = batch_first ? Shape{s.batch, dirs, H} : Shape{dirs, s.batch, H};
  check_shape(c, h0, state, "initial_h");
  check_shape(c, c0, state, "initial_c");
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
  float* yc = has_cell && c.wants_output(2) ? c.output(2, DType::f32, state).ptr<float>()
                                            : nullptr;
  if (y != nullptr) std::fill(y, y + s.seq * dirs * s.batch * H, 0.0f);

  ThreadPool* pool = c.pool && c.pool->size() > 1 ? c.pool : nullptr;
  const bool concurrent = dirs > 1 && pool && pool->size() <= static_cast<size_t>(dirs) &&
                          r_bytes <= cache_sizes().l2 / 2;
  ThreadPool* inner = concurrent ? nullptr : pool;
  // A step's product is split across the pool only when R does not fit in half of L2: then
  // each core streams half of it from L3 per step. An R that fits stays cached on the one
  // core that runs the steps, and a per-step fork and join (one per time step, each around
  // a few microseconds of products) would cost about what it saves.
  ThreadPool* step_pool = r_bytes > cache_sizes().l2 / 2 ? inner : nullptr;
  // Everything that allocates or may fail is made here, before any direction runs: a
  // direction running on a pool thread must not throw.
  const size_t x_rows = static_cast<size_t>(s.seq * s.batch);
  const size_t gh = static_cast<size_t>(G * H), hn = static_cast<size_t>(H);
  const size_t rows = static_cast<size_t>(s.batch);
  // The batch's rows, longest sequence first: the rows still running at step i (L > i) are
  // then a prefix, and each step multiplies all of them as one [rows, H] product.
  std::vector<int64_t> order(rows);
  for (size_t b = 0; b < rows; ++b) order[b] = static_cast<int64_t>(b);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return lens[static_cast<size_t>(a)] > lens[static_cast<size_t>(b)];
  });
  struct Direction {
    std::vector<float> h, cell, gates, xs, xw;  // h, cell: [rows, H] in `order`
  };
  std::vector<Direction> per_dir(static_cast<size_t>(dirs));
  using Step = decltype(make_step(int64_t(0), step_pool));
  std::vector<Step> steps;
  steps.reserve(static_cast<size_t>(dirs));
  for (int64_t d = 0; d < dirs; ++d) {
    Direction& dir = per_dir[static_cast<size_t>(d)];
    dir.h.resize(rows * hn);
    dir.cell.resize(rows * hn);
    dir.gates.resize(rows * gh);
    dir.xs.resize(rows * gh);
    dir.xw.resize(x_rows * gh);
    steps.push_back(make_step(d, step_pool));
  }
  auto run_direction = [&](int64_t d) {
    const bool backward = direction == "reverse" || d == 1;
    Direction& dir = per_dir[static_cast<size_t>(d)];
    Step& step = steps[static_cast<size_t>(d)];
    project(d, x_rows, dir.xw.data(), inner);
    float* h = dir.h.data();
    float* cell = dir.cell.data();
    for (size_t j = 0; j < rows; ++j) {
      const size_t srow = s.state_row(d, order[j]);
      for (size_t k = 0; k < hn; ++k) {
        h[j * hn + k] = h0 ? h0->ptr<float>()[srow + k] : 0.0f;
        cell[j * hn + k] = c0 ? c0->ptr<float>()[srow + k] : 0.0f;
      }
    }
    const int64_t longest = rows ? lens[static_cast<size_t>(order[0])] : 0;
    size_t running = rows;
    for (int64_t i = 0; i < longest; ++i) {
      while (running > 0 && lens[static_cast<size_t>(order[running - 1])] <= i) --running;
      // Each running row's input projection at its own time step (backward rows end at
      // their own length), gathered as the step's [running, G*H] rows.
      auto time_of = [&](size_t j) {
        return backward ? lens[static_cast<size_t>(order[j])] - 1 - i : i;
      };
      for (size_t j = 0; j < running; ++j) {
        const float* row = dir.xw.data() + s.x_index(time_of(j), order[j]) * gh;
        std::copy(row, row + gh, dir.xs.data() + j * gh);
      }
      step(running, dir.xs.data(), h, cell, dir.gates.data());
      if (y != nullptr)
        for (size_t j = 0; j < running; ++j)
          std::copy(h + j * hn, h + (j + 1) * hn, y + s.y_row(time_of(j), d, order[j]));
    }
    for (size_t j = 0; j < rows; ++j) {
      const size_t srow = s.state_row(d, order[j]);
      if (yh != nullptr) std::copy(h + j * hn, h + (j + 1) * hn, yh + srow);
      if (yc != nullptr) std::copy(cell + j * hn, cell + (j + 1) * hn, yc + srow);
    }
  };
  if (concurrent) {
    pool->parallel_for(static_cast<size_t>(dirs), 1, [&](size_t d0, size_t d1) {
      for (size_t d = d0; d < d1; ++d) run_direction(static_cast<int64_t>(d));
    });
  } else {
    for (int64_t d = 0; d < dirs; ++d) run_direction(d);
  }
}

// The float ops' side of the driver: every input float32 (sequence_lens aside), W
// [dirs, G*H, I] and R [dirs, G*H, H]; the input projections on W packed at build (a
// constant) or as it is. make_step(d, dw, pool) builds direction d's step.
template <typename MakeStep>
void run_float_recurrent(OpContext& c, const char* op, int64_t G, bool has_cell,
                         const PackedR* pre, MakeStep&& make_step) {
  const Tensor& x = c.in(0);
  const Tensor& w = c.in(1);
  const Tensor& r = c.in(2);
  for (size_t i = 0; i < c.n_inputs(); ++i) {
    const Tensor* t = c.input(i);
    if (t != nullptr && i != 4 && t->dtype != DType::f32)
      c.fail(std::string(op) + " input " + std::to_string(i) + " must be float32, got " +
             dtype_name(t->dtype));
  }
  const int64_t dirs = directions(c);
  if (x.rank() != 3) c.fail("X must have rank 3, got " + shape_str(x.shape));
  if (w.rank() != 3 || r.rank() != 3) c.fail("W and R must have rank 3");
  const int64_t H = r.shape[2];
  check_shape(c, &w, {dirs, G * H, x.shape[2]}, "W");
  check_shape(c, &r, {dirs, G * H, H}, "R");
  const Tensor* bias = c.input(3);
  auto weights = [&](int64_t d) {
    const float* Wb = bias ? bias->ptr<float>() + d * 2 * G * H : nullptr;
    return DirWeights{w.ptr<float>() + d * G * H * x.shape[2], r.ptr<float>() + d * G * H * H,
                      Wb, Wb ? Wb + G * H : nullptr};
  };
  auto project = [&](int64_t d, size_t x_rows, float* xw, ThreadPool* pool) {
    const DirWeights dw = weights(d);
    const size_t in = static_cast<size_t>(x.shape[2]), gh = static_cast<size_t>(G * H);
    Epilogue in_bias;
    if (dw.Wb) {
      in_bias.bias_kind = BiasKind::per_col;
      in_bias.bias = dw.Wb;
    }
    const PackedDirection* packed_dir = prepacked(pre, d);
    const PackedB* w_packed = packed_dir ? packed_dir->w.get() : nullptr;
    if (w_packed && w_packed->K() == in && w_packed->N() == gh)
      sgemm_packed(false, x_rows, x.ptr<float>(), in, *w_packed, xw, gh, in_bias, pool);
    else
      sgemm(false, true, x_rows, gh, in, x.ptr<float>(), in, dw.W, in, xw, gh, in_bias, pool);
  };
  run_recurrent(c, G, has_cell, H, static_cast<size_t>(G * H * H) * sizeof(float), project,
                [&](int64_t d, ThreadPool* pool) { return make_step(d, weights(d), pool); });
}

// ONNX's `clip`: every pre-activation bounded to [-clip, clip] when clip > 0.
struct Clip {
  float clip;
  float operator()(float v) const {
    return clip > 0.0f ? std::min(clip, std::max(-clip, v)) : v;
  }
  void operator()(float* x, size_t n) const {  // x[0, n) in place
    if (clip > 0.0f)
      for (size_t i = 0; i < n; ++i) x[i] = (*this)(x[i]);
  }
};

// One LSTM step after the products: gates (i, o, f, c pre-activations, 4H) -> the new cell
// state and h, in place. P: the peepholes (i, o, f), or null; couple: input_forget.
void lstm_cell(float* gates, const float* P, int64_t H, bool couple, Clip bound, float* h,
               float* cell) {
  if (!P && !couple && bound.clip <= 0.0f) {
    // The usual cell: the vectorized sigmoid over the i, o, f gates (contiguous) and tanh
    // over c, then tanh of the new cell state.
    apply_activation(Activation::sigmoid, 0.0f, 0.0f, gates, 3 * H);
    apply_activation(Activation::tanh, 0.0f, 0.0f, gates + 3 * H, H);
    for (int64_t k = 0; k < H; ++k)
      cell[k] = gates[2 * H + k] * cell[k] + gates[k] * gates[3 * H + k];
    std::copy(cell, cell + H, h);
    apply_activation(Activation::tanh, 0.0f, 0.0f, h, H);
    for (int64_t k = 0; k < H; ++k) h[k] *= gates[H + k];
    return;
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
}

void lstm(OpContext& c, const PackedR* pre) {
  const int64_t H = c.in(2).rank() == 3 ? c.in(2).shape[2] : 0;
  const Tensor* peep = c.input(7);
  const int64_t dirs = c.node.attr_s("direction", "forward") == "bidirectional" ? 2 : 1;
  check_shape(c, peep, {dirs, 3 * H}, "P");
  if (peep != nullptr && peep->dtype != DType::f32) c.fail("P must be float32");
  struct Step {
    const float* P;  // this direction's peepholes, or null
    int64_t H;
    bool couple;
    Clip bound;
    RecurrentWeights R;
    ThreadPool* pool;
    void operator()(size_t M, float* xs, float* h, float* cell, float*) const {
      const size_t gh = static_cast<size_t>(4 * H), hn = static_cast<size_t>(H);
      recurrent_product(R, M, h, xs, xs, gh, pool);
      for (size_t j = 0; j < M; ++j)
        lstm_cell(xs + j * gh, P, H, couple, bound, h + j * hn, cell + j * hn);
    }
  };
  const bool couple = c.node.attr_i("input_forget", 0) != 0;
  const Clip bound{c.node.attr_f("clip", 0.0f)};
  run_float_recurrent(c, "LSTM", 4, true, pre,
                [&](int64_t d, const DirWeights& dw, ThreadPool* pool) {
    return Step{peep ? peep->ptr<float>() + d * 3 * H : nullptr, H, couple, bound,
                pack_recurrent(dw, 0, 4 * H, H, prepacked_part(pre, d, 0)), pool};
  });
}

void gru(OpContext& c, const PackedR* pre) {
  struct Step {
    bool linear_before_reset;
    Clip bound;
    int64_t H;
    RecurrentWeights Rzr, Rh;  // z and r rows; h rows
    ThreadPool* pool;
    // xs rows: z, r, h input projections; z and r become the gates in place, and the h
    // part the new-gate pre-activation n (linear_before_reset: n goes to gates' rows).
    void operator()(size_t M, float* xs, float* h, float*, float* gates) const {
      const size_t hn = static_cast<size_t>(H), gh = 3 * hn;
      recurrent_product(Rzr, M, h, xs, xs, gh, pool);  // z, r: W x + Wb + R h + Rb
      for (size_t j = 0; j < M; ++j) {
        bound(xs + j * gh, 2 * hn);
        apply_activation(Activation::sigmoid, 0.0f, 0.0f, xs + j * gh, 2 * hn);
      }
      if (linear_before_reset) {
        recurrent_product(Rh, M, h, nullptr, gates, hn, pool);  // Rh h + Rbh
        for (size_t j = 0; j < M; ++j) {
          const float* zr = xs + j * gh;
          float* n = gates + j * hn;
          for (size_t k = 0; k < hn; ++k) n[k] = zr[2 * hn + k] + zr[hn + k] * n[k];
        }
      } else {
        for (size_t j = 0; j < M; ++j)
          for (size_t k = 0; k < hn; ++k) gates[j * hn + k] = xs[j * gh + hn + k] * h[j * hn + k];
        recurrent_product(Rh, M, gates, xs + 2 * hn, xs + 2 * hn, gh, pool);  // + Rh (r h)
      }
      for (size_t j = 0; j < M; ++j) {
        const float* z = xs + j * gh;
        float* n = linear_before_reset ? gates + j * hn : xs + j * gh + 2 * hn;
        bound(n, hn);
        apply_activation(Activation::tanh, 0.0f, 0.0f, n, hn);
        float* hj = h + j * hn;
        for (size_t k = 0; k < hn; ++k) hj[k] = (1.0f - z[k]) * n[k] + z[k] * hj[k];
      }
    }
  };
  const bool linear_before_reset = c.node.attr_i("linear_before_reset", 0) != 0;
  const Clip bound{c.node.attr_f("clip", 0.0f)};
  run_float_recurrent(c, "GRU", 3, false, pre,
                [&](int64_t d, const DirWeights& dw, ThreadPool* pool) {
    const int64_t H = c.in(2).shape[2];
    return Step{linear_before_reset, bound, H,
                pack_recurrent(dw, 0, 2 * H, H, prepacked_part(pre, d, 0)),
                pack_recurrent(dw, 2 * H, H, H, prepacked_part(pre, d, 1)), pool};
  });
}

void rnn(OpContext& c, const PackedR* pre) {
  struct Step {
    Clip bound;
    int64_t H;
    RecurrentWeights R;
    ThreadPool* pool;
    void operator()(size_t M, float* xs, float* h, float*, float*) const {
      const size_t n = M * static_cast<size_t>(H);
      recurrent_product(R, M, h, xs, xs, static_cast<size_t>(H), pool);
      bound(xs, n);
      apply_activation(Activation::tanh, 0.0f, 0.0f, xs, n);
      std::copy(xs, xs + n, h);
    }
  };
  const Clip bound{c.node.attr_f("clip", 0.0f)};
  run_float_recurrent(c, "RNN", 1, false, pre,
                [&](int64_t d, const DirWeights& dw, ThreadPool* pool) {
    const int64_t H = c.in(2).shape[2];
    return Step{bound, H, pack_recurrent(dw, 0, H, H, prepacked_part(pre, d, 0)), pool};
  });
}

// One direction's W or R of DynamicQuantizeLSTM as the int8 GEMM takes it (K x N, N = 4H):
// s8 panels (uint8 weights shifted by 128, and their zero points with them), and per column
// the weights' scale and zero point.
struct QuantWeights {
  PackedInt8B packed;
  std::vector<float> scale;
  std::vector<int32_t> zero;
  bool zero_free = true;  // every zero point 0: no row sums needed
};

// W or R (rank 3, [dirs, K, N], int8 or uint8) with its scale (float32, one per direction
// or [dirs, N]) and zero point (the weight's type, the same shapes, or absent), packed per
// direction.
std::vector<QuantWeights> pack_quant_weights(const NodeDesc& node, const char* what,
                                             const Tensor& w, const Tensor& scale,
                                             const Tensor* zero, int64_t dirs, int64_t K,
                                             int64_t N) {
  const std::string name(what);
  if (w.dtype != DType::i8 && w.dtype != DType::u8)
    node.fail(name + " must be int8 or uint8, got " + dtype_name(w.dtype));
  if (w.shape != Shape{dirs, K, N})
    node.fail(name + " has shape " + shape_str(w.shape) + ", expected " +
              shape_str(Shape{dirs, K, N}));
  const size_t per_dir = static_cast<size_t>(N);
  auto per_column = [&](const Tensor& t, const std::string& tname) {
    const size_t n = t.numel();
    if (n != static_cast<size_t>(dirs) && n != static_cast<size_t>(dirs) * per_dir)
      node.fail(tname + " has shape " + shape_str(t.shape) + "; expected one value per "
                "direction or one per direction and gate column");
    return n == static_cast<size_t>(dirs) ? size_t{1} : per_dir;
  };
  if (scale.dtype != DType::f32) node.fail(name + "_scale must be float32");
  const size_t scale_step = per_column(scale, name + "_scale");
  for (size_t i = 0; i < scale.numel(); ++i)
    if (!std::isfinite(scale.ptr<float>()[i]))
      node.fail(name + "_scale holds a value that is not finite");
  size_t zero_step = 0;
  if (zero) {
    if (zero->dtype != w.dtype)
      node.fail(name + "_zero_point must have " + name + "'s type " + dtype_name(w.dtype));
    zero_step = per_column(*zero, name + "_zero_point");
  }
  const bool shift = w.dtype == DType::u8;  // u8 - z == (u8 - 128) - (z - 128)
  std::vector<QuantWeights> out(static_cast<size_t>(dirs));
  std::vector<int8_t> s8;
  for (int64_t d = 0; d < dirs; ++d) {
    QuantWeights& q = out[static_cast<size_t>(d)];
    const size_t count = static_cast<size_t>(K) * per_dir;
    const int8_t* src = w.ptr<int8_t>() + static_cast<size_t>(d) * count;
    if (shift) {
      const uint8_t* u = w.ptr<uint8_t>() + static_cast<size_t>(d) * count;
      s8.resize(count);
      for (size_t i = 0; i < count; ++i) s8[i] = static_cast<int8_t>(int(u[i]) - 128);
      src = s8.data();
    }
    q.packed = pack_int8_b(src, static_cast<size_t>(K), per_dir, per_dir);
    q.scale.resize(per_dir);
    q.zero.assign(per_dir, 0);
    const float* ps =
        scale.ptr<float>() + static_cast<size_t>(d) * (scale_step == 1 ? 1 : per_dir);
    for (size_t j = 0; j < per_dir; ++j) q.scale[j] = ps[scale_step == 1 ? 0 : j];
    if (zero) {
      const size_t base = static_cast<size_t>(d) * (zero_step == 1 ? 1 : per_dir);
      for (size_t j = 0; j < per_dir; ++j) {
        const size_t i = base + (zero_step == 1 ? 0 : j);
        q.zero[j] = shift ? int(zero->ptr<uint8_t>()[i]) - 128 : int(zero->ptr<int8_t>()[i]);
        if (q.zero[j] != 0) q.zero_free = false;
      }
    }
  }
  return out;
}

// x (n floats) quantized to u8 with its own range (DynamicQuantizeLinear's rule) into q.
// `ok` turns false for a NaN or an infinite value (which have no range); the caller decides.
DynamicU8 quantize_dynamic(const float* x, size_t n, uint8_t* q, bool* ok) {
  const Int8Loops& k = int8_loops();
  float lo = 0.0f, hi = 0.0f;
  const bool nan = k.range(n, x, &lo, &hi);
  DynamicU8 p = dynamic_u8(lo, hi);
  *ok = !nan && std::isfinite(p.scale);
  if (!*ok) p = DynamicU8{1.0f, 1.0f, 0};
  k.quantize_u8(n, x, p.step, static_cast<float>(p.zero), q);
  return p;
}

// The per-call vectors of quantized_product, N = 4H each: the multipliers a_scale * w_scale,
// the int32 zero-point corrections -a_zero * colsum, zeros for a product with nothing to add.
struct ProductScratch {
  std::vector<float> mult, zeros;
  std::vector<int32_t> corr;
  explicit ProductScratch(size_t N) : mult(N), zeros(N, 0.0f), corr(N) {}
};

// out[i][j] = add[i][j] + float(sum_k (a[i][k] - za) (w[k][j] - zw[j])) * (a_scale * w_scale[j])
// for M rows of a (u8, K wide); add may be null (then 0). The multipliers a_scale * w_scale
// are float32 products and the zero-point corrections exact in int32, as onnxruntime forms
// them.
void quantized_product(const uint8_t* a, size_t M, DynamicU8 aq, const QuantWeights& w,
                       const float* add, float* out, ProductScratch& ps, ThreadPool* pool) {
  const PackedInt8B& pb = w.packed;
  const size_t K = pb.K, N = pb.N;
  const int32_t za = aq.zero;
  for (size_t j = 0; j < N; ++j) {
    ps.mult[j] = aq.scale * w.scale[j];
    ps.corr[j] = -za * pb.col_sums[j];
  }
  const Int8Loops& k = int8_loops();
  Int8GemmIO io;
  io.fill = int8_rows_of(a, K, K, pb.Kq);
  io.epilogue = [&](size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                    size_t ld) {
    for (size_t r = 0; r < rows; ++r) {
      const size_t i = i0 + r;
      float* o = out + i * N + j0;
      const float* ad = add ? add + i * N + j0 : ps.zeros.data() + j0;
      if (w.zero_free) {  // the usual symmetric weights: the vectorized row
        const Int8RowParams p{ps.mult.data() + j0, ad, false, 0.0f, 0.0f, 0.0f,
                              ps.corr.data() + j0};
        k.row_f32(cols, acc + r * ld, p, o);
        continue;
      }
      int32_t row_sum = 0;
      for (size_t kk = 0; kk < K; ++kk) row_sum += a[i * K + kk];
      for (size_t j = 0; j < cols; ++j) {
        const size_t col = j0 + j;
        const int32_t zw = w.zero[col];
        const int32_t v = acc[r * ld + j] + ps.corr[col] - zw * row_sum +
                          static_cast<int32_t>(K) * za * zw;
        o[j] = ad[j] + static_cast<float>(v) * ps.mult[col];
      }
    }
  };
  gemm_u8s8_fused(M, pb, io, pool);
}

// Inputs 8-11 (W_scale, W_zero_point, R_scale, R_zero_point) after the LSTM's eight.
void dynamic_quantize_lstm(OpContext& c, const std::vector<QuantWeights>* pre_w,
                           const std::vector<QuantWeights>* pre_r) {
  const Tensor& x = c.in(0);
  const Tensor& w = c.in(1);
  const Tensor& r = c.in(2);
  for (size_t i : {size_t{0}, size_t{3}, size_t{5}, size_t{6}, size_t{7}, size_t{8},
                   size_t{10}}) {
    const Tensor* t = c.input(i);
    if (t != nullptr && t->dtype != DType::f32)
      c.fail("DynamicQuantizeLSTM input " + std::to_string(i) + " must be float32, got " +
             dtype_name(t->dtype));
  }
  const int64_t dirs = directions(c);
  if (x.rank() != 3) c.fail("X must have rank 3, got " + shape_str(x.shape));
  if (r.rank() != 3) c.fail("R must have rank 3, got " + shape_str(r.shape));
  const int64_t H = r.shape[1];
  if (r.shape[2] != 4 * H)
    c.fail("R has shape " + shape_str(r.shape) + "; expected [directions, H, 4H]");
  std::vector<QuantWeights> own_w, own_r;
  if (!pre_w) {
    own_w = pack_quant_weights(c.node, "W", w, c.in(8), c.input(9), dirs, x.shape[2], 4 * H);
    pre_w = &own_w;
  }
  if (!pre_r) {
    own_r = pack_quant_weights(c.node, "R", r, c.in(10), c.input(11), dirs, H, 4 * H);
    pre_r = &own_r;
  }
  if ((*pre_w)[0].packed.K != static_cast<size_t>(x.shape[2]))
    c.fail("W has " + std::to_string((*pre_w)[0].packed.K) + " input rows, X has " +
           std::to_string(x.shape[2]) + " features");
  const Tensor* peep = c.input(7);
  check_shape(c, peep, {dirs, 3 * H}, "P");
  const Tensor* bias = c.input(3);
  // X quantized once for every direction's input products.
  check_shape(c, bias, {dirs, 8 * H}, "B");
  std::vector<uint8_t> xq(x.numel());
  bool finite = true;
  const DynamicU8 xp = quantize_dynamic(x.ptr<float>(), x.numel(), xq.data(), &finite);
  if (!finite) c.fail("X holds NaN or an infinite value; it cannot be quantized");
  // Per direction: the input and recurrent biases added as one vector (onnxruntime's order).
  std::vector<std::vector<float>> biases(static_cast<size_t>(dirs));
  if (bias)
    for (int64_t d = 0; d < dirs; ++d) {
      const float* b = bias->ptr<float>() + d * 8 * H;
      biases[static_cast<size_t>(d)].resize(static_cast<size_t>(4 * H));
      for (int64_t k = 0; k < 4 * H; ++k) biases[static_cast<size_t>(d)][k] = b[k] + b[4 * H + k];
    }
  struct Step {
    const QuantWeights* R;
    const float* bias;  // Wb + Rb, or null
    const float* P;
    int64_t H;
    bool couple;
    Clip bound;
    ThreadPool* pool;
    std::vector<uint8_t> hq;
    ProductScratch scratch;
    // Runs on a pool thread when the directions run at once: it must not throw. h stays
    // finite (a product of sigmoid and tanh) when X and the scales are. The M running rows'
    // h are quantized on their common range, as onnxruntime quantizes the batch's.
    void operator()(size_t M, float* xs, float* h, float* cell, float* gates) {
      const size_t gh = static_cast<size_t>(4 * H), hn = static_cast<size_t>(H);
      bool finite = true;
      const DynamicU8 hp = quantize_dynamic(h, M * hn, hq.data(), &finite);
      quantized_product(hq.data(), M, hp, *R, xs, gates, scratch, pool);
      for (size_t j = 0; j < M; ++j) {
        float* g = gates + j * gh;
        if (bias)
          for (size_t k = 0; k < gh; ++k) g[k] += bias[k];
        lstm_cell(g, P, H, couple, bound, h + j * hn, cell + j * hn);
      }
    }
  };
  const bool couple = c.node.attr_i("input_forget", 0) != 0;
  const Clip bound{c.node.attr_f("clip", 0.0f)};
  const int64_t batch = c.node.attr_i("layout", 0) == 1 ? x.shape[0] : x.shape[1];
  std::vector<ProductScratch> project_scratch(static_cast<size_t>(dirs),
                                              ProductScratch(static_cast<size_t>(4 * H)));
  auto project = [&](int64_t d, size_t x_rows, float* xw, ThreadPool* pool) {
    quantized_product(xq.data(), x_rows, xp, (*pre_w)[static_cast<size_t>(d)], nullptr, xw,
                      project_scratch[static_cast<size_t>(d)], pool);
  };
  run_recurrent(c, 4, true, H, static_cast<size_t>(4 * H * H), project,
                [&](int64_t d, ThreadPool* pool) {
    const size_t di = static_cast<size_t>(d);
    return Step{&(*pre_r)[di], bias ? biases[di].data() : nullptr,
                peep ? peep->ptr<float>() + d * 3 * H : nullptr, H, couple, bound, pool,
                std::vector<uint8_t>(static_cast<size_t>(batch * H)),
                ProductScratch(static_cast<size_t>(4 * H))};
  });
}

// DynamicQuantizeLSTM with W and R packed at build when they and their scales and zero
// points are constants.
class DynamicQuantizeLstmKernel final : public Kernel {
 public:
  DynamicQuantizeLstmKernel(const NodeDesc& node, const BuildContext& bc) {
    const Tensor* w = bc.constant(node, 1);
    const Tensor* r = bc.constant(node, 2);
    const Tensor* ws = bc.constant(node, 8);
    const Tensor* rs = bc.constant(node, 10);
    const bool has_wz = node.inputs.size() > 9 && node.inputs[9] >= 0;
    const bool has_rz = node.inputs.size() > 11 && node.inputs[11] >= 0;
    const Tensor* wz = has_wz ? bc.constant(node, 9) : nullptr;
    const Tensor* rz = has_rz ? bc.constant(node, 11) : nullptr;
    if (!w || !r || !ws || !rs || (has_wz && !wz) || (has_rz && !rz)) return;
    if (w->rank() != 3 || r->rank() != 3 || r->shape[2] != 4 * r->shape[1]) return;
    const int64_t dirs = r->shape[0], H = r->shape[1];
    w_ = pack_quant_weights(node, "W", *w, *ws, wz, dirs, w->shape[1], 4 * H);
    r_ = pack_quant_weights(node, "R", *r, *rs, rz, dirs, H, 4 * H);
  }
  // Packed here, W, R and their scales and zero points are not read again: the plan may drop
  // their bytes (only their shapes are looked at).
  bool reads_constant(size_t i) const override {
    return w_.empty() || (i != 1 && i != 2 && (i < 8 || i > 11));
  }

  void run(OpContext& c) const override {
    const bool packed = !w_.empty() && c.in(2).rank() == 3 &&
                        static_cast<size_t>(c.in(2).shape[0]) == w_.size();
    dynamic_quantize_lstm(c, packed ? &w_ : nullptr, packed ? &r_ : nullptr);
  }

 private:
  std::vector<QuantWeights> w_, r_;
};

// The op with R packed at build when R is a float32 constant of rank 3 (the usual export);
// a run whose R has another shape (cannot happen with a constant) packs its own.
class RecurrentKernel final : public Kernel {
 public:
  using Fn = void (*)(OpContext&, const PackedR*);
  RecurrentKernel(const NodeDesc& node, const BuildContext& bc, Fn fn, RowParts parts)
      : fn_(fn) {
    const Tensor* r = bc.constant(node, 2);
    if (!r || r->dtype != DType::f32 || r->rank() != 3 || r->shape[1] <= 0) return;
    const int64_t dirs = r->shape[0], GH = r->shape[1], H = r->shape[2];
    int64_t G = 0;
    for (const auto& part : parts) G = std::max(G, part.first + part.second);
    if (GH != G * H) return;  // the run reports the shape error
    // W (dirs x G*H x input): the input projections' B, packed as R is, when a constant.
    const Tensor* w = bc.constant(node, 1);
    const bool pack_w = w && w->dtype == DType::f32 && w->rank() == 3 && w->shape[0] == dirs &&
                        w->shape[1] == GH && w->shape[2] > 0;
    for (int64_t d = 0; d < dirs; ++d) {
      packed_.emplace_back();
      for (const auto& [first, n] : parts)
        packed_.back().r.push_back(pack_b(true, static_cast<size_t>(H),
                                          static_cast<size_t>(n * H),
                                          r->ptr<float>() + (d * GH + first * H) * H,
                                          static_cast<size_t>(H)));
      if (pack_w) {
        const size_t in = static_cast<size_t>(w->shape[2]);
        packed_.back().w = pack_b(true, in, static_cast<size_t>(GH),
                                  w->ptr<float>() + d * GH * w->shape[2], in);
      }
    }
    H_ = H;
  }
  void run(OpContext& c) const override {
    const Tensor& r = c.in(2);
    const bool fits = !packed_.empty() && r.rank() == 3 && r.shape[2] == H_ &&
                      static_cast<size_t>(r.shape[0]) == packed_.size();
    fn_(c, fits ? &packed_ : nullptr);
  }

 private:
  Fn fn_;
  PackedR packed_;
  int64_t H_ = 0;
};

KernelFactory recurrent(RecurrentKernel::Fn fn, RowParts parts) {
  return [fn, parts](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
    return std::make_unique<RecurrentKernel>(node, bc, fn, parts);
  };
}

}  // namespace

KILN_REGISTER_OP("", "LSTM", recurrent(lstm, {{0, 4}}));
KILN_REGISTER_OP("", "GRU", recurrent(gru, {{0, 2}, {2, 1}}));
KILN_REGISTER_OP("", "RNN", recurrent(rnn, {{0, 1}}));
KILN_REGISTER_OP("com.microsoft", "DynamicQuantizeLSTM",
                 [](const NodeDesc& node, const BuildContext& bc) -> std::unique_ptr<Kernel> {
                   return std::make_unique<DynamicQuantizeLstmKernel>(node, bc);
                 });

}  // namespace kiln::ops
