// Scalar dtype conversions: the OCP float8 e4m3fn codec against a brute-force nearest-value search over all codes,
// and the byte sizes of the build step's weight types.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/tensor.h"

namespace anvil {
namespace {

TEST(Fp8E4M3, EveryCodeRoundTrips) {
  for (int code = 0; code < 256; ++code) {
    const float v = fp8e4m3_to_float(static_cast<uint8_t>(code));
    if ((code & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(v)) << code;
      continue;
    }
    EXPECT_EQ(float_to_fp8e4m3(v), code) << "code " << code << " value " << v;
  }
  EXPECT_EQ(fp8e4m3_to_float(0x7e), 448.0f);  // the format's largest finite value
}

// The encoder picks the nearest finite code (ties to the even code: its mantissa's last bit 0), saturating at 448.
TEST(Fp8E4M3, EncodesRandomFloatsToTheNearestCode) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> log_mag(-12.0f, 9.5f);
  for (int i = 0; i < 20000; ++i) {
    const float f = std::exp2(log_mag(rng)) * ((rng() & 1) ? -1.0f : 1.0f);
    int best = -1;
    float best_err = INFINITY;
    for (int code = 0; code < 256; ++code) {
      if ((code & 0x7f) == 0x7f) continue;
      const float v = fp8e4m3_to_float(static_cast<uint8_t>(code));
      if (std::signbit(v) != std::signbit(f)) continue;
      const float err = std::fabs(v - std::clamp(f, -448.0f, 448.0f));
      if (err < best_err || (err == best_err && (code & 1) == 0)) best_err = err, best = code;
    }
    EXPECT_EQ(float_to_fp8e4m3(f), best) << f;
  }
}

TEST(ScaledWeights, SizesAndScales) {
  EXPECT_TRUE(is_scaled_weight(DType::kInt4));
  EXPECT_FALSE(is_scaled_weight(DType::kQ4_0));
  uint8_t bytes[4 * 64];
  EXPECT_EQ(Tensor::make(bytes, DType::kInt4, {4, 128}).nbytes(), 256u);
  EXPECT_EQ(Tensor::make(bytes, DType::kInt8, {4, 64}).nbytes(), 256u);
  WeightScales s{.scale = nullptr, .zero = nullptr, .group_size = 32};
  EXPECT_EQ(s.num_groups(128), 4);
  EXPECT_EQ(WeightScales{}.num_groups(128), 1);
}

}  // namespace
}  // namespace anvil
