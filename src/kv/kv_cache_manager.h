// KvCacheManager: every decision about which KV block holds what, for all sequences. It owns the device
// BlockPool, the PrefixCache and the host (swap) BlockPool, and hands the scheduler block copies to run:
// copy-on-write of a shared partial block when a sequence forks, and swaps to and from host memory.
// Plain bookkeeping, no device code: the copies are executed by the ModelRunner through the backend.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "kv/block_pool.h"
#include "kv/prefix_cache.h"

namespace anvil {

// Copy the whole of block `src` (in every layer, K and V) to block `dst`.
struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
  bool operator==(const BlockCopy&) const = default;
};

struct KvCacheManagerConfig {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t num_host_blocks = 0;  // swap space; 0 = preemption recomputes
  bool enable_prefix_caching = true;
};

// One sequence's share of the cache.
struct SequenceKv {
  explicit SequenceKv(int32_t block_size) : table(block_size) {}
  BlockTable table;                    // device blocks, in token order
  std::vector<int32_t> host_blocks;    // while swapped out: host blocks, in token order
  std::vector<uint64_t> block_hashes;  // chain hashes of the full blocks of the tokens, computed lazily
  int32_t num_registered = 0;          // leading blocks of `table` already offered to the prefix cache
};

class KvCacheManager {
 public:
  explicit KvCacheManager(const KvCacheManagerConfig& config);

  int32_t block_size() const { return config_.block_size; }
  int32_t num_blocks() const { return pool_.num_blocks(); }
  int32_t num_free_blocks() const { return pool_.num_free(); }
  int32_t num_host_blocks() const { return host_pool_.num_blocks(); }
  int32_t num_free_host_blocks() const { return host_pool_.num_free(); }
  int64_t capacity_tokens() const { return static_cast<int64_t>(num_blocks()) * block_size(); }
  bool has_swap_space() const { return host_pool_.num_blocks() > 0; }
  // Null when prefix caching is off.
  PrefixCache* prefix_cache() { return prefix_cache_.get(); }
  const PrefixCache* prefix_cache() const { return prefix_cache_.get(); }
  BlockPool& pool() { return pool_; }

  // For a sequence holding no blocks: takes the cached blocks that hold the leading full blocks of `tokens`,
  // always leaving at least the last token to compute. Returns the number of tokens they cover.
  int64_t acquire_cached_prefix(SequenceKv& kv, std::span<const int32_t> tokens);
  bool can_allocate(const SequenceKv& kv, int64_t num_tokens) const;
  // Grows the table to cover `num_tokens` slots; all or nothing.
  Status allocate(SequenceKv& kv, int64_t num_tokens);
  // After tokens [0, num_computed) are in the cache: offers the newly completed full blocks to the prefix cache.
  void register_computed(SequenceKv& kv, std::span<const int32_t> tokens, int64_t num_computed);
  // Releases every device and host block of the sequence.
  void free(SequenceKv& kv);

  // A new sequence sharing the first `num_computed` tokens of `parent`: full blocks are shared; a partial last
  // block is copied into a fresh block (the returned copy, to run before the next forward). resource_exhausted,
  // with the child holding nothing, when no block is free for the copy.
  Expected<std::optional<BlockCopy>> fork(const SequenceKv& parent, int64_t num_computed, SequenceKv* child);

  // Swap out: the blocks holding tokens [0, num_computed) go to host blocks; every device block is released.
  bool can_swap_out(const SequenceKv& kv, int64_t num_computed) const;
  Expected<std::vector<BlockCopy>> swap_out(SequenceKv& kv, int64_t num_computed);  // src device, dst host
  // Swap in, with room to then grow to `num_tokens`: host blocks go to fresh device blocks and are released.
  bool can_swap_in(const SequenceKv& kv, int64_t num_tokens) const;
  Expected<std::vector<BlockCopy>> swap_in(SequenceKv& kv);  // src host, dst device

 private:
  static int64_t blocks_for(int64_t num_tokens, int32_t block_size) {
    return (num_tokens + block_size - 1) / block_size;
  }

  KvCacheManagerConfig config_;
  BlockPool pool_;
  BlockPool host_pool_;
  std::unique_ptr<PrefixCache> prefix_cache_;
};

}  // namespace anvil
