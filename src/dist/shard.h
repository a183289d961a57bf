// Sharding passes: turn a whole-model checkpoint into the checkpoint one rank of a tensor- or pipeline-parallel
// group loads, by slicing and renaming weights and adjusting the config. The model code stays single-device: a
// shard is an ordinary (smaller) checkpoint of the same family. The llama family (llama.cpp: Llama, Mistral,
// Qwen2/3, Phi-3, SmolLM) for both passes, GPT-2 for tensor parallelism; other families get a clear error.
#pragma once

#include <cstdint>
#include <utility>

#include "models/registry.h"

namespace anvil {

// The tensor-parallel shard of rank `rank` of `size` (gpt-fast tp.py's split, Megatron's layout):
// - column-parallel (rows of the [out, in] weight sliced): q/k/v (and their biases) by heads, gate/up by
//   intermediate rows; row-parallel (columns sliced): o_proj and down_proj, whose partial sums the model
//   all-reduces (Backend::all_reduce);
// - KV heads split across ranks when num_kv_heads >= size, else each rank keeps the one KV head its query heads
//   read (replicated): the config's num_kv_heads is the rank's own, so its KV pool holds only its heads;
// - embedding, norms and lm_head replicated (every rank computes the full logits; no gather);
// - GPT-2: the same split of its Conv1D [in, out] weights; the row-parallel c_proj biases stay on rank 0 and are
//   zero elsewhere, so the all-reduce adds them once.
// Unsliced tensors and row slices are views into `full`, which must outlive the shard; column slices are copies.
// - GGUF block-quantized weights (Q4_0 ... Q6_K): column-parallel ones are sliced by rows (whole rows of whole
//   blocks), row-parallel ones by whole block columns (each row's blocks [begin, end) / block size);
// Errors: sizes that do not divide (num_heads, intermediate_size, num_kv_heads vs size), a row-parallel slice that
// cuts a quantization block (in / size not a multiple of the block size), fp8/int8/int4 row-parallel weights
// (their scales are not sliced), a family without a sharding rule.
Expected<Checkpoint> shard_tensor_parallel(const Checkpoint& full, int rank, int size);

// The KV-cache shape of the largest rank of a tp x pp group over `full`: num_layers its stage's (the first
// stage's, which gets the extra layers), num_kv_heads its own (num_kv_heads / tp, or the one replicated head when
// there are fewer KV heads than ranks); every other field as in `full`. A rank's KV pool is sized by this.
ModelConfig rank_kv_config(const ModelConfig& full, int tp, int pp);

// Layers [first, last) of pipeline stage `stage` of `num_stages`: contiguous, sizes differing by at most one
// (the earlier stages get the extra layers).
std::pair<int64_t, int64_t> pipeline_stage_layers(int64_t num_layers, int stage, int num_stages);

// The checkpoint of pipeline stage `stage`: its layers renamed to 0.., num_layers its count, the embedding only
// on the first stage (and the last, when the head is tied to it), the final norm and head only on the last;
// ModelConfig::stage says which. Views into `full`, which must outlive the result.
Expected<Checkpoint> shard_pipeline_stage(const Checkpoint& full, int stage, int num_stages);

}  // namespace anvil
