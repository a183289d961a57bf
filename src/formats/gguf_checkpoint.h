// GGUF file -> Checkpoint: the model config from `<arch>.*` metadata, the weights under Hugging Face Llama names
// (block-quantized matrices kept quantized, as views of the mapping), and the tokenizer metadata and chat template the
// file carries.
#pragma once

#include <string>

#include "anvil/status.h"
#include "formats/checkpoint.h"
#include "formats/gguf.h"

namespace anvil {

// Loads the GGUF file at `path` (architectures "llama" and "qwen2", Llama 3.1+ rope_freqs included). F32/F16/BF16
// tensors are views into the mapping (copied when misaligned); Q4_0 ... Q6_K matrices are views of DType kQ*
// (dtype.h); a 1-D quantized tensor is dequantized into an owned fp32 buffer. rope_freqs.weight is kept under
// that name. Llama-
// architecture q/k rows are in the Meta order llama.cpp's converter writes, so the config says rope pairs are
// adjacent dimensions; qwen2 keeps the Hugging Face order (rotate-half). Errors name the file and the key or tensor.
Expected<Checkpoint> load_gguf_checkpoint(const std::string& path);

// The ModelConfig that the metadata and tensor infos of `file` describe; `source` names the file in errors.
Expected<ModelConfig> gguf_model_config(const GgufFile& file, const std::string& source);

// The Hugging Face name of the GGUF tensor `gguf_name` (e.g. blk.3.attn_q.weight ->
// model.layers.3.self_attn.q_proj.weight), or "" when the Llama family has no such tensor.
std::string gguf_to_hf_tensor_name(const std::string& gguf_name, int64_t num_layers);

}  // namespace anvil
