// PrefixCache: chain hashes of full token blocks -> cached KV blocks, with token comparison on every hit.
#include "kv/prefix_cache.h"

#include <algorithm>

namespace anvil {
namespace {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t hash_block_tokens(uint64_t parent_hash, std::span<const int32_t> tokens) {
  uint64_t h = mix64(parent_hash ^ 0x9E3779B97F4A7C15ULL);
  for (int32_t t : tokens) h = mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x9E3779B97F4A7C15ULL));
  return mix64(h ^ tokens.size());
}

void extend_block_hashes(std::span<const int32_t> tokens, int32_t block_size, int32_t num_blocks,
                         std::vector<uint64_t>* hashes) {
  for (auto b = static_cast<int32_t>(hashes->size()); b < num_blocks; ++b) {
    const uint64_t parent = b == 0 ? kRootBlockHash : (*hashes)[b - 1];
    hashes->push_back(hash_block_tokens(
        parent, tokens.subspan(static_cast<size_t>(b) * block_size, static_cast<size_t>(block_size))));
  }
}

PrefixCache::PrefixCache(BlockPool& pool, int32_t block_size)
    : pool_(pool), block_size_(block_size), entries_(pool.num_blocks()) {
  pool_.set_eviction_listener(this);
}

PrefixCache::~PrefixCache() {
  pool_.set_eviction_listener(nullptr);
}

std::vector<int32_t> PrefixCache::match_and_acquire(std::span<const int32_t> tokens, std::span<const uint64_t> hashes,
                                                    int32_t max_blocks) {
  std::vector<int32_t> blocks;
  const auto limit = std::min<int64_t>(
      {max_blocks, static_cast<int64_t>(hashes.size()), static_cast<int64_t>(tokens.size()) / block_size_});
  for (int64_t b = 0; b < limit; ++b) {
    auto it = by_hash_.find(hashes[b]);
    if (it == by_hash_.end()) break;
    const Entry& e = entries_[it->second];
    const uint64_t parent = b == 0 ? kRootBlockHash : hashes[b - 1];
    const auto block_tokens = tokens.subspan(static_cast<size_t>(b) * block_size_, static_cast<size_t>(block_size_));
    if (e.parent_hash != parent ||
        !std::equal(block_tokens.begin(), block_tokens.end(), e.tokens.begin(), e.tokens.end())) {
      break;
    }
    if (!pool_.reuse(it->second).ok()) break;
    blocks.push_back(it->second);
  }
  return blocks;
}

void PrefixCache::insert(int32_t block_id, std::span<const int32_t> tokens, std::span<const uint64_t> hashes,
                         int32_t block_idx) {
  if (block_id < 0 || block_id >= static_cast<int32_t>(entries_.size()) || block_idx < 0 ||
      block_idx >= static_cast<int32_t>(hashes.size()) ||
      static_cast<int64_t>(block_idx + 1) * block_size_ > static_cast<int64_t>(tokens.size())) {
    return;
  }
  Entry& e = entries_[block_id];
  if (e.is_cached) return;
  if (!by_hash_.emplace(hashes[block_idx], block_id).second) return;
  e.is_cached = true;
  e.hash = hashes[block_idx];
  e.parent_hash = block_idx == 0 ? kRootBlockHash : hashes[block_idx - 1];
  const auto block_tokens =
      tokens.subspan(static_cast<size_t>(block_idx) * block_size_, static_cast<size_t>(block_size_));
  e.tokens.assign(block_tokens.begin(), block_tokens.end());
}

void PrefixCache::on_evict(int32_t block_id) {
  if (block_id < 0 || block_id >= static_cast<int32_t>(entries_.size())) return;
  Entry& e = entries_[block_id];
  if (!e.is_cached) return;
  by_hash_.erase(e.hash);
  e.is_cached = false;
  e.tokens.clear();
}

void PrefixCache::record_lookup(int64_t num_queried_tokens, int64_t num_hit_tokens) {
  num_queried_tokens_ += num_queried_tokens;
  num_hit_tokens_ += num_hit_tokens;
}

}  // namespace anvil
