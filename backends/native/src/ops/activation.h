// The activation epilogue of kiln's fused ops (kiln::FusedConv, kiln::FusedGemm).
#pragma once
#include <limits>
#include <string>

#include "executor.h"
#include "kernels/gemm.h"

namespace kiln::ops {

struct FusedActivation {
  Activation act = Activation::none;
  float alpha = 0.0f;
  float beta = 0.0f;
};

// Reads `activation` plus its parameters (`<prefix>alpha`, `<prefix>beta`) from the node.
inline FusedActivation parse_activation(const NodeDesc& node, const std::string& prefix) {
  FusedActivation f;
  const std::string name = node.attr_s("activation", "");
  const std::string ka = prefix + "alpha";
  const std::string kb = prefix + "beta";
  if (name.empty()) {
    f.act = Activation::none;
  } else if (name == "Relu") {
    f.act = Activation::relu;
  } else if (name == "LeakyRelu") {
    f.act = Activation::leaky_relu;
    f.alpha = node.attr_f(ka, 0.01f);
  } else if (name == "Clip") {
    f.act = Activation::clip;
    f.alpha = node.attr_f(ka, -std::numeric_limits<float>::infinity());
    f.beta = node.attr_f(kb, std::numeric_limits<float>::infinity());
    if (f.alpha > f.beta) node.fail("Clip activation has min > max");
  } else if (name == "Sigmoid") {
    f.act = Activation::sigmoid;
  } else if (name == "SiLU") {
    f.act = Activation::silu;
  } else if (name == "HardSigmoid") {
    f.act = Activation::hard_sigmoid;
    f.alpha = node.attr_f(ka, 0.2f);
    f.beta = node.attr_f(kb, 0.5f);
  } else if (name == "HardSwish") {
    f.act = Activation::hard_swish;
  } else if (name == "Gelu") {
    f.act = Activation::gelu_erf;
  } else if (name == "GeluTanh") {
    f.act = Activation::gelu_tanh;
  } else if (name == "Tanh") {
    f.act = Activation::tanh;
  } else {
    node.fail("unknown activation '" + name + "'");
  }
  return f;
}

}  // namespace kiln::ops
