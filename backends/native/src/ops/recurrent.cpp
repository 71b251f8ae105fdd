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
// `clip` bounds every pre-activation to [-clip, clip]. A row with sequence_lens[b] = L runs
// steps 0..L-1 (backward: L-1..0); Y is zero past L and Y_h / Y_c hold the state at the last
// step run. layout=1 puts batch first in X, Y, initial and final states.
#include <cmath>

#include "kernels/gemm.h"
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

void recurrent_product(const RecurrentWeights& rw, const float* v, const float* add, float* out,
                       ThreadPool* pool) {
  Epilogue ep;
  if (rw.Rb) {
    ep.bias_kind = BiasKind::per_col;
    ep.bias = rw.Rb;
  }
  ep.residual = add;
  sgemm_packed(false, 1, v, rw.packed->K(), *rw.packed, out, rw.n, ep, pool);
}

// The shared driver. Per direction: the input projections W x_t + Wb of every step as one
// GEMM (xw, [rows of X] x G*H), then step(xw_t, h, cell, gates) advances one time step in
// place. make_step(d, dw, pool) builds direction d's step (its R packed, or the prepacked one),
// with the pool its recurrent products may split across (null: run on the calling thread).
//
// Two directions on a pool of two threads run at once, one per thread, when one direction's
// R fits in half of a core's L2: then each core keeps its direction's R cached across steps
// and no step pays a fork and a join. A larger R is streamed from L3 every step; split per
// step instead, each core takes a fixed half of R's columns and keeps that in its L2
// (ddddocr's LSTM, H = 512, R 4 MiB per direction: 4.9-6.1 ms split per step, 9.1-9.9 ms
// with a direction per thread; best of 48 runs each at 2 threads, on a 2 MiB L2).
// pre: the packed weights, or null.
template <typename MakeStep>
void run_recurrent(OpContext& c, const char* op, int64_t G, bool has_cell, const PackedR* pre,
                   MakeStep&& make_step) {
  const Tensor& x = c.in(0);
  const Tensor& w = c.in(1);
  const Tensor& r = c.in(2);
  for (size_t i = 0; i < c.n_inputs(); ++i) {
    const Tensor* t = c.input(i);
    if (t != nullptr && i != 4 && t->dtype != DType::f32)
      c.fail(std::string(op) + " input " + std::to_string(i) + " must be float32, got " +
             dtype_name(t->dtype));
  }
  const std::string direction = c.node.attr_s("direction", "forward");
  int64_t dirs = direction == "bidirectional" ? 2 : 1;
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional")
    c.fail("direction '" + direction + "' is not forward, reverse or bidirectional");
  const bool batch_first = c.node.attr_i("layout", 0) == 1;
  if (x.rank() != 3) c.fail("X must have rank 3, got " + shape_str(x.shape));
  if (w.rank() != 3 || r.rank() != 3) c.fail("W and R must have rank 3");
  LstmShape s{batch_first ? x.shape[1] : x.shape[0], batch_first ? x.shape[0] : x.shape[1],
              x.shape[2], r.shape[2], dirs, batch_first};
  const int64_t H = s.hidden;
  const int64_t hs = c.node.attr_i("hidden_size", H);
  if (hs != H) c.fail("hidden_size " + std::to_string(hs) + " does not match R's last dim");
  check_shape(c, &w, {dirs, G * H, s.input}, "W");
  check_shape(c, &r, {dirs, G * H, H}, "R");
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
  const size_t r_bytes = static_cast<size_t>(G * H * H) * sizeof(float);
  const bool concurrent = dirs > 1 && pool && pool->size() <= static_cast<size_t>(dirs) &&
                          r_bytes <= cache_sizes().l2 / 2;
  ThreadPool* inner = concurrent ? nullptr : pool;
  // Everything that allocates or may fail is made here, before any direction runs: a
  // direction running on a pool thread must not throw.
  const size_t x_rows = static_cast<size_t>(s.seq * s.batch);
  struct Direction {
    DirWeights dw;
    std::vector<float> h, cell, gates, xw;
  };
  std::vector<Direction> per_dir(static_cast<size_t>(dirs));
  using Step = decltype(make_step(int64_t(0), DirWeights{}, inner));
  std::vector<Step> steps;
  steps.reserve(static_cast<size_t>(dirs));
  for (int64_t d = 0; d < dirs; ++d) {
    const float* Wb = bias ? bias->ptr<float>() + d * 2 * G * H : nullptr;
    Direction& dir = per_dir[static_cast<size_t>(d)];
    dir.dw = {w.ptr<float>() + d * G * H * s.input, r.ptr<float>() + d * G * H * H, Wb,
              Wb ? Wb + G * H : nullptr};
    dir.h.resize(H);
    dir.cell.resize(H);
    dir.gates.resize(G * H);
    dir.xw.resize(x_rows * static_cast<size_t>(G * H));
    steps.push_back(make_step(d, dir.dw, inner));
  }
  auto run_direction = [&](int64_t d) {
    const bool backward = direction == "reverse" || d == 1;
    Direction& dir = per_dir[static_cast<size_t>(d)];
    Step& step = steps[static_cast<size_t>(d)];
    Epilogue in_bias;
    if (dir.dw.Wb) {
      in_bias.bias_kind = BiasKind::per_col;
      in_bias.bias = dir.dw.Wb;
    }
    const PackedDirection* packed_dir = prepacked(pre, d);
    const PackedB* w_packed = packed_dir ? packed_dir->w.get() : nullptr;
    if (w_packed && w_packed->K() == static_cast<size_t>(s.input) &&
        w_packed->N() == static_cast<size_t>(G * H))
      sgemm_packed(false, x_rows, x.ptr<float>(), static_cast<size_t>(s.input), *w_packed,
                   dir.xw.data(), static_cast<size_t>(G * H), in_bias, inner);
    else
      sgemm(false, true, x_rows, static_cast<size_t>(G * H), static_cast<size_t>(s.input),
            x.ptr<float>(), static_cast<size_t>(s.input), dir.dw.W,
            static_cast<size_t>(s.input), dir.xw.data(), static_cast<size_t>(G * H), in_bias,
            inner);
    float* h = dir.h.data();
    float* cell = dir.cell.data();
    for (int64_t b = 0; b < s.batch; ++b) {
      const size_t srow = s.state_row(d, b);
      for (int64_t k = 0; k < H; ++k) {
        h[k] = h0 ? h0->ptr<float>()[srow + k] : 0.0f;
        cell[k] = c0 ? c0->ptr<float>()[srow + k] : 0.0f;
      }
      const int64_t L = lens[static_cast<size_t>(b)];
      for (int64_t i = 0; i < L; ++i) {
        const int64_t t = backward ? L - 1 - i : i;
        const float* xw_t = dir.xw.data() + s.x_index(t, b) * static_cast<size_t>(G * H);
        step(xw_t, h, cell, dir.gates.data());
        if (y != nullptr) std::copy(h, h + H, y + s.y_row(t, d, b));
      }
      if (yh != nullptr) std::copy(h, h + H, yh + srow);
      if (yc != nullptr) std::copy(cell, cell + H, yc + srow);
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

struct Clip {
  float clip;
  float operator()(float v) const {
    return clip > 0.0f ? std::min(clip, std::max(-clip, v)) : v;
  }
};

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
    void operator()(const float* xw_t, float* h, float* cell, float* gates) const {
      recurrent_product(R, h, xw_t, gates, pool);
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
  };
  const bool couple = c.node.attr_i("input_forget", 0) != 0;
  const Clip bound{c.node.attr_f("clip", 0.0f)};
  run_recurrent(c, "LSTM", 4, true, pre,
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
    std::vector<float> r, n, rh;
    void operator()(const float* xw_t, float* h, float*, float* gates) {
      recurrent_product(Rzr, h, xw_t, gates, pool);  // z, r: W x + Wb + R h + Rb
      for (int64_t k = 0; k < H; ++k) r[k] = sigmoid(bound(gates[H + k]));
      if (linear_before_reset) {
        recurrent_product(Rh, h, nullptr, n.data(), pool);  // Rh h + Rbh
        for (int64_t j = 0; j < H; ++j) n[j] = std::tanh(bound(xw_t[2 * H + j] + r[j] * n[j]));
      } else {
        for (int64_t k = 0; k < H; ++k) rh[k] = r[k] * h[k];
        recurrent_product(Rh, rh.data(), xw_t + 2 * H, n.data(), pool);
        for (int64_t j = 0; j < H; ++j) n[j] = std::tanh(bound(n[j]));
      }
      for (int64_t k = 0; k < H; ++k) {
        const float z = sigmoid(bound(gates[k]));
        h[k] = (1.0f - z) * n[k] + z * h[k];
      }
    }
  };
  const bool linear_before_reset = c.node.attr_i("linear_before_reset", 0) != 0;
  const Clip bound{c.node.attr_f("clip", 0.0f)};
  run_recurrent(c, "GRU", 3, false, pre,
                [&](int64_t d, const DirWeights& dw, ThreadPool* pool) {
    const int64_t H = c.in(2).shape[2];
    const size_t h = static_cast<size_t>(H);
    return Step{linear_before_reset, bound, H,
                pack_recurrent(dw, 0, 2 * H, H, prepacked_part(pre, d, 0)),
                pack_recurrent(dw, 2 * H, H, H, prepacked_part(pre, d, 1)), pool,
                std::vector<float>(h), std::vector<float>(h), std::vector<float>(h)};
  });
}

void rnn(OpContext& c, const PackedR* pre) {
  struct Step {
    Clip bound;
    int64_t H;
    RecurrentWeights R;
    ThreadPool* pool;
    void operator()(const float* xw_t, float* h, float*, float* gates) const {
      recurrent_product(R, h, xw_t, gates, pool);
      for (int64_t k = 0; k < H; ++k) h[k] = std::tanh(bound(gates[k]));
    }
  };
  const Clip bound{c.node.attr_f("clip", 0.0f)};
  run_recurrent(c, "RNN", 1, false, pre,
                [&](int64_t d, const DirWeights& dw, ThreadPool* pool) {
    const int64_t H = c.in(2).shape[2];
    return Step{bound, H, pack_recurrent(dw, 0, H, H, prepacked_part(pre, d, 0)), pool};
  });
}

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

}  // namespace kiln::ops
