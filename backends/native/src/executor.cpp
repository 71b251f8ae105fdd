#include "executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>

#include "kernels/gemm.h"
#include "kernels/gemm_driver.h"
#include "threadpool.h"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace kiln {

// ---- tensors ----------------------------------------------------------------------------

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::u8: return 1;
    case DType::i8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::boolean: return 1;
    case DType::f16: return 2;
    case DType::f64: return 8;
    case DType::u16: return 2;
    case DType::i16: return 2;
    case DType::u32: return 4;
    case DType::u64: return 8;
    case DType::bf16: return 2;
    case DType::f8e4m3fn: case DType::f8e4m3fnuz: case DType::f8e5m2: case DType::f8e5m2fnuz:
    case DType::u4: case DType::i4: case DType::f4e2m1: case DType::f8e8m0: case DType::u2:
    case DType::i2: return 1;
    case DType::undefined: return 0;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::u8: return "uint8";
    case DType::i8: return "int8";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::boolean: return "bool";
    case DType::f16: return "float16";
    case DType::f64: return "float64";
    case DType::u16: return "uint16";
    case DType::i16: return "int16";
    case DType::u32: return "uint32";
    case DType::u64: return "uint64";
    case DType::bf16: return "bfloat16";
    case DType::f8e4m3fn: return "float8_e4m3fn";
    case DType::f8e4m3fnuz: return "float8_e4m3fnuz";
    case DType::f8e5m2: return "float8_e5m2";
    case DType::f8e5m2fnuz: return "float8_e5m2fnuz";
    case DType::u4: return "uint4";
    case DType::i4: return "int4";
    case DType::f4e2m1: return "float4_e2m1fn";
    case DType::f8e8m0: return "float8_e8m0fnu";
    case DType::u2: return "uint2";
    case DType::i2: return "int2";
    case DType::undefined: return "undefined";
  }
  return "undefined";
}

bool dtype_known(int code) {
  switch (code) {
    case 1: case 2: case 3: case 4: case 5: case 6: case 7: case 9: case 10: case 11:
    case 12: case 13: case 16: case 17: case 18: case 19: case 20: case 21: case 22: case 23:
    case 24: case 25: case 26: return true;
    default: return false;
  }
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

size_t checked_numel(const Shape& s, size_t limit, const std::string& what) {
  size_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw NodeError(what + ": negative dimension in shape " + shape_str(s));
    if (d == 0) return 0;
  }
  for (int64_t d : s) {
    if (static_cast<uint64_t>(d) > limit || n > limit / static_cast<size_t>(d))
      throw LimitError(what + ": shape " + shape_str(s) + " exceeds the limit of " +
                       std::to_string(limit) + " elements");
    n *= static_cast<size_t>(d);
  }
  return n;
}

std::vector<size_t> strides_of(const Shape& s) {
  std::vector<size_t> st(s.size());
  size_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= static_cast<size_t>(s[i]);
  }
  return st;
}

Tensor make_heap_tensor(DType dtype, const Shape& shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  size_t bytes = std::max<size_t>(t.nbytes(), 1);
  // 64-byte aligned so SIMD kernels can use aligned loads on fresh buffers.
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw LimitError("out of memory allocating " + std::to_string(bytes) + " bytes");
  t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data = p;
  return t;
}

namespace {

// Buffers of graph outputs that numpy has let go of, kept for the next run's outputs of the
// same size. A fresh large buffer from malloc is fresh pages from the kernel, and faulting
// them in costs more than the op that fills them (a 16 MB Relu output: ~1,800 page faults
// per run, twice the Relu's time). onnxruntime's arena keeps its outputs' memory the same way.
// Bounded in count and bytes; never destroyed, as a capsule may free after exit handlers.
class OutputBufferPool {
 public:
  static OutputBufferPool& get() {
    static OutputBufferPool* pool = new OutputBufferPool;
    return *pool;
  }
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = free_.size(); i-- > 0;)
        if (free_[i].bytes == bytes) {
          void* p = free_[i].p;
          held_ -= bytes;
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
          return p;
        }
    }
    return std::aligned_alloc(64, bytes);
  }
  void give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back({p, bytes});
    held_ += bytes;
    while (free_.size() > kMaxBuffers || held_ > kMaxBytes) {  // the oldest go first
      std::free(free_.front().p);
      held_ -= free_.front().bytes;
      free_.erase(free_.begin());
    }
  }

 private:
  struct Buffer {
    void* p;
    size_t bytes;
  };
  static constexpr size_t kMaxBuffers = 16;
  static constexpr size_t kMaxBytes = size_t(256) << 20;
  std::mutex mu_;
  std::vector<Buffer> free_;
  size_t held_ = 0;
};

// Below this size malloc serves from its own free lists and the pool would only add a lock.
constexpr size_t kPooledOutputBytes = size_t(128) << 10;

// A graph output's tensor: a pooled buffer when it is large (see OutputBufferPool).
Tensor make_output_tensor(DType dtype, const Shape& shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  const size_t rounded = (std::max<size_t>(t.nbytes(), 1) + 63) / 64 * 64;
  if (rounded < kPooledOutputBytes) return make_heap_tensor(dtype, shape);
  void* p = OutputBufferPool::get().take(rounded);
  if (!p) throw LimitError("out of memory allocating " + std::to_string(rounded) + " bytes");
  t.owner = std::shared_ptr<void>(p, [rounded](void* q) { OutputBufferPool::get().give(q, rounded); });
  t.data = p;
  return t;
}

}  // namespace

// ---- nodes and attributes ---------------------------------------------------------------

void NodeDesc::fail(const std::string& msg) const {
  std::string where = name.empty() ? "<unnamed>" : name;
  throw NodeError("node '" + where + "' (" + (domain.empty() ? "" : domain + "::") + op +
                  "): " + msg);
}

int64_t NodeDesc::attr_i(const std::string& key, int64_t dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (it->second.kind != Attr::Kind::i) fail("attribute '" + key + "' must be an int");
  return it->second.i;
}

float NodeDesc::attr_f(const std::string& key, float dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (it->second.kind == Attr::Kind::i) return static_cast<float>(it->second.i);
  if (it->second.kind != Attr::Kind::f) fail("attribute '" + key + "' must be a float");
  return static_cast<float>(it->second.f);
}

std::string NodeDesc::attr_s(const std::string& key, const std::string& dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (it->second.kind != Attr::Kind::s) fail("attribute '" + key + "' must be a string");
  return it->second.s;
}

std::vector<int64_t> NodeDesc::attr_ints(const std::string& key,
                                         const std::vector<int64_t>& dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (it->second.kind == Attr::Kind::i) return {it->second.i};
  if (it->second.kind != Attr::Kind::ints) fail("attribute '" + key + "' must be ints");
  return it->second.ints;
}

std::vector<float> NodeDesc::attr_floats(const std::string& key,
                                         const std::vector<float>& dflt) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return dflt;
  if (it->second.kind != Attr::Kind::floats) fail("attribute '" + key + "' must be floats");
  return std::vector<float>(it->second.floats.begin(), it->second.floats.end());
}

std::vector<std::string> NodeDesc::attr_strings(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return {};
  const Attr& a = it->second;
  if (a.kind == Attr::Kind::strings) return a.strings;
  if (a.kind == Attr::Kind::ints && a.ints.empty()) return {};
  fail("attribute '" + key + "' must be strings");
}

const Tensor* NodeDesc::attr_tensor(const std::string& key) const {
  auto it = attrs.find(key);
  if (it == attrs.end()) return nullptr;
  if (it->second.kind != Attr::Kind::tensor) fail("attribute '" + key + "' must be a tensor");
  return &it->second.t;
}

// ---- registry ---------------------------------------------------------------------------

namespace {
std::map<std::string, KernelFactory>& registry() {
  static std::map<std::string, KernelFactory> r;
  return r;
}
std::string key_of(const std::string& domain, const std::string& op) {
  return (domain == "ai.onnx" ? std::string() : domain) + "::" + op;
}
}  // namespace

bool register_op(const std::string& domain, const std::string& op, KernelFactory factory) {
  registry()[key_of(domain, op)] = std::move(factory);
  return true;
}

bool op_registered(const std::string& domain, const std::string& op) {
  return registry().count(key_of(domain, op)) != 0;
}

std::vector<std::string> registered_ops() {
  std::vector<std::string> out;
  for (auto& kv : registry()) out.push_back(kv.first);
  return out;
}

KernelFactory simple_kernel(std::function<void(OpContext&)> fn) {
  return [fn](const NodeDesc&, const BuildContext&) {
    return std::unique_ptr<Kernel>(new FnKernel(fn));
  };
}

const Tensor* BuildContext::constant(const NodeDesc& node, size_t i) const {
  if (i >= node.inputs.size() || node.inputs[i] < 0) return nullptr;
  return consts_[node.inputs[i]];
}

std::shared_ptr<const PackedB> BuildContext::packed_b(const NodeDesc& node, size_t i, bool trans,
                                                      size_t K, size_t N) const {
  const Tensor* b = constant(node, i);
  if (!b || b->dtype != DType::f32 || b->rank() != 2) return nullptr;
  auto pack = [&] {
    return pack_b(trans, K, N, b->ptr<float>(), static_cast<size_t>(b->shape[1]));
  };
  if (!packed_) return pack();
  std::shared_ptr<const PackedB>& slot = (*packed_)[{node.inputs[i], trans, K, N}];
  if (!slot) slot = pack();
  return slot;
}

// ---- run-time context -------------------------------------------------------------------

namespace {

// Empties a value-table slot but keeps its shape's capacity for the next run.
void forget(Tensor& t) {
  t.dtype = DType::undefined;
  t.data = nullptr;
  t.owner.reset();
  t.shape.clear();
}

}  // namespace

const Tensor* OpContext::input(size_t i) const {
  if (i >= node.inputs.size() || node.inputs[i] < 0) return nullptr;
  const Tensor& t = state_.value(node.inputs[i]);
  if (t.dtype == DType::undefined) node.fail("input " + std::to_string(i) + " was not computed");
  return &t;
}

const Tensor& OpContext::in(size_t i) const {
  const Tensor* t = input(i);
  if (!t) node.fail("required input " + std::to_string(i) + " is missing");
  return *t;
}

Tensor& OpContext::output(size_t i, DType dtype, const Shape& shape) {
  if (i >= node.outputs.size() || node.outputs[i] < 0) {
    // The graph does not use this output: give the kernel a scratch slot anyway.
    static thread_local Tensor scratch;
    scratch = make_heap_tensor(dtype, shape);
    return scratch;
  }
  return state_.allocate(node.outputs[i], dtype, shape, node);
}

Tensor& RunState::allocate(int id, DType dtype, const Shape& shape, const NodeDesc& node) {
  const size_t esize = dtype_size(dtype);
  if (esize == 0) node.fail("cannot allocate an output of undefined type");
  size_t n;
  try {
    n = checked_numel(shape, plan.limit_bytes_ / esize, "output");
  } catch (const NodeError& e) {
    node.fail(e.what());
  } catch (const LimitError& e) {
    std::string where = node.name.empty() ? "<unnamed>" : node.name;
    throw LimitError("node '" + where + "' (" + node.op + "): " + e.what());
  }
  Tensor& t = values[id];
  const size_t bytes = n * esize;
  if (measured) (*measured)[id] = std::max((*measured)[id], bytes);
  if (!plan.is_output_[id] && layout.offsets[id] >= 0 && arena &&
      bytes <= static_cast<size_t>(layout.planned[id])) {
    t.dtype = dtype;
    t.shape = shape;
    t.owner.reset();
    t.data = arena + layout.offsets[id];
  } else if (plan.is_output_[id]) {
    t = make_output_tensor(dtype, shape);
  } else if (measured) {
    // Best fit among dead values' buffers, within twice the size asked.
    size_t pick = spares_.size();
    for (size_t i = 0; i < spares_.size(); ++i)
      if (spares_[i].bytes >= bytes && spares_[i].bytes <= 2 * bytes + 4096 &&
          (pick == spares_.size() || spares_[i].bytes < spares_[pick].bytes))
        pick = i;
    if (pick < spares_.size()) {
      Spare spare = std::move(spares_[pick]);
      spares_.erase(spares_.begin() + static_cast<std::ptrdiff_t>(pick));
      t.dtype = dtype;
      t.shape = shape;
      t.owner = std::move(spare.buffer);
      t.data = t.owner.get();
      heap_buffers_[id] = {spare.bytes, t.owner};
    } else {
      // None fits: hand the dead buffers back to malloc first, which can merge and split
      // them, so holding them does not raise the run's peak.
      spares_.clear();
      t = make_heap_tensor(dtype, shape);
      heap_buffers_[id] = {bytes, t.owner};
    }
  } else {
    t = make_heap_tensor(dtype, shape);
  }
  return t;
}

void RunState::release(int id) {
  Tensor& t = values[id];
  if (measured && !heap_buffers_.empty()) {
    Spare& mine = heap_buffers_[id];
    // Reused only when this slot holds the very buffer allocate gave it, and alone.
    if (mine.buffer && t.owner == mine.buffer && t.data == mine.buffer.get() &&
        mine.buffer.use_count() == 2) {
      forget(t);
      spares_.push_back(std::move(mine));
    }
    mine = Spare{};
  }
  forget(t);
}

// ---- plan -------------------------------------------------------------------------------

Plan::Plan(int n_values) : n_values_(n_values) {
  if (n_values < 0) throw std::invalid_argument("negative value count");
  constants_.resize(n_values);
  const_ptrs_.assign(n_values, nullptr);
  released_.assign(n_values, false);
  read_at_run_.assign(n_values, false);
  file_backed_.assign(n_values, false);
  static_.offsets.assign(n_values, -1);
  static_.planned.assign(n_values, 0);
  is_output_.assign(n_values, false);
  pool_ = std::make_unique<ThreadPool>(1);
}

Plan::~Plan() = default;

void Plan::set_threads(size_t threads) { pool_ = std::make_unique<ThreadPool>(threads); }

size_t Plan::threads() const { return pool_->size(); }

void Plan::set_isa(PlanIsa isa) {
  if (!nodes_.empty()) throw std::invalid_argument("set_isa after add_node: weights are packed");
  isa_ = isa;
}

void Plan::add_constant(int id, Tensor t) {
  if (id < 0 || id >= n_values_) throw std::invalid_argument("constant id out of range");
  constants_[id] = std::move(t);
  const_ptrs_[id] = &constants_[id];
  released_[id] = false;
}

bool Plan::release_constant(int id) {
  if (id < 0 || id >= n_values_) throw std::invalid_argument("constant id out of range");
  if (!const_ptrs_[id] || released_[id]) return released_[id];
  if (!is_output_.empty() && is_output_[id]) return false;
  if (read_at_run_[id]) return false;
  constants_[id].owner.reset();
  constants_[id].data = nullptr;
  released_[id] = true;
  return true;
}

void Plan::set_file_backed(int id) {
  if (id < 0 || id >= n_values_ || !const_ptrs_[id])
    throw std::invalid_argument("set_file_backed: not a constant");
  file_backed_[id] = true;
}

namespace {

// Drops the whole pages inside [data, data + bytes) from the resident set. Only for
// read-only file-backed maps: their contents come back from the file when read again.
void drop_file_pages(const void* data, size_t bytes) {
#if defined(__unix__) || defined(__APPLE__)
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace

size_t Plan::constant_bytes() const {
  size_t total = 0;
  for (int id = 0; id < n_values_; ++id)
    if (const_ptrs_[id] && !released_[id]) total += constants_[id].nbytes();
  return total;
}

void Plan::add_node(NodeDesc node) {
  for (int v : node.inputs)
    if (v >= n_values_ || v < -1) node.fail("input value id out of range");
  for (int v : node.outputs)
    if (v >= n_values_ || v < -1) node.fail("output value id out of range");
  auto it = registry().find(key_of(node.domain, node.op));
  if (it == registry().end()) node.fail("operator not implemented by the native backend");
  for (int v : node.inputs)
    if (v >= 0 && released_[v]) node.fail("reads a constant whose bytes were released");
  BuildContext bc(const_ptrs_, &packed_b_);
  PlanIsaScope scope(&isa_);
  kernels_.push_back(it->second(node, bc));
  for (size_t i = 0; i < node.inputs.size(); ++i)
    if (node.inputs[i] >= 0 && kernels_.back()->reads_constant(i))
      read_at_run_[node.inputs[i]] = true;
  nodes_.push_back(std::move(node));
}

void Plan::set_memory(std::vector<int64_t> offsets, std::vector<int64_t> planned_bytes,
                      size_t arena_bytes, std::vector<std::vector<int>> frees) {
  if (offsets.size() != static_cast<size_t>(n_values_) ||
      planned_bytes.size() != static_cast<size_t>(n_values_))
    throw std::invalid_argument("memory plan size does not match the value count");
  for (int i = 0; i < n_values_; ++i) {
    if (offsets[i] < 0) continue;
    if (planned_bytes[i] < 0 ||
        static_cast<size_t>(offsets[i]) + static_cast<size_t>(planned_bytes[i]) > arena_bytes)
      throw std::invalid_argument("memory plan places a value outside the arena");
  }
  for (auto& f : frees)
    for (int v : f)
      if (v < 0 || v >= n_values_) throw std::invalid_argument("free list id out of range");
  static_.offsets = std::move(offsets);
  static_.planned = std::move(planned_bytes);
  static_.arena_bytes = arena_bytes;
  frees_ = std::move(frees);
}

void Plan::set_io(std::vector<int> inputs, std::vector<int> outputs) {
  for (int v : inputs)
    if (v < 0 || v >= n_values_) throw std::invalid_argument("input id out of range");
  for (int v : outputs) {
    if (v < 0 || v >= n_values_) throw std::invalid_argument("output id out of range");
    if (released_[v])
      throw std::invalid_argument("a graph output's constant bytes were released");
  }
  inputs_ = std::move(inputs);
  outputs_ = std::move(outputs);
  is_output_.assign(n_values_, false);
  for (int v : outputs_) is_output_[v] = true;
  is_input_.assign(n_values_, false);
  for (int v : inputs_) is_input_[v] = true;
  // Liveness of every intermediate, for layouts planned per input signature.
  def_node_.assign(n_values_, -1);
  last_use_.assign(n_values_, -1);
  for (size_t k = 0; k < nodes_.size(); ++k)
    for (int v : nodes_[k].outputs)
      if (v >= 0 && !const_ptrs_[v]) def_node_[v] = last_use_[v] = static_cast<int>(k);
  for (size_t k = 0; k < frees_.size(); ++k)
    for (int v : frees_[k]) last_use_[v] = std::max(last_use_[v], static_cast<int>(k));
  std::vector<int> last_reader(n_values_, -1);
  for (size_t k = 0; k < nodes_.size(); ++k)
    for (int v : nodes_[k].inputs)
      if (v >= 0 && file_backed_[v] && !released_[v]) last_reader[v] = static_cast<int>(k);
  reclaim_after_.assign(nodes_.size(), {});
  for (int v = 0; v < n_values_; ++v)
    if (last_reader[v] >= 0 && !is_output_[v]) reclaim_after_[last_reader[v]].push_back(v);
  all_static_ = true;
  for (int v = 0; v < n_values_; ++v)
    if (def_node_[v] >= 0 && !is_output_[v] && static_.offsets[v] < 0) all_static_ = false;
}

MemoryLayout Plan::plan_layout(const std::vector<size_t>& sizes) const {
  // Greedy: largest first, each at the lowest 64-byte aligned offset that does not overlap
  // a placed value whose lifetime overlaps its own.
  struct Item { size_t size; int start, end, id; };
  std::vector<Item> items;
  for (int v = 0; v < n_values_; ++v) {
    if (def_node_[v] < 0 || is_output_[v] || sizes[v] == 0) continue;
    items.push_back({(sizes[v] + 63) / 64 * 64, def_node_[v], last_use_[v], v});
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.size != b.size ? a.size > b.size : a.start < b.start;
  });
  MemoryLayout layout;
  layout.offsets.assign(n_values_, -1);
  layout.planned.assign(n_values_, 0);
  std::vector<Item> placed;
  std::vector<std::pair<size_t, size_t>> clashes;
  for (const Item& it : items) {
    clashes.clear();
    for (const Item& p : placed)
      if (!(p.end < it.start || p.start > it.end))
        clashes.emplace_back(static_cast<size_t>(layout.offsets[p.id]), p.size);
    std::sort(clashes.begin(), clashes.end());
    size_t offset = 0;
    for (const auto& [o, sz] : clashes) {
      if (offset + it.size <= o) break;
      offset = std::max(offset, o + sz);
    }
    layout.offsets[it.id] = static_cast<int64_t>(offset);
    layout.planned[it.id] = static_cast<int64_t>(it.size);
    layout.arena_bytes = std::max(layout.arena_bytes, offset + it.size);
    placed.push_back(it);
  }
  return layout;
}

std::vector<size_t> Plan::signature_arena_bytes() const {
  std::lock_guard<std::mutex> lock(layout_mutex_);
  std::vector<size_t> out;
  for (const auto& kv : layouts_) out.push_back(kv.second->arena_bytes);
  return out;
}

Plan::Scratch Plan::take_scratch(size_t arena_bytes) const {
  Scratch s;
  {
    std::lock_guard<std::mutex> lock(scratch_mutex_);
    // The last one given back first: its arena is the likeliest to be in cache. One whose
    // arena is too small (a layout for larger inputs) still lends its value table.
    if (!free_scratch_.empty()) {
      size_t pick = free_scratch_.size() - 1;
      for (size_t i = free_scratch_.size(); i-- > 0;)
        if (free_scratch_[i].arena.bytes >= arena_bytes) {
          pick = i;
          break;
        }
      s = std::move(free_scratch_[pick]);
      free_scratch_.erase(free_scratch_.begin() + static_cast<std::ptrdiff_t>(pick));
    }
  }
  if (s.values.size() != static_cast<size_t>(n_values_)) s.values.resize(n_values_);
  if (arena_bytes > s.arena.bytes) {
    s.arena.data.reset();  // the old one goes before the new one is taken
    s.arena = new_arena(arena_bytes);
  }
  return s;
}

void Plan::FreeBytes::operator()(uint8_t* p) const noexcept { std::free(p); }

Plan::Arena Plan::new_arena(size_t bytes) {
  // Huge pages from 2 MiB on (alloc_aligned): the run that first touches the arena takes one
  // page fault per 2 MiB instead of one per 4 KiB (ResNet-50's 7.2 MB arena: 1,770 faults,
  // each zeroing a page).
  void* p = alloc_aligned(bytes);
  if (!p) throw LimitError("out of memory allocating an arena of " + std::to_string(bytes) +
                           " bytes");
  Arena a;
  a.data.reset(static_cast<uint8_t*>(p));
  a.bytes = bytes;
  return a;
}

void Plan::give_scratch(Scratch scratch) const {
  // Heap values (and borrowed inputs) are released now, not when the table is next used.
  for (Tensor& t : scratch.values) forget(t);
  std::lock_guard<std::mutex> lock(scratch_mutex_);
  if (free_scratch_.size() < 8) free_scratch_.push_back(std::move(scratch));
}

std::vector<double> Plan::node_times() const {
  std::lock_guard<std::mutex> lock(times_mutex_);
  return last_times_;
}

std::vector<uint32_t> Plan::node_splits() const {
  std::lock_guard<std::mutex> lock(times_mutex_);
  return last_splits_;
}

std::vector<Tensor> Plan::run(const std::vector<Tensor>& inputs) const {
  if (inputs.size() != inputs_.size())
    throw NodeError("expected " + std::to_string(inputs_.size()) + " inputs, got " +
                    std::to_string(inputs.size()));
  // The layout: Python's static one, or one planned for this input signature.
  std::shared_ptr<const MemoryLayout> dynamic;
  std::vector<int64_t> signature;
  std::vector<size_t> measured;
  if (!all_static_) {
    for (const Tensor& t : inputs) {
      signature.push_back(static_cast<int64_t>(t.rank()));
      signature.insert(signature.end(), t.shape.begin(), t.shape.end());
    }
    std::lock_guard<std::mutex> lock(layout_mutex_);
    auto it = layouts_.find(signature);
    if (it != layouts_.end()) dynamic = it->second;
  }
  const MemoryLayout& layout = dynamic ? *dynamic : static_;
  Scratch scratch = take_scratch(layout.arena_bytes);
  // The arena base is 64-byte aligned, and planned offsets are multiples of 64.
  uint8_t* base = layout.arena_bytes ? scratch.arena.data.get() : nullptr;
  struct ScratchReturn {
    const Plan& plan;
    Scratch& scratch;
    ~ScratchReturn() { plan.give_scratch(std::move(scratch)); }
  } scratch_return{*this, scratch};

  PlanIsaScope scope(&isa_);
  RunState state(*this, base, layout, scratch.values);
  if (!all_static_ && !dynamic) {
    measured.assign(n_values_, 0);
    state.measured = &measured;
    state.start_measuring();
  }
  for (size_t i = 0; i < inputs.size(); ++i) state.values[inputs_[i]] = inputs[i];

  // The first run to get here drops file-backed weights' pages after their last reader.
  const bool reclaim = !reclaimed_.exchange(true);
  std::vector<double> times(profiling_ ? nodes_.size() : 0);
  std::vector<uint32_t> splits(profiling_ ? nodes_.size() : 0);
  // Workers are woken once here and spin between this run's ops.
  ThreadPool::Engaged engaged(pool_.get());
  for (size_t k = 0; k < nodes_.size(); ++k) {
    OpContext ctx(nodes_[k], state, pool_.get());
    if (profiling_) {
      const uint64_t split_before = pool_->split_calls();
      auto start = std::chrono::steady_clock::now();
      kernels_[k]->run(ctx);
      times[k] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() -
                                                           start).count();
      splits[k] = static_cast<uint32_t>(pool_->split_calls() - split_before);
    } else {
      kernels_[k]->run(ctx);
    }
    for (int out : nodes_[k].outputs)
      if (out >= 0 && state.value(out).dtype == DType::undefined)
        nodes_[k].fail("kernel produced no value for an output");
    if (reclaim && k < reclaim_after_.size())
      for (int v : reclaim_after_[k])
        drop_file_pages(constants_[v].data, constants_[v].nbytes());
    if (k < frees_.size())
      for (int v : frees_[k]) {
        if (is_output_[v]) continue;
        state.release(v);
      }
  }
  if (profiling_) {
    std::lock_guard<std::mutex> lock(times_mutex_);
    last_times_ = std::move(times);
    last_splits_ = std::move(splits);
  }
  if (state.measured) {
    // First run with this signature: plan its layout from what every value needed.
    auto planned = std::make_shared<const MemoryLayout>(plan_layout(measured));
    std::lock_guard<std::mutex> lock(layout_mutex_);
    if (layouts_.size() >= 16) layouts_.clear();  // bound the cache across many shapes
    layouts_.emplace(signature, std::move(planned));
  }
  std::vector<Tensor> result;
  result.reserve(outputs_.size());
  for (int v : outputs_) {
    Tensor t = state.value(v);
    if (t.dtype == DType::undefined) throw NodeError("graph output was never computed");
    if (!t.owner || t.owner.use_count() < 0) {
      // Borrowed memory (a constant, an input or the arena): copy into a fresh buffer.
      Tensor copy = make_heap_tensor(t.dtype, t.shape);
      if (t.nbytes()) std::memcpy(copy.data, t.data, t.nbytes());
      t = copy;
    } else {
      if (const_ptrs_[v] || is_input_[v]) {
        Tensor copy = make_heap_tensor(t.dtype, t.shape);
        if (t.nbytes()) std::memcpy(copy.data, t.data, t.nbytes());
        t = copy;
      }
    }
    result.push_back(t);
  }
  return result;
}

}  // namespace kiln
