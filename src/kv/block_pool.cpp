// BlockPool and BlockTable.
#include "kv/block_pool.h"

#include <string>

namespace anvil {

BlockPool::BlockPool(int32_t num_blocks) : num_blocks_(num_blocks), ref_counts_(num_blocks, 0) {
  free_.reserve(num_blocks);
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

Expected<int32_t> BlockPool::allocate() {
  if (free_.empty()) return resource_exhausted("KV cache: all " + std::to_string(num_blocks_) + " blocks are in use");
  const int32_t id = free_.back();
  free_.pop_back();
  ref_counts_[id] = 1;
  return id;
}

Status BlockPool::add_ref(int32_t block_id) {
  if (block_id < 0 || block_id >= num_blocks_ || ref_counts_[block_id] == 0) {
    return invalid_argument("KV cache: block " + std::to_string(block_id) + " is not allocated");
  }
  ++ref_counts_[block_id];
  return Status();
}

Status BlockPool::release(int32_t block_id) {
  if (block_id < 0 || block_id >= num_blocks_ || ref_counts_[block_id] == 0) {
    return invalid_argument("KV cache: block " + std::to_string(block_id) + " is not allocated");
  }
  if (--ref_counts_[block_id] == 0) free_.push_back(block_id);
  return Status();
}

Status BlockTable::ensure_capacity(int64_t num_tokens, BlockPool& pool) {
  const int64_t needed = (num_tokens + block_size_ - 1) / block_size_ - static_cast<int64_t>(block_ids_.size());
  if (needed <= 0) return Status();
  if (needed > pool.num_free()) {
    return resource_exhausted("KV cache: need " + std::to_string(needed) + " more blocks, " +
                              std::to_string(pool.num_free()) + " free");
  }
  for (int64_t i = 0; i < needed; ++i) block_ids_.push_back(pool.allocate().value());
  return Status();
}

void BlockTable::release_all(BlockPool& pool) {
  for (int32_t id : block_ids_) (void)pool.release(id);
  block_ids_.clear();
}

}  // namespace anvil
