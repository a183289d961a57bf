// Quantized GGUF models end to end on the CPU: a tiny random Llama whose tensors are GGUF block types (mixed per
// tensor, as Q4_K_M files are; q/k/v of different types so they cannot be fused; a tied quantized embedding)
// against its twin file holding the same weights decoded to F32: every step (8-bit activations, integer GEMM)
// stays within a few percent. And the quantized logits of a prompt are the same bits whether it runs alone, in
// prefill chunks of another size, as a prefix of a longer prompt, or batched with other requests.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "anvil/engine.h"
#include "models/registry.h"
#include "formats/gguf_checkpoint.h"
#include "models/llama.h"
#include "test_gguf_util.h"

namespace anvil {
namespace {

namespace fs = std::filesystem;
using gguf_test::GgufBuilder;

struct QuantModelCase {
  std::string name;
  std::map<std::string, uint32_t> types;
  bool tied;
  // Every linear quantized (types not named stay F32, whose OpenBLAS sgemm is not batch-invariant).
  bool all_linears_quantized = true;
};

uint32_t t(GgmlType g) {
  return static_cast<uint32_t>(g);
}

std::vector<QuantModelCase> cases() {
  return {
      {"mixed_qkv_tied",
       {{"token_embd.weight", t(GgmlType::kQ8_0)},
        {"blk.0.attn_q.weight", t(GgmlType::kQ4_0)},
        {"blk.0.attn_k.weight", t(GgmlType::kQ4_0)},
        {"blk.0.attn_v.weight", t(GgmlType::kQ8_0)},
        {"blk.0.attn_output.weight", t(GgmlType::kQ5_1)},
        {"blk.0.ffn_gate.weight", t(GgmlType::kQ4_1)},
        {"blk.0.ffn_up.weight", t(GgmlType::kQ4_1)},
        {"blk.0.ffn_down.weight", t(GgmlType::kQ6_K)}},
       true},
      {"mixed_mlp_untied",
       {{"token_embd.weight", t(GgmlType::kQ4_1)},
        {"blk.0.attn_q.weight", t(GgmlType::kQ5_0)},
        {"blk.0.attn_k.weight", t(GgmlType::kQ5_0)},
        {"blk.0.attn_v.weight", t(GgmlType::kQ5_0)},
        {"blk.0.attn_output.weight", t(GgmlType::kQ8_0)},
        {"blk.0.ffn_gate.weight", t(GgmlType::kQ5_1)},
        {"blk.0.ffn_up.weight", t(GgmlType::kQ4_0)},
        {"blk.0.ffn_down.weight", t(GgmlType::kQ4_K)},
        {"output.weight", t(GgmlType::kQ5_0)}},
       false},
      {"q5_k_down",
       {{"blk.0.ffn_down.weight", t(GgmlType::kQ5_K)}, {"blk.0.attn_v.weight", t(GgmlType::kQ4_1)}},
       true,
       false},
  };
}

class QuantModel : public ::testing::TestWithParam<QuantModelCase> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("anvil_quant_model_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const QuantModelCase& c, bool dequantized) {
    gguf_test::TinyGgufOptions o;
    o.types = c.types;
    o.tied = c.tied;
    o.small_scales = true;
    o.with_tokenizer = false;  // token ids only
    o.dequantized = dequantized;
    std::mt19937 rng(99);  // same draws for both files: the twin holds the same weights
    const std::string path = (dir_ / (c.name + (dequantized ? ".f32.gguf" : ".gguf"))).string();
    gguf_test::write_bytes(path, gguf_test::tiny_llama_gguf(o, &rng).build());
    return path;
  }

  fs::path dir_;
};

std::unique_ptr<Engine> make_engine(const std::string& path, int max_num_batched_tokens = 8192,
                                    const std::string& quant_activations = "precise") {
  EngineConfig config;
  config.quant_activations = quant_activations;
  config.model_path = path;
  config.num_threads = 2;
  config.max_model_len = 64;
  config.max_num_batched_tokens = max_num_batched_tokens;
  config.enable_prefix_caching = false;
  Expected<std::unique_ptr<Engine>> e = Engine::create(config);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

double relative_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (a[i] - b[i]) * (a[i] - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(err / norm);
}

TEST_P(QuantModel, MatchesItsDequantizedTwin) {
  const QuantModelCase& c = GetParam();
  const std::string qpath = write(c, false);
  const std::string fpath = write(c, true);
  Expected<Checkpoint> ckpt = load_checkpoint(qpath);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  for (const auto& [gguf_name, type] : c.types) {
    const Tensor* w = ckpt->weights.find(llama_gguf_tensor_name(gguf_name, 1));
    ASSERT_NE(w, nullptr) << gguf_name;
    EXPECT_TRUE(is_quantized(w->dtype)) << gguf_name << " was not kept quantized";
  }
  std::unique_ptr<Engine> quant = make_engine(qpath);
  std::unique_ptr<Engine> twin = make_engine(fpath);
  ASSERT_TRUE(quant && twin);
  const int64_t vocab = quant->info().vocab_size;
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab) - 1);
  // 24 tokens (a prefill: several tiles of tokens) and 3 (a short one); the same integer path for both.
  for (size_t n : {size_t{24}, size_t{3}}) {
    std::vector<int32_t> ids(n);
    for (int32_t& x : ids) x = id(rng);
    Expected<std::vector<float>> a = quant->score(ids);
    Expected<std::vector<float>> b = twin->score(ids);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->size(), n * vocab);
    float max_abs = 0.0f;
    for (float v : *b) max_abs = std::max(max_abs, std::abs(v));
    ASSERT_GT(max_abs, 0.0f);
    const double err = relative_rms(*a, *b);
    RecordProperty(c.name + "_relative_rms_" + std::to_string(n), std::to_string(err));
    EXPECT_LT(err, 0.03) << c.name << ", " << n << " tokens";
  }
}

bool same_bits(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

// Batch invariance: the scored logits of a prompt's first k tokens are the first k rows of the whole prompt's
// (row by row, bitwise); a greedy generation gives the same tokens and the same logprob bits alone, in prefill
// chunks of 5 tokens, and batched with two other prompts.
void check_batch_invariance(const QuantModelCase& c, const std::string& qpath, const std::string& mode);

TEST_P(QuantModel, LogitsDoNotDependOnBatchOrChunking) {
  const QuantModelCase& c = GetParam();
  if (!c.all_linears_quantized) GTEST_SKIP() << c.name << " keeps F32 linears (sgemm), which are not batch-invariant";
  const std::string qpath = write(c, false);
  for (const std::string mode : {"precise", "llama"}) {
    SCOPED_TRACE(mode);
    check_batch_invariance(c, qpath, mode);
  }
}

void check_batch_invariance(const QuantModelCase& c, const std::string& qpath, const std::string& mode) {
  std::unique_ptr<Engine> engine = make_engine(qpath, 8192, mode);
  std::unique_ptr<Engine> chunked = make_engine(qpath, 5, mode);
  ASSERT_TRUE(engine && chunked);
  const int64_t vocab = engine->info().vocab_size;
  std::mt19937 rng(17);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> ids(23);
  for (int32_t& x : ids) x = id(rng);
  Expected<std::vector<float>> full = engine->score(ids);
  ASSERT_TRUE(full.ok()) << full.status().to_string();
  for (size_t k : {size_t{1}, size_t{4}, size_t{9}, size_t{17}}) {
    Expected<std::vector<float>> part = engine->score(std::span<const int32_t>(ids.data(), k));
    ASSERT_TRUE(part.ok());
    for (size_t row = 0; row < k; ++row) {
      EXPECT_TRUE(same_bits(part->data() + row * vocab, full->data() + row * vocab, vocab))
          << c.name << ": position " << row << " scored in a prompt of " << k << " tokens";
    }
  }
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.max_tokens = 6;
  greedy.ignore_eos = true;
  Expected<GenerationOutput> alone = engine->generate_ids(ids, greedy);
  Expected<GenerationOutput> in_chunks = chunked->generate_ids(ids, greedy);
  std::vector<std::vector<int32_t>> prompts = {std::vector<int32_t>(ids.begin() + 3, ids.end()), ids,
                                               std::vector<int32_t>(ids.begin(), ids.begin() + 11)};
  Expected<std::vector<GenerationOutput>> batched = engine->generate_ids(prompts, greedy);
  ASSERT_TRUE(alone.ok() && in_chunks.ok() && batched.ok());
  ASSERT_EQ(alone->token_ids.size(), 6u);
  ASSERT_EQ(alone->logprobs.size(), 6u);
  for (const GenerationOutput* other : {&*in_chunks, &(*batched)[1]}) {
    EXPECT_EQ(other->token_ids, alone->token_ids) << c.name;
    ASSERT_EQ(other->logprobs.size(), alone->logprobs.size());
    EXPECT_TRUE(same_bits(other->logprobs.data(), alone->logprobs.data(), alone->logprobs.size()))
        << c.name << (other == &*in_chunks ? ": chunked prefill" : ": batched");
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, QuantModel, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<QuantModelCase>& info) { return info.param.name; });

}  // namespace
}  // namespace anvil
