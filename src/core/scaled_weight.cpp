// Element-level codec of the build step's weight types (core/scaled_weight.h).
#include "core/scaled_weight.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace anvil {

float activation_qmax(DType dtype) {
  return dtype == DType::kFP8E4M3 ? 448.0f : 127.0f;
}

Status check_scaled_weight(const Tensor& w, const std::string& what) {
  if (!is_scaled_weight(w.dtype)) {
    return invalid_argument(what + ": " + w.describe() + " is not an fp8/int8/int4 weight");
  }
  if (w.ndim != 2 || !w.is_contiguous())
    return invalid_argument(what + ": " + w.describe() + " must be a contiguous matrix");
  if (!w.scales.defined()) return invalid_argument(what + ": " + w.describe() + " has no scales");
  const int64_t cols = w.shape[1];
  const int32_t g = w.scales.group_size;
  if (g < 0 || (g > 0 && cols % g != 0)) {
    return invalid_argument(what + ": group size " + std::to_string(g) + " does not divide the " +
                            std::to_string(cols) + " columns");
  }
  if (w.dtype == DType::kInt4 && cols % 2 != 0) {
    return invalid_argument(what + ": an int4 weight needs an even column count, got " + std::to_string(cols));
  }
  if (w.scales.activations == ActivationQuant::kPerTokenDynamic) {
    if (w.dtype == DType::kInt4 || g != 0 || w.scales.zero != nullptr) {
      return invalid_argument(what +
                              ": W8A8 (per-token activations) needs an fp8 or int8 weight with one symmetric "
                              "scale per row, got " +
                              w.describe() + " group size " + std::to_string(g));
    }
  }
  return Status();
}

namespace {

template <typename Fn>
void for_each_code(const Tensor& w, int64_t row_begin, int64_t num_rows, Fn fn) {
  const int64_t cols = w.shape[1];
  const auto* data = static_cast<const uint8_t*>(w.data);
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t row = row_begin + r;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t idx = row * cols + c;
      float q;
      switch (w.dtype) {
        case DType::kFP8E4M3:
          q = fp8e4m3_to_float(data[idx]);
          break;
        case DType::kInt8:
          q = static_cast<float>(static_cast<int8_t>(data[idx]));
          break;
        default:
          q = static_cast<float>(int4_at(data, idx));
          break;
      }
      fn(r, row, c, q);
    }
  }
}

}  // namespace

void dequantize_scaled_rows(const Tensor& w, int64_t row_begin, int64_t num_rows, float* out) {
  const int64_t cols = w.shape[1];
  const int64_t groups = w.scales.num_groups(cols);
  const int64_t g = w.scales.group_size == 0 ? cols : w.scales.group_size;
  const float* scale = w.scales.scale;
  const float* zero = w.scales.zero;
  for_each_code(w, row_begin, num_rows, [&](int64_t r, int64_t row, int64_t c, float q) {
    const int64_t k = row * groups + c / g;
    out[r * cols + c] = (q - (zero != nullptr ? zero[k] : 0.0f)) * scale[k];
  });
}

void decode_scaled_codes(const Tensor& w, int64_t row_begin, int64_t num_rows, float* out) {
  const int64_t cols = w.shape[1];
  for_each_code(w, row_begin, num_rows, [&](int64_t r, int64_t, int64_t c, float q) { out[r * cols + c] = q; });
}

float quantize_activation_row(const float* x, int64_t cols, DType dtype, float* codes) {
  float amax = 0.0f;
  for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[c]));
  const float qmax = activation_qmax(dtype);
  const float s = amax > 0.0f ? amax / qmax : 1.0f;
  for (int64_t c = 0; c < cols; ++c) {
    const float v = x[c] / s;
    codes[c] = dtype == DType::kFP8E4M3 ? fp8e4m3_to_float(float_to_fp8e4m3(v))
                                        : std::clamp(std::nearbyint(v), -127.0f, 127.0f);
  }
  return s;
}

}  // namespace anvil
