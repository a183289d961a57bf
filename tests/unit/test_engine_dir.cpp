// Engine directories (build/engine_dir.h): a tiny HF Llama and stories260K built for every load-time scheme load
// back with logits bit-identical to quantizing the raw checkpoint in memory; and every refusal: another Anvil version,
// another GPU, a missing or truncated weights file, a target that is not an engine, a failed write (which leaves
// nothing behind), a checkpoint quantized by another tool.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "anvil/engine.h"
#include "backends/gemm_algo_cache.h"
#include "build/engine_dir.h"
#include "build/quantize_checkpoint.h"
#include "formats_test_util.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using formats_test::has_substr;
using formats_test::TempDir;
using json = nlohmann::json;

std::vector<float> score(const std::string& model, const std::string& quantization, const std::vector<int32_t>& ids) {
  EngineConfig config;
  config.model_path = model;
  config.quantization = quantization;
  config.num_threads = 2;
  config.max_model_len = 128;
  Expected<std::unique_ptr<Engine>> engine = Engine::create(config);
  EXPECT_TRUE(engine.ok()) << engine.status().to_string();
  if (!engine.ok()) return {};
  Expected<std::vector<float>> logits = (*engine)->score(ids);
  EXPECT_TRUE(logits.ok()) << logits.status().to_string();
  return logits.ok() ? *logits : std::vector<float>{};
}

Status build(const std::string& model, const std::string& scheme, const std::string& out, const std::string& gpu = "") {
  ANVIL_ASSIGN_OR_RETURN(Checkpoint ckpt, load_checkpoint(model));
  QuantizeOptions q;
  ANVIL_ASSIGN_OR_RETURN(q.scheme, parse_quant_scheme(scheme));
  ANVIL_ASSIGN_OR_RETURN(QuantizeReport report, quantize_checkpoint(q, &ckpt));
  BuildOptions options;
  options.quantization = q.scheme;
  options.gpu = gpu;
  options.device = gpu.empty() ? "cpu" : "cuda";
  options.build_command = "anvil build --model " + model + " --quantization " + scheme + " -o " + out;
  return write_engine(ckpt, model, options, report, out);
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

void write_json(const fs::path& p, const json& j) {
  std::ofstream out(p, std::ios::trunc);
  out << j.dump(2);
}

class EngineRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineRoundTrip, LogitsEqualTheInMemoryQuantization) {
  const std::string scheme = GetParam();
  TempDir dir;
  const fs::path src = dir.path() / "hf";
  fs::create_directories(src);
  formats_test::write_file((src / "config.json").string(),
                           formats_test::make_tiny_llama(DType::kBF16, 21).config.dump(2));
  formats_test::write_file((src / "model.safetensors").string(),
                           formats_test::build_safetensors(formats_test::make_tiny_llama(DType::kBF16, 21).tensors));
  const std::vector<int32_t> ids = {1, 7, 3, 44, 12, 9, 30, 2};
  for (const std::string& model : {src.string(), std::string(formats_test::kStoriesPath)}) {
    const std::string engine = (dir.path() / ("engine_" + scheme)).string();
    ASSERT_TRUE(build(model, scheme, engine).ok()) << build(model, scheme, engine).to_string();
    ASSERT_TRUE(is_engine_dir(engine));
    const json config = read_json(fs::path(engine) / "config.json");
    EXPECT_EQ(config["build_config"]["quantization"], scheme);
    EXPECT_EQ(config["profile"]["num_tokens"]["min"], 1);
    // q/k/v and gate/up are stacked in the file, so a load maps them instead of copying.
    EXPECT_TRUE(config["model_config"].value("anvil_fused_projections", false));
    Expected<Checkpoint> stored = load_engine(engine, "");
    ASSERT_TRUE(stored.ok()) << stored.status().to_string();
    EXPECT_TRUE(stored->weights.contains("model.layers.1.self_attn.qkv_proj.weight"));
    EXPECT_TRUE(stored->weights.contains("model.layers.1.mlp.gate_up_proj.weight"));
    EXPECT_FALSE(stored->weights.contains("model.layers.1.self_attn.q_proj.weight"));
    if (scheme != "none") {
      EXPECT_GT(config["quantization"]["num_quantized"].get<int>(), 0);
    }
    const std::vector<float> from_engine = score(engine, "none", ids);
    const std::vector<float> in_memory = score(model, scheme, ids);
    ASSERT_FALSE(from_engine.empty());
    ASSERT_EQ(from_engine.size(), in_memory.size());
    for (size_t i = 0; i < in_memory.size(); ++i) ASSERT_EQ(from_engine[i], in_memory[i]) << model << " logit " << i;
    // A second build over the first replaces it in place.
    ASSERT_TRUE(build(model, scheme, engine).ok());
    EXPECT_EQ(score(engine, "none", ids), in_memory);
    fs::remove_all(engine);
  }
}

INSTANTIATE_TEST_SUITE_P(Schemes, EngineRoundTrip, ::testing::Values("none", "int8-wo", "fp8", "int4-rtn"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

Status open_engine(const std::string& engine) {
  EngineConfig config;
  config.model_path = engine;
  config.num_threads = 1;
  return Engine::create(config).status();
}

TEST(EngineDir, RefusesOtherVersionsGpusAndDamagedFiles) {
  TempDir dir;
  const std::string engine = dir.file("e");
  ASSERT_TRUE(build(formats_test::kStoriesPath, "int8-wo", engine).ok());
  const fs::path config_path = fs::path(engine) / "config.json";
  const json good = read_json(config_path);

  json other = good;
  other["anvil_engine"]["anvil_version"] = "0.0.1-old";
  write_json(config_path, other);
  Status s = open_engine(engine);
  EXPECT_TRUE(has_substr(s.to_string(), "was built by Anvil 0.0.1-old")) << s.to_string();
  EXPECT_TRUE(has_substr(s.to_string(), "rebuild it with `anvil build --model")) << s.to_string();
  other = good;
  other["anvil_engine"]["format_version"] = 99;
  write_json(config_path, other);
  EXPECT_TRUE(has_substr(open_engine(engine).to_string(), "engine format 99"));
  write_json(config_path, good);
  ASSERT_TRUE(open_engine(engine).ok());

  // Truncated, then missing weights.
  const fs::path weights = fs::path(engine) / "rank0.safetensors";
  const uintmax_t size = fs::file_size(weights);
  fs::resize_file(weights, size - 100);
  s = open_engine(engine);
  EXPECT_TRUE(has_substr(s.to_string(), "(truncated)")) << s.to_string();
  EXPECT_TRUE(has_substr(s.to_string(), "rebuild it with")) << s.to_string();
  fs::remove(weights);
  s = open_engine(engine);
  EXPECT_TRUE(has_substr(s.to_string(), "weights file 'rank0.safetensors' is missing")) << s.to_string();

  // An engine tuned for one GPU refuses another (the CPU runs any engine).
  const std::string gpu_engine = dir.file("gpu");
  ASSERT_TRUE(build(formats_test::kStoriesPath, "fp8", gpu_engine, "NVIDIA H200").ok());
  Expected<Checkpoint> on_h100 = load_engine(gpu_engine, "NVIDIA H100 80GB HBM3");
  ASSERT_FALSE(on_h100.ok());
  EXPECT_TRUE(has_substr(on_h100.status().to_string(), "built and tuned for NVIDIA H200"))
      << on_h100.status().to_string();
  EXPECT_TRUE(has_substr(on_h100.status().to_string(), "NVIDIA H100 80GB HBM3"));
  EXPECT_TRUE(load_engine(gpu_engine, "NVIDIA H200").ok());
  EXPECT_TRUE(open_engine(gpu_engine).ok());

  // A quantized engine cannot be quantized again at load.
  EngineConfig config;
  config.model_path = gpu_engine;
  config.quantization = "int4-rtn";
  EXPECT_TRUE(has_substr(Engine::create(config).status().to_string(), "already float8_e4m3"));
  // A raw-checkpoint reader names an engine for what it is.
  EXPECT_TRUE(has_substr(load_checkpoint(gpu_engine).status().to_string(), "is an Anvil engine"));
}

TEST(EngineDir, AFailedBuildLeavesNothingBehind) {
  TempDir dir;
  Expected<Checkpoint> ckpt = load_checkpoint(formats_test::kStoriesPath);
  ASSERT_TRUE(ckpt.ok());
  std::vector<int32_t> ids(4, 1);
  ckpt->weights.add_view("extra.ids", Tensor::make(ids.data(), DType::kI32, {4}));
  const std::string out = dir.file("engine");
  Status s = write_engine(*ckpt, formats_test::kStoriesPath, BuildOptions{}, QuantizeReport{}, out);
  EXPECT_TRUE(has_substr(s.to_string(), "extra.ids")) << s.to_string();
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(dir.path())) ADD_FAILURE() << "left behind: " << e.path();

  // A directory that is not an engine is never overwritten.
  fs::create_directories(dir.path() / "notes");
  formats_test::write_file((dir.path() / "notes" / "todo.txt").string(), "keep me");
  s = build(formats_test::kStoriesPath, "none", (dir.path() / "notes").string());
  EXPECT_TRUE(has_substr(s.to_string(), "is not an Anvil engine directory")) << s.to_string();
  EXPECT_TRUE(fs::exists(dir.path() / "notes" / "todo.txt"));
}

// `anvil build --device cuda` times GEMMs on the engine in its temporary directory (BuildOptions::tune, which fills
// kGemmAlgosFile the way the CUDA backend does); the choices end up in config.json and a backend on that GPU takes
// them back. A tuning that fails fails the build and leaves nothing.
TEST(EngineDir, TunedGemmChoicesLandInTheEngineConfig) {
  TempDir dir;
  Expected<Checkpoint> ckpt = load_checkpoint(formats_test::kStoriesPath);
  ASSERT_TRUE(ckpt.ok());
  const std::string tag = "NVIDIA H200 sm_90 | cuBLASLt 130000";
  const GemmShapeKey key{.m_bucket = 48, .k = 64, .n = 192, .weight_dtype = 2, .out_dtype = 2};
  const GemmAlgo algo{1, 2, 3, 4, 5, 6, 7, 0xfedcba9876543210ull};
  BuildOptions options;
  options.device = "cuda";
  options.gpu = "NVIDIA H200";
  std::string tuned_in;
  options.tune = [&](const std::string& tmp) -> Status {
    tuned_in = tmp;
    EXPECT_TRUE(is_engine_dir(tmp));  // the engine is complete when it is tuned
    return GemmAlgoCache((fs::path(tmp) / kGemmAlgosFile).string(), tag).put(key, algo);
  };
  const std::string out = dir.file("engine");
  Status s = write_engine(*ckpt, formats_test::kStoriesPath, options, QuantizeReport{}, out);
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_NE(tuned_in, out);
  EXPECT_FALSE(fs::exists(tuned_in));
  EXPECT_FALSE(fs::exists(fs::path(out) / kGemmAlgosFile));
  const json config = read_json(fs::path(out) / "config.json");
  ASSERT_TRUE(config["gemm_algos"].contains(tag)) << config["gemm_algos"].dump();
  EXPECT_EQ(config["gemm_algos"][tag].size(), 1u);
  GemmAlgoCache cache("", tag);
  Expected<int> taken = cache.seed_from_engine((fs::path(out) / "config.json").string());
  ASSERT_TRUE(taken.ok()) << taken.status().to_string();
  EXPECT_EQ(*taken, 1);
  EXPECT_EQ(cache.find(key), algo);

  options.tune = [](const std::string&) { return internal_error("the GPU went away"); };
  const std::string out2 = dir.file("engine2");
  s = write_engine(*ckpt, formats_test::kStoriesPath, options, QuantizeReport{}, out2);
  EXPECT_TRUE(has_substr(s.to_string(), "the GPU went away")) << s.to_string();
  EXPECT_FALSE(fs::exists(out2));
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path() != fs::path(out)) ADD_FAILURE() << "left behind: " << e.path();
  }
}

TEST(EngineDir, CheckpointsQuantizedByOtherToolsAreRefusedByMethod) {
  TempDir dir;
  formats_test::TinyLlama m = formats_test::make_tiny_llama(DType::kBF16, 4);
  m.config["quantization_config"] = {{"quant_method", "bitsandbytes"}, {"bits", 4}};
  formats_test::write_tiny_dir(dir, m);
  Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "quantization_config.quant_method 'bitsandbytes', 4 bits"))
      << ckpt.status().to_string();
}

}  // namespace
}  // namespace anvil
