// Backend selection and KV-cache sizing: the two decisions that depend on the device. Kept apart from the
// engine so the engine never includes device headers.
#pragma once

#include <memory>

#include "anvil/engine.h"
#include "backends/backend.h"
#include "models/model_config.h"
#include "runtime/memory_plan.h"

namespace anvil {

// The backend EngineConfig::device names ("cpu" or "cuda"); clear errors when CUDA is absent or unsupported.
// On CUDA, cuda_dtype "auto" means bfloat16.
Expected<std::unique_ptr<Backend>> make_backend(const EngineConfig& config);

// The name of the GPU EngineConfig::device runs on ("NVIDIA H200"), or "" for the CPU; an engine built for one
// GPU refuses another (build/engine_dir.h). Errors: cuda requested where there is none.
Expected<std::string> running_gpu_name(const EngineConfig& config);

// Fails before any weight is uploaded when the model cannot fit in the device's free memory.
// device_weight_bytes: 16-bit bytes of the dense weights plus the quantized weights' own bytes.
Status check_weights_fit(const EngineConfig& config, size_t device_weight_bytes);

// The KV cache for `model` on `backend` (memory_plan.h). CPU: room for max_num_seqs sequences of max_model_len
// tokens within a share of the available host memory. CUDA: gpu_memory_utilization of the memory free after the
// weights, less what the runner reserves (`runner`) and a fixed overhead.
// `model` is the KV shape of one rank (dist/shard.h rank_kv_config at TP x PP > 1); `ranks_sharing_memory` ranks
// each hold a pool of that many blocks in this memory (CPU: every rank of the machine; CUDA: 1, a GPU per rank).
// kv_dtype: the cache's element dtype (its scales are counted for fp8/int8).
Expected<KvPlan> plan_kv_blocks(const EngineConfig& config, const ModelConfig& model, int64_t max_model_len,
                                Backend& backend, DType kv_dtype, const RunnerMemory& runner,
                                int ranks_sharing_memory = 1);

}  // namespace anvil
