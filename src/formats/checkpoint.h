// Checkpoint files: turns a path (HF directory, GGUF file, llama2.c .bin) into the file's configuration as
// key/value pairs (ConfigMap) and its tensors by name. Formats know no model family: tensor names are the file's
// own (HF names for safetensors and llama2.c, llama.cpp's names for GGUF), and which family a file holds, what
// its config fields mean and which tensors it needs are decided in models/ (models/registry.h).
// Tensors are host views into mmap'd files where the layout allows (safetensors) and owned buffers otherwise.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "core/tensor.h"
#include "formats/config_map.h"
#include "formats/mapped_file.h"

namespace anvil {

class WeightStore {
 public:
  // Adds a view that lives inside `keep_alive` (an mmap'd file) or inside an owned buffer.
  void add_view(const std::string& name, Tensor tensor) { tensors_[name] = tensor; }
  void keep_file(std::shared_ptr<MappedFile> file) { files_.push_back(std::move(file)); }
  void keep_buffer(Buffer buffer) { buffers_.push_back(std::move(buffer)); }

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Drops the view `name` (its memory stays with the store).
  void erase(const std::string& name) { tensors_.erase(name); }
  const Tensor* find(const std::string& name) const;
  // The tensor `name`, checked against `shape`; errors name the tensor, its shape and `source_`.
  Expected<Tensor> get(const std::string& name, std::initializer_list<int64_t> shape) const;
  // The tensor `name` has `shape`; errors name the tensor, both shapes and `source_`.
  Status check_shape(const std::string& name, std::span<const int64_t> shape) const;
  // Renames every tensor by `rename(old)` (an empty result keeps the name); two tensors may not get one name.
  Status rename(const std::function<std::string(const std::string&)>& rename);
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  void set_source(std::string source) { source_ = std::move(source); }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::map<std::string, Tensor> tensors_;
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::vector<Buffer> buffers_;
};

enum class WeightInit { kNormal, kOnes, kZeros };  // how a dummy checkpoint fills the tensor

// What a tensor is to the model: a linear layer's weight [out_features, in_features] (what the build step's
// quantizers may replace with an fp8/int8/int4 weight), or anything else (embeddings, norms, biases, lm_head).
enum class WeightRole { kOther, kLinear };

// One tensor a model needs (models/ list them per family).
struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  WeightInit init = WeightInit::kNormal;
  WeightRole role = WeightRole::kOther;
};

// Each spec's tensor is present in `store` with its shape; errors name the tensor, both shapes and the source.
Status check_weights(std::span<const WeightSpec> specs, const WeightStore& store);

// Adds one random tensor per spec (normal with std 0.02, or ones/zeros) in `dtype`; deterministic for a seed.
// Errors: a dtype other than float32/float16/bfloat16, more bytes than the host has.
Status add_random_weights(std::span<const WeightSpec> specs, DType dtype, uint64_t seed, WeightStore* store);

struct GgufTokenizerData;  // formats/gguf.h

// What a checkpoint file holds, before any model family reads it.
struct CheckpointData {
  ConfigMap config_map;         // config.json; GGUF metadata (tokenizer.* keys left out); llama2.c header as HF keys
  ConfigMap generation_config;  // generation_config.json beside config.json, or empty
  WeightStore weights;          // empty for LoadFormat::kDummy
  std::string format;           // "hf-safetensors", "llama2c", "gguf", "dummy"
  std::string tokenizer_path;   // a tokenizer found beside the checkpoint, or empty
  // The tokenizer stored inside the checkpoint file (GGUF tokenizer.ggml.*), or null when it holds none.
  std::shared_ptr<const GgufTokenizerData> gguf_tokenizer;
  std::string chat_template;    // the checkpoint's own chat template (GGUF tokenizer.chat_template), or empty
};

enum class LoadFormat {
  kAuto,   // decide from the path
  kDummy,  // config.json alone, no weights (path = directory with config.json, or the file itself)
};

// A check of a config.json before any tensor is read (a caller's test that it knows the architecture).
using ConfigCheck = std::function<Status(const ConfigMap&)>;

// Reads `path`: a directory with config.json and *.safetensors (single or sharded with the index file), a GGUF
// file, or a llama2.c checkpoint file (.bin; legacy and version-2 fp32 headers). `check` (if set) runs on a
// config.json before its tensors are read, so that an unsupported model fails before the slow part.
Expected<CheckpointData> read_checkpoint(const std::string& path, LoadFormat format = LoadFormat::kAuto,
                                         const ConfigCheck& check = nullptr);

// Parses a JSON object text into a ConfigMap; `source` names the file in errors ("config.json <path>").
Expected<ConfigMap> parse_config_json(const std::string& json_text, const std::string& source);

}  // namespace anvil
