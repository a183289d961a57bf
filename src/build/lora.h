// LoRA merge of the build step: a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) folded
// into the base weights before quantization, W += (lora_alpha / r) B A (lora_alpha / sqrt(r) with use_rslora), so
// the engine runs the adapted model at the base model's cost.
#pragma once

#include <string>

#include "anvil/status.h"
#include "models/registry.h"

namespace anvil {

// Merges the adapter at `adapter_dir` into ckpt's weights (each merged weight stored in its base dtype); returns how
// many weights changed. Errors, naming the field or tensor: not a LoRA adapter, options the merge does not support
// (DoRA, fan_in_fan_out, per-module rank or alpha patterns, trained biases, modules_to_save), an adapter tensor whose
// base weight is missing, misshapen or quantized.
Expected<int64_t> merge_lora(const std::string& adapter_dir, Checkpoint* ckpt);

}  // namespace anvil
