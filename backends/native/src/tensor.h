// Tensors, element types and the errors the executor raises.
//
// A Tensor is a typed view: shape + pointer. Who owns the bytes (the arena, a heap buffer,
// a constant of the plan, a numpy array handed in by Python) is recorded in `owner` only
// when the tensor keeps them alive itself.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln {

// Values match ONNX TensorProto.DataType so Python and C++ share one numbering.
enum class DType : int {
  undefined = 0,
  f32 = 1,
  u8 = 2,
  i8 = 3,
  u16 = 4,
  i16 = 5,
  i32 = 6,
  i64 = 7,
  boolean = 9,
  f16 = 10,
  f64 = 11,
  u32 = 12,
  u64 = 13,
  // Narrow types, one element per byte (two for bf16), laid out as ml_dtypes lays them out:
  // the 4- and 2-bit integers keep their two's complement bits in the low bits of the byte.
  bf16 = 16,
  f8e4m3fn = 17,
  f8e4m3fnuz = 18,
  f8e5m2 = 19,
  f8e5m2fnuz = 20,
  u4 = 21,
  i4 = 22,
  f4e2m1 = 23,
  f8e8m0 = 24,
  u2 = 25,
  i2 = 26,
};

size_t dtype_size(DType t);
const char* dtype_name(DType t);
bool dtype_known(int code);

using Shape = std::vector<int64_t>;

// A problem with a node or its data: shape mismatch, bad attribute, index out of range.
// The message starts with the node name so the user knows where.
class NodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A tensor that would exceed the memory kiln is allowed to use.
class LimitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string shape_str(const Shape& s);

// Element count of `s`, refusing negative dims and products beyond `limit` elements.
size_t checked_numel(const Shape& s, size_t limit, const std::string& what);

struct Tensor {
  DType dtype = DType::undefined;
  Shape shape;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // set when this tensor owns (or shares) its bytes

  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  size_t nbytes() const { return numel() * dtype_size(dtype); }
  size_t rank() const { return shape.size(); }
  template <typename T> T* ptr() { return static_cast<T*>(data); }
  template <typename T> const T* ptr() const { return static_cast<const T*>(data); }
};

// Row-major strides (in elements) of a shape.
std::vector<size_t> strides_of(const Shape& s);

// A heap tensor owning fresh (uninitialized) bytes.
Tensor make_heap_tensor(DType dtype, const Shape& shape);

}  // namespace kiln
