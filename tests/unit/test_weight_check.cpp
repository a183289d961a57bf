// The NaN/Inf scan of loaded weights: every float dtype by element, every GGUF block type by its fp16 scales, on
// random data where exactly one value is damaged (and none, which must pass).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/weight_check.h"

namespace anvil {
namespace {

TEST(WeightCheck, FloatTensorsNameTheFirstBadElement) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const int64_t rows = 37, cols = 3001;  // odd sizes, several 4096-element scan windows
    std::vector<float> f(rows * cols);
    for (float& v : f) v = normal(rng);
    std::vector<uint8_t> bytes(f.size() * dtype_size(dtype));
    convert_from_f32(f.data(), dtype, bytes.data(), f.size());
    const Tensor t = Tensor::make(bytes.data(), dtype, {rows, cols});
    EXPECT_TRUE(check_tensor_finite("w", t, "file").ok()) << dtype_name(dtype);
    const int64_t bad = 17 * cols + 2999;
    const float inf = -INFINITY;
    convert_from_f32(&inf, dtype, bytes.data() + bad * dtype_size(dtype), 1);
    const Status s = check_tensor_finite("model.layers.3.mlp.up_proj.weight", t, "file.safetensors");
    ASSERT_FALSE(s.ok()) << dtype_name(dtype);
    EXPECT_NE(s.message().find("model.layers.3.mlp.up_proj.weight"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("-Inf at element " + std::to_string(bad) + " (row 17, column 2999)"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("file.safetensors"), std::string::npos) << s.message();
  }
}

TEST(WeightCheck, QuantizedTensorsAreCheckedByTheirScales) {
  std::mt19937 rng(5);
  const uint16_t half_one = float_to_fp16(0.01f);
  for (DType dtype : {DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1, DType::kQ8_0, DType::kQ4_K, DType::kQ5_K,
                      DType::kQ6_K}) {
    const int64_t rows = 7, cols = 2 * 256;
    const int64_t blocks_per_row = cols / dtype_block_size(dtype);
    const size_t block_bytes = dtype_block_bytes(dtype);
    std::vector<uint8_t> bytes(static_cast<size_t>(rows * blocks_per_row) * block_bytes);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    // Sane scales everywhere: random bytes could be NaN patterns themselves.
    const size_t scale_at = dtype == DType::kQ6_K ? 208 : 0;
    const bool has_min =
        dtype == DType::kQ4_1 || dtype == DType::kQ5_1 || dtype == DType::kQ4_K || dtype == DType::kQ5_K;
    for (int64_t b = 0; b < rows * blocks_per_row; ++b) {
      std::memcpy(&bytes[b * block_bytes + scale_at], &half_one, 2);
      if (has_min) std::memcpy(&bytes[b * block_bytes + 2], &half_one, 2);
    }
    const Tensor t = Tensor::make(bytes.data(), dtype, {rows, cols});
    EXPECT_TRUE(check_tensor_finite("w", t, "f.gguf").ok()) << dtype_name(dtype);
    const uint16_t nan = 0x7e00;
    const int64_t bad_block = 5 * blocks_per_row + 1;
    std::memcpy(&bytes[bad_block * block_bytes + (has_min ? 2 : scale_at)], &nan, 2);
    const Status s = check_tensor_finite("blk.5.ffn_up.weight", t, "f.gguf");
    ASSERT_FALSE(s.ok()) << dtype_name(dtype);
    EXPECT_NE(s.message().find("NaN or Inf scale in block 1 of row 5"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace anvil
