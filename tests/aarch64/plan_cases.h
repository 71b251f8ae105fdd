// Whole-plan cases for the cross-built driver: small graphs built with the executor's C++ API
// (as the Python lowering would), run on this CPU, and compared with outputs recorded on x86
// (expected_plans.txt, written by `kernel_driver --record FILE` on an x86 build).
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "executor.h"

namespace plans {

using kiln::Attr;
using kiln::DType;
using kiln::NodeDesc;
using kiln::Tensor;

// Deterministic values in [-1, 1) (a fixed LCG: the same on every platform and library).
inline std::vector<float> lcg_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 12345u;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * (static_cast<float>(s >> 8) / 8388608.0f - 1.0f);
  }
  return v;
}

inline Tensor f32_tensor(const kiln::Shape& shape, uint32_t seed, float scale = 1.0f) {
  Tensor t = kiln::make_heap_tensor(DType::f32, shape);
  const auto v = lcg_values(t.numel(), seed, scale);
  std::copy(v.begin(), v.end(), t.ptr<float>());
  return t;
}

template <typename T>
Tensor int_tensor(DType dt, const kiln::Shape& shape, const std::vector<T>& values) {
  Tensor t = kiln::make_heap_tensor(dt, shape);
  std::copy(values.begin(), values.end(), t.ptr<T>());
  return t;
}

inline Attr ints(std::vector<int64_t> v) {
  Attr a;
  a.kind = Attr::Kind::ints;
  a.ints = std::move(v);
  return a;
}
inline Attr i(int64_t v) {
  Attr a;
  a.kind = Attr::Kind::i;
  a.i = v;
  return a;
}
inline Attr s(std::string v) {
  Attr a;
  a.kind = Attr::Kind::s;
  a.s = std::move(v);
  return a;
}
inline Attr f(double v) {
  Attr a;
  a.kind = Attr::Kind::f;
  a.f = v;
  return a;
}

// A plan under construction: values by name, nodes in order, all intermediates on the heap.
struct Builder {
  std::map<std::string, int> ids;
  std::vector<std::pair<int, Tensor>> constants;
  std::vector<NodeDesc> nodes;
  int id(const std::string& name) {
    auto it = ids.find(name);
    if (it != ids.end()) return it->second;
    const int v = static_cast<int>(ids.size());
    ids[name] = v;
    return v;
  }
  void constant(const std::string& name, Tensor t) { constants.emplace_back(id(name), t); }
  void node(const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
            std::map<std::string, Attr> attrs = {}, int opset = 17) {
    NodeDesc n;
    n.name = op + "_" + std::to_string(nodes.size());
    const std::string kiln_prefix = "kiln::";  // kiln's own ops, as the lowering names them
    const bool own = op.compare(0, kiln_prefix.size(), kiln_prefix) == 0;
    n.domain = own ? "kiln" : "";
    n.op = own ? op.substr(kiln_prefix.size()) : op;
    n.opset = opset;
    for (auto& s : in) n.inputs.push_back(s.empty() ? -1 : id(s));
    for (auto& s : out) n.outputs.push_back(id(s));
    n.attrs = std::move(attrs);
    nodes.push_back(std::move(n));
  }
  // Builds and runs the plan on `input`, returning the first output as floats.
  std::vector<float> run(const std::string& in, Tensor input, const std::string& out) {
    const int in_id = id(in), out_id = id(out);
    kiln::Plan plan(static_cast<int>(ids.size()));
    plan.set_threads(1);
    for (auto& [v, t] : constants) plan.add_constant(v, t);
    for (auto& n : nodes) plan.add_node(n);
    const size_t nv = ids.size();
    plan.set_memory(std::vector<int64_t>(nv, -1), std::vector<int64_t>(nv, 0), 0,
                    std::vector<std::vector<int>>(nodes.size()));
    plan.set_io({in_id}, {out_id});
    const std::vector<Tensor> outs = plan.run({input});
    const Tensor& y = outs.at(0);
    std::vector<float> v(y.numel());
    if (y.dtype == DType::f32) std::copy(y.ptr<float>(), y.ptr<float>() + v.size(), v.begin());
    else if (y.dtype == DType::i32)
      for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>(y.ptr<int32_t>()[k]);
    return v;
  }
};

// Conv 3x3 + Relu, depthwise 3x3 stride 2 + Relu, MaxPool, Conv 1x1, GlobalAveragePool,
// Flatten, Gemm, Softmax: the shapes of a mobile CNN, with edge sizes (13x13 input).
inline std::vector<float> small_cnn() {
  Builder b;
  b.constant("w1", f32_tensor({8, 3, 3, 3}, 1, 0.5f));
  b.constant("b1", f32_tensor({8}, 2, 0.1f));
  b.constant("w2", f32_tensor({8, 1, 3, 3}, 3, 0.5f));
  b.constant("b2", f32_tensor({8}, 4, 0.1f));
  b.constant("w3", f32_tensor({17, 8, 1, 1}, 5, 0.5f));
  b.constant("wf", f32_tensor({10, 17}, 6, 0.5f));
  b.constant("bf", f32_tensor({10}, 7, 0.1f));
  b.node("Conv", {"x", "w1", "b1"}, {"c1"}, {{"pads", ints({1, 1, 1, 1})}});
  b.node("Relu", {"c1"}, {"r1"});
  b.node("Conv", {"r1", "w2", "b2"}, {"c2"},
         {{"group", i(8)}, {"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})}});
  b.node("Relu", {"c2"}, {"r2"});
  b.node("MaxPool", {"r2"}, {"p"}, {{"kernel_shape", ints({2, 2})}, {"strides", ints({1, 1})}});
  b.node("Conv", {"p", "w3"}, {"c3"});
  b.node("GlobalAveragePool", {"c3"}, {"g"});
  b.node("Flatten", {"g"}, {"fl"});
  b.node("Gemm", {"fl", "wf", "bf"}, {"logits"}, {{"transB", i(1)}});
  b.node("Softmax", {"logits"}, {"y"});
  return b.run("x", f32_tensor({2, 3, 13, 13}, 8), "y");
}

// One transformer block: single-head attention and an MLP, with residuals and LayerNorm.
inline std::vector<float> transformer_block() {
  Builder b;
  const int64_t S = 7, D = 12, H = 20;
  for (const char* w : {"wq", "wk", "wv", "wo"})
    b.constant(w, f32_tensor({D, D}, 10 + w[1], 0.3f));
  b.constant("w1", f32_tensor({D, H}, 20, 0.3f));
  b.constant("w2", f32_tensor({H, D}, 21, 0.3f));
  b.constant("g", f32_tensor({D}, 22, 1.0f));
  b.constant("be", f32_tensor({D}, 23, 0.1f));
  b.node("MatMul", {"x", "wq"}, {"q"});
  b.node("MatMul", {"x", "wk"}, {"k"});
  b.node("MatMul", {"x", "wv"}, {"v"});
  b.node("Transpose", {"k"}, {"kt"}, {{"perm", ints({0, 2, 1})}});
  b.node("MatMul", {"q", "kt"}, {"s"});
  b.node("Softmax", {"s"}, {"p"}, {{"axis", i(-1)}});
  b.node("MatMul", {"p", "v"}, {"a"});
  b.node("MatMul", {"a", "wo"}, {"o"});
  b.node("Add", {"o", "x"}, {"r"});
  b.node("LayerNormalization", {"r", "g", "be"}, {"n"}, {{"axis", i(-1)}, {"epsilon", f(1e-5)}});
  b.node("MatMul", {"n", "w1"}, {"f1"});
  b.node("Gelu", {"f1"}, {"gl"}, {}, 20);
  b.node("MatMul", {"gl", "w2"}, {"f2"});
  b.node("Add", {"f2", "n"}, {"y"});
  return b.run("x", f32_tensor({2, S, D}, 24), "y");
}

// int8: DynamicQuantizeLinear, then MatMulInteger against s8 weights (exact int32 products).
inline std::vector<float> int8_matmul() {
  Builder b;
  const int64_t K = 37, N = 45;
  std::vector<int8_t> w(K * N);
  const auto r = lcg_values(w.size(), 30);
  for (size_t k = 0; k < w.size(); ++k) w[k] = static_cast<int8_t>(r[k] * 127.0f);
  b.constant("w", int_tensor<int8_t>(DType::i8, {K, N}, w));
  b.constant("wz", int_tensor<int8_t>(DType::i8, {}, {int8_t(3)}));
  b.node("DynamicQuantizeLinear", {"x"}, {"xq", "xs", "xz"});
  b.node("MatMulInteger", {"xq", "w", "xz", "wz"}, {"y"});
  return b.run("x", f32_tensor({13, K}, 31), "y");
}

inline Tensor f32_scalar(float v) { return int_tensor<float>(DType::f32, {}, {v}); }
inline Tensor u8_scalar(uint8_t v) { return int_tensor<uint8_t>(DType::u8, {}, {v}); }

inline Tensor s8_weights(const kiln::Shape& shape, uint32_t seed) {
  Tensor t = kiln::make_heap_tensor(DType::i8, shape);
  const auto r = lcg_values(t.numel(), seed);
  for (size_t k = 0; k < r.size(); ++k) t.ptr<int8_t>()[k] = static_cast<int8_t>(r[k] * 127.0f);
  return t;
}

// An int8 convnet as the native lowering builds it from a QDQ model (int8_fusion.py):
// QuantizeLinear, kiln::QConv 3x3 + Relu (5 channels: rounded up to whole k quads; u8 out in
// NHWC), kiln::QMaxPool on the bytes (NHWC in and out), kiln::QConv 3x3 stride 2 with
// per-tensor weight scale (NHWC in, u8 NCHW out, zero point 128), DequantizeLinear.
inline std::vector<float> int8_convnet() {
  Builder b;
  b.constant("xs", f32_scalar(0.02f));
  b.constant("xz", u8_scalar(128));
  b.constant("w1", s8_weights({8, 5, 3, 3}, 40));
  std::vector<float> ws1(8);
  for (size_t k = 0; k < ws1.size(); ++k) ws1[k] = 0.002f + 0.0005f * k;
  b.constant("ws1", int_tensor<float>(DType::f32, {8}, ws1));
  b.constant("b1", f32_tensor({8}, 41, 0.2f));
  b.constant("s1", f32_scalar(0.05f));
  b.constant("z0", u8_scalar(0));
  b.constant("w2", s8_weights({12, 8, 3, 3}, 42));
  b.constant("ws2", f32_scalar(0.003f));
  b.constant("b2", f32_tensor({12}, 43, 0.2f));
  b.constant("s2", f32_scalar(0.04f));
  b.constant("z2", u8_scalar(128));
  b.node("QuantizeLinear", {"x", "xs", "xz"}, {"xq"});
  b.node("kiln::QConv", {"xq", "w1", "xs", "xz", "ws1", "b1", "s1", "z0"}, {"c1"},
         {{"pads", ints({1, 1, 1, 1})}, {"activation", s("Relu")},
          {"kiln_layout_out", s("NHWC")}});
  b.node("kiln::QMaxPool", {"c1", "s1", "z0", "s1", "z0"}, {"p1"},
         {{"kernel_shape", ints({2, 2})}, {"strides", ints({2, 2})},
          {"kiln_layout_in", s("NHWC")}, {"kiln_layout_out", s("NHWC")}});
  b.node("kiln::QConv", {"p1", "w2", "s1", "z0", "ws2", "b2", "s2", "z2"}, {"c2"},
         {{"strides", ints({2, 2})}, {"pads", ints({1, 1, 1, 1})},
          {"kiln_layout_in", s("NHWC")}});
  b.node("DequantizeLinear", {"c2", "s2", "z2"}, {"y"});
  return b.run("x", f32_tensor({2, 5, 11, 11}, 44), "y");
}

struct Case {
  const char* name;
  std::vector<float> (*run)();
  float atol, rtol;
};
inline const Case kCases[] = {{"small_cnn", small_cnn, 1e-5f, 1e-4f},
                              {"transformer_block", transformer_block, 1e-4f, 1e-4f},
                              {"int8_matmul", int8_matmul, 0.0f, 0.0f},
                              {"int8_convnet", int8_convnet, 0.0f, 0.0f}};

}  // namespace plans
