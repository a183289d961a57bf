// Memory planning for the paged KV cache: how many blocks the device (or host) can hold once the weights are
// loaded and the model runner has what it reserves up front (activations for the batched-token budget, logits
// of graph and eager steps, the sampling workspace). Pure arithmetic so the numbers can be tested for any card.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "anvil/status.h"
#include "core/kv_quant.h"

namespace anvil {

// Bytes of one KV block over all layers, K and V: block_size x num_kv_heads rows of head_dim elements of
// `kv_dtype` each, plus an fp32 scale per row for fp8/int8 (core/kv_quant.h).
inline size_t kv_block_bytes(int64_t num_layers, int64_t block_size, int64_t num_kv_heads, int64_t head_dim,
                             DType kv_dtype) {
  return static_cast<size_t>(2 * num_layers * block_size * num_kv_heads) * kv_row_bytes(kv_dtype, head_dim);
}

// What the model runner and the sampler allocate besides the KV cache (bytes).
struct RunnerMemory {
  size_t activations = 0;   // the model's scratch for max(max_num_batched_tokens, max_graph_batch) tokens
  size_t graph_logits = 0;  // fp32 [max_graph_batch, vocab_size] of the fixed-shape decode path
  size_t eager_logits = 0;  // fp32 [max_num_seqs, vocab_size] of prefill and mixed steps
  size_t sampling = 0;      // device sampling workspace: 8 bytes x vocab_size per penalized draw
  size_t total() const { return activations + graph_logits + eager_logits + sampling; }
};

// NOTE: beyond RunnerMemory, the CUDA backend holds a 32 MiB cuBLASLt workspace, an attention scratch that
// grows geometrically from 32 MiB (split partials: ~9 MB at batch 256 for llama3-8b), the captured graphs'
// own allocations and the input arenas; 256 MiB covers them with room to spare.
inline constexpr size_t kGpuFixedOverheadBytes = size_t{256} << 20;

struct GpuKvPlanInput {
  size_t free_bytes = 0;              // device memory free once the weights are uploaded
  size_t total_bytes = 0;             // the card's memory (for messages)
  double gpu_memory_utilization = 0;  // share of free_bytes the engine may take (KV cache + runner)
  RunnerMemory runner;
  size_t fixed_overhead_bytes = kGpuFixedOverheadBytes;
  size_t kv_block_bytes = 0;   // one block over all layers, K and V
  int64_t blocks_per_seq = 0;  // blocks of one max_model_len sequence
  int64_t max_model_len = 0;
};

struct KvPlan {
  int64_t num_blocks = 0;
  size_t kv_bytes = 0;      // num_blocks * kv_block_bytes
  size_t budget_bytes = 0;  // what the KV cache could take
  std::string summary;      // one line: what was chosen and why
};

// KV blocks on a GPU: gpu_memory_utilization x free memory, less the runner's reservation and the fixed
// overhead. Errors (resource_exhausted) when not even one max_model_len sequence fits, naming every number.
Expected<KvPlan> plan_gpu_kv(const GpuKvPlanInput& in);

// NOTE: on the CPU the pool takes at most this share of the memory available at start (MemAvailable), so the
// demo server stays small; a larger pool only helps many long sequences at once.
inline constexpr double kCpuKvShareOfAvailable = 0.10;

struct CpuKvPlanInput {
  size_t available_bytes = 0;  // host memory available now (MemAvailable)
  double share = kCpuKvShareOfAvailable;
  size_t kv_block_bytes = 0;
  int64_t blocks_per_seq = 0;
  int64_t max_num_seqs = 0;
  int64_t max_model_len = 0;
};

// KV blocks on the CPU: room for max_num_seqs sequences of max_model_len tokens, capped at share x available
// memory, never less than one full-length sequence.
KvPlan plan_cpu_kv(const CpuKvPlanInput& in);

// MemAvailable of /proc/meminfo in bytes, or 0 when it cannot be read.
size_t host_available_bytes();

}  // namespace anvil
