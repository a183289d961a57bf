// Quantized GGUF models end to end on the CPU: a tiny random Llama whose tensors are GGUF block types (mixed per
// tensor, as Q4_K_M files are; q/k/v of different types so they cannot be fused; a tied quantized embedding)
// against its twin file holding the same weights decoded to F32. Prefill (dequantize + sgemm) gives the twin's
// logits to rounding; decode steps (8-bit activations, integer dots) stay within a few percent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
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
      {"q5_k_down", {{"blk.0.ffn_down.weight", t(GgmlType::kQ5_K)}, {"blk.0.attn_v.weight", t(GgmlType::kQ4_1)}}, true},
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

std::unique_ptr<Engine> make_engine(const std::string& path) {
  EngineConfig config;
  config.model_path = path;
  config.num_threads = 2;
  config.max_model_len = 64;
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
  // 24 tokens: prefill through dequantize + sgemm; 3 tokens: the integer-dot decode kernels.
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
    EXPECT_LT(err, n > 16 ? 1e-5 : 0.03) << c.name << ", " << n << " tokens";
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, QuantModel, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<QuantModelCase>& info) { return info.param.name; });

}  // namespace
}  // namespace anvil
