// Registry checks of issue 14 part B: per-layer sliding windows read from config.json (layer_types, Mistral's
// every-layer window, the legacy sliding_window_pattern), the Gemma and Mixtral families' config fields, and clear
// errors naming the field and the value for what Anvil does not run.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "models/registry.h"

namespace anvil {
namespace {

using json = nlohmann::json;

const std::string kHf = std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf";

json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return json::parse(f);
}

Expected<ModelConfig> parse_fixture(const std::string& name, const std::function<void(json&)>& change = nullptr) {
  json cfg = read_json(kHf + "/" + name + "/config.json");
  if (change) change(cfg);
  return parse_hf_config(cfg.dump(), "/m/config.json");
}

TEST(SlidingWindowConfig, FixturesGiveTheirPerLayerWindows) {
  const std::pair<const char*, std::vector<int32_t>> cases[] = {
      {"mistral_swa", {4, 4}},      // sliding_window on every layer
      {"gemma2", {4, -1}},          // layer_types: local, global
      {"gemma3_text", {4, -1, 4}},  // layer_types: local, global, local
      {"mistral", {}},              // sliding_window null
      {"qwen2_bias", {}},           // use_sliding_window false, layer_types all full
  };
  for (const auto& [name, windows] : cases) {
    Expected<ModelConfig> c = parse_fixture(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().to_string();
    EXPECT_EQ(c->layer_sliding_windows, windows) << name;
    for (int64_t i = 0; i < c->num_layers; ++i) {
      EXPECT_EQ(layer_sliding_window(*c, i), windows.empty() ? -1 : windows[i]) << name << " layer " << i;
    }
  }
}

TEST(SlidingWindowConfig, OlderConfigsWithoutLayerTypes) {
  // Gemma-3 before layer_types: sliding_window_pattern 2 makes every second layer global.
  Expected<ModelConfig> g3 = parse_fixture("gemma3_text", [](json& j) {
    j.erase("layer_types");
    j["sliding_window_pattern"] = 2;
  });
  ASSERT_TRUE(g3.ok()) << g3.status().to_string();
  EXPECT_EQ(g3->layer_sliding_windows, (std::vector<int32_t>{4, -1, 4}));
  // Gemma-2 before layer_types: local, global, alternating.
  Expected<ModelConfig> g2 = parse_fixture("gemma2", [](json& j) { j.erase("layer_types"); });
  ASSERT_TRUE(g2.ok()) << g2.status().to_string();
  EXPECT_EQ(g2->layer_sliding_windows, (std::vector<int32_t>{4, -1}));
  // Qwen2 with use_sliding_window and max_window_layers 1: layers from 1 on are windowed.
  Expected<ModelConfig> q = parse_fixture("qwen2_bias", [](json& j) {
    j.erase("layer_types");
    j["use_sliding_window"] = true;
    j["sliding_window"] = 16;
    j["max_window_layers"] = 1;
  });
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  EXPECT_EQ(q->layer_sliding_windows, (std::vector<int32_t>{-1, 16}));
  // A window covering max_position_embeddings is full attention.
  Expected<ModelConfig> wide = parse_fixture("mistral_swa", [](json& j) { j["sliding_window"] = 256; });
  ASSERT_TRUE(wide.ok());
  EXPECT_TRUE(wide->layer_sliding_windows.empty());
}

TEST(SlidingWindowConfig, GemmaFieldsAreRead) {
  Expected<ModelConfig> g2 = parse_fixture("gemma2");
  ASSERT_TRUE(g2.ok()) << g2.status().to_string();
  EXPECT_EQ(find_family(g2->architecture)->name, std::string("gemma"));
  EXPECT_EQ(g2->head_dim, 16);
  EXPECT_TRUE(g2->tie_word_embeddings);
  Expected<ModelConfig> g3 = parse_fixture("gemma3_text");
  ASSERT_TRUE(g3.ok()) << g3.status().to_string();
  EXPECT_EQ(g3->head_dim, 32);              // not hidden / heads
  EXPECT_EQ(g3->rope.theta, 1'000'000.0f);  // the global layers' rope
  EXPECT_EQ(g3->rope.scaling, RopeScalingType::kLinear);
  EXPECT_EQ(g3->rope.factor, 2.0f);
}

struct BadValue {
  const char* fixture;
  std::function<void(json&)> change;
  std::vector<std::string> words;
};

TEST(SlidingWindowConfig, UnsupportedValuesNameTheFieldAndValue) {
  const BadValue cases[] = {
      {"gemma2", [](json& j) { j["layer_types"][1] = "chunked_attention"; }, {"layer_types[1]", "chunked_attention"}},
      {"gemma2", [](json& j) { j["layer_types"] = {"full_attention"}; }, {"layer_types", "one type per layer"}},
      {"mistral_swa", [](json& j) { j["sliding_window"] = 0; }, {"sliding_window", "'0'"}},
      {"gemma2", [](json& j) { j["hidden_activation"] = "relu"; }, {"hidden_activation", "'relu'"}},
      {"gemma2", [](json& j) { j["attention_bias"] = true; }, {"attention_bias", "'true'"}},
      {"gemma2", [](json& j) { j["final_logit_softcapping"] = -3.0; }, {"final_logit_softcapping", "-3"}},
      {"gemma2", [](json& j) { j["query_pre_attn_scalar"] = 0; }, {"query_pre_attn_scalar"}},
      {"gemma3_text", [](json& j) { j["use_bidirectional_attention"] = true; }, {"use_bidirectional_attention"}},
      {"gemma3_text",
       [](json& j) { j["rope_parameters"]["full_attention"]["rope_type"] = "yarn"; },
       {"rope_parameters.full_attention", "'yarn'"}},
      {"mixtral_moe", [](json& j) { j["num_experts_per_tok"] = 6; }, {"num_experts_per_tok", "'6'"}},
      {"mixtral_moe", [](json& j) { j["num_local_experts"] = 0; }, {"num_local_experts", "'0'"}},
      {"mixtral_moe", [](json& j) { j["hidden_act"] = "gelu"; }, {"hidden_act", "'gelu'"}},
  };
  for (const BadValue& bad : cases) {
    Expected<ModelConfig> c = parse_fixture(bad.fixture, bad.change);
    ASSERT_FALSE(c.ok()) << bad.fixture << " " << bad.words[0];
    EXPECT_NE(c.status().message().find("/m/config.json"), std::string::npos) << c.status().message();
    for (const std::string& w : bad.words) {
      EXPECT_NE(c.status().message().find(w), std::string::npos) << c.status().message() << " lacks " << w;
    }
  }
}

TEST(SlidingWindowConfig, DummyGemmaAndMixtralWeightsBuildTheModel) {
  auto backend = make_cpu_backend(CpuBackendOptions{.num_threads = 1});
  for (const char* name : {"gemma2", "gemma3_text", "mixtral_moe"}) {
    Expected<Checkpoint> ckpt = load_checkpoint(kHf + "/" + name, LoadFormat::kDummy);
    ASSERT_TRUE(ckpt.ok()) << name << ": " << ckpt.status().to_string();
    EXPECT_TRUE(check_weights(model_weight_specs(ckpt->config), ckpt->weights).ok()) << name;
    Expected<std::unique_ptr<Model>> model = create_model(*ckpt, *backend);
    ASSERT_TRUE(model.ok()) << name << ": " << model.status().to_string();
    EXPECT_GT((*model)->weight_bytes(), 0u) << name;
  }
}

}  // namespace
}  // namespace anvil
