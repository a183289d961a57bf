// GGUF file -> CheckpointData: the metadata as a ConfigMap, the tensors under their llama.cpp names (block-quantized
// matrices kept quantized, as views of the mapping), and the tokenizer metadata and chat template the file carries.
#pragma once

#include <string>

#include "anvil/status.h"
#include "formats/checkpoint.h"
#include "formats/gguf.h"

namespace anvil {

// Reads the GGUF file at `path`: its metadata as a ConfigMap (keys as stored, "llama.block_count"; tokenizer.* left
// out, read into gguf_tokenizer), every tensor under its GGUF name (the family renames them, models/). F32/F16/BF16
// tensors are views into the mapping (copied when misaligned); Q4_0 ... Q6_K matrices are views of DType kQ*
// (dtype.h); a 1-D quantized tensor is dequantized into an owned fp32 buffer. Errors name the file and the key or
// tensor.
Expected<CheckpointData> read_gguf_checkpoint(const std::string& path);

}  // namespace anvil
