// Tensor view helpers and host Buffer allocation.
#include "core/tensor.h"

#include <cstdlib>
#include <new>

namespace anvil {

Tensor Tensor::make(void* data, DType dtype, const int64_t* shape, int ndim, Device device) {
  assert(ndim >= 0 && ndim <= kMaxDims);
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = ndim;
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    t.shape[i] = shape[i];
    t.strides[i] = stride;
    stride *= shape[i];
  }
  return t;
}

Tensor Tensor::make(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device) {
  return make(data, dtype, shape.begin(), static_cast<int>(shape.size()), device);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

size_t Tensor::nbytes() const {
  if (dtype == DType::kInt4) return static_cast<size_t>((numel() + 1) / 2);
  if (!is_quantized(dtype)) return static_cast<size_t>(numel()) * dtype_size(dtype);
  if (ndim == 0) return 0;
  const int64_t cols = shape[ndim - 1];
  return static_cast<size_t>(numel() / (cols == 0 ? 1 : cols)) * dtype_row_bytes(dtype, cols);
}

bool Tensor::is_contiguous() const {
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != stride) return false;
    stride *= shape[i];
  }
  return true;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  assert(ndim >= 1 && begin >= 0 && begin <= end && end <= shape[0]);
  Tensor t = *this;
  t.shape[0] = end - begin;
  if (is_quantized(dtype)) {  // whole rows of blocks
    assert(ndim == 2);
    t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * dtype_row_bytes(dtype, shape[1]);
    return t;
  }
  if (is_scaled_weight(dtype) && scales.defined()) {  // the rows' scales (and zeros) come along
    assert(ndim == 2);
    const int64_t groups = scales.num_groups(shape[1]);
    t.scales.scale = scales.scale + begin * groups;
    if (scales.zero != nullptr) t.scales.zero = scales.zero + begin * groups;
  }
  if (dtype == DType::kInt4) {  // two per byte; a row of cols (even) elements is cols / 2 bytes
    assert(ndim == 2 && shape[1] % 2 == 0);
    t.data = static_cast<char*>(data) + begin * strides[0] / 2;
    return t;
  }
  t.data = static_cast<char*>(data) + begin * strides[0] * static_cast<int64_t>(dtype_size(dtype));
  return t;
}

Tensor Tensor::reshape(std::initializer_list<int64_t> new_shape) const {
  assert(is_contiguous());
  Tensor t = make(data, dtype, new_shape, device);
  assert(t.numel() == numel());
  return t;
}

std::string Tensor::describe() const {
  std::string s(dtype_name(dtype));
  s += "[";
  for (int i = 0; i < ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    nbytes_ = other.nbytes_;
    device_ = other.device_;
    deleter_ = std::move(other.deleter_);
    other.data_ = nullptr;
    other.nbytes_ = 0;
  }
  return *this;
}

Buffer Buffer::host(size_t nbytes) {
  const size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) throw std::bad_alloc();
  return Buffer(p, nbytes, Device::kCpu, [](void* q) { std::free(q); });
}

void Buffer::reset() {
  if (data_ != nullptr && deleter_) deleter_(data_);
  data_ = nullptr;
  nbytes_ = 0;
}

Tensor Buffer::view(DType dtype, std::initializer_list<int64_t> shape) const {
  Tensor t = Tensor::make(data_, dtype, shape, device_);
  assert(t.nbytes() <= nbytes_);
  return t;
}

}  // namespace anvil
