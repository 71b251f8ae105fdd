// The graph executor: a flat plan of kernel calls, built once, run many times.
//
// Python lowers the IR to a plan (value ids, nodes with resolved attributes, constants and a
// memory plan) and hands it over once. `Plan::run` then executes every node in C++: inputs
// are borrowed from numpy, intermediates live in one arena whose offsets Python planned
// from liveness (values without a static size, or larger than planned, get heap buffers),
// and graph outputs are heap buffers handed back to numpy without a copy (a large one reuses
// the buffer of an earlier output numpy has let go of: no fresh pages to fault in).
//
// Symbolic dims: values Python could not size are measured on the first run with a new
// input signature (the shapes of all inputs); a layout for that signature is then planned
// here with the same liveness rule and used by later runs with the same shapes.
//
// Concurrency: a Plan is immutable after `set_io`, apart from its mutex-guarded caches of
// layouts and free arenas; each run takes its own arena, so several threads may run one Plan
// at once.
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "cpu.h"
#include "tensor.h"

namespace kiln {

class ThreadPool;

struct Attr {
  enum class Kind { i, f, s, ints, floats, strings, tensor } kind = Kind::i;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  Tensor t;
};

struct NodeDesc {
  std::string name;
  std::string domain;  // "" for ai.onnx, "kiln" for kiln's fused ops
  std::string op;
  int opset = 0;
  std::vector<int> inputs;   // value ids; -1 for an omitted optional input
  std::vector<int> outputs;  // value ids; -1 for an omitted optional output
  std::map<std::string, Attr> attrs;

  [[noreturn]] void fail(const std::string& msg) const;
  bool has(const std::string& key) const { return attrs.count(key) != 0; }
  int64_t attr_i(const std::string& key, int64_t dflt) const;
  float attr_f(const std::string& key, float dflt) const;
  std::string attr_s(const std::string& key, const std::string& dflt) const;
  std::vector<int64_t> attr_ints(const std::string& key,
                                 const std::vector<int64_t>& dflt = {}) const;
  std::vector<float> attr_floats(const std::string& key,
                                 const std::vector<float>& dflt = {}) const;
  // An empty list reads as empty whatever its kind (Python cannot tell an empty list's type).
  std::vector<std::string> attr_strings(const std::string& key) const;
  const Tensor* attr_tensor(const std::string& key) const;
};

class RunState;

// Where intermediates live in the arena: offset and reserved bytes per value id (-1: heap).
struct MemoryLayout {
  std::vector<int64_t> offsets;
  std::vector<int64_t> planned;
  size_t arena_bytes = 0;
};

// What a kernel sees while it runs: its inputs, a way to allocate outputs, the pool.
class OpContext {
 public:
  OpContext(const NodeDesc& node, RunState& state, ThreadPool* pool)
      : node(node), pool(pool), state_(state) {}
  const NodeDesc& node;
  ThreadPool* pool;

  size_t n_inputs() const { return node.inputs.size(); }
  // nullptr when the optional input is absent.
  const Tensor* input(size_t i) const;
  // Input i, which must be present.
  const Tensor& in(size_t i) const;
  // Allocates output i with `shape`; dims are checked against the memory limit.
  Tensor& output(size_t i, DType dtype, const Shape& shape);
  bool wants_output(size_t i) const {
    return i < node.outputs.size() && node.outputs[i] >= 0;
  }
  [[noreturn]] void fail(const std::string& msg) const { node.fail(msg); }

 private:
  RunState& state_;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(OpContext& ctx) const = 0;
  // Whether run() reads the bytes of input `i` when that input is a plan constant. A kernel
  // that packed the constant at build time answers false, and the plan may then drop the
  // constant's bytes (Plan::release_constant) and keep only its dtype and shape.
  virtual bool reads_constant(size_t i) const { (void)i; return true; }
};

// A kernel that is one function (attributes captured when it was built).
class FnKernel final : public Kernel {
 public:
  explicit FnKernel(std::function<void(OpContext&)> fn) : fn_(std::move(fn)) {}
  void run(OpContext& ctx) const override { fn_(ctx); }

 private:
  std::function<void(OpContext&)> fn_;
};

// What a kernel factory may look at: the node, and which inputs are plan constants.
class PackedB;  // kernels/gemm.h

// A plan's GEMM-packed constants, by (value id, transposed, K, N): built once per plan.
using PackedBCache =
    std::map<std::tuple<int, bool, size_t, size_t>, std::shared_ptr<const PackedB>>;

class BuildContext {
 public:
  // packed: the plan's cache of packed constants (null: each call packs its own)
  explicit BuildContext(const std::vector<const Tensor*>& consts,
                        PackedBCache* packed = nullptr)
      : consts_(consts), packed_(packed) {}
  // The constant value of input i, or nullptr when it is computed at run time.
  const Tensor* constant(const NodeDesc& node, size_t i) const;
  // Input i (a constant 2-D float32 B, K x N, or N x K when trans) packed for sgemm_packed,
  // once per plan: nodes that multiply the same constant (the steps of an unrolled recurrent
  // net, tied weights) share one packed copy instead of each holding its own.
  std::shared_ptr<const PackedB> packed_b(const NodeDesc& node, size_t i, bool trans, size_t K,
                                          size_t N) const;

 private:
  const std::vector<const Tensor*>& consts_;
  PackedBCache* packed_;
};

using KernelFactory =
    std::function<std::unique_ptr<Kernel>(const NodeDesc&, const BuildContext&)>;

// Registers a kernel factory for (domain, op). Ops register themselves at load time.
bool register_op(const std::string& domain, const std::string& op, KernelFactory factory);
bool op_registered(const std::string& domain, const std::string& op);
std::vector<std::string> registered_ops();

#define KILN_CONCAT_(a, b) a##b
#define KILN_CONCAT(a, b) KILN_CONCAT_(a, b)
#define KILN_REGISTER_OP(domain, op, factory) \
  static const bool KILN_CONCAT(kiln_registered_, __LINE__) = \
      ::kiln::register_op(domain, op, factory)

// Wraps a plain function of the OpContext (no build-time state) as a factory.
KernelFactory simple_kernel(std::function<void(OpContext&)> fn);

class Plan {
 public:
  explicit Plan(int n_values);
  ~Plan();

  void set_threads(size_t threads);
  void set_limit_bytes(size_t bytes) { limit_bytes_ = bytes; }
  // The ISA this plan is built and run for (before add_node: packing follows it).
  void set_isa(PlanIsa isa);
  const PlanIsa& isa() const { return isa_; }
  void add_constant(int id, Tensor t);
  // Drops the bytes of constant `id` when every node added so far that reads it packed it
  // (Kernel::reads_constant is false there); returns whether it did. A node added later that
  // reads a released constant is refused, so call this after its last consumer.
  bool release_constant(int id);
  // Marks constant `id` as read-only pages of a mapped file (borrowed from a memory map).
  // After the first run, each such constant's pages leave the process's resident set once
  // its last reader has run: a kernel that packed it never touches them again, and one that
  // reads it again faults them back in from the page cache.
  void set_file_backed(int id);
  // Bytes held by the plan's constants (released ones excluded).
  size_t constant_bytes() const;
  // Builds the node's kernel now, so bad attributes fail at compile time.
  void add_node(NodeDesc node);
  // Memory plan: arena offset of each value (-1: heap), arena size, and for every node the
  // values whose last use it is.
  void set_memory(std::vector<int64_t> offsets, std::vector<int64_t> planned_bytes,
                  size_t arena_bytes, std::vector<std::vector<int>> frees);
  void set_io(std::vector<int> inputs, std::vector<int> outputs);

  // Runs the plan. `inputs` borrow caller memory; the returned tensors own theirs.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs) const;

  size_t n_nodes() const { return nodes_.size(); }
  size_t arena_bytes() const { return static_.arena_bytes; }
  // Arena bytes of the layouts planned for input signatures seen so far.
  std::vector<size_t> signature_arena_bytes() const;
  size_t threads() const;
  size_t limit_bytes() const { return limit_bytes_; }
  // Per-node wall time: off by default (a clock read per node); when on, each run records
  // microseconds per node and node_times() returns those of the last run to finish.
  void set_profiling(bool on) { profiling_ = on; }
  std::vector<double> node_times() const;
  // With profiling on: per node of the last run, how many of its pool calls went to the
  // workers (0: it ran on the calling thread alone). Exact when one run is in flight.
  std::vector<uint32_t> node_splits() const;

 private:
  friend class RunState;
  struct FreeBytes {
    void operator()(uint8_t* p) const noexcept;
  };
  struct Arena {
    std::unique_ptr<uint8_t, FreeBytes> data;  // 64-byte aligned
    size_t bytes = 0;
  };
  // What one run needs besides its inputs: an arena and a value table. Both are reused by
  // later runs, so a run allocates nothing for them (the table's shape vectors keep their
  // capacity between runs).
  struct Scratch {
    Arena arena;
    std::vector<Tensor> values;
  };
  Scratch take_scratch(size_t arena_bytes) const;
  static Arena new_arena(size_t bytes);
  void give_scratch(Scratch scratch) const;
  MemoryLayout plan_layout(const std::vector<size_t>& sizes) const;

  int n_values_;
  std::vector<Tensor> constants_;  // by value id; dtype undefined when not constant
  std::vector<const Tensor*> const_ptrs_;
  std::vector<bool> released_;  // by value id: constant whose bytes were dropped
  PackedBCache packed_b_;       // constants packed for the GEMM (BuildContext::packed_b)
  std::vector<bool> read_at_run_;  // by value id: a node added so far reads it when run
  std::vector<bool> file_backed_;  // by value id: constant read from a file map
  std::vector<std::vector<int>> reclaim_after_;  // per node: file-backed constants it reads last
  mutable std::atomic<bool> reclaimed_{false};  // the first run has dropped their pages
  std::vector<NodeDesc> nodes_;
  std::vector<std::unique_ptr<Kernel>> kernels_;
  MemoryLayout static_;                 // planned by Python from static shapes
  bool all_static_ = true;              // every intermediate has a static size
  std::vector<int> def_node_, last_use_;  // per value id, -1 when not an intermediate
  std::vector<std::vector<int>> frees_;
  mutable std::mutex layout_mutex_;
  mutable std::map<std::vector<int64_t>, std::shared_ptr<const MemoryLayout>> layouts_;
  std::vector<int> inputs_, outputs_;
  std::vector<bool> is_output_;
  size_t limit_bytes_ = size_t(16) << 30;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<bool> is_input_;  // by value id
  mutable std::mutex scratch_mutex_;
  mutable std::vector<Scratch> free_scratch_;
  bool profiling_ = false;
  PlanIsa isa_;
  mutable std::mutex times_mutex_;
  mutable std::vector<double> last_times_;
  mutable std::vector<uint32_t> last_splits_;
};

// Per-run state: the value table and this run's arena. Constants are not in the table: they
// are read where the plan holds them.
class RunState {
 public:
  RunState(const Plan& plan, uint8_t* arena, const MemoryLayout& layout,
           std::vector<Tensor>& values)
      : plan(plan), arena(arena), layout(layout), values(values) {}
  const Plan& plan;
  uint8_t* arena;
  const MemoryLayout& layout;
  std::vector<Tensor>& values;  // by value id; constants' slots stay empty
  const Tensor& value(int id) const {
    const Tensor* c = plan.const_ptrs_[static_cast<size_t>(id)];
    return c ? *c : values[static_cast<size_t>(id)];
  }
  std::vector<size_t>* measured = nullptr;  // bytes asked per value, when measuring
  Tensor& allocate(int id, DType dtype, const Shape& shape, const NodeDesc& node);
  // Called when value `id` is dead. In a measuring run (no layout yet: every intermediate
  // is a heap buffer) its buffer is kept for a later value to reuse, so the run touches
  // about its peak of live bytes in fresh pages rather than the sum of all of them.
  void release(int id);
  // Starts a measuring run's bookkeeping of heap buffers (see release).
  void start_measuring() { heap_buffers_.assign(values.size(), Spare{}); }

 private:
  struct Spare {
    size_t bytes;
    std::shared_ptr<void> buffer;
  };
  std::vector<Spare> spares_;          // measuring run: dead values' heap buffers
  std::vector<Spare> heap_buffers_;    // measuring run: by value id, the buffer allocate gave
};

}  // namespace kiln
