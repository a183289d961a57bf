// NaN/Inf scan of loaded weights (weight_check.h). Each float tensor is cut into chunks that OpenMP threads scan
// by exponent bits (all ones = Inf or NaN); the first bad element in index order is reported.
#include "formats/weight_check.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace anvil {
namespace {

// Index of the first element of [begin, end) whose exponent bits are all ones, or `end`.
template <typename Bits, Bits kExpMask>
int64_t first_nonfinite(const Bits* data, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; i += 4096) {
    const int64_t stop = std::min(end, i + 4096);
    bool bad = false;
    for (int64_t j = i; j < stop; ++j) bad |= (data[j] & kExpMask) == kExpMask;  // vectorizes
    if (bad) {
      for (int64_t j = i; j < stop; ++j) {
        if ((data[j] & kExpMask) == kExpMask) return j;
      }
    }
  }
  return end;
}

template <typename Bits, Bits kExpMask>
int64_t scan(const void* ptr, int64_t n) {
  const Bits* data = static_cast<const Bits*>(ptr);
  constexpr int64_t kChunk = int64_t{1} << 20;
  const int64_t num_chunks = (n + kChunk - 1) / kChunk;
  int64_t first = n;
#pragma omp parallel for schedule(dynamic, 1) reduction(min : first) if (num_chunks > 1)
  for (int64_t c = 0; c < num_chunks; ++c) {
    const int64_t begin = c * kChunk;
    const int64_t end = std::min(n, begin + kChunk);
    const int64_t bad = first_nonfinite<Bits, kExpMask>(data, begin, end);
    if (bad < end) first = std::min(first, bad);
  }
  return first;
}

// Byte offsets of the fp16 scale fields in one block (GGUF layouts, formats/gguf_quant.cpp): the only fields that
// can hold NaN/Inf; the quants themselves are small integers. Returns the count written to `offsets`.
int scale_offsets(DType dtype, int (&offsets)[2]) {
  switch (dtype) {
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ8_0:
      offsets[0] = 0;
      return 1;
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
      offsets[0] = 0;  // d
      offsets[1] = 2;  // m or dmin
      return 2;
    case DType::kQ6_K:
      offsets[0] = 208;  // d after ql[128], qh[64], scales[16]
      return 1;
    default:
      return 0;
  }
}

Status check_blocks_finite(const std::string& name, const Tensor& t, const std::string& source) {
  int offsets[2];
  const int num_fields = scale_offsets(t.dtype, offsets);
  const int64_t rows = t.ndim == 2 ? t.shape[0] : 1;
  const int64_t cols = t.shape[t.ndim - 1];
  const int64_t blocks_per_row = cols / dtype_block_size(t.dtype);
  const size_t block_bytes = dtype_block_bytes(t.dtype);
  const int64_t num_blocks = rows * blocks_per_row;
  const uint8_t* base = static_cast<const uint8_t*>(t.data);
  int64_t first = num_blocks;
#pragma omp parallel for schedule(static) reduction(min : first) if (num_blocks > (1 << 16))
  for (int64_t b = 0; b < num_blocks; ++b) {
    for (int f = 0; f < num_fields; ++f) {
      uint16_t h;
      std::memcpy(&h, base + static_cast<size_t>(b) * block_bytes + offsets[f], 2);
      if ((h & 0x7c00u) == 0x7c00u) first = std::min(first, b);
    }
  }
  if (first == num_blocks) return Status();
  return invalid_file(source + ": weight " + name + " " + t.describe() + " holds a NaN or Inf scale in block " +
                      std::to_string(first % blocks_per_row) + " of row " + std::to_string(first / blocks_per_row) +
                      " (a damaged file; --skip-weight-check loads it anyway)");
}

}  // namespace

Status check_tensor_finite(const std::string& name, const Tensor& t, const std::string& source) {
  if (!t.defined() || t.numel() == 0) return Status();
  if (!t.is_contiguous()) return internal_error("weight check: tensor " + name + " is not contiguous");
  const int64_t n = t.numel();
  int64_t bad = n;
  float value = 0.0f;
  switch (t.dtype) {
    case DType::kF32:
      bad = scan<uint32_t, 0x7f800000u>(t.data, n);
      if (bad < n) value = t.ptr<const float>()[bad];
      break;
    case DType::kF16:
      bad = scan<uint16_t, 0x7c00u>(t.data, n);
      if (bad < n) value = fp16_to_float(t.ptr<const uint16_t>()[bad]);
      break;
    case DType::kBF16:
      bad = scan<uint16_t, 0x7f80u>(t.data, n);
      if (bad < n) value = bf16_to_float(t.ptr<const uint16_t>()[bad]);
      break;
    default:
      if (is_quantized(t.dtype)) return check_blocks_finite(name, t, source);
      return Status();  // integer tensors are always finite
  }
  if (bad == n) return Status();
  std::string where = "element " + std::to_string(bad);
  if (t.ndim == 2)
    where += " (row " + std::to_string(bad / t.shape[1]) + ", column " + std::to_string(bad % t.shape[1]) + ")";
  return invalid_file(source + ": weight " + name + " " + t.describe() + " holds " +
                      (std::isnan(value) ? "NaN"
                       : value > 0       ? "+Inf"
                                         : "-Inf") +
                      " at " + where + " (a damaged file; --skip-weight-check loads it anyway)");
}

Status check_weights_finite(const WeightStore& weights) {
  for (const auto& [name, tensor] : weights.tensors()) {
    ANVIL_RETURN_IF_ERROR(check_tensor_finite(name, tensor, weights.source()));
  }
  return Status();
}

}  // namespace anvil
