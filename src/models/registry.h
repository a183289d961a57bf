// The model registry: every architecture family Anvil runs, and the path from a checkpoint file to a model.
//
// A family is one file in src/models/ that defines a ModelFamily: the Hugging Face `architectures` (and
// `model_type`s) and GGUF `general.architecture` names it serves; a parser that reads its own fields from the
// checkpoint's ConfigMap (config.json keys or GGUF metadata keys) into a ModelConfig plus its own FamilyConfig; the
// weights it needs (names and shapes); for GGUF, how llama.cpp's tensor names map to its own; and its forward pass,
// written against Backend. Formats (formats/) hand over a ConfigMap and named tensors and know no family; adding a
// family means adding its file and one line to the list in registry.cpp.
//
// load_checkpoint: read the files (formats), pick the family by architecture, parse its config, rename GGUF
// tensors, check (or, for dummy weights, make) every weight the family lists.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "models/model.h"
#include "models/model_config.h"

namespace anvil {

// A checkpoint read and understood: the files' contents plus the family's config.
struct Checkpoint : CheckpointData {
  ModelConfig config;
};

struct ModelFamily {
  const char* name;  // "llama"
  // config.json `architectures` entries served, and the `model_type` of each (for configs without architectures).
  std::vector<std::pair<std::string, std::string>> hf_architectures;
  // GGUF general.architecture values served, and the HF architecture each stands for.
  std::vector<std::pair<std::string, std::string>> gguf_architectures;
  // Reads the family's fields from data.config_map (HF keys, or GGUF keys when data.format is "gguf"; the weights
  // are there too, for shapes the config leaves out). `architecture` is the HF architecture name picked.
  Expected<ModelConfig> (*parse_config)(const CheckpointData& data, const std::string& architecture);
  // Every tensor the model reads, with its shape; the first is the token embedding (its dtype is the checkpoint's).
  std::vector<WeightSpec> (*weight_specs)(const ModelConfig& config);
  // Renames a GGUF file's tensors to the names weight_specs lists (null: the family has no GGUF support).
  Status (*adopt_gguf_tensors)(const ModelConfig& config, WeightStore* weights);
  // Builds the model and uploads its weights through `backend`.
  Expected<std::unique_ptr<Model>> (*create)(const ModelConfig& config, const WeightStore& weights, Backend& backend);
};

// Every family, in a fixed order.
std::span<const ModelFamily* const> model_families();
// The family serving HF architecture `architecture`, or null.
const ModelFamily* find_family(const std::string& architecture);
bool is_supported_architecture(const std::string& architecture);

// Loads `path` (see read_checkpoint) as a model checkpoint. LoadFormat::kDummy gives random weights in the config's
// dtype. Errors: an unknown architecture (naming it and the supported ones), a config value the family does not
// support (naming the field and the value), a missing or misshapen tensor.
Expected<Checkpoint> load_checkpoint(const std::string& path, LoadFormat format = LoadFormat::kAuto);

// The second half of load_checkpoint, for files already read (an engine directory's weights and model config):
// picks the family, parses its config, checks every weight. `path` names the files in messages.
Expected<Checkpoint> checkpoint_from_data(CheckpointData data, const std::string& path);

// A Hugging Face config.json text as its family reads it; `source` names the file in errors.
Expected<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& source);

// The family's weight list for `config` (empty for an unknown architecture).
std::vector<WeightSpec> model_weight_specs(const ModelConfig& config);

// Random weights (normal, std 0.02, norms at 1) for `config` in `dtype`; deterministic for a seed.
Expected<Checkpoint> make_dummy_checkpoint(const ModelConfig& config, DType dtype, uint64_t seed);

// Builds the model for checkpoint.config.architecture; weights are uploaded through `backend`.
Expected<std::unique_ptr<Model>> create_model(const Checkpoint& checkpoint, Backend& backend);

}  // namespace anvil
