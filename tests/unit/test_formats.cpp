// Tests for src/formats/: mapped files, config.json parsing, the safetensors parser and loader, and HF checkpoint
// directories (single file, sharded, every kind of bad input). Files are written by the tests into temp dirs.
#include <gtest/gtest.h>

#include "formats_test_util.h"

namespace anvil {
namespace {

using namespace formats_test;  // NOLINT: test helpers

// ---- mapped files ----------------------------------------------------------------------------------------

TEST(FormatsMappedFile, MapsFilesAndNamesErrors) {
  TempDir dir;
  write_file(dir.file("data"), "hello world");
  Expected<std::shared_ptr<MappedFile>> f = MappedFile::open(dir.file("data"));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->size(), 11u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*f)->data()), (*f)->size()), "hello world");
  EXPECT_EQ((*f)->path(), dir.file("data"));

  write_file(dir.file("empty"), "");
  f = MappedFile::open(dir.file("empty"));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ((*f)->size(), 0u);

  f = MappedFile::open(dir.path().string());
  ASSERT_FALSE(f.ok());
  EXPECT_TRUE(has_substr(f.status().message(), dir.path().string() + ": is a directory"));

  f = MappedFile::open(dir.file("missing"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(has_substr(f.status().message(), dir.file("missing")));
}

// ---- config.json -----------------------------------------------------------------------------------------

json smollm_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 576},
          {"intermediate_size", 1536},
          {"num_hidden_layers", 30},
          {"num_attention_heads", 9},
          {"num_key_value_heads", 3},
          {"vocab_size", 49152},
          {"max_position_embeddings", 2048},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},
          {"tie_word_embeddings", true},
          {"torch_dtype", "bfloat16"},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"hidden_act", "silu"},
          {"attention_bias", false}};
}

TEST(FormatsConfig, ParsesSmolLmConfig) {
  Expected<ModelConfig> c = parse_hf_config(smollm_config().dump(), "/m/config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->model_type, "llama");
  EXPECT_EQ(c->hidden_size, 576);
  EXPECT_EQ(c->intermediate_size, 1536);
  EXPECT_EQ(c->num_layers, 30);
  EXPECT_EQ(c->num_heads, 9);
  EXPECT_EQ(c->num_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope.theta, 10000.0f);
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kNone);
  EXPECT_EQ(c->rope.pairing, RopePairing::kRotateHalf);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(llama_config(*c).has_qkv_bias);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(c->bos_token_ids, std::vector<int32_t>{1});
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{2});
}

TEST(FormatsConfig, DefaultsForOptionalFields) {
  json j = smollm_config();
  for (const char* key : {"num_key_value_heads", "rope_theta", "rope_scaling", "tie_word_embeddings", "torch_dtype",
                          "bos_token_id", "eos_token_id", "rms_norm_eps", "attention_bias", "model_type"}) {
    j.erase(key);
  }
  Expected<ModelConfig> c = parse_hf_config(j.dump(), "cfg");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->num_kv_heads, 9);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_FLOAT_EQ(c->rope.theta, 10000.0f);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->dtype, DType::kF32);
  EXPECT_TRUE(c->bos_token_ids.empty());
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_EQ(c->model_type, "llama");
}

TEST(FormatsConfig, Qwen2HasBiasAndTransformers5Fields) {
  json j = {{"architectures", {"Qwen2ForCausalLM"}},
            {"hidden_size", 896},
            {"intermediate_size", 4864},
            {"num_hidden_layers", 24},
            {"num_attention_heads", 14},
            {"num_key_value_heads", 2},
            {"head_dim", nullptr},
            {"vocab_size", 151936},
            {"max_position_embeddings", 32768},
            {"rms_norm_eps", 1e-6},
            {"dtype", "float16"},
            {"use_sliding_window", false},
            {"sliding_window", 4096},
            {"rope_parameters", {{"rope_theta", 1000000.0}, {"rope_type", "default"}}},
            {"eos_token_id", {151645, 151643}},
            {"bos_token_id", nullptr}};
  Expected<ModelConfig> c = parse_hf_config(j.dump(), "qwen/config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->model_type, "qwen2");
  EXPECT_TRUE(llama_config(*c).has_qkv_bias);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_FLOAT_EQ(c->rope.theta, 1e6f);
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kNone);
  EXPECT_EQ(c->dtype, DType::kF16);
  EXPECT_TRUE(c->bos_token_ids.empty());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{151645, 151643}));
}

TEST(FormatsConfig, RopeScalingVariants) {
  json j = smollm_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  Expected<ModelConfig> c = parse_hf_config(j.dump(), "cfg");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kLinear);
  EXPECT_FLOAT_EQ(c->rope.factor, 4.0f);

  const json llama3 = {{"rope_type", "llama3"},
                       {"factor", 32.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  j["rope_scaling"] = llama3;
  j["rope_theta"] = 500000.0;
  c = parse_hf_config(j.dump(), "cfg");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kLlama3);
  EXPECT_FLOAT_EQ(c->rope.factor, 32.0f);
  EXPECT_FLOAT_EQ(c->rope.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c->rope.high_freq_factor, 4.0f);
  EXPECT_EQ(c->rope.original_max_position_embeddings, 8192);
  EXPECT_FLOAT_EQ(c->rope.theta, 500000.0f);

  // transformers 5: everything inside rope_parameters.
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = llama3;
  j["rope_parameters"]["rope_theta"] = 250000.0;
  c = parse_hf_config(j.dump(), "cfg");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->rope.scaling, RopeScalingType::kLlama3);
  EXPECT_FLOAT_EQ(c->rope.theta, 250000.0f);
  EXPECT_FLOAT_EQ(c->rope.factor, 32.0f);

  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  c = parse_hf_config(j.dump(), "cfg");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(has_substr(c.status().message(), "'yarn'"));

  j.erase("rope_parameters");
  j["rope_scaling"] = {{"rope_type", "linear"}};
  c = parse_hf_config(j.dump(), "cfg");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(has_substr(c.status().message(), "rope_scaling.factor"));
}

TEST(FormatsConfig, UnknownArchitectureIsUnsupported) {
  json j = smollm_config();
  j["architectures"] = {"MambaForCausalLM"};
  Expected<ModelConfig> c = parse_hf_config(j.dump(), "/models/mamba/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(has_substr(c.status().message(), "architecture 'MambaForCausalLM' is not supported"));
  EXPECT_TRUE(has_substr(c.status().message(), "/models/mamba/config.json"));
  EXPECT_TRUE(has_substr(c.status().message(), "Qwen2ForCausalLM"));
  EXPECT_TRUE(is_supported_architecture("MistralForCausalLM"));
  EXPECT_FALSE(is_supported_architecture("MambaForCausalLM"));
}

TEST(FormatsConfig, MalformedJson) {
  for (const std::string text : {"", "{", "{\"hidden_size\": 5,}", "[1, 2]", "\"text\"", "{\"a\": tru}"}) {
    Expected<ModelConfig> c = parse_hf_config(text, "bad/config.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidFile) << text;
    EXPECT_TRUE(has_substr(c.status().message(), "bad/config.json")) << text;
  }
}

TEST(FormatsConfig, WrongJsonTypesNameTheField) {
  const std::vector<std::pair<std::string, json>> cases = {
      {"hidden_size", "576"},    {"hidden_size", 576.5},        {"num_hidden_layers", json::array()},
      {"rms_norm_eps", "small"}, {"tie_word_embeddings", 1},    {"rope_scaling", "linear"},
      {"eos_token_id", "</s>"},  {"eos_token_id", {1, "2"}},    {"architectures", 7},
      {"torch_dtype", 16},       {"num_key_value_heads", true}, {"max_position_embeddings", -1.5}};
  for (const auto& [key, value] : cases) {
    json j = smollm_config();
    j[key] = value;
    Expected<ModelConfig> c = parse_hf_config(j.dump(), "cfg.json");
    ASSERT_FALSE(c.ok()) << key << " = " << value.dump();
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidFile) << key;
    EXPECT_TRUE(has_substr(c.status().message(), key)) << key;
  }
}

TEST(FormatsConfig, MissingAndInconsistentFields) {
  json j = smollm_config();
  j.erase("vocab_size");
  Expected<ModelConfig> c = parse_hf_config(j.dump(), "cfg");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(has_substr(c.status().message(), "missing required field 'vocab_size'"));

  const std::vector<std::pair<std::string, json>> bad = {{"num_key_value_heads", 2},  // 9 heads not divisible by 2
                                                         {"num_hidden_layers", 0},
                                                         {"hidden_size", -5},
                                                         {"vocab_size", 4000000000000},
                                                         {"head_dim", 63},
                                                         {"intermediate_size", int64_t{1} << 40},
                                                         {"rms_norm_eps", 0.0},
                                                         {"rope_theta", 1e300},
                                                         {"num_key_value_heads", 18}};
  for (const auto& [key, value] : bad) {
    json k = smollm_config();
    k[key] = value;
    c = parse_hf_config(k.dump(), "cfg");
    ASSERT_FALSE(c.ok()) << key << " = " << value.dump();
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidFile) << key;
  }
  json k = smollm_config();
  k["mlp_bias"] = true;
  EXPECT_EQ(parse_hf_config(k.dump(), "cfg").status().code(), StatusCode::kUnsupported);
}

// ---- safetensors -----------------------------------------------------------------------------------------

TEST(FormatsSafetensors, RoundTripAllDtypes) {
  TempDir dir;
  std::mt19937 rng(1234);
  std::vector<StTensor> tensors;
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, DType> dtypes;
  const std::vector<std::vector<int64_t>> shapes = {{7, 19}, {111}, {3, 5, 2}, {1, 1, 1, 13}};
  int idx = 0;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const auto& shape : shapes) {
      const std::string name = "t" + std::to_string(idx++);
      std::vector<float> vals;
      tensors.push_back({name, st_dtype_name(dtype), shape, random_bytes(dtype, numel_of(shape), &rng, &vals)});
      values[name] = vals;
      dtypes[name] = dtype;
    }
  }
  tensors.push_back({"empty", "F32", {0, 4}, ""});
  write_file(dir.file("a.safetensors"), build_safetensors(tensors));

  WeightStore store;
  ASSERT_TRUE(load_safetensors_file(dir.file("a.safetensors"), &store).ok());
  EXPECT_EQ(store.tensors().size(), tensors.size());
  for (const StTensor& st : tensors) {
    const Tensor* t = store.find(st.name);
    ASSERT_NE(t, nullptr) << st.name;
    ASSERT_EQ(t->ndim, static_cast<int>(st.shape.size()));
    for (int d = 0; d < t->ndim; ++d) EXPECT_EQ(t->shape[d], st.shape[d]) << st.name;
    if (st.name == "empty") continue;
    EXPECT_EQ(t->dtype, dtypes[st.name]);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % dtype_size(t->dtype), 0u);
    EXPECT_EQ(tensor_values(*t), values[st.name]) << st.name;
  }
  Expected<Tensor> ok = store.get("t0", {7, 19});
  EXPECT_TRUE(ok.ok());
  Expected<Tensor> wrong = store.get("t0", {19, 7});
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(has_substr(wrong.status().message(), "tensor t0 has shape [7, 19], expected [19, 7]"));
  EXPECT_EQ(store.get("nope", {1}).status().code(), StatusCode::kNotFound);
}

TEST(FormatsSafetensors, MisalignedDataIsCopied) {
  TempDir dir;
  std::mt19937 rng(5);
  std::vector<float> vals;
  const std::string data = random_bytes(DType::kF32, 12, &rng, &vals);
  // Header of odd length: the data section starts at an odd file offset.
  std::string header = json({{"w", {{"dtype", "F32"}, {"shape", {3, 4}}, {"data_offsets", {0, 48}}}}}).dump();
  if (header.size() % 2 == 0) header += ' ';
  write_file(dir.file("odd.safetensors"), raw_safetensors(header, data));
  WeightStore store;
  ASSERT_TRUE(load_safetensors_file(dir.file("odd.safetensors"), &store).ok());
  const Tensor* t = store.find("w");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 4, 0u);
  EXPECT_EQ(tensor_values(*t), vals);
}

Status parse_bytes(const std::string& bytes) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.safetensors").status();
}

std::string one_tensor(const std::string& dtype, const json& shape, const json& offsets, size_t data_bytes) {
  const json header = {{"w", {{"dtype", dtype}, {"shape", shape}, {"data_offsets", offsets}}}};
  return raw_safetensors(header.dump(), std::string(data_bytes, '\x01'));
}

TEST(FormatsSafetensors, ParserAcceptsMetadataAndReportsAbsoluteOffsets) {
  const json header = {{"__metadata__", {{"format", "pt"}}},
                       {"b", {{"dtype", "F16"}, {"shape", {2}}, {"data_offsets", {8, 12}}}},
                       {"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}};
  const std::string text = header.dump();
  const std::string bytes = raw_safetensors(text, std::string(12, '\0'));
  Expected<std::vector<SafetensorsEntry>> e =
      parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x");
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[0].name, "a");
  EXPECT_EQ((*e)[0].data_offset, 8 + text.size());
  EXPECT_EQ((*e)[0].nbytes, 8u);
  EXPECT_EQ((*e)[1].name, "b");
  EXPECT_EQ((*e)[1].dtype, DType::kF16);
  EXPECT_EQ((*e)[1].data_offset, 8 + text.size() + 8);
}

TEST(FormatsSafetensors, RejectsBadHeaders) {
  struct Case {
    std::string bytes;
    StatusCode code;
    std::string message;
  };
  std::string lying_length;
  append_pod<uint64_t>(&lying_length, 1000);
  lying_length += "{}";
  std::string huge_length;
  append_pod<uint64_t>(&huge_length, uint64_t{1} << 40);
  const std::vector<Case> cases = {
      {"", StatusCode::kInvalidFile, "too small"},
      {"abc", StatusCode::kInvalidFile, "too small"},
      {lying_length, StatusCode::kInvalidFile, "header length 1000 runs past the end"},
      {huge_length, StatusCode::kInvalidFile, "exceeds the limit"},
      {raw_safetensors("{\"w\": ", ""), StatusCode::kInvalidFile, "not valid JSON"},
      {raw_safetensors("[1,2]", ""), StatusCode::kInvalidFile, "not a JSON object"},
      {raw_safetensors("{\"w\": 5}", ""), StatusCode::kInvalidFile, "'w'"},
      {one_tensor("F32", {2, 2}, {0, 32}, 16), StatusCode::kInvalidFile, "run past the end"},
      {one_tensor("F32", {2, 3}, {0, 16}, 16), StatusCode::kInvalidFile, "hold 16 bytes"},
      {one_tensor("F32", {2, 2}, {16, 0}, 16), StatusCode::kInvalidFile, "end before they begin"},
      {one_tensor("F32", {2, -2}, {0, 16}, 16), StatusCode::kInvalidFile, "non-negative"},
      {one_tensor("F32", {2.5}, {0, 16}, 16), StatusCode::kInvalidFile, "non-negative"},
      {one_tensor("F32", {2, 2}, {0}, 16), StatusCode::kInvalidFile, "data_offsets"},
      {one_tensor("F32", {2, 2}, {-4, 12}, 16), StatusCode::kInvalidFile, "data_offsets"},
      {one_tensor("F32", "2x2", {0, 16}, 16), StatusCode::kInvalidFile, "shape"},
      {one_tensor("F32", {int64_t{1} << 40, int64_t{1} << 40}, {0, 16}, 16), StatusCode::kInvalidFile, "overflow"},
      {one_tensor("I64", {2}, {0, 16}, 16), StatusCode::kUnsupported, "tensor 'w' has dtype I64"},
      {one_tensor("F8_E4M3", {16}, {0, 16}, 16), StatusCode::kUnsupported, "F8_E4M3"},
  };
  for (const Case& c : cases) {
    const Status s = parse_bytes(c.bytes);
    ASSERT_FALSE(s.ok()) << c.message;
    EXPECT_EQ(s.code(), c.code) << s.to_string();
    EXPECT_TRUE(has_substr(s.message(), c.message));
    EXPECT_TRUE(has_substr(s.message(), "x.safetensors"));
  }
}

TEST(FormatsSafetensors, RejectsOverlappingTensors) {
  const json header = {{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
                       {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 16}}}},
                       {"z", {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {4, 4}}}}};
  const Status s = parse_bytes(raw_safetensors(header.dump(), std::string(16, '\0')));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(has_substr(s.message(), "'a' and 'b' overlap"));
}

TEST(FormatsSafetensors, TruncatedFileFailsToLoad) {
  TempDir dir;
  const TinyLlama m = make_tiny_llama(DType::kBF16, 3);
  const std::string bytes = build_safetensors(m.tensors);
  for (size_t cut : {size_t{4}, size_t{20}, bytes.size() / 2, bytes.size() - 1}) {
    write_file(dir.file("t.safetensors"), bytes.substr(0, cut));
    WeightStore store;
    const Status s = load_safetensors_file(dir.file("t.safetensors"), &store);
    ASSERT_FALSE(s.ok()) << cut;
    EXPECT_EQ(s.code(), StatusCode::kInvalidFile);
    EXPECT_TRUE(has_substr(s.message(), dir.file("t.safetensors")));
  }
}

// ---- HF checkpoint directories ---------------------------------------------------------------------------

TEST(FormatsCheckpoint, LoadsSingleFileDirectory) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    TempDir dir;
    const TinyLlama m = make_tiny_llama(dtype, 11);
    write_tiny_dir(dir, m);
    write_file(dir.file("tokenizer.json"), "{}");
    Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
    EXPECT_EQ(ckpt->format, "hf-safetensors");
    EXPECT_EQ(ckpt->config.hidden_size, 16);
    EXPECT_EQ(ckpt->config.num_kv_heads, 2);
    EXPECT_EQ(ckpt->config.dtype, dtype);
    EXPECT_EQ(ckpt->tokenizer_path, dir.file("tokenizer.json"));
    EXPECT_TRUE(check_weights(model_weight_specs(ckpt->config), ckpt->weights).ok());
    expect_values(*ckpt, m);

    Expected<Checkpoint> via_config = load_checkpoint(dir.file("config.json"));
    ASSERT_TRUE(via_config.ok()) << via_config.status().to_string();
    expect_values(*via_config, m);
  }
}

TEST(FormatsCheckpoint, DtypeFollowsTheTensors) {
  TempDir dir;
  TinyLlama m = make_tiny_llama(DType::kBF16, 12, "LlamaForCausalLM", /*tied=*/true);
  m.config["torch_dtype"] = "float32";
  write_tiny_dir(dir, m);
  Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  EXPECT_EQ(ckpt->config.dtype, DType::kBF16);
  EXPECT_TRUE(ckpt->config.tie_word_embeddings);
  EXPECT_FALSE(ckpt->weights.contains("lm_head.weight"));
  EXPECT_TRUE(ckpt->tokenizer_path.empty());
}

TEST(FormatsCheckpoint, Qwen2NeedsBiases) {
  TempDir dir;
  TinyLlama m = make_tiny_llama(DType::kF32, 13, "Qwen2ForCausalLM");
  write_tiny_dir(dir, m);
  Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  EXPECT_TRUE(llama_config(ckpt->config).has_qkv_bias);
  expect_values(*ckpt, m);

  std::erase_if(m.tensors, [](const StTensor& t) { return t.name == "model.layers.1.self_attn.k_proj.bias"; });
  write_tiny_dir(dir, m);
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "model.layers.1.self_attn.k_proj.bias"));
}

void write_sharded(const TempDir& dir, const TinyLlama& m, json* index) {
  std::vector<StTensor> shard_a(m.tensors.begin(), m.tensors.begin() + m.tensors.size() / 2);
  std::vector<StTensor> shard_b(m.tensors.begin() + m.tensors.size() / 2, m.tensors.end());
  write_file(dir.file("config.json"), m.config.dump());
  write_file(dir.file("model-00001-of-00002.safetensors"), build_safetensors(shard_a));
  write_file(dir.file("model-00002-of-00002.safetensors"), build_safetensors(shard_b));
  *index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const StTensor& t : shard_a) (*index)["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const StTensor& t : shard_b) (*index)["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  write_file(dir.file("model.safetensors.index.json"), index->dump());
}

TEST(FormatsCheckpoint, LoadsShardedDirectory) {
  TempDir dir;
  const TinyLlama m = make_tiny_llama(DType::kF16, 21);
  json index;
  write_sharded(dir, m, &index);
  Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  expect_values(*ckpt, m);
}

TEST(FormatsCheckpoint, ShardedIndexErrors) {
  TempDir dir;
  const TinyLlama m = make_tiny_llama(DType::kF16, 22);
  json index;
  write_sharded(dir, m, &index);

  json bad = index;
  bad["weight_map"]["model.norm.weight"] = "model-00003-of-00002.safetensors";
  write_file(dir.file("model.safetensors.index.json"), bad.dump());
  Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "model-00003-of-00002.safetensors"));

  bad = index;
  bad["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors";
  write_file(dir.file("model.safetensors.index.json"), bad.dump());
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "model.extra.weight"));

  bad = index;  // a tensor listed in the wrong shard
  bad["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors";
  write_file(dir.file("model.safetensors.index.json"), bad.dump());
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "lm_head.weight"));

  bad = index;
  bad["weight_map"]["lm_head.weight"] = "../elsewhere.safetensors";
  write_file(dir.file("model.safetensors.index.json"), bad.dump());
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "not a plain file name"));

  write_file(dir.file("model.safetensors.index.json"), "{\"weight_map\": [");
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kInvalidFile);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "model.safetensors.index.json"));
}

TEST(FormatsCheckpoint, LoadsAnySafetensorsFiles) {
  TempDir dir;
  const TinyLlama m = make_tiny_llama(DType::kF32, 23);
  write_file(dir.file("config.json"), m.config.dump());
  std::vector<StTensor> a(m.tensors.begin(), m.tensors.begin() + 5);
  std::vector<StTensor> b(m.tensors.begin() + 5, m.tensors.end());
  write_file(dir.file("part-a.safetensors"), build_safetensors(a));
  write_file(dir.file("part-b.safetensors"), build_safetensors(b));
  Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().to_string();
  expect_values(*ckpt, m);

  write_file(dir.file("part-c.safetensors"), build_safetensors(a));  // the same tensors twice
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "already loaded"));
}

TEST(FormatsCheckpoint, PathErrors) {
  TempDir dir;
  Expected<Checkpoint> ckpt = load_checkpoint(dir.file("does-not-exist"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(has_substr(ckpt.status().message(), dir.file("does-not-exist")));

  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "directory " + dir.path().string() + " has no config.json"));

  const TinyLlama m = make_tiny_llama(DType::kF32, 24);
  write_file(dir.file("config.json"), m.config.dump());
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_TRUE(has_substr(ckpt.status().message(), "no *.safetensors"));

  write_file(dir.file("config.json"), "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": ");
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kInvalidFile);
  EXPECT_TRUE(has_substr(ckpt.status().message(), dir.file("config.json")));

  json unknown = m.config;
  unknown["architectures"] = {"MambaForCausalLM"};
  write_file(dir.file("config.json"), unknown.dump());
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "MambaForCausalLM"));

  write_file(dir.file("model.safetensors"), build_safetensors(m.tensors));
  ckpt = load_checkpoint(dir.file("model.safetensors"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "pass the directory"));

  write_file(dir.file("m.gguf"), std::string("GGUF") + std::string(60, '\0'));
  ckpt = load_checkpoint(dir.file("m.gguf"));
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "GGUF"));
}

TEST(FormatsCheckpoint, WrongShapeAndMissingTensors) {
  TempDir dir;
  TinyLlama m = make_tiny_llama(DType::kF32, 25);
  for (StTensor& t : m.tensors) {
    if (t.name == "model.layers.0.self_attn.q_proj.weight") t.shape = {32, 8};  // same bytes, wrong shape
  }
  write_tiny_dir(dir, m);
  Expected<Checkpoint> ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kInvalidFile);
  EXPECT_TRUE(has_substr(ckpt.status().message(),
                         "tensor model.layers.0.self_attn.q_proj.weight has shape [32, 8], expected [16, 16]"));
  EXPECT_TRUE(has_substr(ckpt.status().message(), dir.file("model.safetensors")));

  m = make_tiny_llama(DType::kF32, 26);
  std::erase_if(m.tensors, [](const StTensor& t) { return t.name == "model.layers.1.mlp.down_proj.weight"; });
  write_tiny_dir(dir, m);
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(has_substr(ckpt.status().message(), "tensor model.layers.1.mlp.down_proj.weight is missing"));

  m = make_tiny_llama(DType::kF32, 27);
  m.tensors[3].dtype = "I32";
  write_tiny_dir(dir, m);
  ckpt = load_checkpoint(dir.path().string());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), StatusCode::kUnsupported);
  EXPECT_TRUE(has_substr(ckpt.status().message(), m.tensors[3].name));
}

}  // namespace
}  // namespace anvil
