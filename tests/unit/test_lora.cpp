// LoRA merge (build/lora.h): the llama_mha fixture with the PEFT adapter of tools/make_lora_fixture.py, merged and
// built into an engine, gives the logits of HF peft's merge_and_unload() model; quantized after the merge it stays
// close; adapters the merge cannot handle are refused by field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "anvil/engine.h"
#include "build/engine_dir.h"
#include "build/lora.h"
#include "build/quantize_checkpoint.h"
#include "formats_test_util.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using formats_test::has_substr;
using formats_test::TempDir;
using json = nlohmann::json;

const std::string kHf = ANVIL_SOURCE_DIR "/tests/data/hf";

std::vector<float> engine_logits(const std::string& dir, const std::string& scheme, const std::vector<int32_t>& ids,
                                 const TempDir& tmp) {
  Expected<Checkpoint> ckpt = load_checkpoint(kHf + "/llama_mha");
  EXPECT_TRUE(ckpt.ok());
  Expected<int64_t> merged = merge_lora(dir, &*ckpt);
  EXPECT_TRUE(merged.ok()) << merged.status().to_string();
  EXPECT_EQ(*merged, 14);  // 7 projections x 2 layers
  QuantizeOptions q;
  q.scheme = *parse_quant_scheme(scheme);
  Expected<QuantizeReport> report = quantize_checkpoint(q, &*ckpt);
  EXPECT_TRUE(report.ok());
  BuildOptions options;
  options.quantization = q.scheme;
  options.lora = dir;
  const std::string out = tmp.file("engine_" + scheme);
  EXPECT_TRUE(write_engine(*ckpt, kHf + "/llama_mha", options, *report, out).ok());
  EngineConfig config;
  config.model_path = out;
  config.num_threads = 2;
  Expected<std::unique_ptr<Engine>> engine = Engine::create(config);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  Expected<std::vector<float>> logits = (*engine)->score(ids);
  EXPECT_TRUE(logits.ok());
  return *logits;
}

TEST(Lora, MergedEngineMatchesPeftMergeAndUnload) {
  TempDir tmp;
  std::ifstream f(kHf + "/llama_mha_lora/reference.json");
  const json ref = json::parse(f);
  const std::vector<int32_t> ids = ref["logits_input_ids"].get<std::vector<int32_t>>();
  const std::vector<float> got = engine_logits(kHf + "/llama_mha_lora", "none", ids, tmp);
  const int64_t vocab = static_cast<int64_t>(got.size() / ids.size());
  double max_ref = 0.0, max_diff = 0.0;
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int64_t v = 0; v < vocab; ++v) {
      const double r = ref["logits"][t][v].get<double>();
      max_ref = std::max(max_ref, std::abs(r));
      max_diff = std::max(max_diff, std::abs(got[t * vocab + v] - r));
    }
  }
  EXPECT_LT(max_diff / max_ref, 1e-4) << "max diff " << max_diff;
  // Quantized after the merge: close to the merged reference, not equal.
  const std::vector<float> q = engine_logits(kHf + "/llama_mha_lora", "int8-wo", ids, tmp);
  double qdiff = 0.0;
  for (size_t i = 0; i < q.size(); ++i) qdiff = std::max<double>(qdiff, std::abs(q[i] - got[i]));
  EXPECT_GT(qdiff, 0.0);
  EXPECT_LT(qdiff / max_ref, 0.1);  // the fixture's random weights: 5.1% of the largest logit measured
}

TEST(Lora, UnsupportedAdaptersAreRefusedByField) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "adapter";
  fs::create_directories(dir);
  fs::copy_file(kHf + "/llama_mha_lora/adapter_model.safetensors", dir / "adapter_model.safetensors");
  std::ifstream f(kHf + "/llama_mha_lora/adapter_config.json");
  const json good = json::parse(f);
  auto try_merge = [&](const json& config) {
    std::ofstream(dir / "adapter_config.json", std::ios::trunc) << config.dump();
    Expected<Checkpoint> ckpt = load_checkpoint(kHf + "/llama_mha");
    return merge_lora(dir.string(), &*ckpt).status().to_string();
  };
  json c = good;
  c["use_dora"] = true;
  EXPECT_TRUE(has_substr(try_merge(c), "'use_dora' is set"));
  c = good;
  c["peft_type"] = "IA3";
  EXPECT_TRUE(has_substr(try_merge(c), "peft_type 'IA3' is not LORA"));
  c = good;
  c["r"] = 8;
  EXPECT_TRUE(has_substr(try_merge(c), "which do not fit"));
  EXPECT_TRUE(has_substr(merge_lora(tmp.file("none"), nullptr).status().to_string(), "has no adapter_config.json"));
}

}  // namespace
}  // namespace anvil
