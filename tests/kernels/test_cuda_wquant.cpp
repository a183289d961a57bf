// The CUDA linear on the build step's weight types (kInt8 / kInt4 weight-only, kFP8E4M3 W8A8; wquant_*.cu) against
// an fp64 reference of the dtype.h contract on seeded random weights (random integers / e4m3 codes, random scales
// and zero points) and inputs, odd row counts, fp16 and bf16. Token counts cover the decode GEMV (1-4), its
// token-slice loop (5-16), and the long-step paths (dequantize + dense GEMM; FP8: cuBLASLt FP8 GEMM or its
// fallbacks). The FP8 reference quantizes x per token as the contract does (scale = row amax / 448, e4m3 by
// round-to-nearest-even). Every case is also compared with the CPU backend's linear (the reference op). Outputs
// are poisoned before each run, so an unwritten element fails the check.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "cuda_test_util.h"

namespace anvil::test {
namespace {

// A host weight of one of the three types with its scales, and its real values (the contract's) in fp32.
struct HostWeight {
  DType dtype = DType::kInt8;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> q;
  std::vector<float> scale, zero;
  int32_t group_size = 0;
  ActivationQuant acts = ActivationQuant::kNone;
  std::vector<float> real;  // [rows, cols]

  Tensor tensor() {
    Tensor t = Tensor::make(q.data(), dtype, {rows, cols});
    t.scales.scale = scale.data();
    t.scales.zero = zero.empty() ? nullptr : zero.data();
    t.scales.group_size = group_size;
    t.scales.activations = acts;
    return t;
  }
};

HostWeight make_weight(DType dtype, int64_t rows, int64_t cols, int32_t group_size, bool with_zero, std::mt19937& rng) {
  HostWeight w;
  w.dtype = dtype;
  w.rows = rows;
  w.cols = cols;
  w.group_size = group_size;
  w.acts = dtype == DType::kFP8E4M3 && group_size == 0 && !with_zero ? ActivationQuant::kPerTokenDynamic
                                                                     : ActivationQuant::kNone;
  const int64_t groups = group_size == 0 ? 1 : cols / group_size;
  std::uniform_real_distribution<float> unit(0.5f, 1.5f);
  std::uniform_real_distribution<float> zdist(-2.5f, 2.5f);
  std::normal_distribution<float> normal(0.0f, 100.0f);
  const float base = dtype == DType::kInt4 ? 0.02f : dtype == DType::kInt8 ? 0.002f : 0.001f;
  w.scale.resize(rows * groups);
  for (float& s : w.scale) s = base * unit(rng);
  if (with_zero) {
    w.zero.resize(rows * groups);
    for (float& z : w.zero) z = zdist(rng);
  }
  std::vector<float> qv(rows * cols);
  if (dtype == DType::kInt4) {
    w.q.assign((rows * cols + 1) / 2, 0);
    for (int64_t e = 0; e < rows * cols; ++e) {
      const int v = static_cast<int>(rng() % 16) - 8;
      qv[e] = static_cast<float>(v);
      w.q[e / 2] |= static_cast<uint8_t>((v & 0xf) << (4 * (e % 2)));
    }
  } else if (dtype == DType::kInt8) {
    w.q.resize(rows * cols);
    for (int64_t e = 0; e < rows * cols; ++e) {
      const int v = static_cast<int>(rng() % 256) - 128;
      qv[e] = static_cast<float>(v);
      w.q[e] = static_cast<uint8_t>(static_cast<int8_t>(v));
    }
  } else {
    w.q.resize(rows * cols);
    for (int64_t e = 0; e < rows * cols; ++e) {
      w.q[e] = float_to_fp8e4m3(normal(rng));
      qv[e] = fp8e4m3_to_float(w.q[e]);
    }
  }
  w.real.resize(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = r * groups + (group_size == 0 ? 0 : c / group_size);
      w.real[r * cols + c] = (qv[r * cols + c] - (with_zero ? w.zero[g] : 0.0f)) * w.scale[g];
    }
  }
  return w;
}

// x as the FP8 W8A8 linear multiplies it: per token, e4m3(x / (amax / 448)) * (amax / 448).
std::vector<float> fp8_act(const std::vector<float>& x, int64_t num_tokens, int64_t cols) {
  std::vector<float> out(x.size());
  for (int64_t t = 0; t < num_tokens; ++t) {
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[t * cols + c]));
    const float s = amax / 448.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[t * cols + c];
      out[t * cols + c] = s > 0.0f ? fp8e4m3_to_float(float_to_fp8e4m3(v / s)) * s : 0.0f;
    }
  }
  return out;
}

// out[t, n] = sum_c x[t, c] * w[n, c] (+ bias[n]) in fp64.
std::vector<float> reference_linear(const std::vector<float>& x, const HostWeight& w, int64_t num_tokens,
                                    const std::vector<float>& bias) {
  const std::vector<float> xe = w.acts == ActivationQuant::kPerTokenDynamic ? fp8_act(x, num_tokens, w.cols) : x;
  std::vector<float> out(num_tokens * w.rows);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t n = 0; n < w.rows; ++n) {
      double acc = bias.empty() ? 0.0 : bias[n];
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(xe[t * w.cols + c]) * w.real[n * w.cols + c];
      out[t * w.rows + n] = static_cast<float>(acc);
    }
  }
  return out;
}

struct Case {
  DType dtype;
  int32_t group_size;
  bool zero;
  bool weight_only_fp8 = false;  // FP8 weights with ActivationQuant::kNone (uploaded dense)
};

std::string case_name(const Case& c) {
  return std::string(dtype_name(c.dtype)) + " g" + std::to_string(c.group_size) + (c.zero ? " zero" : "") +
         (c.weight_only_fp8 ? " weight-only" : "");
}

HostWeight make_case_weight(const Case& c, int64_t rows, int64_t cols, std::mt19937& rng) {
  HostWeight w = make_weight(c.dtype, rows, cols, c.group_size, c.zero, rng);
  if (c.weight_only_fp8) w.acts = ActivationQuant::kNone;
  return w;
}

constexpr Case kCases[] = {{DType::kInt8, 0, false},    {DType::kInt8, 128, true},        {DType::kInt4, 128, false},
                           {DType::kInt4, 128, true},   {DType::kInt4, 0, false},         {DType::kInt4, 32, false},
                           {DType::kFP8E4M3, 0, false}, {DType::kFP8E4M3, 0, false, true}};

// The CPU backend's linear (the reference op, cpu_scaled_linear.cpp) on the same host weight and fp32 x.
std::vector<float> cpu_linear(OpHarness& h, const HostWeight& w, const std::vector<float>& x, int64_t num_tokens,
                              const std::vector<float>& bias) {
  HostWeight copy = w;
  std::vector<Buffer> storage;
  auto dev = h.cpu().upload_weight(copy.tensor(), &storage);
  EXPECT_TRUE(dev.ok()) << dev.status().to_string();
  if (!dev.ok()) return {};
  Tensor out = h.host(std::vector<float>(num_tokens * w.rows, 0.0f), {num_tokens, w.rows});
  const Tensor b = bias.empty() ? Tensor() : h.host(bias, {w.rows});
  const Status s = h.cpu().linear(h.host(x, {num_tokens, w.cols}), *dev, b, out);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return h.read_host(out);
}

class CudaWquant : public ::testing::TestWithParam<DType> {};

TEST_P(CudaWquant, LinearMatchesContractReference) {
  OpHarness h(GetParam());
  if (!h.ok()) GTEST_SKIP() << "no usable GPU: " << h.error();
  std::mt19937 rng(1234);
  struct Shape {
    int64_t rows, cols;
  };
  for (const Case& c : kCases) {
    for (const Shape shape : {Shape{7, 384}, Shape{111, 1152}, Shape{256, 512}}) {
      HostWeight w = make_case_weight(c, shape.rows, shape.cols, rng);
      std::vector<Buffer> storage;
      auto dev = h.gpu().upload_weight(w.tensor(), &storage);
      ASSERT_TRUE(dev.ok()) << dev.status().to_string();
      for (int64_t num_tokens : {1, 2, 3, 4, 7, 16, 19, 40}) {
        for (bool with_bias : {false, true}) {
          if (with_bias && num_tokens != 3 && num_tokens != 40) continue;
          const std::string where = case_name(c) + " [" + std::to_string(shape.rows) + ", " +
                                    std::to_string(shape.cols) + "] T=" + std::to_string(num_tokens) +
                                    (with_bias ? " bias" : "");
          std::vector<float> x = random_values(num_tokens * shape.cols, rng);
          round_to(x, h.dtype());
          std::vector<float> bias;
          if (with_bias) {
            bias = random_values(shape.rows, rng, 0.5f);
            round_to(bias, h.dtype());
          }
          const std::vector<float> want = reference_linear(x, w, num_tokens, bias);
          Tensor xd = h.device(x, {num_tokens, shape.cols});
          Tensor bd = with_bias ? h.device(bias, {shape.rows}) : Tensor();
          Tensor out = h.device(std::vector<float>(num_tokens * shape.rows, 1e4f), {num_tokens, shape.rows});
          ASSERT_TRUE(h.gpu().linear(xd, *dev, bd, out).ok()) << where;
          const std::vector<float> got = h.download(out);
          EXPECT_LT(rel_l2(got, want), tolerance(h.dtype())) << where;
          if (num_tokens == 3 || num_tokens == 40) {  // and against the CPU backend's op
            EXPECT_LT(rel_l2(got, cpu_linear(h, w, x, num_tokens, bias)), tolerance(h.dtype())) << where << " vs cpu";
          }
        }
      }
    }
  }
}

TEST_P(CudaWquant, Fp32OutputsAndSwigluMatchReference) {
  OpHarness h(GetParam());
  if (!h.ok()) GTEST_SKIP() << "no usable GPU: " << h.error();
  std::mt19937 rng(99);
  for (const Case& c : kCases) {
    const int64_t n = 19, cols = 640;
    HostWeight w = make_case_weight(c, 2 * n, cols, rng);
    std::vector<Buffer> storage;
    auto dev = h.gpu().upload_weight(w.tensor(), &storage);
    ASSERT_TRUE(dev.ok()) << dev.status().to_string();
    for (int64_t num_tokens : {1, 3, 6, 24}) {
      const std::string where = case_name(c) + " T=" + std::to_string(num_tokens);
      std::vector<float> x = random_values(num_tokens * cols, rng);
      round_to(x, h.dtype());
      const std::vector<float> proj = reference_linear(x, w, num_tokens, {});
      // fp32 outputs (the LM head's logits).
      Tensor xd = h.device(x, {num_tokens, cols});
      Tensor logits = h.device_f32(std::vector<float>(num_tokens * 2 * n, 1e4f), {num_tokens, 2 * n});
      ASSERT_TRUE(h.gpu().linear(xd, *dev, Tensor(), logits).ok()) << where;
      EXPECT_LT(rel_l2(h.download(logits), proj), tolerance(h.dtype())) << where << " fp32 out";
      // The fused gate/up projection: silu(gate) * up.
      std::vector<float> want(num_tokens * n);
      for (int64_t t = 0; t < num_tokens; ++t) {
        for (int64_t i = 0; i < n; ++i) {
          const double g = proj[t * 2 * n + i], u = proj[t * 2 * n + n + i];
          want[t * n + i] = static_cast<float>(g / (1.0 + std::exp(-g)) * u);
        }
      }
      Tensor scratch = h.device(std::vector<float>(num_tokens * 2 * n, 1e4f), {num_tokens, 2 * n});
      Tensor out = h.device(std::vector<float>(num_tokens * n, 1e4f), {num_tokens, n});
      ASSERT_TRUE(h.gpu().linear_swiglu(xd, *dev, scratch, out).ok()) << where;
      EXPECT_LT(rel_l2(h.download(out), want), 2 * tolerance(h.dtype())) << where << " swiglu";
    }
  }
}

// Layouts the kernels do not take (columns not a multiple of the 16-byte chunk, groups smaller than a chunk;
// weight-only FP8) are dequantized at upload and must still compute the contract's values.
TEST_P(CudaWquant, UnsupportedLayoutsRunDense) {
  OpHarness h(GetParam());
  if (!h.ok()) GTEST_SKIP() << "no usable GPU: " << h.error();
  std::mt19937 rng(7);
  const Case odd[] = {{DType::kInt4, 16, false}, {DType::kInt8, 8, true}, {DType::kFP8E4M3, 24, false}};
  for (const Case& c : odd) {
    HostWeight w = make_weight(c.dtype, 19, 48, c.group_size, c.zero, rng);
    std::vector<Buffer> storage;
    auto dev = h.gpu().upload_weight(w.tensor(), &storage);
    ASSERT_TRUE(dev.ok()) << dev.status().to_string();
    for (int64_t num_tokens : {1, 9}) {
      std::vector<float> x = random_values(num_tokens * 48, rng);
      round_to(x, h.dtype());
      const std::vector<float> want = reference_linear(x, w, num_tokens, {});
      Tensor out = h.device(std::vector<float>(num_tokens * 19, 1e4f), {num_tokens, 19});
      ASSERT_TRUE(h.gpu().linear(h.device(x, {num_tokens, 48}), *dev, Tensor(), out).ok());
      EXPECT_LT(rel_l2(h.download(out), want), tolerance(h.dtype())) << case_name(c) << " T=" << num_tokens;
    }
  }
  // What the kernels cannot compute is refused with a message naming it: INT8 W8A8, FP8 W8A8 on odd columns.
  for (const auto& [dtype, cols] : {std::pair{DType::kInt8, int64_t{64}}, std::pair{DType::kFP8E4M3, int64_t{40}}}) {
    HostWeight w8a8 = make_weight(dtype, 4, cols, 0, false, rng);
    w8a8.acts = ActivationQuant::kPerTokenDynamic;
    std::vector<Buffer> storage;
    auto refused = h.gpu().upload_weight(w8a8.tensor(), &storage);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().to_string().find("W8A8"), std::string::npos) << refused.status().to_string();
  }
  // A group size that does not divide the columns is refused with a message naming it.
  HostWeight bad = make_weight(DType::kInt8, 4, 64, 0, false, rng);
  Tensor t = bad.tensor();
  t.scales.group_size = 48;
  std::vector<Buffer> storage;
  auto refused = h.gpu().upload_weight(t, &storage);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().to_string().find("group size 48"), std::string::npos) << refused.status().to_string();
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaWquant, ::testing::Values(DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace anvil::test
