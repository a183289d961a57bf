// Whole models on the GPU against Hugging Face and the CPU backend: for every reference checkpoint and
// stories260K, GPU logits agree with HF's fp32 logits within the 16-bit tolerance, and greedy tokens equal the
// CPU's — except that a token may flip at a near-tie: at the first differing position each pick must be in
// the other's top 3 and their CPU logprobs must differ by less than the logit noise of the dtype: 0.02 for
// fp16, and for bf16 the GPU's measured max |logit - HF| on that model (bf16 keeps 8 mantissa bits, so logits
// move by a few hundredths). The count of such flips is printed.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "anvil/engine.h"

namespace anvil {
namespace {

using nlohmann::json;
std::string source_dir() {
  const char* env = std::getenv("ANVIL_SOURCE_DIR");
  return env ? env : ANVIL_SOURCE_DIR;
}
const std::string kData = source_dir() + "/tests/data";
const std::string kStories = source_dir() + "/../shared/models/stories260K";

json read_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

std::unique_ptr<Engine> engine_on(const std::string& device, const std::string& dtype, const std::string& model,
                                  const std::string& tok = "") {
  EngineConfig c;
  c.model_path = model;
  c.tokenizer_path = tok;
  c.device = device;
  c.cuda_dtype = dtype;
  c.num_threads = 8;
  c.gpu_memory_utilization = 0.05f;
  auto e = Engine::create(c);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::vector<int32_t> greedy(Engine& e, const std::vector<int32_t>& prompt, int n) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = n;
  p.ignore_eos = true;
  auto out = e.generate_ids(prompt, p);
  EXPECT_TRUE(out.ok()) << out.status().to_string();
  return out.ok() ? out->token_ids : std::vector<int32_t>{};
}

std::vector<double> log_softmax_row(const float* row, int64_t vocab) {
  double mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, row[v]);
  double sum = 0.0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - mx);
  std::vector<double> out(vocab);
  for (int64_t v = 0; v < vocab; ++v) out[v] = row[v] - mx - std::log(sum);
  return out;
}

bool in_top3(const std::vector<double>& lp, int32_t id) {
  int better = 0;
  for (double x : lp) better += x > lp[id];
  return better < 3;
}

int g_near_tie_flips = 0;

// Same tokens, or a first difference that is a near-tie on both sides.
void expect_same_greedy(Engine& gpu, Engine& cpu, const std::vector<int32_t>& prompt, int n, double max_gap,
                        const std::string& what) {
  auto a = greedy(gpu, prompt, n), b = greedy(cpu, prompt, n);
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  if (i == a.size() && a.size() == b.size()) return;
  ASSERT_LT(i, std::min(a.size(), b.size())) << what;
  std::vector<int32_t> prefix = prompt;
  prefix.insert(prefix.end(), b.begin(), b.begin() + static_cast<std::ptrdiff_t>(i));
  auto lg = gpu.score(prefix), lc = cpu.score(prefix);
  ASSERT_TRUE(lg.ok() && lc.ok());
  const int64_t vocab = gpu.info().vocab_size;
  auto pg = log_softmax_row(lg->data() + (prefix.size() - 1) * vocab, vocab);
  auto pc = log_softmax_row(lc->data() + (prefix.size() - 1) * vocab, vocab);
  EXPECT_TRUE(in_top3(pc, a[i]) && in_top3(pg, b[i])) << what << ": flip at " << i << " is not a near-tie";
  EXPECT_LT(std::abs(pc[a[i]] - pc[b[i]]), max_gap) << what << ": flip at " << i;
  ++g_near_tie_flips;
  std::printf("[near-tie] %s: greedy tokens part at position %zu (%d vs %d, CPU logprob gap %.4f)\n", what.c_str(), i,
              a[i], b[i], std::abs(pc[a[i]] - pc[b[i]]));
}

// max |ours - ref| / max |ref|; *abs_error receives max |ours - ref|.
double relative_logit_error(const std::vector<float>& ours, const json& ref_rows, int64_t vocab, double* abs_error) {
  double max_ref = 0.0, max_diff = 0.0;
  for (size_t t = 0; t < ref_rows.size(); ++t) {
    for (int64_t v = 0; v < vocab; ++v) {
      const double r = ref_rows[t][v].get<double>();
      max_ref = std::max(max_ref, std::abs(r));
      max_diff = std::max(max_diff, std::abs(static_cast<double>(ours[t * vocab + v]) - r));
    }
  }
  *abs_error = max_diff;
  return max_diff / max_ref;
}

struct ModelCase {
  std::string name, dtype;
};

class CudaModels : public ::testing::TestWithParam<ModelCase> {};

TEST_P(CudaModels, LogitsNearHfAndGreedyMatchesCpu) {
  const auto& [name, dtype] = GetParam();
  const bool stories = name == "stories260K";
  const std::string model = stories ? kStories + "/stories260K.bin" : kData + "/hf/" + name;
  const std::string tok = stories ? kStories + "/tok512.bin" : "";
  const json ref = read_json(stories ? kData + "/stories260K_reference.json" : kData + "/hf/" + name + "/reference.json");
  auto gpu = engine_on("cuda", dtype, model, tok);
  auto cpu = engine_on("cpu", "auto", model, tok);
  ASSERT_TRUE(gpu && cpu);
  auto logits = gpu->score(ref["logits_input_ids"].get<std::vector<int32_t>>());
  ASSERT_TRUE(logits.ok()) << logits.status().to_string();
  double abs_err = 0.0;
  const double err = relative_logit_error(*logits, ref["logits"], gpu->info().vocab_size, &abs_err);
  std::printf("[logits] %s %s: max |gpu - hf| / max |hf| = %.2e (max abs %.3f)\n", name.c_str(), dtype.c_str(), err,
              abs_err);
  EXPECT_LT(err, dtype == "bfloat16" ? 6e-2 : 1e-2);
  const double max_gap = dtype == "bfloat16" ? abs_err : 0.02;
  expect_same_greedy(*gpu, *cpu, ref["greedy_prompt_ids"].get<std::vector<int32_t>>(), stories ? 64 : 32, max_gap,
                     name + "/" + dtype);
}

std::vector<ModelCase> all_cases() {
  std::vector<ModelCase> cases;
  for (const char* d : {"float16", "bfloat16"}) {
    for (const char* m : {"llama_mha", "llama3_gqa", "llama_linear_mqa", "qwen2_bias", "mistral", "smollm_tied",
                          "stories260K"}) {
      cases.push_back({m, d});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModels, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return info.param.name + "_" + info.param.dtype; });

// The LayerNorm families on models/ln_decoder.h (issue 14 part A).
std::vector<ModelCase> ln_family_cases() {
  std::vector<ModelCase> cases;
  for (const char* d : {"float16", "bfloat16"}) {
    for (const char* m : {"pythia_neox", "neox_sequential", "gptj_partial", "opt_relu", "bloom_alibi", "falcon_gqa",
                          "falcon_mqa", "starcoder2"}) {
      cases.push_back({m, d});
    }
  }
  return cases;
}
INSTANTIATE_TEST_SUITE_P(LnFamilies, CudaModels, ::testing::ValuesIn(ln_family_cases()),
                         [](const auto& info) { return info.param.name + "_" + info.param.dtype; });

// famB (issue 14 part B): sliding windows, Gemma-2/3 and Mixtral on the GPU (head_dim 16/32: the CUDA-core
// attention kernel; the tensor-core ones are checked with windows in test_cuda_window_softcap.cpp).
std::vector<ModelCase> famb_cases() {
  std::vector<ModelCase> cases;
  for (const char* d : {"float16", "bfloat16"}) {
    for (const char* m : {"mistral_swa", "gemma2", "gemma3_text", "mixtral_moe"}) cases.push_back({m, d});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(FamB, CudaModels, ::testing::ValuesIn(famb_cases()),
                         [](const auto& info) { return info.param.name + "_" + info.param.dtype; });

// The other registry families (GPT-2, Phi-3, Qwen3's QK-norm, GLM) and StarCoder2 with a window shorter than the
// prompt, so every family of issue 14 has a GPU run.
std::vector<ModelCase> other_family_cases() {
  std::vector<ModelCase> cases;
  for (const char* d : {"float16", "bfloat16"}) {
    for (const char* m : {"gpt2_tied", "phi3", "qwen3_qknorm", "glm", "starcoder2_swa"}) cases.push_back({m, d});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(OtherFamilies, CudaModels, ::testing::ValuesIn(other_family_cases()),
                         [](const auto& info) { return info.param.name + "_" + info.param.dtype; });

TEST(CudaModelsSummary, ReportsNearTieFlips) {
  std::printf("[near-tie] total greedy flips at near-ties: %d\n", g_near_tie_flips);
  SUCCEED();
}

TEST(CudaModelsStories, StreamsTheSameStoryAsTheCpu) {
  auto gpu = engine_on("cuda", "float16", kStories + "/stories260K.bin", kStories + "/tok512.bin");
  ASSERT_TRUE(gpu);
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = 60;
  auto out = gpu->generate("Once upon a time", p);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->text.rfind(", there was a little girl named Lily.", 0), 0u) << out->text;
}

}  // namespace
}  // namespace anvil
