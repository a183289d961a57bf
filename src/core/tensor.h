// Tensor: a non-owning, strided view (data pointer, dtype, shape, device) that every op takes,
// and Buffer: an owning, move-only block of memory on one device that views are made from.
// Shapes are outermost-first; strides are in elements. At most four dimensions.
#pragma once

#include <array>
#include <cassert>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>

#include "core/dtype.h"

namespace anvil {

enum class Device : uint8_t { kCpu, kCuda };

inline constexpr int kMaxDims = 4;

// How a linear on a scaled weight treats its activations x [num_tokens, cols].
enum class ActivationQuant : uint8_t {
  // Weight-only (W8A16, W4A16): x stays in the activation dtype; out = x @ dequantized(W)^T, fp32 accumulation.
  kNone,
  // W8A8 (FP8, SmoothQuant INT8): each token's row is quantized on the fly to the weight's own type with one
  // dynamic scale, s[t] = amax_c |x[t][c]| / qmax (qmax 448 for kFP8E4M3, 127 for kInt8; s = 1 when the row is all
  // zeros), q = float_to_fp8e4m3(x / s) (round to nearest even, saturating) or clamp(nearbyint(x / s), -127, 127),
  // the division in fp32. Then out[t][r] = (sum_c q[t][c] * wq[r][c]) * s[t] * scale[r] (fp32 accumulation;
  // exact int32 accumulation for kInt8); group_size must be 0 and zero null. Only kFP8E4M3 and kInt8 weights.
  kPerTokenDynamic,
};

// Scales of a weight of the build step's types (kFP8E4M3, kInt8, kInt4; dtype.h): for a [rows, cols] weight,
// w[r][c] = (q[r][c] - zero[r][c / group_size]) * scale[r][c / group_size]; group_size 0 means one group per row.
// The arrays live on the same device as the data and are owned by whoever owns the data.
struct WeightScales {
  const float* scale = nullptr;  // fp32 [rows, num_groups]
  const float* zero = nullptr;   // fp32 [rows, num_groups], or null (symmetric: zero 0)
  int32_t group_size = 0;        // 0 (per row), or a divisor of cols (e.g. 128)
  ActivationQuant activations = ActivationQuant::kNone;

  bool defined() const { return scale != nullptr; }
  int64_t num_groups(int64_t cols) const { return group_size == 0 ? 1 : cols / group_size; }
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> strides{};
  // Set only for is_scaled_weight(dtype) weights; every other tensor leaves it empty.
  WeightScales scales;

  // A contiguous (row-major) view over `data`.
  static Tensor make(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device = Device::kCpu);
  static Tensor make(void* data, DType dtype, const int64_t* shape, int ndim, Device device = Device::kCpu);

  int64_t size(int dim) const { return shape[dim < 0 ? dim + ndim : dim]; }
  int64_t numel() const;
  // Bytes of the data; for quantized dtypes, rows of whole blocks (dtype.h).
  size_t nbytes() const;
  bool is_contiguous() const;
  bool defined() const { return data != nullptr; }

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }

  // Rows [begin, end) of the outermost dimension.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same elements, new contiguous shape; requires is_contiguous() and the same numel.
  Tensor reshape(std::initializer_list<int64_t> new_shape) const;
  // "bfloat16[4096, 4096]".
  std::string describe() const;
};

// Owning device memory. The deleter is chosen by whoever allocated it (aligned host memory, cudaFree).
class Buffer {
 public:
  Buffer() = default;
  Buffer(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
      : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  // 64-byte aligned host memory, uninitialized.
  static Buffer host(size_t nbytes);

  void reset();
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  Tensor view(DType dtype, std::initializer_list<int64_t> shape) const;

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_ = Device::kCpu;
  std::function<void(void*)> deleter_;
};

}  // namespace anvil
