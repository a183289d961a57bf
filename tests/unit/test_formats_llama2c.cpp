// Tests for llama2.c checkpoints (the real stories260K, synthesized legacy and version-1 files, bad headers)
// and for dummy checkpoints (shapes, determinism, value statistics).
#include <gtest/gtest.h>

#include "formats_test_util.h"

namespace anvil {
namespace {

using namespace formats_test;  // NOLINT: test helpers

// ---- llama2.c --------------------------------------------------------------------------------------------

float float_at(const std::string& bytes, uint64_t offset) {
  float v;
  std::memcpy(&v, bytes.data() + offset, 4);
  return v;
}

TEST(FormatsLlama2c, LoadsStories260K) {
  Expected<Checkpoint> ckpt = load_checkpoint(kStoriesPath);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  const ModelConfig& c = ckpt->config;
  EXPECT_EQ(ckpt->format, "llama2c");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.pairing, RopePairing::kAdjacentPairs);
  EXPECT_FLOAT_EQ(c.rope.theta, 10000.0f);
  EXPECT_EQ(c.dtype, DType::kF32);
  EXPECT_EQ(c.bos_token_ids, std::vector<int32_t>{1});
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});
  EXPECT_TRUE(has_substr(ckpt->tokenizer_path, "tok512.bin"));

  const WeightStore& w = ckpt->weights;
  EXPECT_TRUE(w.get("model.embed_tokens.weight", {512, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.4.self_attn.k_proj.weight", {32, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.2.self_attn.o_proj.weight", {64, 64}).ok());
  EXPECT_TRUE(w.get("model.layers.0.mlp.down_proj.weight", {64, 172}).ok());
  EXPECT_FALSE(w.contains("lm_head.weight"));

  // Spot values against the raw file, at offsets computed from the legacy layout.
  const std::string raw = read_file(kStoriesPath);
  const uint64_t embed = 28;
  const uint64_t rms_att = embed + 512 * 64 * 4;
  const uint64_t wq = rms_att + 5 * 64 * 4;
  const uint64_t wk = wq + 5 * 64 * 64 * 4;
  const uint64_t wv = wk + 5 * 32 * 64 * 4;
  const uint64_t wo = wv + 5 * 32 * 64 * 4;
  const uint64_t rms_ffn = wo + 5 * 64 * 64 * 4;
  const uint64_t w1 = rms_ffn + 5 * 64 * 4;
  const uint64_t w2 = w1 + 5 * 172 * 64 * 4;
  const uint64_t w3 = w2 + 5 * 64 * 172 * 4;
  const uint64_t rms_final = w3 + 5 * 172 * 64 * 4;
  auto at = [&](const std::string& name, int64_t i) { return w.find(name)->ptr<float>()[i]; };
  EXPECT_EQ(at("model.embed_tokens.weight", 0), float_at(raw, embed));
  EXPECT_EQ(at("model.embed_tokens.weight", 511 * 64 + 63), float_at(raw, embed + (511 * 64 + 63) * 4));
  EXPECT_EQ(at("model.norm.weight", 0), float_at(raw, rms_final));
  EXPECT_EQ(at("model.layers.3.input_layernorm.weight", 5), float_at(raw, rms_att + (3 * 64 + 5) * 4));
  EXPECT_EQ(at("model.layers.1.self_attn.v_proj.weight", 100), float_at(raw, wv + (1 * 32 * 64 + 100) * 4));
  EXPECT_EQ(at("model.layers.2.post_attention_layernorm.weight", 0), float_at(raw, rms_ffn + 2 * 64 * 4));
  EXPECT_EQ(at("model.layers.4.mlp.up_proj.weight", 7), float_at(raw, w3 + (4 * 172 * 64 + 7) * 4));
  EXPECT_EQ(at("model.layers.4.mlp.gate_proj.weight", 7), float_at(raw, w1 + (4 * 172 * 64 + 7) * 4));
  // A trained model's norm weights are not all one and its embeddings are not zero.
  EXPECT_NE(float_at(raw, rms_final), 0.0f);
  EXPECT_NE(at("model.embed_tokens.weight", 0), 0.0f);
}

std::string legacy_header(int32_t dim, int32_t hidden, int32_t layers, int32_t heads, int32_t kv, int32_t vocab,
                          int32_t seq) {
  std::string h;
  for (int32_t v : {dim, hidden, layers, heads, kv, vocab, seq}) append_pod(&h, v);
  return h;
}

TEST(FormatsLlama2c, TruncatedOrPaddedFileFails) {
  TempDir dir;
  const std::string raw = read_file(kStoriesPath);
  ASSERT_EQ(raw.size(), 1056540u);
  for (const std::string& bytes : {raw.substr(0, raw.size() - 4), raw.substr(0, 1000), raw + "x"}) {
    write_file(dir.file("s.bin"), bytes);
    Expected<Checkpoint> ckpt = load_checkpoint(dir.file("s.bin"));
    ASSERT_FALSE(ckpt.ok());
    EXPECT_EQ(ckpt.status().code(), StatusCode::kInvalidFile);
    EXPECT_TRUE(has_substr(ckpt.status().message(), "llama2.c checkpoint " + dir.file("s.bin") + ": size " +
                                                        std::to_string(bytes.size()) +
                                                        " bytes, header implies 1056540"));
  }
  write_file(dir.file("tiny.bin"), raw.substr(0, 10));
  Expected<Checkpoint> ckpt = load_checkpoint(dir.file("tiny.bin"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "too small"));
}

TEST(FormatsLlama2c, RejectsBadHeaderValues) {
  TempDir dir;
  const std::vector<std::string> headers = {legacy_header(0, 172, 5, 8, 4, 512, 512),
                                            legacy_header(64, -172, 5, 8, 4, 512, 512),
                                            legacy_header(64, 172, 5, 0, 4, 512, 512),
                                            legacy_header(64, 172, 5, 8, 3, 512, 512),
                                            legacy_header(64, 172, 5, 7, 7, 512, 512),
                                            legacy_header(64, 172, 5, 8, 4, 0, 512),
                                            legacy_header(64, 172, 5, 8, 4, INT32_MIN, 512),
                                            legacy_header(64, 172, 5, 8, 4, 512, -1),
                                            legacy_header(INT32_MAX, INT32_MAX, INT32_MAX, 1, 1, INT32_MAX, INT32_MAX)};
  for (const std::string& h : headers) {
    write_file(dir.file("h.bin"), h + std::string(64, '\0'));
    Expected<Checkpoint> ckpt = load_checkpoint(dir.file("h.bin"));
    ASSERT_FALSE(ckpt.ok());
    EXPECT_EQ(ckpt.status().code(), StatusCode::kInvalidFile) << ckpt.status().to_string();
    EXPECT_TRUE(has_substr(ckpt.status().message(), dir.file("h.bin")));
  }
}

// Writes a synthetic llama2.c file in the given layout; `expected` gets every tensor's values by HF name.
struct Llama2cSpec {
  int32_t dim = 16, hidden = 24, layers = 2, heads = 4, kv_heads = 2, vocab = 32, seq = 8;
};

std::string synth_llama2c(const Llama2cSpec& s, int version, bool shared, uint32_t seed,
                          std::map<std::string, std::vector<float>>* expected) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int32_t hs = s.dim / s.heads;
  std::string out;
  if (version == 0) {
    out = legacy_header(s.dim, s.hidden, s.layers, s.heads, s.kv_heads, shared ? s.vocab : -s.vocab, s.seq);
  } else {
    append_pod<uint32_t>(&out, kLlama2cMagic);
    append_pod<int32_t>(&out, version);
    out += legacy_header(s.dim, s.hidden, s.layers, s.heads, s.kv_heads, s.vocab, s.seq);
    out += static_cast<char>(shared ? 1 : 0);
    out.resize(256, '\0');
  }
  // One array of `layers` slices (or a single tensor when per_layer is false).
  auto array = [&](const std::string& suffix, int64_t numel, bool per_layer) {
    const int n = per_layer ? s.layers : 1;
    for (int l = 0; l < n; ++l) {
      std::vector<float> vals(static_cast<size_t>(numel));
      for (float& v : vals) v = dist(rng);
      out.append(reinterpret_cast<const char*>(vals.data()), vals.size() * 4);
      if (suffix.empty()) continue;
      (*expected)[per_layer ? "model.layers." + std::to_string(l) + "." + suffix : suffix] = vals;
    }
  };
  const int64_t d = s.dim, h = s.hidden, kv = s.kv_heads * hs;
  if (version == 0) {
    array("model.embed_tokens.weight", s.vocab * d, false);
    array("input_layernorm.weight", d, true);
    array("self_attn.q_proj.weight", d * d, true);
    array("self_attn.k_proj.weight", kv * d, true);
    array("self_attn.v_proj.weight", kv * d, true);
    array("self_attn.o_proj.weight", d * d, true);
    array("post_attention_layernorm.weight", d, true);
    array("mlp.gate_proj.weight", h * d, true);
    array("mlp.down_proj.weight", d * h, true);
    array("mlp.up_proj.weight", h * d, true);
    array("model.norm.weight", d, false);
    array("", s.seq * hs / 2, false);
    array("", s.seq * hs / 2, false);
  } else {
    array("input_layernorm.weight", d, true);
    array("post_attention_layernorm.weight", d, true);
    array("model.norm.weight", d, false);
    array("model.embed_tokens.weight", s.vocab * d, false);
    array("self_attn.q_proj.weight", d * d, true);
    array("self_attn.k_proj.weight", kv * d, true);
    array("self_attn.v_proj.weight", kv * d, true);
    array("self_attn.o_proj.weight", d * d, true);
    array("mlp.gate_proj.weight", h * d, true);
    array("mlp.down_proj.weight", d * h, true);
    array("mlp.up_proj.weight", h * d, true);
  }
  if (!shared) array("lm_head.weight", s.vocab * d, false);
  return out;
}

TEST(FormatsLlama2c, SynthesizedLayoutsMapByValue) {
  TempDir dir;
  const Llama2cSpec spec;
  for (int version : {0, 1}) {
    for (bool shared : {true, false}) {
      std::map<std::string, std::vector<float>> expected;
      const std::string path = dir.file("v" + std::to_string(version) + (shared ? "s" : "u") + ".bin");
      write_file(path, synth_llama2c(spec, version, shared, 100 + version * 2 + shared, &expected));
      Expected<Checkpoint> ckpt = load_checkpoint(path);
      ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
      EXPECT_EQ(ckpt->config.tie_word_embeddings, shared);
      EXPECT_EQ(ckpt->config.vocab_size, spec.vocab);
      EXPECT_EQ(ckpt->config.num_kv_heads, spec.kv_heads);
      EXPECT_EQ(ckpt->config.max_position_embeddings, spec.seq);
      EXPECT_TRUE(ckpt->tokenizer_path.empty());
      EXPECT_EQ(ckpt->weights.tensors().size(), expected.size());
      for (const auto& [name, vals] : expected) {
        const Tensor* t = ckpt->weights.find(name);
        ASSERT_NE(t, nullptr) << name;
        ASSERT_EQ(static_cast<size_t>(t->numel()), vals.size()) << name;
        EXPECT_EQ(std::memcmp(t->data, vals.data(), vals.size() * 4), 0) << "version " << version << " " << name;
      }
    }
  }
  write_file(dir.file("tokenizer.bin"), "tok");
  std::map<std::string, std::vector<float>> expected;
  write_file(dir.file("m.bin"), synth_llama2c(spec, 1, true, 7, &expected));
  Expected<Checkpoint> ckpt = load_checkpoint(dir.file("m.bin"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  EXPECT_EQ(ckpt->tokenizer_path, dir.file("tokenizer.bin"));
}

TEST(FormatsLlama2c, RejectsInt8AndUnknownVersions) {
  TempDir dir;
  std::map<std::string, std::vector<float>> expected;
  std::string bytes = synth_llama2c(Llama2cSpec(), 1, true, 9, &expected);
  bytes[4] = 2;  // version 2: int8 Q8_0
  write_file(dir.file("q.bin"), bytes);
  Expected<Checkpoint> ckpt = load_checkpoint(dir.file("q.bin"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "llama2.c version 2 (int8) checkpoints are not supported yet"));

  bytes[4] = 3;
  write_file(dir.file("q.bin"), bytes);
  ckpt = load_checkpoint(dir.file("q.bin"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kUnsupported);

  bytes[4] = 1;
  bytes[36] = 7;  // shared_classifier flag must be 0 or 1
  write_file(dir.file("q.bin"), bytes);
  ckpt = load_checkpoint(dir.file("q.bin"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "shared_classifier"));

  write_file(dir.file("short.bin"), bytes.substr(0, 100));
  ckpt = load_checkpoint(dir.file("short.bin"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "too small"));
}

// ---- dummy checkpoints -----------------------------------------------------------------------------------

ModelConfig tiny_config() {
  ModelConfig c;
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.hidden_size = 64;
  c.intermediate_size = 176;
  c.num_layers = 3;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 1000;
  c.max_position_embeddings = 256;
  auto options = std::make_shared<LlamaConfig>();
  options->has_qkv_bias = true;
  c.family_config = options;
  return c;
}

TEST(FormatsDummy, ShapesValuesAndDeterminism) {
  const ModelConfig c = tiny_config();
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    Expected<Checkpoint> a = make_dummy_checkpoint(c, dtype, 42);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    EXPECT_EQ(a->format, "dummy");
    EXPECT_EQ(a->config.dtype, dtype);
    ASSERT_TRUE(check_weights(model_weight_specs(c), a->weights).ok());
    EXPECT_EQ(a->weights.tensors().size(), model_weight_specs(c).size());
    EXPECT_TRUE(a->weights.contains("lm_head.weight"));
    EXPECT_TRUE(a->weights.contains("model.layers.2.self_attn.v_proj.bias"));

    Expected<Checkpoint> b = make_dummy_checkpoint(c, dtype, 42);
    Expected<Checkpoint> other = make_dummy_checkpoint(c, dtype, 43);
    ASSERT_TRUE(b.ok() && other.ok());
    for (const auto& [name, t] : a->weights.tensors()) {
      EXPECT_EQ(t.dtype, dtype);
      const Tensor* tb = b->weights.find(name);
      EXPECT_EQ(std::memcmp(t.data, tb->data, t.nbytes()), 0) << name;
      const std::vector<float> v = tensor_values(t);
      if (name.find("norm") != std::string::npos) {
        for (float x : v) ASSERT_EQ(x, 1.0f) << name;
        continue;
      }
      EXPECT_NE(std::memcmp(t.data, other->weights.find(name)->data, t.nbytes()), 0) << name;
      double sum = 0, sum_sq = 0;
      for (float x : v) {
        sum += x;
        sum_sq += static_cast<double>(x) * x;
      }
      const double mean = sum / v.size();
      const double std_dev = std::sqrt(sum_sq / v.size() - mean * mean);
      if (v.size() >= 10000) {
        EXPECT_NEAR(mean, 0.0, 0.002) << name;
        EXPECT_NEAR(std_dev, 0.02, 0.001) << name;
      } else {
        EXPECT_GT(std_dev, 0.01) << name;
      }
    }
    // Different tensors get different values.
    EXPECT_NE(std::memcmp(a->weights.find("model.layers.0.mlp.up_proj.weight")->data,
                          a->weights.find("model.layers.0.mlp.gate_proj.weight")->data, 64 * 2),
              0);
  }
}

TEST(FormatsDummy, FromConfigPath) {
  TempDir dir;
  TinyLlama m = make_tiny_llama(DType::kBF16, 31, "LlamaForCausalLM", /*tied=*/true);
  write_file(dir.file("config.json"), m.config.dump());
  for (const std::string& path : {dir.path().string(), dir.file("config.json")}) {
    Expected<Checkpoint> ckpt = load_checkpoint(path, LoadFormat::kDummy);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
    EXPECT_EQ(ckpt->format, "dummy");
    EXPECT_EQ(ckpt->config.dtype, DType::kBF16);
    EXPECT_TRUE(ckpt->config.tie_word_embeddings);
    EXPECT_TRUE(check_weights(model_weight_specs(ckpt->config), ckpt->weights).ok());
    EXPECT_FALSE(ckpt->weights.contains("lm_head.weight"));
  }
  TempDir empty;
  Expected<Checkpoint> ckpt = load_checkpoint(empty.path().string(), LoadFormat::kDummy);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "has no config.json"));

  ModelConfig bad = tiny_config();
  bad.num_kv_heads = 3;
  EXPECT_FALSE(make_dummy_checkpoint(bad, DType::kF32, 0).ok());
  EXPECT_EQ(make_dummy_checkpoint(tiny_config(), DType::kInt8, 0).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anvil
