// Shared helpers of the formats tests: temp dirs, file writing, a safetensors writer and a tiny random Llama
// checkpoint (config.json + tensors) with the values each tensor should load as.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/checkpoint.h"
#include "formats/llama2c.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "models/llama.h"
#include "models/registry.h"

namespace anvil::formats_test {

namespace fs = std::filesystem;
using json = nlohmann::json;

inline const char* const kStoriesPath = ANVIL_SOURCE_DIR "/../shared/models/stories260K/stories260K.bin";

inline ::testing::AssertionResult has_substr(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

// A fresh directory under the test temp dir, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::path(::testing::TempDir()) /
            ("anvil_formats_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <typename T>
inline void append_pod(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// ---- safetensors writing ---------------------------------------------------------------------------------

struct StTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", or anything for error tests
  std::vector<int64_t> shape;
  std::string bytes;
};

inline std::string raw_safetensors(const std::string& header, const std::string& data) {
  std::string out;
  append_pod<uint64_t>(&out, header.size());
  return out + header + data;
}

// A valid file: offsets in order, header padded with spaces to a multiple of 8 (as the reference writer does).
inline std::string build_safetensors(const std::vector<StTensor>& tensors) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const StTensor& t : tensors) {
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  return raw_safetensors(text, data);
}

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Random normal values rounded to `dtype`, as raw bytes; `values` receives the rounded floats.
inline std::string random_bytes(DType dtype, int64_t n, std::mt19937* rng, std::vector<float>* values,
                                float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> raw(static_cast<size_t>(n));
  for (float& v : raw) v = dist(*rng);
  std::string bytes(static_cast<size_t>(n) * dtype_size(dtype), '\0');
  convert_from_f32(raw.data(), dtype, bytes.data(), raw.size());
  values->resize(raw.size());
  convert_to_f32(bytes.data(), dtype, values->data(), raw.size());
  return bytes;
}

inline const char* st_dtype_name(DType dtype) {
  return dtype == DType::kF32 ? "F32" : dtype == DType::kF16 ? "F16" : "BF16";
}

inline std::vector<float> tensor_values(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.data, t.dtype, out.data(), out.size());
  return out;
}

// ---- a tiny Llama checkpoint -----------------------------------------------------------------------------

struct TinyLlama {
  json config;
  std::vector<StTensor> tensors;
  std::map<std::string, std::vector<float>> values;
};

inline TinyLlama make_tiny_llama(DType dtype, uint32_t seed, const std::string& architecture = "LlamaForCausalLM",
                                 bool tied = false) {
  const int64_t hidden = 16, inter = 40, layers = 2, heads = 4, kv_heads = 2, vocab = 50, head_dim = 4;
  TinyLlama m;
  m.config = {{"architectures", {architecture}},
              {"hidden_size", hidden},
              {"intermediate_size", inter},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv_heads},
              {"vocab_size", vocab},
              {"max_position_embeddings", 128},
              {"rms_norm_eps", 1e-6},
              {"rope_theta", 10000.0},
              {"tie_word_embeddings", tied},
              {"torch_dtype", std::string(dtype_name(dtype))},
              {"bos_token_id", 1},
              {"eos_token_id", 2}};
  const bool bias = architecture == "Qwen2ForCausalLM";
  std::mt19937 rng(seed);
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    std::vector<float> vals;
    m.tensors.push_back({name, st_dtype_name(dtype), shape, random_bytes(dtype, numel_of(shape), &rng, &vals)});
    m.values[name] = vals;
  };
  add("model.embed_tokens.weight", {vocab, hidden});
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {hidden});
    add(p + "self_attn.q_proj.weight", {heads * head_dim, hidden});
    add(p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden});
    add(p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden});
    if (bias) {
      add(p + "self_attn.q_proj.bias", {heads * head_dim});
      add(p + "self_attn.k_proj.bias", {kv_heads * head_dim});
      add(p + "self_attn.v_proj.bias", {kv_heads * head_dim});
    }
    add(p + "self_attn.o_proj.weight", {hidden, heads * head_dim});
    add(p + "post_attention_layernorm.weight", {hidden});
    add(p + "mlp.gate_proj.weight", {inter, hidden});
    add(p + "mlp.up_proj.weight", {inter, hidden});
    add(p + "mlp.down_proj.weight", {hidden, inter});
  }
  add("model.norm.weight", {hidden});
  if (!tied) add("lm_head.weight", {vocab, hidden});
  return m;
}

inline void write_tiny_dir(const TempDir& dir, const TinyLlama& m) {
  write_file(dir.file("config.json"), m.config.dump(2));
  write_file(dir.file("model.safetensors"), build_safetensors(m.tensors));
}

inline void expect_values(const Checkpoint& ckpt, const TinyLlama& m) {
  EXPECT_EQ(ckpt.weights.tensors().size(), m.values.size());
  for (const auto& [name, vals] : m.values) {
    const Tensor* t = ckpt.weights.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(tensor_values(*t), vals) << name;
  }
}

}  // namespace anvil::formats_test
