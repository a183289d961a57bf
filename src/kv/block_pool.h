// BlockPool: bookkeeping for the fixed-size blocks of the paged KV cache (free list and reference counts),
// and BlockTable: one sequence's append-only list of block ids. The memory itself lives in the backend.
#pragma once

#include <cstdint>
#include <vector>

#include "anvil/status.h"

namespace anvil {

class BlockPool {
 public:
  explicit BlockPool(int32_t num_blocks);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  // Takes a free block with reference count 1; resource_exhausted when none is left.
  Expected<int32_t> allocate();
  // Adds a reference to an allocated block (sharing between sequences).
  Status add_ref(int32_t block_id);
  // Drops a reference; the block returns to the free list at zero.
  Status release(int32_t block_id);
  int32_t ref_count(int32_t block_id) const { return ref_counts_[block_id]; }

 private:
  int32_t num_blocks_;
  std::vector<int32_t> free_;  // stack of free ids; lowest ids handed out first
  std::vector<int32_t> ref_counts_;
};

class BlockTable {
 public:
  explicit BlockTable(int32_t block_size) : block_size_(block_size) {}

  int32_t block_size() const { return block_size_; }
  const std::vector<int32_t>& block_ids() const { return block_ids_; }
  // Slots the table covers.
  int64_t capacity() const { return static_cast<int64_t>(block_ids_.size()) * block_size_; }
  // Grows the table from `pool` until it covers `num_tokens` slots; on failure nothing is allocated.
  Status ensure_capacity(int64_t num_tokens, BlockPool& pool);
  // Returns every block to `pool` and empties the table.
  void release_all(BlockPool& pool);
  // Cache slot of token position `pos` (pos < capacity()).
  int64_t slot(int64_t pos) const { return static_cast<int64_t>(block_ids_[pos / block_size_]) * block_size_ + pos % block_size_; }

 private:
  int32_t block_size_;
  std::vector<int32_t> block_ids_;
};

}  // namespace anvil
