// The LayerNorm families (GPT-NeoX, GPT-J, OPT, BLOOM, Falcon, StarCoder2; models/ln_decoder.h): their fixture
// configs resolve to the right family and options, config values they do not support are errors naming the field
// and the value, the dummy path builds every one of them, and the shared helpers (fused-row reordering, ALiBi
// slopes, partial rotary on the CPU) do what they say.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "models/ln_decoder.h"
#include "models/registry.h"

namespace anvil {
namespace {

using json = nlohmann::json;

const std::string kHf = std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf";
const char* const kFixtures[] = {"pythia_neox", "neox_sequential", "gptj_partial", "opt_relu",
                                 "bloom_alibi", "falcon_gqa",      "falcon_mqa",   "starcoder2"};

json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return json::parse(f);
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(LnFamilies, FixtureConfigsResolveWithTheirOptions) {
  struct Case {
    const char* name;
    const char* architecture;
    LnPositions positions;
    LnBlock block;
    int64_t num_kv_heads, rotary_dim;
  };
  const Case cases[] = {
      {"pythia_neox", "GPTNeoXForCausalLM", LnPositions::kRotary, LnBlock::kParallel, 4, 4},
      {"neox_sequential", "GPTNeoXForCausalLM", LnPositions::kRotary, LnBlock::kSequential, 4, 8},
      {"gptj_partial", "GPTJForCausalLM", LnPositions::kRotary, LnBlock::kParallel, 4, 8},
      {"opt_relu", "OPTForCausalLM", LnPositions::kLearned, LnBlock::kSequential, 4, 0},
      {"bloom_alibi", "BloomForCausalLM", LnPositions::kAlibi, LnBlock::kSequential, 6, 0},
      {"falcon_gqa", "FalconForCausalLM", LnPositions::kRotary, LnBlock::kParallel, 2, 0},
      {"falcon_mqa", "FalconForCausalLM", LnPositions::kRotary, LnBlock::kParallel, 1, 0},
      {"starcoder2", "Starcoder2ForCausalLM", LnPositions::kRotary, LnBlock::kSequential, 2, 0},
  };
  for (const Case& c : cases) {
    Expected<ModelConfig> config = parse_hf_config(read_json(kHf + "/" + c.name + "/config.json").dump(), c.name);
    ASSERT_TRUE(config.ok()) << c.name << ": " << config.status().to_string();
    EXPECT_EQ(config->architecture, c.architecture) << c.name;
    EXPECT_EQ(config->num_kv_heads, c.num_kv_heads) << c.name;
    const LnDecoderOptions& o = ln_decoder_options(*config);
    EXPECT_EQ(o.positions, c.positions) << c.name;
    EXPECT_EQ(o.block, c.block) << c.name;
    EXPECT_EQ(o.rotary_dim, c.rotary_dim) << c.name;
  }
}

// Each edit of a fixture's config.json must fail naming `field` and `value`.
TEST(LnFamilies, UnsupportedValuesNameTheFieldAndValue) {
  struct Case {
    const char* fixture;
    std::function<void(json&)> edit;
    const char* field;
    const char* value;
  };
  const Case cases[] = {
      {"pythia_neox", [](json& j) { j["rope_parameters"]["partial_rotary_factor"] = 0.35; }, "partial_rotary_factor",
       "0.3"},
      {"pythia_neox", [](json& j) { j["hidden_act"] = "silu"; }, "hidden_act", "silu"},
      {"gptj_partial", [](json& j) { j["rotary_dim"] = 7; }, "rotary_dim", "7"},
      {"opt_relu", [](json& j) { j["do_layer_norm_before"] = false; }, "do_layer_norm_before", "false"},
      {"opt_relu", [](json& j) { j["word_embed_proj_dim"] = 32; }, "word_embed_proj_dim", "32"},
      {"bloom_alibi", [](json& j) { j["apply_residual_connection_post_layernorm"] = true; },
       "apply_residual_connection_post_layernorm", "true"},
      {"falcon_gqa", [](json& j) { j["alibi"] = true; }, "alibi", "true"},
      {"falcon_gqa", [](json& j) { j["num_kv_heads"] = 3; }, "num_kv_heads", "3"},
      {"starcoder2", [](json& j) { j["sliding_window"] = 0; }, "sliding_window", "0"},
      {"starcoder2", [](json& j) { j["hidden_act"] = "swish"; }, "hidden_act", "swish"},
  };
  for (const Case& c : cases) {
    json j = read_json(kHf + "/" + c.fixture + "/config.json");
    c.edit(j);
    Expected<ModelConfig> config = parse_hf_config(j.dump(), c.fixture);
    ASSERT_FALSE(config.ok()) << c.fixture << " " << c.field;
    const std::string& m = config.status().message();
    EXPECT_TRUE(has(m, c.field)) << m;
    EXPECT_TRUE(has(m, c.value)) << m;
  }
  json baichuan = read_json(kHf + "/opt_relu/config.json");
  baichuan["architectures"] = {"BaichuanForCausalLM"};
  Expected<ModelConfig> unknown = parse_hf_config(baichuan.dump(), "baichuan");
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(has(unknown.status().message(), "BaichuanForCausalLM")) << unknown.status().message();
}

TEST(LnFamilies, DummyWeightsBuildEveryFamilysModelAndRunIt) {
  auto backend = make_cpu_backend(CpuBackendOptions{.num_threads = 1});
  for (const char* name : kFixtures) {
    Expected<Checkpoint> ckpt = load_checkpoint(kHf + "/" + name, LoadFormat::kDummy);
    ASSERT_TRUE(ckpt.ok()) << name << ": " << ckpt.status().to_string();
    const std::vector<WeightSpec> specs = model_weight_specs(ckpt->config);
    EXPECT_EQ(ckpt->weights.tensors().size(), specs.size()) << name;
    Expected<std::unique_ptr<Model>> model = create_model(*ckpt, *backend);
    ASSERT_TRUE(model.ok()) << name << ": " << model.status().to_string();
    EXPECT_GT((*model)->weight_bytes(), 0u) << name;
  }
}

TEST(LnFamilies, PerHeadQkvOrderAndBlockReorder) {
  EXPECT_EQ(per_head_qkv_order(2), (std::vector<int64_t>{0, 3, 1, 4, 2, 5}));
  // [2 heads][3][head_dim 2] rows -> q rows, k rows, v rows; each row holds its own index.
  std::vector<float> rows(12 * 3);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<float>(i / 3);
  const Tensor w = Tensor::make(rows.data(), DType::kF32, {12, 3});
  std::vector<Buffer> storage;
  const std::vector<int64_t> order = per_head_qkv_order(2);
  Expected<Tensor> out = reorder_row_blocks(w, 2, order, &storage);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  const float* o = out->ptr<const float>();
  const int expected_rows[] = {0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11};  // q0 q1 | k0 k1 | v0 v1
  for (int r = 0; r < 12; ++r) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(o[r * 3 + c], static_cast<float>(expected_rows[r])) << r;
  }
  EXPECT_FALSE(reorder_row_blocks(w, 5, order, &storage).ok());
}

TEST(LnFamilies, AlibiSlopesFollowThePowerOfTwoRule) {
  // A power of two n: slope_h = 2^(-8 (h + 1) / n).
  for (int64_t n : {4, 8, 16}) {
    const std::vector<float> s = alibi_slopes(n);
    ASSERT_EQ(static_cast<int64_t>(s.size()), n);
    for (int64_t h = 0; h < n; ++h) {
      EXPECT_NEAR(s[h], std::pow(2.0, -8.0 * static_cast<double>(h + 1) / static_cast<double>(n)), 1e-7) << n;
    }
  }
  // Otherwise the closest power of two p first, then every other slope of 2p.
  const std::vector<float> six = alibi_slopes(6);
  const std::vector<float> four = alibi_slopes(4), eight = alibi_slopes(8);
  ASSERT_EQ(six.size(), 6u);
  for (int h = 0; h < 4; ++h) EXPECT_FLOAT_EQ(six[h], four[h]);
  EXPECT_FLOAT_EQ(six[4], eight[0]);
  EXPECT_FLOAT_EQ(six[5], eight[2]);
}

// Partial rotary on the CPU: the first rotary_dim dims rotate as a full rotary of that size would, the rest are
// copied; the cache gets the same rows.
TEST(LnFamilies, PartialRotaryRotatesOnlyTheFirstDims) {
  auto backend = make_cpu_backend(CpuBackendOptions{.num_threads = 1});
  constexpr int64_t kHeadDim = 8, kRotary = 4, kTokens = 3;
  std::vector<float> q(kTokens * kHeadDim), k(kTokens * kHeadDim), v(kTokens * kHeadDim);
  for (size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.7f * static_cast<float>(i)) + 0.1f;
    k[i] = std::cos(0.3f * static_cast<float>(i));
    v[i] = 0.05f * static_cast<float>(i);
  }
  std::vector<int32_t> pos = {0, 5, 11}, slots = {2, 0, 1};
  const std::vector<float> inv = {1.0f, 0.01f};
  for (const RopePairing pairing : {RopePairing::kRotateHalf, RopePairing::kAdjacentPairs}) {
    std::vector<float> kc(4 * kHeadDim, 0.0f), vc(4 * kHeadDim, 0.0f), qo(q.size()), kk = k;
    const KvCacheView cache{Tensor::make(kc.data(), DType::kF32, {4, 1, 1, kHeadDim}),
                            Tensor::make(vc.data(), DType::kF32, {4, 1, 1, kHeadDim})};
    ASSERT_TRUE(backend
                    ->rope_and_cache_write(Tensor::make(q.data(), DType::kF32, {kTokens, 1, kHeadDim}),
                                           Tensor::make(kk.data(), DType::kF32, {kTokens, 1, kHeadDim}),
                                           Tensor::make(v.data(), DType::kF32, {kTokens, 1, kHeadDim}),
                                           Tensor::make(pos.data(), DType::kI32, {kTokens}),
                                           Tensor::make(slots.data(), DType::kI32, {kTokens}),
                                           Tensor::make(const_cast<float*>(inv.data()), DType::kF32, {2}), pairing,
                                           cache, Tensor::make(qo.data(), DType::kF32, {kTokens, 1, kHeadDim}))
                    .ok());
    for (int64_t t = 0; t < kTokens; ++t) {
      const float* in = q.data() + t * kHeadDim;
      const float* out = qo.data() + t * kHeadDim;
      for (int64_t i = 0; i < kRotary / 2; ++i) {
        const int64_t a = pairing == RopePairing::kRotateHalf ? i : 2 * i;
        const int64_t b = pairing == RopePairing::kRotateHalf ? i + kRotary / 2 : 2 * i + 1;
        const float angle = static_cast<float>(pos[t]) * inv[i];
        EXPECT_NEAR(out[a], in[a] * std::cos(angle) - in[b] * std::sin(angle), 1e-6);
        EXPECT_NEAR(out[b], in[b] * std::cos(angle) + in[a] * std::sin(angle), 1e-6);
      }
      for (int64_t d = kRotary; d < kHeadDim; ++d) EXPECT_EQ(out[d], in[d]);
      for (int64_t d = 0; d < kHeadDim; ++d) {
        EXPECT_EQ(kc[slots[t] * kHeadDim + d], kk[t * kHeadDim + d]);
        EXPECT_EQ(vc[slots[t] * kHeadDim + d], v[t * kHeadDim + d]);
      }
    }
  }
}

}  // namespace
}  // namespace anvil
