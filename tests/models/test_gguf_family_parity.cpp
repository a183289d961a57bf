// GGUF files of each model family, made from the Hugging Face fixtures by llama.cpp's own converter
// (tools/make_family_ggufs.py; tests/data/gguf/families/manifest.json lists each file and its reference): loaded
// through the family's GGUF mapping, CPU logits agree with transformers' within 1e-4 of max |logit| and greedy
// tokens are identical. The converter's transformations (llama q/k row permutation, fused projections kept fused,
// norms stored in f32) are undone, or followed, by the families.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "anvil/engine.h"
#include "models/registry.h"

namespace anvil {
namespace {

using nlohmann::json;

const std::string kRoot = std::string(ANVIL_SOURCE_DIR) + "/";
const std::string kFamilies = kRoot + "tests/data/gguf/families/";

json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return f.good() ? json::parse(f) : json::object();
}

// The manifest entry of fixture `name` (null json when absent).
json manifest_entry(const std::string& name) {
  const json manifest = read_json(kFamilies + "manifest.json");
  for (const json& e : manifest["fixtures"]) {
    if (e["name"] == name) return e;
  }
  return json();
}

double relative_logit_error(const std::vector<float>& ours, const json& ref_rows, int64_t vocab) {
  double max_ref = 0.0, max_diff = 0.0;
  for (size_t t = 0; t < ref_rows.size(); ++t) {
    for (int64_t v = 0; v < vocab; ++v) {
      const double r = ref_rows[t][v].get<double>();
      max_ref = std::max(max_ref, std::abs(r));
      max_diff = std::max(max_diff, std::abs(static_cast<double>(ours[t * vocab + v]) - r));
    }
  }
  return max_diff / max_ref;
}

class GgufFamilyParity : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufFamilyParity, LogitsAndGreedyTokensMatchTransformers) {
  const json entry = manifest_entry(GetParam());
  ASSERT_TRUE(entry.is_object() && entry.contains("gguf")) << GetParam() << " has no GGUF in the manifest";
  const json ref = read_json(kRoot + entry["reference"].get<std::string>());
  const std::string path = kRoot + entry["gguf"].get<std::string>();

  // The family picked is the fixture's, and the checkpoint is read as GGUF.
  auto ckpt = load_checkpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  EXPECT_EQ(ckpt->format, "gguf");
  // (llama.cpp writes Mistral as "llama": LlamaForCausalLM, the same family.)
  EXPECT_EQ(find_family(ckpt->config.architecture), find_family(ref["architecture"].get<std::string>()))
      << ckpt->config.architecture;

  EngineConfig config;
  config.model_path = path;
  config.num_threads = 2;
  auto engine = Engine::create(config);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  const int64_t vocab = (*engine)->info().vocab_size;
  auto logits = (*engine)->score(ref["logits_input_ids"].get<std::vector<int32_t>>());
  ASSERT_TRUE(logits.ok()) << logits.status().to_string();
  const double err = relative_logit_error(*logits, ref["logits"], vocab);
  RecordProperty("relative_logit_error", std::to_string(err));
  EXPECT_LT(err, 1e-4) << GetParam();

  SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = 32;
  params.ignore_eos = true;
  auto out = (*engine)->generate_ids(ref["greedy_prompt_ids"].get<std::vector<int32_t>>(), params);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->token_ids, ref["greedy_output_ids"].get<std::vector<int32_t>>());
}

INSTANTIATE_TEST_SUITE_P(LlamaFamily, GgufFamilyParity, ::testing::Values("qwen3_qknorm", "mistral", "phi3"));
INSTANTIATE_TEST_SUITE_P(OtherFamilies, GgufFamilyParity,
                         ::testing::Values("gpt2_tied", "pythia_neox", "neox_sequential", "bloom_alibi", "falcon_gqa",
                                           "starcoder2", "gemma2"));

// What the converter refuses is recorded with the reason, so a converter that starts to accept a family shows:
// GPT-J and OPT have no converter class; Falcon-7B-style multi-query fails inside it (it reads num_kv_heads, which
// transformers' FalconConfig sets to the head count, and views the fused rows as that many groups).
TEST(GgufFamilyManifest, RefusedFamiliesAreRecordedWithTheReason) {
  for (const char* name : {"gptj_partial", "opt_relu", "falcon_mqa"}) {
    const json entry = manifest_entry(name);
    ASSERT_TRUE(entry.is_object()) << name;
    ASSERT_TRUE(entry.contains("refused")) << name;
    const std::string why = entry["refused"].get<std::string>();
    EXPECT_NE(why.find(std::string(name) == "falcon_mqa" ? "is invalid for input" : "is not supported"),
              std::string::npos)
        << why;
  }
}

// A GGUF tensor the family does not know is an error naming it (not silently dropped).
TEST(GgufFamilyManifest, UnknownTensorIsNamed) {
  const json entry = manifest_entry("starcoder2");
  ASSERT_TRUE(entry.contains("gguf"));
  auto ckpt = load_checkpoint(kRoot + entry["gguf"].get<std::string>());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  for (const ModelFamily* family : model_families()) {
    if (family->adopt_gguf_tensors == nullptr || family->gguf_architectures.empty()) continue;
    WeightStore store;
    store.set_source("test.gguf");
    float x[4] = {1, 2, 3, 4};
    store.add_view("blk.0.attn_mystery.weight", Tensor::make(x, DType::kF32, {2, 2}));
    ModelConfig config = ckpt->config;
    config.model_type = family->name;
    const Status s = family->adopt_gguf_tensors(config, &store);
    EXPECT_FALSE(s.ok()) << family->name;
    EXPECT_NE(s.message().find("blk.0.attn_mystery.weight"), std::string::npos) << family->name << ": " << s.message();
  }
}

}  // namespace
}  // namespace anvil
