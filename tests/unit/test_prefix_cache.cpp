// PrefixCache and KvCacheManager: chain hashes, hits that compare tokens (so a hash collision is a miss),
// LRU eviction of unreferenced cached blocks when the pool needs a block, prefix acquisition that always
// leaves a token to compute, registration of computed full blocks only, fork with copy-on-write, and swap.
#include <gtest/gtest.h>

#include <numeric>

#include "kv/kv_cache_manager.h"
#include "kv/prefix_cache.h"

namespace anvil {
namespace {

std::vector<int32_t> tokens_from(int32_t begin, int32_t count) {
  std::vector<int32_t> t(count);
  std::iota(t.begin(), t.end(), begin);
  return t;
}

std::vector<uint64_t> hashes_of(const std::vector<int32_t>& tokens, int32_t block_size) {
  std::vector<uint64_t> h;
  extend_block_hashes(tokens, block_size, static_cast<int32_t>(tokens.size()) / block_size, &h);
  return h;
}

TEST(KvPrefixCache, ChainHashDependsOnParentAndEveryToken) {
  const std::vector<int32_t> a{1, 2, 3, 4};
  const uint64_t h = hash_block_tokens(kRootBlockHash, a);
  EXPECT_EQ(h, hash_block_tokens(kRootBlockHash, a));
  EXPECT_NE(h, hash_block_tokens(h, a));
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<int32_t> b = a;
    b[i] += 1;
    EXPECT_NE(h, hash_block_tokens(kRootBlockHash, b)) << i;
  }
  // The same second block after different first blocks hashes differently.
  const auto x = hashes_of({1, 2, 3, 4, 9, 9, 9, 9}, 4);
  const auto y = hashes_of({1, 2, 3, 5, 9, 9, 9, 9}, 4);
  EXPECT_NE(x[1], y[1]);
}

TEST(KvPrefixCache, MatchesLeadingCachedBlocksAndTakesReferences) {
  BlockPool pool(8);
  PrefixCache cache(pool, 4);
  const std::vector<int32_t> tokens = tokens_from(100, 12);
  const auto hashes = hashes_of(tokens, 4);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 3; ++i) blocks.push_back(pool.allocate().value());
  cache.insert(blocks[0], tokens, hashes, 0);
  cache.insert(blocks[1], tokens, hashes, 1);  // block 2 is never cached
  EXPECT_EQ(cache.num_cached_blocks(), 2);
  EXPECT_EQ(cache.match_and_acquire(tokens, hashes, 3), (std::vector<int32_t>{blocks[0], blocks[1]}));
  EXPECT_EQ(pool.ref_count(blocks[0]), 2);
  EXPECT_EQ(cache.match_and_acquire(tokens, hashes, 1), (std::vector<int32_t>{blocks[0]}));
  EXPECT_EQ(pool.ref_count(blocks[0]), 3);

  // A different first block misses everything after it, even where later blocks are equal.
  std::vector<int32_t> other = tokens;
  other[0] = 7;
  EXPECT_TRUE(cache.match_and_acquire(other, hashes_of(other, 4), 3).empty());
  // A second block with the same content is not cached twice.
  const int32_t dup = pool.allocate().value();
  cache.insert(dup, tokens, hashes, 0);
  EXPECT_FALSE(cache.is_cached(dup));
}

TEST(KvPrefixCache, HashCollisionIsAMissBecauseTokensAreCompared) {
  BlockPool pool(4);
  PrefixCache cache(pool, 4);
  const std::vector<int32_t> stored{1, 2, 3, 4};
  const std::vector<int32_t> probe{5, 6, 7, 8};
  const std::vector<uint64_t> forced{0x1234};  // both claim the same hash
  const int32_t b = pool.allocate().value();
  cache.insert(b, stored, forced, 0);
  EXPECT_TRUE(cache.match_and_acquire(probe, forced, 1).empty());
  EXPECT_EQ(cache.match_and_acquire(stored, forced, 1), std::vector<int32_t>{b});
}

TEST(KvPrefixCache, UnreferencedCachedBlocksAreEvictedLeastRecentlyFreedFirst) {
  BlockPool pool(4);
  PrefixCache cache(pool, 2);
  std::vector<std::vector<int32_t>> contents;
  std::vector<int32_t> blocks;
  for (int i = 0; i < 4; ++i) {
    contents.push_back({10 * i, 10 * i + 1});
    blocks.push_back(pool.allocate().value());
    cache.insert(blocks[i], contents[i], hashes_of(contents[i], 2), 0);
  }
  EXPECT_EQ(pool.num_free(), 0);
  for (int i : {2, 0, 3, 1}) ASSERT_TRUE(pool.release(blocks[i]).ok());
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_EQ(cache.num_cached_blocks(), 4);  // free, yet still cached

  // A hit revives block 0: it leaves the free list, and eviction skips it.
  EXPECT_EQ(cache.match_and_acquire(contents[0], hashes_of(contents[0], 2), 1), std::vector<int32_t>{blocks[0]});
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.allocate().value(), blocks[2]);  // least recently freed
  EXPECT_FALSE(cache.is_cached(blocks[2]));
  EXPECT_TRUE(cache.match_and_acquire(contents[2], hashes_of(contents[2], 2), 1).empty());
  EXPECT_EQ(pool.allocate().value(), blocks[3]);
  EXPECT_EQ(cache.num_cached_blocks(), 2);  // blocks 0 (in use) and 1 (free)
  EXPECT_EQ(cache.match_and_acquire(contents[1], hashes_of(contents[1], 2), 1), std::vector<int32_t>{blocks[1]});
}

TEST(KvCacheManager, PrefixAcquisitionLeavesAtLeastOneTokenAndRegistersOnlyComputedFullBlocks) {
  KvCacheManager kv({.num_blocks = 16, .block_size = 4});
  const std::vector<int32_t> prompt = tokens_from(0, 8);
  SequenceKv a(4);
  EXPECT_EQ(kv.acquire_cached_prefix(a, prompt), 0);
  ASSERT_TRUE(kv.allocate(a, 8).ok());
  kv.register_computed(a, prompt, 6);  // only block 0 is full and computed
  EXPECT_EQ(kv.prefix_cache()->num_cached_blocks(), 1);
  kv.register_computed(a, prompt, 8);
  EXPECT_EQ(kv.prefix_cache()->num_cached_blocks(), 2);

  // The same 8 tokens: both blocks are cached, but the last token must be computed, so one block is used.
  SequenceKv b(4);
  EXPECT_EQ(kv.acquire_cached_prefix(b, prompt), 4);
  EXPECT_EQ(b.table.block_ids(), std::vector<int32_t>{a.table.block_ids()[0]});
  // Nine tokens: both blocks.
  SequenceKv c(4);
  std::vector<int32_t> longer = prompt;
  longer.push_back(99);
  EXPECT_EQ(kv.acquire_cached_prefix(c, longer), 8);
  EXPECT_EQ(kv.pool().ref_count(a.table.block_ids()[0]), 3);
  kv.free(a);
  kv.free(b);
  kv.free(c);
  EXPECT_EQ(kv.num_free_blocks(), 16);
  EXPECT_EQ(kv.prefix_cache()->num_cached_blocks(), 2);

  KvCacheManager off({.num_blocks = 4, .block_size = 4, .enable_prefix_caching = false});
  SequenceKv d(4);
  EXPECT_EQ(off.acquire_cached_prefix(d, longer), 0);
  EXPECT_EQ(off.prefix_cache(), nullptr);
}

TEST(KvCacheManager, ForkSharesFullBlocksAndCopiesThePartialOne) {
  KvCacheManager kv({.num_blocks = 4, .block_size = 4});
  SequenceKv parent(4);
  ASSERT_TRUE(kv.allocate(parent, 6).ok());
  SequenceKv child(4);
  auto copy = kv.fork(parent, 6, &child);
  ASSERT_TRUE(copy.ok());
  ASSERT_TRUE(copy->has_value());
  EXPECT_EQ((*copy)->src, parent.table.block_ids()[1]);
  EXPECT_EQ((*copy)->dst, child.table.block_ids()[1]);
  EXPECT_EQ(child.table.block_ids()[0], parent.table.block_ids()[0]);
  EXPECT_EQ(kv.pool().ref_count(parent.table.block_ids()[0]), 2);
  EXPECT_EQ(kv.num_free_blocks(), 1);

  SequenceKv second(4);
  ASSERT_TRUE(kv.fork(parent, 6, &second).ok());
  SequenceKv third(4);
  auto none = kv.fork(parent, 6, &third);  // no block left for the copy
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(third.table.block_ids().empty());
  EXPECT_EQ(kv.pool().ref_count(parent.table.block_ids()[0]), 3);

  SequenceKv aligned_child(4);
  kv.free(second);
  auto aligned = kv.fork(parent, 4, &aligned_child);  // block-aligned: share, copy nothing
  ASSERT_TRUE(aligned.ok());
  EXPECT_FALSE(aligned->has_value());
  EXPECT_EQ(aligned_child.table.num_blocks(), 1);
  for (SequenceKv* s : {&parent, &child, &aligned_child}) kv.free(*s);
  EXPECT_EQ(kv.num_free_blocks(), 4);
}

TEST(KvCacheManager, SwapOutAndInMovesComputedBlocksThroughHostBlocks) {
  KvCacheManager kv({.num_blocks = 4, .block_size = 2, .num_host_blocks = 3});
  SequenceKv s(2);
  ASSERT_TRUE(kv.allocate(s, 6).ok());  // 3 blocks, but only 3 tokens computed
  const std::vector<int32_t> device = s.table.block_ids();
  EXPECT_TRUE(kv.can_swap_out(s, 3));
  auto out = kv.swap_out(s, 3);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].src, device[0]);
  EXPECT_EQ((*out)[1].src, device[1]);
  EXPECT_EQ(kv.num_free_blocks(), 4);
  EXPECT_EQ(kv.num_free_host_blocks(), 1);
  EXPECT_TRUE(s.table.block_ids().empty());

  EXPECT_TRUE(kv.can_swap_in(s, 4));
  EXPECT_FALSE(kv.can_swap_in(s, 9));  // 5 blocks > 4
  auto in = kv.swap_in(s);
  ASSERT_TRUE(in.ok());
  ASSERT_EQ(in->size(), 2u);
  EXPECT_EQ((*in)[0].src, (*out)[0].dst);
  EXPECT_EQ((*in)[1].src, (*out)[1].dst);
  EXPECT_EQ(s.table.num_blocks(), 2);
  EXPECT_EQ(kv.num_free_host_blocks(), 3);

  SequenceKv big(2);
  ASSERT_TRUE(kv.allocate(big, 4).ok());
  EXPECT_FALSE(kv.can_swap_out(big, 0));  // nothing computed: nothing to keep
  kv.free(s);
  kv.free(big);
  EXPECT_EQ(kv.num_free_blocks(), 4);
}

}  // namespace
}  // namespace anvil
