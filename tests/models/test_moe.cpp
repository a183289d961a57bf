// Mixture of experts (Mixtral) on the CPU: the router picks the same experts as Hugging Face on the fixture
// (tests/data/hf/mixtral_moe, made by tools/make_hf_fixtures.py with HF's router logits and picks), its logits
// agree within 1e-4, and the two MoE ops match plain per-token loops on random inputs, ties included.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <tuple>

#include "backends/backend.h"
#include "models/model.h"
#include "models/registry.h"
#include "runner_test_util.h"
#include "runtime/model_runner.h"

namespace anvil {
namespace {

using json = nlohmann::json;
const std::string kFixture = std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf/mixtral_moe";

json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return json::parse(f);
}

std::vector<float> to_vector(const Tensor& t) {
  std::vector<float> v(t.numel());
  convert_to_f32(t.data, t.dtype, v.data(), v.size());
  return v;
}

TEST(MoeParity, RouterPicksTheExpertsHuggingFacePicks) {
  const json ref = read_json(kFixture + "/reference.json");
  auto ckpt = load_checkpoint(kFixture);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  auto rig = test::make_runner_rig(make_cpu_backend(CpuBackendOptions{.num_threads = 2}), *ckpt, 16, 4, RunnerConfig{});
  ASSERT_TRUE(rig.runner);
  std::map<int, std::vector<float>> router_logits;
  std::map<int, std::vector<int32_t>> expert_ids;
  rig.model->set_debug_hook([&](std::string_view name, int layer, const Tensor& t) {
    if (name == "router_logits") router_logits[layer] = to_vector(t);
    if (name == "expert_ids") expert_ids[layer].assign(t.ptr<const int32_t>(), t.ptr<const int32_t>() + t.numel());
  });
  const std::vector<int32_t> ids = ref["logits_input_ids"].get<std::vector<int32_t>>();
  std::vector<int32_t> blocks = {3, 0, 7, 1};
  SequenceStep step{.token_ids = ids, .num_computed = 0, .block_ids = blocks, .wants_all_logits = true};
  auto logits = rig.runner->step(std::span<const SequenceStep>(&step, 1));
  ASSERT_TRUE(logits.ok()) << logits.status().to_string();

  const int64_t num_layers = ckpt->config.num_layers;
  ASSERT_EQ(static_cast<int64_t>(ref["router_top_experts"].size()), num_layers);
  for (int l = 0; l < num_layers; ++l) {
    const json& want_ids = ref["router_top_experts"][l];
    const json& want_logits = ref["router_logits"][l];
    ASSERT_EQ(expert_ids[l].size(), ids.size() * want_ids[0].size()) << "layer " << l;
    const size_t k = want_ids[0].size();
    const size_t num_experts = want_logits[0].size();
    double max_ref = 0.0, max_diff = 0.0;
    for (size_t t = 0; t < ids.size(); ++t) {
      for (size_t j = 0; j < k; ++j) {
        EXPECT_EQ(expert_ids[l][t * k + j], want_ids[t][j].get<int32_t>()) << "layer " << l << " token " << t;
      }
      for (size_t e = 0; e < num_experts; ++e) {
        const double r = want_logits[t][e].get<double>();
        max_ref = std::max(max_ref, std::abs(r));
        max_diff = std::max(max_diff, std::abs(router_logits[l][t * num_experts + e] - r));
      }
    }
    EXPECT_LT(max_diff / max_ref, 1e-4) << "router logits of layer " << l;
  }
  const int64_t vocab = ckpt->config.vocab_size;
  double max_ref = 0.0, max_diff = 0.0;
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int64_t v = 0; v < vocab; ++v) {
      const double r = ref["logits"][t][v].get<double>();
      max_ref = std::max(max_ref, std::abs(r));
      max_diff = std::max(max_diff, std::abs((*logits)[t * vocab + v] - r));
    }
  }
  EXPECT_LT(max_diff / max_ref, 1e-4);
}

class MoeOps : public ::testing::Test {
 protected:
  Tensor host_f32(std::vector<float> values, std::initializer_list<int64_t> shape) {
    Buffer b = Buffer::host(values.size() * sizeof(float));
    std::memcpy(b.data(), values.data(), values.size() * sizeof(float));
    Tensor t = b.view(DType::kF32, shape);
    buffers_.push_back(std::move(b));
    return t;
  }
  Tensor host_i32(size_t n, std::initializer_list<int64_t> shape) {
    Buffer b = Buffer::host(std::max<size_t>(n, 1) * sizeof(int32_t));
    Tensor t = b.view(DType::kI32, shape);
    buffers_.push_back(std::move(b));
    return t;
  }
  std::vector<float> randn(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }
  std::unique_ptr<Backend> cpu_ = make_cpu_backend(CpuBackendOptions{.num_threads = 2});
  std::mt19937 rng_{7};
  std::vector<Buffer> buffers_;
};

TEST_F(MoeOps, RouteTakesTheLargestProbabilitiesLowerIdOnTies) {
  // Token 0: experts 1 and 3 tie for first, 0 and 2 for third: picks 1, 3, then 0. Token 1: distinct.
  const Tensor logits = host_f32({0.5f, 2.0f, 0.5f, 2.0f, -1.0f, 0.1f, 0.3f, -2.0f, 1.5f, 0.2f}, {2, 5});
  const Tensor ids = host_i32(6, {2, 3});
  const Tensor w = host_f32(std::vector<float>(6), {2, 3});
  ASSERT_TRUE(cpu_->moe_route(logits, 3, /*renormalize=*/false, ids, w).ok());
  const int32_t* got = ids.ptr<const int32_t>();
  EXPECT_EQ(std::vector<int32_t>(got, got + 6), (std::vector<int32_t>{1, 3, 0, 3, 1, 4}));
  const double z0 = 2 * std::exp(0.5) + 2 * std::exp(2.0) + std::exp(-1.0);
  EXPECT_NEAR(w.ptr<const float>()[0], std::exp(2.0) / z0, 1e-6);
  EXPECT_NEAR(w.ptr<const float>()[2], std::exp(0.5) / z0, 1e-6);
  ASSERT_TRUE(cpu_->moe_route(logits, 3, /*renormalize=*/true, ids, w).ok());
  for (int t = 0; t < 2; ++t) {
    const float* wt = w.ptr<const float>() + 3 * t;
    EXPECT_NEAR(wt[0] + wt[1] + wt[2], 1.0f, 1e-6);
    EXPECT_GE(wt[0], wt[1]);
    EXPECT_GE(wt[1], wt[2]);
  }
  EXPECT_FALSE(cpu_->moe_route(logits, 6, true, host_i32(12, {2, 6}), host_f32(std::vector<float>(12), {2, 6})).ok());
}

TEST_F(MoeOps, ExpertsMatchAPerTokenLoopAtOddSizes) {
  for (auto [tokens, hidden, inter, experts, k] : {std::tuple{1, 7, 5, 3, 1}, std::tuple{19, 33, 17, 7, 2},
                                                   std::tuple{111, 16, 24, 5, 3}, std::tuple{7, 8, 8, 1, 1}}) {
    const std::string what =
        std::to_string(tokens) + " tokens, " + std::to_string(experts) + " experts, top " + std::to_string(k);
    auto xs = randn(static_cast<size_t>(tokens) * hidden);
    auto gus = randn(static_cast<size_t>(experts) * 2 * inter * hidden, 0.3f);
    auto downs = randn(static_cast<size_t>(experts) * hidden * inter, 0.3f);
    const Tensor x = host_f32(xs, {tokens, hidden});
    const Tensor gu = host_f32(gus, {experts, 2 * inter, hidden});
    const Tensor down = host_f32(downs, {experts, hidden, inter});
    const Tensor ids = host_i32(static_cast<size_t>(tokens) * k, {tokens, k});
    const Tensor w = host_f32(std::vector<float>(static_cast<size_t>(tokens) * k), {tokens, k});
    ASSERT_TRUE(
        cpu_->moe_route(host_f32(randn(static_cast<size_t>(tokens) * experts), {tokens, experts}), k, true, ids, w)
            .ok());
    const int64_t rows = static_cast<int64_t>(tokens) * k;
    const MoeBuffers buf{.sorted_rows = host_i32(rows, {rows}),
                         .expert_offsets = host_i32(experts + 1, {experts + 1}),
                         .pick_positions = host_i32(rows, {rows}),
                         .gate_up = host_f32(std::vector<float>(rows * 2 * inter), {rows, 2 * inter}),
                         .act = host_f32(std::vector<float>(rows * inter), {rows, inter}),
                         .expert_out = host_f32(std::vector<float>(rows * hidden), {rows, hidden})};
    const Tensor out = host_f32(std::vector<float>(static_cast<size_t>(tokens) * hidden, NAN), {tokens, hidden});
    const Status st = cpu_->moe_experts(x, gu, down, ids, w, buf, out);
    ASSERT_TRUE(st.ok()) << st.to_string();
    // Offsets partition the rows; sorted rows are grouped by expert.
    const int32_t* off = buf.expert_offsets.ptr<const int32_t>();
    EXPECT_EQ(off[0], 0);
    EXPECT_EQ(off[experts], rows);
    for (int e = 0; e < experts; ++e) {
      for (int32_t i = off[e]; i < off[e + 1]; ++i) {
        EXPECT_EQ(ids.ptr<const int32_t>()[buf.sorted_rows.ptr<const int32_t>()[i]], e) << what;
      }
    }
    double max_diff = 0.0, max_ref = 0.0;
    for (int t = 0; t < tokens; ++t) {
      std::vector<double> want(hidden, 0.0);
      for (int j = 0; j < k; ++j) {
        const int e = ids.ptr<const int32_t>()[t * k + j];
        const double wt = w.ptr<const float>()[t * k + j];
        std::vector<double> a(inter);
        for (int i = 0; i < inter; ++i) {
          double g = 0.0, u = 0.0;
          for (int d = 0; d < hidden; ++d) {
            g += gus[(static_cast<size_t>(e) * 2 * inter + i) * hidden + d] * xs[t * hidden + d];
            u += gus[(static_cast<size_t>(e) * 2 * inter + inter + i) * hidden + d] * xs[t * hidden + d];
          }
          a[i] = g / (1.0 + std::exp(-g)) * u;
        }
        for (int d = 0; d < hidden; ++d) {
          double y = 0.0;
          for (int i = 0; i < inter; ++i) y += downs[(static_cast<size_t>(e) * hidden + d) * inter + i] * a[i];
          want[d] += wt * y;
        }
      }
      for (int d = 0; d < hidden; ++d) {
        max_ref = std::max(max_ref, std::abs(want[d]));
        max_diff = std::max(max_diff, std::abs(out.ptr<const float>()[t * hidden + d] - want[d]));
      }
    }
    EXPECT_LT(max_diff / max_ref, 1e-5) << what;
  }
}

}  // namespace
}  // namespace anvil
