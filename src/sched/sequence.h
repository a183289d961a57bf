// Sequence: the scheduler's view of one sample of one request: its tokens (prompt, then output), how many of
// them are in the KV cache, where it waits or runs, and its blocks. The engine keeps everything else about the
// request (sampling parameters, detokenizer, stop strings); the scheduler never looks at logits or text.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "kv/kv_cache_manager.h"

namespace anvil {

using SequenceId = int64_t;

enum class SequenceStatus {
  kWaiting,   // not in the cache; (re)admitted by prefill, oldest preempted first
  kRunning,   // holds device blocks and advances every step it is scheduled
  kSwapped,   // its blocks are in host memory, waiting to come back
  kFinished,  // done or aborted; holds nothing
};

const char* sequence_status_name(SequenceStatus status);

struct Sequence {
  Sequence(SequenceId seq_id, uint64_t req_id, int32_t block_size) : id(seq_id), request_id(req_id), kv(block_size) {}

  SequenceId id;
  uint64_t request_id;
  int32_t sample_index = 0;  // which of the request's n samples
  int64_t priority = 0;      // admission order of its request: lower runs first, higher is preempted first
  SequenceStatus status = SequenceStatus::kWaiting;
  std::vector<int32_t> tokens;  // prompt then output
  int32_t num_prompt_tokens = 0;
  int32_t num_computed = 0;         // leading tokens whose K/V are in the cache
  int32_t max_total_tokens = 0;     // the length it may reach (prompt + max_tokens, capped by the context)
  int32_t num_pending_samples = 0;  // further samples to fork off when the prompt's first token is sampled
  int32_t num_cached_tokens = 0;    // prompt tokens served by the prefix cache at its first admission
  bool was_admitted = false;
  int32_t num_preemptions = 0;
  std::optional<BlockCopy> pending_copy;  // copy-on-write of its partial block, run before its next forward
  SequenceKv kv;

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  // Tokens not yet in the cache.
  int32_t num_uncomputed() const { return num_tokens() - num_computed; }
};

}  // namespace anvil
