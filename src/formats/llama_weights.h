// The weight set a Llama-family model needs (Hugging Face names, see checkpoint.h), as a list of specs, and the
// check that a loaded WeightStore holds each of them with the right shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "anvil/status.h"
#include "formats/checkpoint.h"
#include "formats/model_config.h"

namespace anvil {

enum class WeightInit { kNormal, kOnes };  // how a dummy checkpoint fills the tensor

struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  WeightInit init = WeightInit::kNormal;
};

// Every tensor `config` needs: lm_head only when embeddings are untied, q/k/v biases only with has_qkv_bias.
std::vector<WeightSpec> llama_weight_specs(const ModelConfig& config);

// Each spec's tensor is present in `store` with its shape; errors name the tensor, both shapes and the source.
Status check_llama_weights(const ModelConfig& config, const WeightStore& store);

}  // namespace anvil
