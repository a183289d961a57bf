// KvCacheManager: allocation, prefix reuse, fork (copy-on-write of the partial block) and swap bookkeeping.
#include "kv/kv_cache_manager.h"

#include <algorithm>
#include <string>

namespace anvil {

KvCacheManager::KvCacheManager(const KvCacheManagerConfig& config)
    : config_(config), pool_(config.num_blocks), host_pool_(config.num_host_blocks) {
  if (config_.block_size <= 0) config_.block_size = 1;
  if (config_.enable_prefix_caching) prefix_cache_ = std::make_unique<PrefixCache>(pool_, config_.block_size);
}

int64_t KvCacheManager::acquire_cached_prefix(SequenceKv& kv, std::span<const int32_t> tokens) {
  if (!prefix_cache_ || !kv.table.block_ids().empty() || tokens.empty()) return 0;
  const auto max_blocks = static_cast<int32_t>((static_cast<int64_t>(tokens.size()) - 1) / config_.block_size);
  if (max_blocks == 0) return 0;
  extend_block_hashes(tokens, config_.block_size, max_blocks, &kv.block_hashes);
  const std::vector<int32_t> hits = prefix_cache_->match_and_acquire(tokens, kv.block_hashes, max_blocks);
  for (int32_t b : hits) kv.table.append(b);
  kv.num_registered = static_cast<int32_t>(hits.size());
  return static_cast<int64_t>(hits.size()) * config_.block_size;
}

bool KvCacheManager::can_allocate(const SequenceKv& kv, int64_t num_tokens) const {
  return kv.table.blocks_missing(num_tokens) <= pool_.num_free();
}

Status KvCacheManager::allocate(SequenceKv& kv, int64_t num_tokens) {
  return kv.table.ensure_capacity(num_tokens, pool_);
}

void KvCacheManager::register_computed(SequenceKv& kv, std::span<const int32_t> tokens, int64_t num_computed) {
  if (!prefix_cache_) return;
  const auto num_full =
      static_cast<int32_t>(std::min<int64_t>({num_computed, static_cast<int64_t>(tokens.size())}) / config_.block_size);
  const int32_t limit = std::min(num_full, kv.table.num_blocks());
  if (limit <= kv.num_registered) return;
  extend_block_hashes(tokens, config_.block_size, limit, &kv.block_hashes);
  for (int32_t b = kv.num_registered; b < limit; ++b) {
    prefix_cache_->insert(kv.table.block_ids()[b], tokens, kv.block_hashes, b);
  }
  kv.num_registered = limit;
}

void KvCacheManager::free(SequenceKv& kv) {
  kv.table.release_all(pool_);
  for (auto it = kv.host_blocks.rbegin(); it != kv.host_blocks.rend(); ++it) (void)host_pool_.release(*it);
  kv.host_blocks.clear();
  kv.num_registered = 0;
}

Expected<std::optional<BlockCopy>> KvCacheManager::fork(const SequenceKv& parent, int64_t num_computed,
                                                        SequenceKv* child) {
  const int64_t num_used = std::min<int64_t>(blocks_for(num_computed, config_.block_size), parent.table.num_blocks());
  const bool has_partial = num_computed % config_.block_size != 0 && num_used > 0;
  const int64_t num_shared = has_partial ? num_used - 1 : num_used;
  std::optional<BlockCopy> copy;
  int32_t fresh = -1;
  if (has_partial) {
    auto b = pool_.allocate();
    if (!b.ok()) return b.status();
    fresh = *b;
    copy = BlockCopy{.src = parent.table.block_ids()[num_shared], .dst = fresh};
  }
  child->table = BlockTable(config_.block_size);
  for (int64_t i = 0; i < num_shared; ++i) {
    const int32_t id = parent.table.block_ids()[i];
    (void)pool_.add_ref(id);
    child->table.append(id);
  }
  if (has_partial) child->table.append(fresh);
  child->block_hashes = parent.block_hashes;
  child->num_registered = std::min<int32_t>(parent.num_registered, static_cast<int32_t>(num_shared));
  return copy;
}

bool KvCacheManager::can_swap_out(const SequenceKv& kv, int64_t num_computed) const {
  const int64_t n = std::min<int64_t>(blocks_for(num_computed, config_.block_size), kv.table.num_blocks());
  return n > 0 && n <= host_pool_.num_free();
}

Expected<std::vector<BlockCopy>> KvCacheManager::swap_out(SequenceKv& kv, int64_t num_computed) {
  if (!can_swap_out(kv, num_computed)) {
    return resource_exhausted("KV swap space: " + std::to_string(host_pool_.num_free()) + " host blocks free");
  }
  const int64_t n = std::min<int64_t>(blocks_for(num_computed, config_.block_size), kv.table.num_blocks());
  std::vector<BlockCopy> copies;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t host = host_pool_.allocate().value();
    kv.host_blocks.push_back(host);
    copies.push_back({.src = kv.table.block_ids()[i], .dst = host});
  }
  kv.table.release_all(pool_);
  kv.num_registered = 0;
  return copies;
}

bool KvCacheManager::can_swap_in(const SequenceKv& kv, int64_t num_tokens) const {
  const int64_t total =
      std::max<int64_t>(blocks_for(num_tokens, config_.block_size), static_cast<int64_t>(kv.host_blocks.size()));
  return kv.table.block_ids().empty() && total <= pool_.num_free();
}

Expected<std::vector<BlockCopy>> KvCacheManager::swap_in(SequenceKv& kv) {
  if (!kv.table.block_ids().empty() || static_cast<int64_t>(kv.host_blocks.size()) > pool_.num_free()) {
    return resource_exhausted("KV cache: " + std::to_string(pool_.num_free()) + " blocks free, swap-in needs " +
                              std::to_string(kv.host_blocks.size()));
  }
  std::vector<BlockCopy> copies;
  for (int32_t host : kv.host_blocks) {
    const int32_t dev = pool_.allocate().value();
    kv.table.append(dev);
    copies.push_back({.src = host, .dst = dev});
  }
  for (auto it = kv.host_blocks.rbegin(); it != kv.host_blocks.rend(); ++it) (void)host_pool_.release(*it);
  kv.host_blocks.clear();
  kv.num_registered = 0;
  return copies;
}

}  // namespace anvil
