// BlockPool and BlockTable: allocation order, reference counts, exhaustion, and slot arithmetic.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "kv/block_pool.h"

namespace anvil {
namespace {

TEST(KvBlockPool, AllocatesEveryBlockOnceThenRunsOut) {
  BlockPool pool(7);
  std::set<int32_t> seen;
  for (int i = 0; i < 7; ++i) {
    auto id = pool.allocate();
    ASSERT_TRUE(id.ok());
    EXPECT_TRUE(seen.insert(*id).second);
    EXPECT_GE(*id, 0);
    EXPECT_LT(*id, 7);
  }
  EXPECT_EQ(pool.num_free(), 0);
  auto none = pool.allocate();
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kResourceExhausted);
}

TEST(KvBlockPool, RefCountsReturnBlocksAtZero) {
  BlockPool pool(3);
  const int32_t id = pool.allocate().value();
  ASSERT_TRUE(pool.add_ref(id).ok());
  EXPECT_EQ(pool.ref_count(id), 2);
  ASSERT_TRUE(pool.release(id).ok());
  EXPECT_EQ(pool.num_free(), 2);
  ASSERT_TRUE(pool.release(id).ok());
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_FALSE(pool.release(id).ok());
  EXPECT_FALSE(pool.add_ref(99).ok());
}

TEST(KvBlockTable, GrowsToCoverTokensAndMapsSlots) {
  BlockPool pool(10);
  BlockTable table(4);
  ASSERT_TRUE(table.ensure_capacity(9, pool).ok());
  ASSERT_EQ(table.block_ids().size(), 3u);
  EXPECT_EQ(pool.num_free(), 7);
  for (int64_t pos = 0; pos < 9; ++pos) {
    EXPECT_EQ(table.slot(pos), table.block_ids()[pos / 4] * 4 + pos % 4);
  }
  // Asking for more than is free changes nothing.
  Status s = table.ensure_capacity(4 * 11, pool);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(table.block_ids().size(), 3u);
  table.release_all(pool);
  EXPECT_EQ(pool.num_free(), 10);
}

TEST(KvBlockTable, RandomInterleavedSequencesNeverShareBlocks) {
  std::mt19937 rng(7);
  BlockPool pool(64);
  std::vector<BlockTable> tables(5, BlockTable(8));
  std::vector<int64_t> lens(5, 0);
  for (int step = 0; step < 200; ++step) {
    const int s = static_cast<int>(rng() % 5);
    if (rng() % 10 == 0) {
      tables[s].release_all(pool);
      lens[s] = 0;
      continue;
    }
    const int64_t want = lens[s] + static_cast<int64_t>(rng() % 20);
    if (tables[s].ensure_capacity(want, pool).ok()) lens[s] = want;
    std::set<int32_t> used;
    size_t total = 0;
    for (const auto& t : tables) {
      used.insert(t.block_ids().begin(), t.block_ids().end());
      total += t.block_ids().size();
    }
    ASSERT_EQ(used.size(), total);
    ASSERT_EQ(static_cast<int32_t>(total) + pool.num_free(), 64);
  }
}

}  // namespace
}  // namespace anvil
