// llama2.c checkpoints (Karpathy's run.c format): the legacy 28-byte header and the version-1 "ak42" header,
// both fp32. Weights are viewed in place in the mmap under Hugging Face Llama names; q/k rows keep the Meta
// order, so the config says rope pairs are adjacent dimensions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "anvil/status.h"
#include "formats/checkpoint.h"

namespace anvil {

inline constexpr uint32_t kLlama2cMagic = 0x616b3432;  // "ak42" as a little-endian uint32
inline constexpr size_t kLlama2cLegacyHeaderBytes = 28;
inline constexpr size_t kLlama2cV1HeaderBytes = 256;

struct Llama2cHeader {
  int version = 0;  // 0 = legacy (no magic), 1 = "ak42" version 1 (fp32)
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  // always positive here; the legacy sign is folded into shared_classifier
  int32_t seq_len = 0;
  bool shared_classifier = true;
  size_t header_bytes = 0;
};

// Reads and validates the header of the llama2.c bytes `data[0, size)` and fills `config` with it as Hugging Face
// config.json keys (architectures = LlamaForCausalLM); `source` names the file. Rejects version 2 (int8) and
// unknown versions, non-positive, out-of-bounds or inconsistent sizes, and a file size other than exactly what the
// header implies.
Expected<Llama2cHeader> parse_llama2c_header(const uint8_t* data, size_t size, const std::string& source,
                                             ConfigMap* config);

// Maps `path` and returns its config and weight views under Hugging Face Llama names (format "llama2c";
// tokenizer_path left empty).
Expected<CheckpointData> read_llama2c_checkpoint(const std::string& path);

}  // namespace anvil
