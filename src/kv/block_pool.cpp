// BlockPool (reference counts, LRU free list) and BlockTable.
#include "kv/block_pool.h"

#include <string>

namespace anvil {

BlockPool::BlockPool(int32_t num_blocks)
    : num_blocks_(num_blocks < 0 ? 0 : num_blocks),
      prev_(num_blocks_ + 1),
      next_(num_blocks_ + 1),
      ref_counts_(num_blocks_, 0) {
  prev_[num_blocks_] = num_blocks_;
  next_[num_blocks_] = num_blocks_;
  for (int32_t b = 0; b < num_blocks_; ++b) push_back(b);
}

void BlockPool::unlink(int32_t block_id) {
  next_[prev_[block_id]] = next_[block_id];
  prev_[next_[block_id]] = prev_[block_id];
  --num_free_;
}

void BlockPool::push_back(int32_t block_id) {
  const int32_t sentinel = num_blocks_;
  const int32_t last = prev_[sentinel];
  next_[last] = block_id;
  prev_[block_id] = last;
  next_[block_id] = sentinel;
  prev_[sentinel] = block_id;
  ++num_free_;
}

Expected<int32_t> BlockPool::allocate() {
  if (num_free_ == 0) return resource_exhausted("KV cache: all " + std::to_string(num_blocks_) + " blocks are in use");
  const int32_t id = next_[num_blocks_];
  unlink(id);
  ref_counts_[id] = 1;
  if (listener_ != nullptr) listener_->on_evict(id);
  return id;
}

Status BlockPool::add_ref(int32_t block_id) {
  if (block_id < 0 || block_id >= num_blocks_ || ref_counts_[block_id] == 0) {
    return invalid_argument("KV cache: block " + std::to_string(block_id) + " is not allocated");
  }
  ++ref_counts_[block_id];
  return Status();
}

Status BlockPool::reuse(int32_t block_id) {
  if (block_id < 0 || block_id >= num_blocks_) {
    return invalid_argument("KV cache: block " + std::to_string(block_id) + " does not exist");
  }
  if (ref_counts_[block_id] == 0) unlink(block_id);
  ++ref_counts_[block_id];
  return Status();
}

Status BlockPool::release(int32_t block_id) {
  if (block_id < 0 || block_id >= num_blocks_ || ref_counts_[block_id] == 0) {
    return invalid_argument("KV cache: block " + std::to_string(block_id) + " is not allocated");
  }
  if (--ref_counts_[block_id] == 0) push_back(block_id);
  return Status();
}

int64_t BlockTable::blocks_missing(int64_t num_tokens) const {
  const int64_t needed = (num_tokens + block_size_ - 1) / block_size_ - static_cast<int64_t>(block_ids_.size());
  return needed > 0 ? needed : 0;
}

Status BlockTable::ensure_capacity(int64_t num_tokens, BlockPool& pool) {
  const int64_t needed = blocks_missing(num_tokens);
  if (needed == 0) return Status();
  if (needed > pool.num_free()) {
    return resource_exhausted("KV cache: need " + std::to_string(needed) + " more blocks, " +
                              std::to_string(pool.num_free()) + " free");
  }
  for (int64_t i = 0; i < needed; ++i) block_ids_.push_back(pool.allocate().value());
  return Status();
}

void BlockTable::release_all(BlockPool& pool) {
  for (auto it = block_ids_.rbegin(); it != block_ids_.rend(); ++it) (void)pool.release(*it);
  block_ids_.clear();
}

}  // namespace anvil
