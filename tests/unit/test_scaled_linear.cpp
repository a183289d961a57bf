// The CPU reference linear on the build step's weight types (fp8 / int8 / int4 with WeightScales) against a plain
// double-precision loop written from the contract of core/tensor.h: weight-only (W8A16, W4A16, with and without
// zero points, per row and per group) and W8A8 (per-token dynamic fp8 / int8 activations), on seeded random
// inputs with odd sizes; and the errors a malformed weight gives.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "build/quantize.h"

namespace anvil {
namespace {

struct Case {
  DType dtype;
  int32_t group_size;
  bool has_zero;
  ActivationQuant acts;
  int64_t num_tokens, out_features, cols;
};

std::string case_name(const Case& c) {
  return std::string(dtype_name(c.dtype)) + "_g" + std::to_string(c.group_size) + (c.has_zero ? "_zero" : "") +
         (c.acts == ActivationQuant::kPerTokenDynamic ? "_w8a8" : "_wo") + "_" + std::to_string(c.num_tokens) + "x" +
         std::to_string(c.out_features) + "x" + std::to_string(c.cols);
}

// The real value of a code, written out from the contract (not through the library's decoder).
double code_value(DType dtype, const uint8_t* data, int64_t idx) {
  if (dtype == DType::kInt8) return static_cast<int8_t>(data[idx]);
  if (dtype == DType::kInt4) {
    const int nib = (idx % 2 == 0) ? (data[idx / 2] & 0xf) : (data[idx / 2] >> 4);
    return nib >= 8 ? nib - 16 : nib;
  }
  return fp8e4m3_to_float(data[idx]);
}

// A weight with random codes over the type's whole range, random positive scales and (optionally) zeros.
QuantizedWeight random_weight(const Case& c, std::mt19937* rng) {
  Expected<QuantizedWeight> q = allocate_quantized(c.dtype, c.out_features, c.cols, c.group_size, c.has_zero, c.acts);
  EXPECT_TRUE(q.ok()) << q.status().to_string();
  auto* data = static_cast<uint8_t*>(q->tensor.data);
  std::uniform_int_distribution<int> byte(0, 255);
  for (size_t i = 0; i < q->tensor.nbytes(); ++i) {
    uint8_t b = static_cast<uint8_t>(byte(*rng));
    if (c.dtype == DType::kFP8E4M3 && (b & 0x7f) == 0x7f) b ^= 0x01;  // no NaN codes
    if (c.dtype == DType::kInt8 && b == 0x80) b = 0x81;               // -128 is outside the symmetric range
    data[i] = b;
  }
  const int64_t n = c.out_features * q->tensor.scales.num_groups(c.cols);
  std::uniform_real_distribution<float> scale(0.001f, 0.02f), zero(-3.0f, 3.0f);
  for (int64_t i = 0; i < n; ++i) const_cast<float*>(q->tensor.scales.scale)[i] = scale(*rng);
  if (c.has_zero) {
    for (int64_t i = 0; i < n; ++i) const_cast<float*>(q->tensor.scales.zero)[i] = zero(*rng);
  }
  return std::move(*q);
}

// out[t][r] from the contract, in double; W8A8 quantizes each token's row first (amax / qmax, x / s in fp32).
std::vector<double> reference(const Case& c, const Tensor& w, const std::vector<float>& x, bool quantize_acts) {
  const int64_t g = c.group_size == 0 ? c.cols : c.group_size;
  const int64_t groups = c.cols / g;
  const auto* data = static_cast<const uint8_t*>(w.data);
  std::vector<double> out(static_cast<size_t>(c.num_tokens * c.out_features));
  for (int64_t t = 0; t < c.num_tokens; ++t) {
    std::vector<double> xt(x.begin() + t * c.cols, x.begin() + (t + 1) * c.cols);
    double s_x = 1.0;
    if (quantize_acts) {
      float amax = 0.0f;
      for (int64_t i = 0; i < c.cols; ++i) amax = std::max(amax, std::fabs(x[t * c.cols + i]));
      const float qmax = c.dtype == DType::kFP8E4M3 ? 448.0f : 127.0f;
      const float s = amax / qmax;
      s_x = s;
      for (int64_t i = 0; i < c.cols; ++i) {
        const float v = x[t * c.cols + i] / s;
        xt[i] = c.dtype == DType::kFP8E4M3 ? fp8e4m3_to_float(float_to_fp8e4m3(v))
                                           : std::clamp(std::nearbyint(v), -127.0f, 127.0f);
      }
    }
    for (int64_t r = 0; r < c.out_features; ++r) {
      double acc = 0.0;
      for (int64_t i = 0; i < c.cols; ++i) {
        const int64_t k = r * groups + i / g;
        const double zero = w.scales.zero != nullptr ? w.scales.zero[k] : 0.0;
        const double q = code_value(c.dtype, data, r * c.cols + i) - zero;
        acc += quantize_acts ? xt[i] * q : xt[i] * q * w.scales.scale[k];
      }
      out[t * c.out_features + r] = quantize_acts ? acc * s_x * w.scales.scale[r] : acc;
    }
  }
  return out;
}

class ScaledLinear : public ::testing::TestWithParam<Case> {};

TEST_P(ScaledLinear, MatchesTheContractInDouble) {
  const Case c = GetParam();
  std::mt19937 rng(1234 + static_cast<uint32_t>(c.cols * 7 + c.out_features));
  QuantizedWeight w = random_weight(c, &rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(c.num_tokens * c.cols));
  for (float& v : x) v = normal(rng);
  std::vector<float> bias(static_cast<size_t>(c.out_features));
  for (float& v : bias) v = normal(rng);
  std::vector<float> out(static_cast<size_t>(c.num_tokens * c.out_features), NAN);
  const Tensor xt = Tensor::make(x.data(), DType::kF32, {c.num_tokens, c.cols});
  const Tensor bt = Tensor::make(bias.data(), DType::kF32, {c.out_features});
  const Tensor ot = Tensor::make(out.data(), DType::kF32, {c.num_tokens, c.out_features});
  std::unique_ptr<Backend> cpu = make_cpu_backend({.num_threads = 2});
  ASSERT_TRUE(cpu->linear(xt, w.tensor, bt, ot).ok());

  const bool w8a8 = c.acts == ActivationQuant::kPerTokenDynamic;
  const std::vector<double> ref = reference(c, w.tensor, x, w8a8);
  double scale = 0.0, max_err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) scale = std::max(scale, std::fabs(ref[i]));
  for (size_t i = 0; i < ref.size(); ++i) {
    max_err = std::max(max_err, std::fabs(out[i] - bias[i % c.out_features] - ref[i]));
  }
  EXPECT_LT(max_err, 2e-5 * scale + 1e-6) << "scale " << scale;
  if (w8a8) {
    // The activations really are quantized: the weight-only result of the same weight is further away.
    const std::vector<double> wo = reference(c, w.tensor, x, false);
    double diff = 0.0;
    for (size_t i = 0; i < wo.size(); ++i) diff = std::max(diff, std::fabs(wo[i] - ref[i]));
    EXPECT_GT(diff, 50 * max_err + 1e-6);
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (auto [t, o] : {std::pair<int64_t, int64_t>{1, 7}, {7, 111}, {19, 1}, {33, 130}}) {
    out.push_back({DType::kInt8, 0, false, ActivationQuant::kNone, t, o, 111});
    out.push_back({DType::kFP8E4M3, 0, false, ActivationQuant::kNone, t, o, 111});
    out.push_back({DType::kFP8E4M3, 0, false, ActivationQuant::kPerTokenDynamic, t, o, 111});
    out.push_back({DType::kInt8, 0, false, ActivationQuant::kPerTokenDynamic, t, o, 111});
    out.push_back({DType::kInt4, 128, false, ActivationQuant::kNone, t, o, 384});
    out.push_back({DType::kInt4, 128, true, ActivationQuant::kNone, t, o, 256});
    out.push_back({DType::kInt4, 0, false, ActivationQuant::kNone, t, o, 38});
    out.push_back({DType::kInt8, 32, true, ActivationQuant::kNone, t, o, 96});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Types, ScaledLinear, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return case_name(info.param); });

TEST(ScaledLinearErrors, MalformedWeightsAreRefusedByName) {
  std::vector<float> x(2 * 64, 1.0f), out(2 * 4);
  std::vector<uint8_t> data(4 * 64);
  std::vector<float> scales(4 * 3, 1.0f);
  std::unique_ptr<Backend> cpu = make_cpu_backend({.num_threads = 1});
  const Tensor xt = Tensor::make(x.data(), DType::kF32, {2, 64});
  const Tensor ot = Tensor::make(out.data(), DType::kF32, {2, 4});
  Tensor w = Tensor::make(data.data(), DType::kInt8, {4, 64});
  Status s = cpu->linear(xt, w, Tensor(), ot);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.to_string().find("has no scales"), std::string::npos) << s.to_string();
  w.scales = {.scale = scales.data(), .zero = nullptr, .group_size = 48};
  s = cpu->linear(xt, w, Tensor(), ot);
  EXPECT_NE(s.to_string().find("group size 48 does not divide the 64 columns"), std::string::npos) << s.to_string();
  Tensor w4 = Tensor::make(data.data(), DType::kInt4, {4, 64});
  w4.scales = {.scale = scales.data(), .group_size = 0, .activations = ActivationQuant::kPerTokenDynamic};
  s = cpu->linear(xt, w4, Tensor(), ot);
  EXPECT_NE(s.to_string().find("W8A8"), std::string::npos) << s.to_string();
  EXPECT_FALSE(cpu->upload_weight(w4, nullptr).ok());
}

}  // namespace
}  // namespace anvil
