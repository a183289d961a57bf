// PrefixCache: maps a full block of tokens, identified by its chain hash (the hash of its tokens chained with
// its parent block's hash), to the KV block that holds it, so requests sharing a prefix compute it once.
// Each entry keeps the block's tokens and its parent's hash, and a hit compares both, so a hash collision can
// only ever cost a miss. Cached blocks stay in the BlockPool's LRU free list while nobody uses them and are
// forgotten when the pool hands them out again (the cache listens for that).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/block_pool.h"

namespace anvil {

// Hash of the empty prefix: the parent of every sequence's first block.
inline constexpr uint64_t kRootBlockHash = 0x6a09e667f3bcc908ULL;

// Chain hash of a full block of `tokens` whose prefix hashes to `parent_hash`.
uint64_t hash_block_tokens(uint64_t parent_hash, std::span<const int32_t> tokens);

// Chain hashes of the first `num_blocks` full blocks of `tokens`, appended to `hashes` where it has fewer.
// Precondition: num_blocks * block_size <= tokens.size().
void extend_block_hashes(std::span<const int32_t> tokens, int32_t block_size, int32_t num_blocks,
                         std::vector<uint64_t>* hashes);

class PrefixCache final : public BlockEvictionListener {
 public:
  // Registers itself as `pool`'s eviction listener for its lifetime.
  PrefixCache(BlockPool& pool, int32_t block_size);
  ~PrefixCache() override;
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  // The cached blocks that hold the leading full blocks of `tokens`, at most `max_blocks`, stopping at the
  // first miss. `hashes` holds at least that many chain hashes of `tokens` (extend_block_hashes). Each returned
  // block gets a reference (pool.reuse): the caller owns it.
  std::vector<int32_t> match_and_acquire(std::span<const int32_t> tokens, std::span<const uint64_t> hashes,
                                         int32_t max_blocks);
  // Records that `block_id` holds full block `block_idx` of `tokens` (hashes[block_idx] its chain hash).
  // A block with the same content already cached keeps its place; `block_id` then stays uncached.
  void insert(int32_t block_id, std::span<const int32_t> tokens, std::span<const uint64_t> hashes, int32_t block_idx);
  void on_evict(int32_t block_id) override;

  int32_t num_cached_blocks() const { return static_cast<int32_t>(by_hash_.size()); }
  bool is_cached(int32_t block_id) const { return entries_[block_id].is_cached; }
  // Prefix lookups of admitted sequences, in tokens: how many were looked up and how many hit.
  void record_lookup(int64_t num_queried_tokens, int64_t num_hit_tokens);
  int64_t num_queried_tokens() const { return num_queried_tokens_; }
  int64_t num_hit_tokens() const { return num_hit_tokens_; }

 private:
  struct Entry {
    bool is_cached = false;
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;  // [block_size]
  };

  BlockPool& pool_;
  int32_t block_size_;
  std::vector<Entry> entries_;  // one per block id
  std::unordered_map<uint64_t, int32_t> by_hash_;
  int64_t num_queried_tokens_ = 0;
  int64_t num_hit_tokens_ = 0;
};

}  // namespace anvil
