// Checkpoint loading: turns a path (HF directory, llama2.c .bin) into a ModelConfig and named weight tensors.
// Tensors are host views into mmap'd files where the layout allows (safetensors) and owned buffers otherwise.
// Tensor names follow Hugging Face Llama naming whatever the source format:
//   model.embed_tokens.weight [vocab_size, hidden_size]
//   model.layers.{i}.input_layernorm.weight [hidden_size]
//   model.layers.{i}.self_attn.{q,k,v}_proj.weight [num_(kv_)heads * head_dim, hidden_size] (+ .bias if any)
//   model.layers.{i}.self_attn.o_proj.weight [hidden_size, num_heads * head_dim]
//   model.layers.{i}.post_attention_layernorm.weight [hidden_size]
//   model.layers.{i}.mlp.{gate,up}_proj.weight [intermediate_size, hidden_size]
//   model.layers.{i}.mlp.down_proj.weight [hidden_size, intermediate_size]
//   model.norm.weight [hidden_size]
//   lm_head.weight [vocab_size, hidden_size] (absent when tie_word_embeddings)
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "core/tensor.h"
#include "formats/mapped_file.h"
#include "formats/model_config.h"

namespace anvil {

class WeightStore {
 public:
  // Adds a view that lives inside `keep_alive` (an mmap'd file) or inside an owned buffer.
  void add_view(const std::string& name, Tensor tensor) { tensors_[name] = tensor; }
  void keep_file(std::shared_ptr<MappedFile> file) { files_.push_back(std::move(file)); }
  void keep_buffer(Buffer buffer) { buffers_.push_back(std::move(buffer)); }

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const Tensor* find(const std::string& name) const;
  // The tensor `name`, checked against `shape`; errors name the tensor, its shape and `source_`.
  Expected<Tensor> get(const std::string& name, std::initializer_list<int64_t> shape) const;
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  void set_source(std::string source) { source_ = std::move(source); }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::map<std::string, Tensor> tensors_;
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::vector<Buffer> buffers_;
};

struct GgufTokenizerData;  // formats/gguf.h

struct Checkpoint {
  ModelConfig config;
  WeightStore weights;
  std::string format;           // "hf-safetensors", "llama2c", "gguf"
  std::string tokenizer_path;   // a tokenizer found beside the checkpoint, or empty
  // The tokenizer stored inside the checkpoint file (GGUF tokenizer.ggml.*), or null when it holds none.
  std::shared_ptr<const GgufTokenizerData> gguf_tokenizer;
  std::string chat_template;    // the checkpoint's own chat template (GGUF tokenizer.chat_template), or empty
};

enum class LoadFormat {
  kAuto,   // decide from the path
  kDummy,  // random weights from config.json alone (path = directory with config.json, or the file itself)
};

// Loads `path`: a directory with config.json and *.safetensors (single or sharded with the index file),
// or a llama2.c checkpoint file (.bin; legacy and version-2 fp32 headers).
Expected<Checkpoint> load_checkpoint(const std::string& path, LoadFormat format = LoadFormat::kAuto);

// Random weights (normal, std 0.02, norms at 1) for `config` in `dtype`; deterministic for a seed.
Expected<Checkpoint> make_dummy_checkpoint(const ModelConfig& config, DType dtype, uint64_t seed);

}  // namespace anvil
