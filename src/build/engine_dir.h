// The engine directory `anvil build` writes and every command loads with --model ENGINE_DIR:
//   config.json        {"anvil_engine": {format_version, anvil_version, device, gpu, build_command},
//                       "model_config": the checkpoint's own config (HF keys), "source_format",
//                       "build_config": {quantization, kv_cache_dtype, max_batch, max_seq_len, dtype},
//                       "profile": {"num_tokens": {min, opt, max}}, "gemm_algos": {gpu tag: {shape: algo}},
//                       "quantization": {scheme, per-weight layout, notes}, "weights": [{file, bytes}]}
//   rank0.safetensors  every tensor; fp8 as F8_E4M3, int8 as I8, int4 as U8 [rows, cols / 2] (two per byte, dtype.h),
//                      each with `<name>.scale` F32 [rows, groups] (and `<name>.zero`); the __metadata__ entry
//                      "anvil.quant.<name>" says which type and layout a quantized tensor has
//   tokenizer files    copied from the checkpoint (tokenizer.json, tokenizer_config.json, ...; llama2.c's .bin)
// It is written into a temporary directory beside the target and renamed into place, so a failed build leaves
// nothing half-written. Reading checks the version, the target GPU and every file's size before any weight is used.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "anvil/status.h"
#include "build/quantize_checkpoint.h"
#include "models/registry.h"

namespace anvil {

inline constexpr int kEngineFormatVersion = 1;

struct BuildOptions {
  QuantScheme quantization = QuantScheme::kNone;
  std::string kv_cache_dtype = "auto";  // auto, fp8, int8: recorded; a run of the engine stores its KV cache so
  int max_batch = 256;
  int max_seq_len = 0;         // 0: the model's max_position_embeddings
  int64_t opt_num_tokens = 0;  // 0: max_batch (the decode step of a full batch)
  std::string device = "cpu";  // the target the engine was built on ("cpu": runs anywhere)
  std::string gpu;             // the GPU's name when built for cuda (an engine for it refuses other GPUs)
  std::string build_command;   // the command line, repeated in every refusal so the user can rebuild
  std::string lora;            // the LoRA adapter merged in (build/lora.h), or empty
  // Runs on the finished engine in its temporary directory, before it is moved into place: `anvil build --device
  // cuda` opens it there and times the GEMMs of its token-count profile, with the algorithm cache file at
  // kGemmAlgosFile in that directory. What that file then holds becomes config.json's "gemm_algos" (the file is
  // removed). An error fails the build and leaves nothing behind.
  std::function<Status(const std::string& dir)> tune;
};

// The cache file `tune` fills (gemm_algo_cache.h's format), inside the engine's temporary directory.
inline constexpr const char* kGemmAlgosFile = "gemm_algos.tuning.json";

// True when `path` is a directory whose config.json has an "anvil_engine" entry.
bool is_engine_dir(const std::string& path);

// Writes `ckpt` (its weights as they are: quantized by quantize_checkpoint or not) to `out_dir` as an engine.
// `source_path` is the checkpoint it came from (its tokenizer files are copied). Errors: out_dir exists and is not
// an engine directory, a GGUF source, a weight type the file format cannot hold, a failed write (nothing is left).
Status write_engine(const Checkpoint& ckpt, const std::string& source_path, const BuildOptions& options,
                    const QuantizeReport& report, const std::string& out_dir);

// What an engine says about the device it needs.
struct EngineTarget {
  std::string device;  // "cpu" or "cuda"
  std::string gpu;     // empty: any
  std::string build_command;
};

// Reads an engine directory into a checkpoint (weights mmap'd, quantized weights with their scales attached).
// `running_gpu` is the GPU this process runs on ("" on the CPU). Errors, each naming what differs and the command
// that rebuilds it: another engine format or Anvil version, another GPU, a missing or truncated weights file, a
// quantized tensor without its scales.
Expected<Checkpoint> load_engine(const std::string& dir, const std::string& running_gpu);

// The KV cache dtype an engine was built with (build_config.kv_cache_dtype: "auto", "fp8", "int8"; "auto" for an
// engine that records none). Errors: an unreadable config.json.
Expected<std::string> engine_kv_cache_dtype(const std::string& dir);

}  // namespace anvil
