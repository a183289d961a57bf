// The model registry: every family's architectures resolve, unknown ones and unsupported config values of known
// families are clear errors naming the field and the value, generation_config.json's EOS list is read, and the
// dummy (random-weight) path builds each family's weights and model from its config alone.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "models/llama.h"
#include "models/registry.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kHf = std::string(ANVIL_SOURCE_DIR) + "/tests/data/hf";

json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return json::parse(f);
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ModelRegistry, EveryDeclaredArchitectureFindsItsFamily) {
  int num_architectures = 0;
  for (const ModelFamily* family : model_families()) {
    for (const auto& [architecture, model_type] : family->hf_architectures) {
      EXPECT_EQ(find_family(architecture), family) << architecture;
      ++num_architectures;
    }
  }
  EXPECT_GE(num_architectures, 6);
  EXPECT_EQ(find_family("GPT2LMHeadModel")->name, std::string("gpt2"));
  EXPECT_EQ(find_family("Qwen3ForCausalLM")->name, std::string("llama"));
  EXPECT_EQ(find_family("MambaForCausalLM"), nullptr);
}

TEST(ModelRegistry, FixtureConfigsParseIntoTheirFamilies) {
  const std::pair<const char*, const char*> cases[] = {
      {"qwen3_qknorm", "Qwen3ForCausalLM"}, {"gpt2_tied", "GPT2LMHeadModel"}, {"phi3", "Phi3ForCausalLM"}};
  for (const auto& [name, architecture] : cases) {
    const json cfg = read_json(kHf + "/" + name + "/config.json");
    Expected<ModelConfig> c = parse_hf_config(cfg.dump(), name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().to_string();
    EXPECT_EQ(c->architecture, architecture);
    EXPECT_EQ(c->hidden_size, 64);
    EXPECT_EQ(c->num_layers, 2);
    EXPECT_EQ(c->vocab_size, 256);
  }
  Expected<ModelConfig> qwen3 = parse_hf_config(read_json(kHf + "/qwen3_qknorm/config.json").dump(), "q");
  ASSERT_TRUE(qwen3.ok());
  EXPECT_TRUE(llama_config(*qwen3).has_qk_norm);
  EXPECT_FALSE(llama_config(*qwen3).has_qkv_bias);
  Expected<ModelConfig> gpt2 = parse_hf_config(read_json(kHf + "/gpt2_tied/config.json").dump(), "g");
  ASSERT_TRUE(gpt2.ok());
  EXPECT_EQ(gpt2->intermediate_size, 96);  // n_inner
  EXPECT_EQ(gpt2->head_dim, 16);
  EXPECT_TRUE(gpt2->tie_word_embeddings);
}

// Each case: a fixture config with one field changed, and the words the error must contain.
struct BadValue {
  const char* fixture;
  std::function<void(json&)> change;
  std::vector<std::string> words;
};

TEST(ModelRegistry, UnsupportedValuesOfKnownFamiliesNameTheFieldAndValue) {
  const BadValue cases[] = {
      {"qwen3_qknorm",
       [](json& j) { j["rope_parameters"]["rope_type"] = "yarn"; },
       {"rope_parameters.rope_type", "'yarn'", "default, linear, llama3"}},
      {"gpt2_tied", [](json& j) { j["activation_function"] = "relu"; }, {"activation_function", "'relu'"}},
      {"gpt2_tied",
       [](json& j) { j["scale_attn_by_inverse_layer_idx"] = true; },
       {"scale_attn_by_inverse_layer_idx", "'true'"}},
      {"phi3",
       [](json& j) { j["rope_parameters"]["partial_rotary_factor"] = 0.75; },
       {"rope_parameters.partial_rotary_factor", "0.75"}},
      {"phi3", [](json& j) { j["rope_parameters"]["rope_type"] = "longrope"; }, {"rope_type", "'longrope'"}},
      {"glm",  // 16 * 0.1 rotates one dim: not a whole number of pairs
       [](json& j) { j["rope_parameters"]["partial_rotary_factor"] = 0.1; },
       {"rope_parameters.partial_rotary_factor", "0.1"}},
      {"qwen3_qknorm", [](json& j) { j["hidden_act"] = "gelu"; }, {"hidden_act", "'gelu'", "silu"}},
      {"qwen3_qknorm",
       [](json& j) { j["architectures"] = {"MambaForCausalLM"}; },
       {"architecture 'MambaForCausalLM' is not supported", "GPT2LMHeadModel", "Qwen3ForCausalLM"}},
      {"gpt2_tied", [](json& j) { j["n_embd"] = "64"; }, {"field 'n_embd' must be an integer, got string \"64\""}},
  };
  for (const BadValue& bad : cases) {
    json cfg = read_json(kHf + "/" + bad.fixture + "/config.json");
    bad.change(cfg);
    Expected<ModelConfig> c = parse_hf_config(cfg.dump(), "/m/config.json");
    ASSERT_FALSE(c.ok()) << bad.fixture << " " << cfg.dump();
    EXPECT_TRUE(has(c.status().message(), "config.json /m/config.json")) << c.status().message();
    for (const std::string& w : bad.words) EXPECT_TRUE(has(c.status().message(), w)) << c.status().message();
  }
}

TEST(ModelRegistry, GenerationConfigEosListIsRead) {
  const fs::path dir = fs::temp_directory_path() / ("anvil_registry_gen_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"}) {
    fs::copy_file(kHf + "/qwen3_qknorm/" + f, dir / f, fs::copy_options::overwrite_existing);
  }
  Expected<Checkpoint> plain = load_checkpoint(dir.string());
  ASSERT_TRUE(plain.ok()) << plain.status().to_string();
  EXPECT_EQ(plain->config.eos_token_ids, std::vector<int32_t>{2});  // config.json's
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [2, 7, 11], "do_sample": false})";
  Expected<Checkpoint> with_gen = load_checkpoint(dir.string());
  ASSERT_TRUE(with_gen.ok()) << with_gen.status().to_string();
  EXPECT_EQ(with_gen->config.eos_token_ids, (std::vector<int32_t>{2, 7, 11}));
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": "two"})";
  Expected<Checkpoint> bad = load_checkpoint(dir.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(has(bad.status().message(), "generation_config.json")) << bad.status().message();
  EXPECT_TRUE(has(bad.status().message(), "eos_token_id")) << bad.status().message();
  fs::remove_all(dir);
}

// generation_config.json is read for every family (registry-level, after the family's parser): each HF fixture's
// config with a generation_config listing three EOS ids stops on those three.
TEST(ModelRegistry, GenerationConfigEosListIsReadForEveryFamily) {
  int families = 0;
  for (const auto& entry : fs::directory_iterator(kHf)) {
    if (!fs::exists(entry.path() / "config.json")) continue;
    const std::string name = entry.path().filename().string();
    const fs::path dir = fs::temp_directory_path() / ("anvil_registry_gen_" + name + std::to_string(::getpid()));
    fs::create_directories(dir);
    fs::copy_file(entry.path() / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
    std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [2, 7, 11]})";
    Expected<Checkpoint> c = load_checkpoint(dir.string(), LoadFormat::kDummy);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().to_string();
    EXPECT_EQ(c->config.eos_token_ids, (std::vector<int32_t>{2, 7, 11})) << name;
    fs::remove_all(dir);
    ++families;
  }
  EXPECT_GE(families, 20);
}

TEST(ModelRegistry, DummyWeightsBuildEveryFamilysModel) {
  auto backend = make_cpu_backend(CpuBackendOptions{.num_threads = 1});
  for (const char* name : {"qwen3_qknorm", "gpt2_tied", "phi3", "smollm_tied"}) {
    Expected<Checkpoint> ckpt = load_checkpoint(kHf + "/" + name, LoadFormat::kDummy);
    ASSERT_TRUE(ckpt.ok()) << name << ": " << ckpt.status().to_string();
    const std::vector<WeightSpec> specs = model_weight_specs(ckpt->config);
    EXPECT_EQ(ckpt->weights.tensors().size(), specs.size()) << name;
    EXPECT_TRUE(check_weights(specs, ckpt->weights).ok()) << name;
    Expected<std::unique_ptr<Model>> model = create_model(*ckpt, *backend);
    ASSERT_TRUE(model.ok()) << name << ": " << model.status().to_string();
    EXPECT_GT((*model)->weight_bytes(), 0u) << name;
  }
}

TEST(ModelRegistry, MissingWeightOfANewFamilyNamesTheTensor) {
  Expected<Checkpoint> ckpt = load_checkpoint(kHf + "/gpt2_tied", LoadFormat::kDummy);
  ASSERT_TRUE(ckpt.ok());
  std::vector<WeightSpec> specs = model_weight_specs(ckpt->config);
  specs.push_back({"transformer.h.0.attn.c_attn.weight", {64, 999}});
  const Status s = check_weights(specs, ckpt->weights);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(has(s.message(), "transformer.h.0.attn.c_attn.weight")) << s.message();
  EXPECT_TRUE(has(s.message(), "[64, 192]")) << s.message();
}

}  // namespace
}  // namespace anvil
