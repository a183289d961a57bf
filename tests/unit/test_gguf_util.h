// Shared helpers of the GGUF tests: a byte-level GGUF writer that can also write lies (wrong counts, offsets,
// types) for the bad-input tests, a tiny random Llama model in GGUF form, and fixture file reading.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/gguf.h"
#include "formats/gguf_quant.h"

namespace anvil::gguf_test {

inline const std::string kGgufData = std::string(ANVIL_SOURCE_DIR) + "/tests/data/gguf";

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::vector<float> read_f32_file(const std::string& path) {
  const std::string bytes = read_bytes(path);
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

template <typename T>
void put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

inline void put_string(std::string* out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out->append(s);
}

// Writes GGUF files field by field. Values are added as already-encoded bytes with their type, so any type (and
// any lie) can be written; tensors get offsets packed at the alignment unless given one.
class GgufBuilder {
 public:
  uint32_t version = 3;
  std::string magic = "GGUF";
  std::optional<uint64_t> tensor_count_override;
  std::optional<uint64_t> kv_count_override;
  uint64_t alignment = kGgufDefaultAlignment;  // used to place tensors; add general.alignment yourself

  void add_raw(const std::string& key, GgufValueType type, const std::string& encoded) {
    std::string kv;
    put_string(&kv, key);
    put<uint32_t>(&kv, static_cast<uint32_t>(type));
    kv += encoded;
    kvs_.push_back(kv);
  }
  void add_u32(const std::string& key, uint32_t v) { add_raw(key, GgufValueType::kUint32, pod(v)); }
  void add_f32(const std::string& key, float v) { add_raw(key, GgufValueType::kFloat32, pod(v)); }
  void add_bool(const std::string& key, bool v) { add_raw(key, GgufValueType::kBool, pod<uint8_t>(v ? 1 : 0)); }
  void add_string(const std::string& key, const std::string& v) {
    std::string e;
    put_string(&e, v);
    add_raw(key, GgufValueType::kString, e);
  }
  void add_string_array(const std::string& key, const std::vector<std::string>& items) {
    std::string e;
    put<uint32_t>(&e, static_cast<uint32_t>(GgufValueType::kString));
    put<uint64_t>(&e, items.size());
    for (const std::string& s : items) put_string(&e, s);
    add_raw(key, GgufValueType::kArray, e);
  }

  // `dims` innermost first; `data` the tensor bytes (any length, for lies); `offset` overrides the packed one.
  void add_tensor(const std::string& name, uint32_t type, const std::vector<uint64_t>& dims, const std::string& data,
                  std::optional<uint64_t> offset = std::nullopt) {
    tensors_.push_back({name, type, dims, data, offset});
  }

  std::string build() const {
    std::string out = magic;
    put<uint32_t>(&out, version);
    put<uint64_t>(&out, tensor_count_override.value_or(tensors_.size()));
    put<uint64_t>(&out, kv_count_override.value_or(kvs_.size()));
    for (const std::string& kv : kvs_) out += kv;
    std::string data;
    for (const Tensor& t : tensors_) {
      while (data.size() % alignment != 0) data += '\0';
      put_string(&out, t.name);
      put<uint32_t>(&out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) put<uint64_t>(&out, d);
      put<uint32_t>(&out, t.type);
      put<uint64_t>(&out, t.offset.value_or(data.size()));
      data += t.data;
    }
    if (!tensors_.empty()) {
      while (out.size() % alignment != 0) out += '\0';
    }
    return out + data;
  }

  template <typename T>
  static std::string pod(T v) {
    std::string s;
    put(&s, v);
    return s;
  }

 private:
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> dims;
    std::string data;
    std::optional<uint64_t> offset;
  };
  std::vector<std::string> kvs_;
  std::vector<Tensor> tensors_;
};

inline std::string random_f32_bytes(size_t n, std::mt19937* rng) {
  std::normal_distribution<float> dist(0.0f, 0.5f);
  std::string out;
  for (size_t i = 0; i < n; ++i) put<float>(&out, dist(*rng));
  return out;
}

// A tiny random llama-architecture model: hidden 32, 2 heads of 16, 1 KV head, intermediate 256, 1 layer,
// vocab 16, all tensors F32 unless `types` names another type for a tensor (its bytes are then random blocks).
struct TinyGgufOptions {
  std::string arch = "llama";
  bool tied = false;
  bool with_tokenizer = true;
  uint32_t embd_type = 0;                 // ggml type of token_embd.weight
  uint32_t ffn_down_type = 0;             // ggml type of blk.0.ffn_down.weight
  uint32_t head_count_kv_key = 1;         // what the metadata says; the tensors always have one KV head
  std::string skip_tensor;                // a tensor left out
  std::map<std::string, uint32_t> types;  // ggml type of any tensor by GGUF name (overrides the two above)
  bool dequantized = false;   // write quantized tensors as F32 holding their decoded values (same random draws)
  bool small_scales = false;  // block scales drawn so decoded weights stay within about +-1 (any block type)
};

inline GgufBuilder tiny_llama_gguf(const TinyGgufOptions& o, std::mt19937* rng) {
  constexpr uint64_t kHidden = 32, kHeads = 2, kKvHeads = 1, kHeadDim = 16, kInter = 256, kVocab = 16;
  GgufBuilder b;
  b.add_string("general.architecture", o.arch);
  b.add_u32(o.arch + ".context_length", 64);
  b.add_u32(o.arch + ".embedding_length", kHidden);
  b.add_u32(o.arch + ".block_count", 1);
  b.add_u32(o.arch + ".feed_forward_length", kInter);
  b.add_u32(o.arch + ".attention.head_count", kHeads);
  b.add_u32(o.arch + ".attention.head_count_kv", o.head_count_kv_key);
  b.add_f32(o.arch + ".rope.freq_base", 10000.0f);
  b.add_f32(o.arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
  if (o.with_tokenizer) {
    std::vector<std::string> tokens;
    for (uint64_t i = 0; i < kVocab; ++i) tokens.push_back("<t" + std::to_string(i) + ">");
    b.add_string("tokenizer.ggml.model", "llama");
    b.add_string_array("tokenizer.ggml.tokens", tokens);
    b.add_u32("tokenizer.ggml.bos_token_id", 1);
    b.add_u32("tokenizer.ggml.eos_token_id", 2);
    b.add_u32("tokenizer.ggml.eot_token_id", 3);
    b.add_string("tokenizer.chat_template", "{{ messages }}");
  }
  auto block_bytes = [&](uint32_t type, uint64_t numel) {
    const GgmlTypeTraits* t = ggml_type_traits(type);
    std::string out;
    std::uniform_int_distribution<int> byte(0, 255);
    for (uint64_t i = 0; i < numel / t->block_size * t->type_size; ++i) out += static_cast<char>(byte(*rng));
    // Finite f16 scales (0x2e66, about 0.1) in the first two fields of every block: d (and m or dmin) of the
    // legacy and Q4_K/Q5_K layouts; elsewhere they are quant bytes, where any value is valid.
    if (t->block_size > 1 && !o.small_scales) {
      for (size_t off = 0; off < out.size(); off += t->type_size) {
        for (size_t k = 0; k < 4; k += 2) {
          out[off + k] = 0x66;
          out[off + k + 1] = 0x2e;
        }
      }
    }
    if (t->block_size > 1 && o.small_scales) {
      // Scales that keep every decoded weight within about +-1, so a model's activations stay sane.
      const GgmlType g = static_cast<GgmlType>(type);
      const bool is_k = g == GgmlType::kQ4_K || g == GgmlType::kQ5_K;
      const float d = g == GgmlType::kQ8_0 ? 0.004f : g == GgmlType::kQ6_K ? 0.0005f : is_k ? 0.001f : 0.03f;
      const std::vector<size_t> fields = g == GgmlType::kQ6_K ? std::vector<size_t>{208} : std::vector<size_t>{0, 2};
      std::uniform_real_distribution<float> jitter(0.5f, 1.5f);
      for (size_t off = 0; off < out.size(); off += t->type_size) {
        for (size_t k : fields) {
          const uint16_t h = float_to_fp16(d * jitter(*rng) * (k == 2 && !is_k ? -4.0f : 1.0f));
          std::memcpy(&out[off + k], &h, 2);
        }
      }
    }
    return out;
  };
  auto add = [&](const std::string& name, std::vector<uint64_t> dims, uint32_t type = 0) {
    if (name == o.skip_tensor) return;
    if (const auto it = o.types.find(name); it != o.types.end()) type = it->second;
    uint64_t numel = 1;
    for (uint64_t d : dims) numel *= d;
    std::string bytes = type == 0 ? random_f32_bytes(numel, rng) : block_bytes(type, numel);
    if (o.dequantized && type != 0) {
      std::vector<float> values(numel);
      const Status s = dequantize_gguf(static_cast<GgmlType>(type), reinterpret_cast<const uint8_t*>(bytes.data()),
                                       bytes.size(), values.data(), numel);
      if (!s.ok()) std::abort();
      bytes.assign(reinterpret_cast<const char*>(values.data()), numel * sizeof(float));
      type = 0;
    }
    b.add_tensor(name, type, dims, bytes);
  };
  add("token_embd.weight", {kHidden, kVocab}, o.embd_type);
  add("blk.0.attn_norm.weight", {kHidden});
  add("blk.0.attn_q.weight", {kHidden, kHeads * kHeadDim});
  add("blk.0.attn_k.weight", {kHidden, kKvHeads * kHeadDim});
  add("blk.0.attn_v.weight", {kHidden, kKvHeads * kHeadDim});
  if (o.arch == "qwen2") {
    add("blk.0.attn_q.bias", {kHeads * kHeadDim});
    add("blk.0.attn_k.bias", {kKvHeads * kHeadDim});
    add("blk.0.attn_v.bias", {kKvHeads * kHeadDim});
  }
  add("blk.0.attn_output.weight", {kHeads * kHeadDim, kHidden});
  add("blk.0.ffn_norm.weight", {kHidden});
  add("blk.0.ffn_gate.weight", {kHidden, kInter});
  add("blk.0.ffn_up.weight", {kHidden, kInter});
  add("blk.0.ffn_down.weight", {kInter, kHidden}, o.ffn_down_type);
  add("output_norm.weight", {kHidden});
  if (!o.tied) add("output.weight", {kHidden, kVocab});
  return b;
}

}  // namespace anvil::gguf_test
