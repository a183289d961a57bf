// BlockPool: bookkeeping for the fixed-size blocks of the paged KV cache (reference counts and an LRU free
// list), and BlockTable: one sequence's append-only list of block ids. The memory itself lives in the backend.
// A block whose count drops to zero joins the tail of the free list but keeps its contents: the prefix cache
// may revive it (`reuse`) until `allocate` hands it out again, oldest-freed first.
#pragma once

#include <cstdint>
#include <vector>

#include "anvil/status.h"

namespace anvil {

// Told when a free block is handed out again, so whatever it cached can be forgotten (the PrefixCache).
class BlockEvictionListener {
 public:
  virtual ~BlockEvictionListener() = default;
  virtual void on_evict(int32_t block_id) = 0;
};

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return num_blocks_; }
  // Blocks with reference count zero (never used, or freed and perhaps still cached).
  int32_t num_free() const { return num_free_; }
  // Takes the least recently freed block with reference count 1 (lowest ids first while none has been freed);
  // resource_exhausted when none is left. The listener, if any, is told first.
  Expected<int32_t> allocate();
  // Adds a reference to an allocated block (sharing between sequences).
  Status add_ref(int32_t block_id);
  // Adds a reference to any valid block; a free one leaves the free list with its contents intact.
  Status reuse(int32_t block_id);
  // Drops a reference; the block joins the tail of the free list at zero.
  Status release(int32_t block_id);
  int32_t ref_count(int32_t block_id) const { return ref_counts_[block_id]; }
  void set_eviction_listener(BlockEvictionListener* listener) { listener_ = listener; }

 private:
  void unlink(int32_t block_id);
  void push_back(int32_t block_id);

  int32_t num_blocks_;
  int32_t num_free_ = 0;
  // Doubly linked free list over block ids; index num_blocks_ is the sentinel.
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  std::vector<int32_t> ref_counts_;
  BlockEvictionListener* listener_ = nullptr;
};

class BlockTable {
 public:
  explicit BlockTable(int32_t block_size) : block_size_(block_size) {}

  int32_t block_size() const { return block_size_; }
  const std::vector<int32_t>& block_ids() const { return block_ids_; }
  int32_t num_blocks() const { return static_cast<int32_t>(block_ids_.size()); }
  // Slots the table covers.
  int64_t capacity() const { return static_cast<int64_t>(block_ids_.size()) * block_size_; }
  // Blocks needed to hold `num_tokens` tokens beyond those the table has.
  int64_t blocks_missing(int64_t num_tokens) const;
  // Grows the table from `pool` until it covers `num_tokens` slots; on failure nothing is allocated.
  Status ensure_capacity(int64_t num_tokens, BlockPool& pool);
  // Appends a block the caller already holds a reference to (a shared or prefix-cached block).
  void append(int32_t block_id) { block_ids_.push_back(block_id); }
  // Returns every block to `pool`, last block first (so a sequence's tail is evicted before its prefix),
  // and empties the table.
  void release_all(BlockPool& pool);
  // Cache slot of token position `pos` (pos < capacity()).
  int64_t slot(int64_t pos) const {
    return static_cast<int64_t>(block_ids_[pos / block_size_]) * block_size_ + pos % block_size_;
  }

 private:
  int32_t block_size_;
  std::vector<int32_t> block_ids_;
};

}  // namespace anvil
