// ai.onnx.ml TreeEnsembleClassifier and TreeEnsembleRegressor (opsets 1 and 3), int64 labels.
//
// At build the trees are compiled into one array of nodes laid out depth first (false child
// next), a leaf pointing at its run of (target, weight) pairs; at run time blocks of rows
// are split across the pool and every tree walks a whole block before the next tree, so its
// nodes stay in cache. The numbers follow onnxruntime: thresholds and sums in double for a
// double input and in float otherwise (an int input is compared as float), a NaN feature
// takes the false branch unless missing_value_tracks_true, and its rules for two classes
// (one class weighted: scores [1 - p, p] or [-s, s], label by p > 0.5 or s > 0) and for a
// target no leaf wrote (0, base value or not).
#include <algorithm>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "ops/ml_common.h"

namespace kiln::ops {
namespace {

using namespace ml;

// ---- tree ensembles ------------------------------------------------------------------------

enum Mode : uint8_t { kLeq, kLt, kGte, kGt, kEq, kNeq, kLeaf };

Mode mode_of(const std::string& s, const NodeDesc& n) {
  if (s == "BRANCH_LEQ") return kLeq;
  if (s == "BRANCH_LT") return kLt;
  if (s == "BRANCH_GTE") return kGte;
  if (s == "BRANCH_GT") return kGt;
  if (s == "BRANCH_EQ") return kEq;
  if (s == "BRANCH_NEQ") return kNeq;
  if (s == "LEAF") return kLeaf;
  n.fail("node mode '" + s + "' is not one of BRANCH_LEQ/LT/GTE/GT/EQ/NEQ or LEAF");
}

// One node of the compiled layout: a branch's false child is usually the next node (depth
// first, false side first), so a walk mostly streams forward.
template <typename TH>
struct TreeNode {
  TH value;          // a branch's threshold; a leaf's first weight (the one-target path)
  int32_t feature;
  uint32_t yes;      // a branch's true child; a leaf's first entry in `weights`
  uint32_t no;       // a branch's false child; a leaf's number of weights
  uint8_t mode;
  uint8_t nan_yes;   // missing_value_tracks_true: a NaN feature takes the true branch
};

template <typename TH>
struct LeafWeight {
  uint32_t target;
  TH value;
};

template <typename TH>
struct Forest {
  std::vector<TreeNode<TH>> nodes;
  std::vector<uint32_t> roots;
  std::vector<LeafWeight<TH>> weights;
};

// The ensemble's attributes, read and checked once.
struct TreeSpec {
  std::vector<int64_t> tree_ids, node_ids, features, yes, no, missing_yes;
  std::vector<Mode> modes;
  std::vector<double> values;
  std::vector<int64_t> w_trees, w_nodes, w_targets;
  std::vector<double> w_values;
};

TreeSpec read_tree_spec(const NodeDesc& n, const std::string& prefix, size_t targets) {
  TreeSpec s;
  s.tree_ids = n.attr_ints("nodes_treeids", {});
  s.node_ids = n.attr_ints("nodes_nodeids", {});
  s.features = n.attr_ints("nodes_featureids", {});
  s.yes = n.attr_ints("nodes_truenodeids", {});
  s.no = n.attr_ints("nodes_falsenodeids", {});
  s.missing_yes = n.attr_ints("nodes_missing_value_tracks_true", {});
  for (const std::string& m : n.attr_strings("nodes_modes")) s.modes.push_back(mode_of(m, n));
  s.values = floats_or_tensor(n, "nodes_values");
  const size_t count = s.tree_ids.size();
  if (count == 0) n.fail("the ensemble has no nodes");
  for (auto [v, name] : {std::pair{&s.node_ids, "nodes_nodeids"}, {&s.features, "nodes_featureids"},
                         {&s.yes, "nodes_truenodeids"}, {&s.no, "nodes_falsenodeids"}})
    if (v->size() != count)
      n.fail(std::string(name) + " has " + std::to_string(v->size()) + " entries; nodes_treeids " +
             std::to_string(count));
  if (s.modes.size() != count) n.fail("nodes_modes does not have one entry per node");
  if (s.values.size() != count) n.fail("nodes_values does not have one entry per node");
  s.w_trees = n.attr_ints(prefix + "_treeids", {});
  s.w_nodes = n.attr_ints(prefix + "_nodeids", {});
  s.w_targets = n.attr_ints(prefix + "_ids", {});
  s.w_values = floats_or_tensor(n, prefix + "_weights");
  const size_t nw = s.w_trees.size();
  if (s.w_nodes.size() != nw || s.w_targets.size() != nw || s.w_values.size() != nw)
    n.fail(prefix + "_treeids, _nodeids, _ids and _weights must have the same length");
  for (size_t i = 0; i < nw; ++i)
    if (s.w_targets[i] < 0 || static_cast<size_t>(s.w_targets[i]) >= targets)
      n.fail(prefix + "_ids[" + std::to_string(i) + "] = " + std::to_string(s.w_targets[i]) +
             " is not below the number of " + (prefix == "class" ? "classes, " : "targets, ") +
             std::to_string(targets));
  for (size_t i = 0; i < count; ++i)
    if (s.modes[i] != kLeaf && (s.features[i] < 0 || s.features[i] > INT32_MAX))
      n.fail("node " + std::to_string(i) + " reads feature " + std::to_string(s.features[i]));
  return s;
}

// Lays the trees out depth first (false child first); shared subtrees are placed once, and
// a cycle is refused (a walk would never end).
template <typename TH>
Forest<TH> compile_forest(const TreeSpec& s, const NodeDesc& n) {
  const size_t count = s.tree_ids.size();
  auto key = [](int64_t tree, int64_t node) {
    return (static_cast<uint64_t>(tree) << 32) ^ static_cast<uint32_t>(node);
  };
  std::unordered_map<uint64_t, size_t> index;
  index.reserve(count * 2);
  for (size_t i = 0; i < count; ++i)
    if (!index.emplace(key(s.tree_ids[i], s.node_ids[i]), i).second)
      n.fail("node " + std::to_string(s.node_ids[i]) + " of tree " +
             std::to_string(s.tree_ids[i]) + " is given twice");
  auto child = [&](size_t i, int64_t id, const char* side) {
    auto it = index.find(key(s.tree_ids[i], id));
    if (it == index.end())
      n.fail("node " + std::to_string(s.node_ids[i]) + " of tree " +
             std::to_string(s.tree_ids[i]) + " has " + side + " child " + std::to_string(id) +
             ", which the tree does not have");
    if (it->second == i)
      n.fail("node " + std::to_string(s.node_ids[i]) + " of tree " +
             std::to_string(s.tree_ids[i]) + " is its own child");
    return it->second;
  };
  Forest<TH> f;
  f.nodes.reserve(count);
  std::vector<int64_t> placed(count, -1);
  std::vector<uint8_t> open(count, 0);
  // place(i): recursion depth is the tree's depth
  std::function<uint32_t(size_t)> place = [&](size_t i) -> uint32_t {
    if (placed[i] >= 0) {
      if (open[i]) n.fail("tree " + std::to_string(s.tree_ids[i]) + " has a cycle");
      return static_cast<uint32_t>(placed[i]);
    }
    const uint32_t at = static_cast<uint32_t>(f.nodes.size());
    placed[i] = at;
    TreeNode<TH> node{};
    node.value = static_cast<TH>(s.values[i]);
    node.mode = s.modes[i];
    node.feature = node.mode == kLeaf ? 0 : static_cast<int32_t>(s.features[i]);
    node.nan_yes = i < s.missing_yes.size() && s.missing_yes[i] == 1;
    f.nodes.push_back(node);
    if (node.mode != kLeaf) {
      open[i] = 1;
      const uint32_t no = place(child(i, s.no[i], "false"));
      const uint32_t yes = place(child(i, s.yes[i], "true"));
      open[i] = 0;
      f.nodes[at].no = no;
      f.nodes[at].yes = yes;
    }
    return at;
  };
  int64_t previous = 0;
  for (size_t i = 0; i < count; ++i) {
    if (i == 0 || s.tree_ids[i] != previous) f.roots.push_back(place(i));
    previous = s.tree_ids[i];
  }
  // weights by (tree, node, position): a leaf's weights are contiguous and in file order
  std::vector<size_t> order(s.w_trees.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (s.w_trees[a] != s.w_trees[b]) return s.w_trees[a] < s.w_trees[b];
    return s.w_nodes[a] < s.w_nodes[b];
  });
  for (size_t i : order) {
    auto it = index.find(key(s.w_trees[i], s.w_nodes[i]));
    if (it == index.end())
      n.fail("a weight names node " + std::to_string(s.w_nodes[i]) + " of tree " +
             std::to_string(s.w_trees[i]) + ", which does not exist");
    if (placed[it->second] < 0) continue;  // unreachable
    TreeNode<TH>& leaf = f.nodes[static_cast<size_t>(placed[it->second])];
    if (leaf.mode != kLeaf) continue;  // the reference ignores weights on branches
    const TH w = static_cast<TH>(s.w_values[i]);
    if (leaf.no == 0) {
      leaf.yes = static_cast<uint32_t>(f.weights.size());
      leaf.value = w;
    }
    ++leaf.no;
    f.weights.push_back({static_cast<uint32_t>(s.w_targets[i]), w});
  }
  return f;
}

// Whether row value v takes node's true branch. kMode: the mode every branch has (kLeaf: read
// it from the node); kNan: some node sends NaN to its true branch.
template <int kMode, bool kNan, typename X, typename TH>
inline bool goes_yes(const TreeNode<TH>& node, X v) {
  const int mode = kMode == kLeaf ? node.mode : kMode;
  bool yes;
  switch (mode) {
    case kLeq: yes = v <= node.value; break;
    case kLt: yes = v < node.value; break;
    case kGte: yes = v >= node.value; break;
    case kGt: yes = v > node.value; break;
    case kEq: yes = v == node.value; break;
    default: yes = v != node.value; break;
  }
  if constexpr (kNan && std::is_floating_point_v<X>) yes = yes || (node.nan_yes && std::isnan(v));
  return yes;
}

// The leaf each of m rows (x, `stride` apart) reaches from `root`. Eight rows walk the tree in
// lockstep: their steps are independent, so the loads and compares of one row overlap the
// others' instead of each row waiting out its own chain of dependent loads.
template <int kMode, bool kNan, typename X, typename TH>
void find_leaves(const TreeNode<TH>* nodes, uint32_t root, const X* x, size_t stride, size_t m,
                 uint32_t* leaves) {
  constexpr size_t kGroup = 8;
  size_t r = 0;
  for (; r + kGroup <= m; r += kGroup) {
    uint32_t at[kGroup];
    for (size_t g = 0; g < kGroup; ++g) at[g] = root;
    for (bool moving = true; moving;) {
      moving = false;
      for (size_t g = 0; g < kGroup; ++g) {
        const TreeNode<TH>& node = nodes[at[g]];
        if (node.mode == kLeaf) continue;
        const bool yes = goes_yes<kMode, kNan>(node, x[(r + g) * stride + node.feature]);
        at[g] = yes ? node.yes : node.no;
        moving = true;
      }
    }
    for (size_t g = 0; g < kGroup; ++g) leaves[r + g] = at[g];
  }
  for (; r < m; ++r) {
    uint32_t at = root;
    const X* row = x + r * stride;
    while (nodes[at].mode != kLeaf) {
      const TreeNode<TH>& node = nodes[at];
      at = goes_yes<kMode, kNan>(node, row[node.feature]) ? node.yes : node.no;
    }
    leaves[r] = at;
  }
}

enum class Agg { sum, average, min, max };

struct EnsembleSpec {
  bool classifier = false;
  size_t targets = 0;            // targets or classes
  Agg agg = Agg::sum;
  Post post = Post::none;
  std::vector<double> base;
  std::vector<int64_t> labels;
  bool binary = false;           // two classes, every weight on one of them
  bool all_positive = true;      // no negative weight
  int32_t max_feature = -1;
};

class TreeEnsembleKernel final : public Kernel {
 public:
  TreeEnsembleKernel(EnsembleSpec spec, TreeSpec trees, const NodeDesc& node)
      : spec_(std::move(spec)), trees_(std::move(trees)) {
    f32_ = compile_forest<float>(trees_, node);
    depth_ = estimate_depth(f32_);
    for (size_t i = 0; i < trees_.modes.size(); ++i) {
      if (trees_.modes[i] == kLeaf) continue;
      same_mode_ = same_mode_ < 0 || same_mode_ == trees_.modes[i] ? trees_.modes[i] : kLeaf;
      any_nan_yes_ = any_nan_yes_ || (i < trees_.missing_yes.size() && trees_.missing_yes[i] == 1);
    }
  }

  void run(OpContext& c) const override {
    const Tensor& x = c.in(0);
    if (x.rank() == 0 || x.rank() > 2)
      c.fail("input X has shape " + shape_str(x.shape) + "; expected [N, C] or [C]");
    const size_t rows = x.rank() == 1 ? 1 : static_cast<size_t>(x.shape[0]);
    // a 1-D input is one row of one feature to the reference
    const size_t cols = x.rank() == 2 ? static_cast<size_t>(x.shape[1]) : 1;
    const size_t stride = x.rank() == 1 ? static_cast<size_t>(x.shape[0]) : cols;
    if (spec_.max_feature >= 0 && static_cast<size_t>(spec_.max_feature) >= cols)
      c.fail("the trees read feature " + std::to_string(spec_.max_feature) +
             " but input X has " + std::to_string(cols) + " feature(s) (shape " +
             shape_str(x.shape) + ")");
    const int64_t n = static_cast<int64_t>(rows);
    const size_t width = spec_.targets;
    int64_t* labels = nullptr;
    float* z;
    if (spec_.classifier) {
      labels = c.output(0, DType::i64, {n}).ptr<int64_t>();
      z = c.output(1, DType::f32, {n, static_cast<int64_t>(width)}).ptr<float>();
    } else {
      z = c.output(0, DType::f32, {n, static_cast<int64_t>(width)}).ptr<float>();
    }
    dispatch_ml(x.dtype, c.node, [&](auto tag) {
      using X = decltype(tag);
      if constexpr (std::is_same_v<X, double>) {
        std::call_once(f64_once_, [&] { f64_ = compile_forest<double>(trees_, c.node); });
        evaluate<X, double>(c, f64_, x.ptr<X>(), rows, stride, z, labels);
      } else {
        evaluate<X, float>(c, f32_, x.ptr<X>(), rows, stride, z, labels);
      }
    });
  }

 private:
  template <typename TH>
  static size_t estimate_depth(const Forest<TH>& f) {
    const size_t per_tree = f.roots.empty() ? 1 : f.nodes.size() / f.roots.size() + 1;
    size_t depth = 1;
    while ((size_t(1) << depth) < per_tree) ++depth;
    return depth;
  }

  // Rows are split across the pool in blocks; inside a block every tree visits every row
  // before the next tree, so a tree's nodes stay in cache across the block.
  template <typename X, typename TH>
  void evaluate(OpContext& c, const Forest<TH>& f, const X* x, size_t rows, size_t stride,
                float* z, int64_t* labels) const {
    const size_t width = spec_.targets;
    const size_t work = rows * f.roots.size() * depth_ * 16;
    // the sklearn case (every branch BRANCH_LEQ, no NaN routing) compiles to its own loop
    auto walk = same_mode_ == kLeq && !any_nan_yes_ ? find_leaves<kLeq, false, X, TH>
                : any_nan_yes_                      ? find_leaves<kLeaf, true, X, TH>
                                                    : find_leaves<kLeaf, false, X, TH>;
    parallel(c.pool, rows, 1, [&](size_t begin, size_t end) {
      constexpr size_t kBlock = 128;
      std::vector<TH> score(kBlock * width);
      std::vector<uint8_t> has(kBlock * width);
      std::vector<uint32_t> leaves(kBlock);
      for (size_t b = begin; b < end; b += kBlock) {
        const size_t m = std::min(kBlock, end - b);
        std::fill(score.begin(), score.begin() + m * width, TH(0));
        std::fill(has.begin(), has.begin() + m * width, uint8_t(0));
        for (uint32_t root : f.roots) {
          walk(f.nodes.data(), root, x + b * stride, stride, m, leaves.data());
          for (size_t r = 0; r < m; ++r)
            add_leaf(f, f.nodes[leaves[r]], score.data() + r * width, has.data() + r * width);
        }
        for (size_t r = 0; r < m; ++r)
          finish(f, score.data() + r * width, has.data() + r * width, z + (b + r) * width,
                 labels ? labels + b + r : nullptr);
      }
    }, work);
  }

  template <typename TH>
  void add_leaf(const Forest<TH>& f, const TreeNode<TH>& leaf, TH* score, uint8_t* has) const {
    if (!spec_.classifier && spec_.targets == 1) {  // one target: the leaf's first weight
      const TH v = leaf.value;
      switch (spec_.agg) {
        case Agg::sum:
        case Agg::average: score[0] += v; break;
        case Agg::min: score[0] = (!has[0] || v < score[0]) ? v : score[0]; has[0] = 1; break;
        case Agg::max: score[0] = (!has[0] || v > score[0]) ? v : score[0]; has[0] = 1; break;
      }
      return;
    }
    const LeafWeight<TH>* w = f.weights.data() + leaf.yes;
    for (uint32_t k = 0; k < leaf.no; ++k) {
      const uint32_t t = w[k].target;
      const TH v = w[k].value;
      switch (spec_.classifier ? Agg::sum : spec_.agg) {
        case Agg::sum:
        case Agg::average: score[t] += v; break;
        case Agg::min: score[t] = (!has[t] || v < score[t]) ? v : score[t]; break;
        case Agg::max: score[t] = (!has[t] || v > score[t]) ? v : score[t]; break;
      }
      has[t] = 1;
    }
  }

  template <typename TH>
  void finish(const Forest<TH>& f, TH* score, uint8_t* has, float* z, int64_t* label) const {
    const size_t width = spec_.targets;
    const std::vector<double>& base = spec_.base;
    const TH trees = static_cast<TH>(f.roots.size());
    if (spec_.classifier) {
      finish_classifier(score, has, z, label);
      return;
    }
    if (width == 1) {
      const TH origin = base.size() == 1 ? static_cast<TH>(base[0]) : TH(0);
      TH v = score[0];
      switch (spec_.agg) {
        case Agg::sum: v += origin; break;
        case Agg::average: v = v / trees + origin; break;
        default: v = has[0] ? v + origin : origin; break;
      }
      z[0] = spec_.post == Post::probit ? probit(static_cast<float>(v)) : static_cast<float>(v);
      return;
    }
    // a target no leaf wrote stays 0, base value or not (as the reference)
    const bool use_base = base.size() == width;
    for (size_t t = 0; t < width; ++t) {
      const TH b = use_base ? static_cast<TH>(base[t]) : TH(0);
      const TH v = spec_.agg == Agg::average ? score[t] / trees + b : score[t] + b;
      z[t] = has[t] ? static_cast<float>(v) : 0.0f;
    }
    transform_row(z, width, spec_.post);
  }

  // Labels and scores of a classifier, with the reference's handling of two classes.
  template <typename TH>
  void finish_classifier(TH* score, uint8_t* has, float* z, int64_t* label) const {
    const size_t width = spec_.targets;
    const std::vector<double>& base = spec_.base;
    if (width > 2) {
      for (size_t k = 0; k < base.size(); ++k) {
        score[k] = has[k] ? score[k] + static_cast<TH>(base[k]) : static_cast<TH>(base[k]);
        has[k] = 1;
      }
      int64_t best = -1;
      for (size_t k = 0; k < width; ++k)
        if (has[k] && (best < 0 || score[k] > score[best])) best = static_cast<int64_t>(k);
      *label = spec_.labels[best < 0 ? 0 : static_cast<size_t>(best)];
      for (size_t k = 0; k < width; ++k) z[k] = has[k] ? static_cast<float>(score[k]) : 0.0f;
      transform_row(z, width, spec_.post);
      return;
    }
    size_t kept = 2;  // scores written before the binary rules
    int second = -1;  // how the second score is made (the reference's add_second_class)
    if (base.size() == 2) {
      if (has[1]) {
        score[1] = static_cast<TH>(base[1]) + score[0];
        score[0] = -score[1];
      } else {
        score[1] += static_cast<TH>(base[1]);
        score[0] += static_cast<TH>(base[0]);
      }
    } else if (base.size() == 1) {
      score[0] += static_cast<TH>(base[0]);
      if (!has[1]) kept = 1;
    } else if (base.empty()) {
      second = 3;
      if (!has[1]) kept = 1;
    }
    const bool two = kept == 2 && has[1];
    const TH positive = two ? score[1] : (has[0] ? score[0] : TH(0));
    if (spec_.binary) {
      if (spec_.all_positive) {
        second = positive > TH(0.5) ? 0 : 1;
      } else {
        second = positive > TH(0) ? 2 : 3;
      }
      *label = spec_.labels[second == 0 || second == 2 ? 1 : 0];
    } else {
      *label = positive > TH(0) ? 1 : 0;
    }
    // a class no leaf wrote reads 0, whatever base value was added (as the reference)
    if (kept == 2) {
      z[0] = has[0] ? static_cast<float>(score[0]) : 0.0f;
      z[1] = has[1] ? static_cast<float>(score[1]) : 0.0f;
      transform_row(z, 2, spec_.post);
      return;
    }
    const float s = has[0] ? static_cast<float>(score[0]) : 0.0f;
    if (spec_.post == Post::probit) {
      z[0] = probit(s);
      z[1] = 0.0f;  // the reference leaves it unwritten
    } else if (second == 0 || second == 1) {  // a probability and its complement
      const float p = spec_.post == Post::logistic ? logistic(s) : s;
      z[0] = 1.0f - p;
      z[1] = p;
    } else if (second == 2 || second == 3) {
      if (spec_.post == Post::logistic) {
        z[0] = logistic(-s);
        z[1] = logistic(s);
      } else {
        z[0] = -s;
        z[1] = s;
      }
    } else {
      z[0] = s;
      z[1] = 0.0f;  // the reference leaves it unwritten
    }
  }

  EnsembleSpec spec_;
  TreeSpec trees_;
  Forest<float> f32_;
  mutable Forest<double> f64_;  // built at the first double input
  mutable std::once_flag f64_once_;
  size_t depth_ = 1;
  int same_mode_ = -1;       // the one mode of every branch; kLeaf when they differ
  bool any_nan_yes_ = false;
};

KernelFactory tree_ensemble(bool classifier) {
  return [classifier](const NodeDesc& n, const BuildContext&) -> std::unique_ptr<Kernel> {
    EnsembleSpec spec;
    spec.classifier = classifier;
    spec.post = post_of(n);
    spec.base = floats_or_tensor(n, "base_values");
    if (classifier) {
      if (!n.attr_strings("classlabels_strings").empty())
        n.fail("string class labels (native runs int64 labels)");
      spec.labels = n.attr_ints("classlabels_int64s", {});
      if (spec.labels.size() < 2)
        n.fail("classlabels_int64s has " + std::to_string(spec.labels.size()) +
               " label(s); native runs two classes or more");
      spec.targets = spec.labels.size();
      if (spec.base.size() > spec.targets)
        n.fail("base_values has more entries than there are classes");
    } else {
      const int64_t targets = n.attr_i("n_targets", 0);
      if (targets < 1) n.fail("n_targets must be positive");
      spec.targets = static_cast<size_t>(targets);
      if (!spec.base.empty() && spec.base.size() != spec.targets)
        n.fail("base_values has " + std::to_string(spec.base.size()) + " values; give none or " +
               "one per target (" + std::to_string(targets) + ")");
      const std::string agg = n.attr_s("aggregate_function", "SUM");
      if (agg == "SUM") spec.agg = Agg::sum;
      else if (agg == "AVERAGE") spec.agg = Agg::average;
      else if (agg == "MIN") spec.agg = Agg::min;
      else if (agg == "MAX") spec.agg = Agg::max;
      else n.fail("aggregate_function '" + agg + "' is not SUM, AVERAGE, MIN or MAX");
    }
    TreeSpec trees = read_tree_spec(n, classifier ? "class" : "target", spec.targets);
    for (size_t i = 0; i < trees.modes.size(); ++i)
      if (trees.modes[i] != kLeaf)
        spec.max_feature = std::max(spec.max_feature, static_cast<int32_t>(trees.features[i]));
    if (classifier) {
      std::vector<int64_t> ids = trees.w_targets;
      std::sort(ids.begin(), ids.end());
      spec.binary = spec.targets == 2 && std::unique(ids.begin(), ids.end()) - ids.begin() == 1;
      for (double w : trees.w_values) spec.all_positive = spec.all_positive && !(w < 0);
    }
    return std::make_unique<TreeEnsembleKernel>(std::move(spec), std::move(trees), n);
  };
}

}  // namespace

KILN_REGISTER_OP("ai.onnx.ml", "TreeEnsembleClassifier", tree_ensemble(true));
KILN_REGISTER_OP("ai.onnx.ml", "TreeEnsembleRegressor", tree_ensemble(false));

}  // namespace kiln::ops
