#include "kvstore/block_pool.h"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "kvstore/block_ranges.h"
#include "kvstore/prefix_hash.h"
#include "tests/test_util.h"

namespace kvfleet::kvstore {
namespace {

TEST(BlockPool, FreeUsedCachedStates) {
  BlockPool pool(3);
  auto a = pool.allocate(), b = pool.allocate(), c = pool.allocate();
  ASSERT_TRUE(a && b && c);
  EXPECT_FALSE(pool.allocate().has_value());  // all in use, nothing cached
  EXPECT_EQ(pool.num_used(), 3);

  pool.set_hash(*a, 111);
  pool.release(*a);  // hashed: cached, not free
  EXPECT_EQ(pool.num_cached(), 1);
  EXPECT_EQ(pool.lookup(111), a);
  pool.release(*b);  // unhashed: free
  EXPECT_EQ(pool.num_free(), 1);

  pool.retain(*a);  // a cached block comes back into use without a copy
  EXPECT_EQ(pool.ref_count(*a), 1);
  EXPECT_EQ(pool.num_cached(), 0);
  pool.retain(*a);
  pool.release(*a);
  EXPECT_EQ(pool.ref_count(*a), 1);  // shared blocks stay while any holder remains
}

TEST(BlockPool, EvictsLeastRecentlyReleasedFirst) {
  BlockPool pool(4);
  std::vector<BlockId> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(*pool.allocate());
  for (int i = 0; i < 4; ++i)
    pool.set_hash(ids[static_cast<size_t>(i)], 100 + static_cast<BlockHash>(i));
  for (int i : {2, 0, 3, 1}) pool.release(ids[static_cast<size_t>(i)]);
  EXPECT_EQ(pool.num_cached(), 4);
  // Re-using a cached block refreshes it: 2 becomes the most recent.
  pool.retain(ids[2]);
  pool.release(ids[2]);
  auto fresh = pool.allocate();  // evicts the LRU one: block 0
  ASSERT_TRUE(fresh);
  EXPECT_EQ(*fresh, ids[0]);
  EXPECT_FALSE(pool.lookup(100).has_value());
  EXPECT_TRUE(pool.lookup(101).has_value());
  // LRU order now: 3, 1, 2. Four occupied (the fresh block + 3 cached) -> 2 evicts 3 and 1.
  EXPECT_EQ(pool.evict_until(2), 2);
  EXPECT_FALSE(pool.lookup(103).has_value());
  EXPECT_FALSE(pool.lookup(101).has_value());
  EXPECT_TRUE(pool.lookup(102).has_value());
  EXPECT_EQ(pool.evicted_total(), 3);
}

TEST(BlockPool, DuplicateHashesKeepTheFirstBlock) {
  BlockPool pool(2);
  auto a = *pool.allocate(), b = *pool.allocate();
  pool.set_hash(a, 7);
  pool.set_hash(b, 7);
  EXPECT_EQ(pool.lookup(7), a);
  pool.release(b);  // not the indexed block: freed
  EXPECT_EQ(pool.num_free(), 1);
  pool.release(a);
  EXPECT_EQ(pool.num_cached(), 1);
}

TEST(BlockPool, RandomOperationsKeepCountsConsistent) {
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  BlockPool pool(64);
  std::multiset<BlockId> held;
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 4);
    if (op == 0) {
      if (auto id = pool.allocate()) held.insert(*id);
    } else if (op == 1 && !held.empty()) {
      auto it = std::next(held.begin(), static_cast<long>(rng() % held.size()));
      pool.set_hash(*it, rng() % 200);
    } else if (op == 2 && !held.empty()) {
      auto it = std::next(held.begin(), static_cast<long>(rng() % held.size()));
      pool.release(*it);
      held.erase(it);
    } else if (op == 3) {
      if (auto id = pool.lookup(rng() % 200)) {
        pool.retain(*id);
        held.insert(*id);
      }
    }
    std::set<BlockId> distinct(held.begin(), held.end());
    ASSERT_EQ(pool.num_used(), static_cast<std::int32_t>(distinct.size()));
    ASSERT_EQ(pool.num_used() + pool.num_cached() + pool.num_free(), 64);
  }
  for (BlockId id : held) pool.release(id);
  EXPECT_EQ(pool.num_used(), 0);
}

TEST(PrefixHash, ChainsCoverTheWholePrefix) {
  const std::vector<std::int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<std::int32_t> b = a;
  b[1] = 99;  // differs in the first block only
  const auto ha = full_block_hashes(0, a, 4);
  const auto hb = full_block_hashes(0, b, 4);
  ASSERT_EQ(ha.size(), 2u);  // the partial last block is not hashed
  EXPECT_NE(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]);  // same second block, different prefix
  EXPECT_EQ(ha, full_block_hashes(0, a, 4));
  EXPECT_NE(ha, full_block_hashes(1, a, 4));  // another salt (model) never matches
}

TEST(BlockRanges, CoalescesRunsConsecutiveOnBothSides) {
  const std::vector<BlockId> src = {4, 5, 6, 9, 10, 2};
  const std::vector<BlockId> dst = {0, 1, 2, 3, 7, 8};
  const auto runs = coalesce_runs(src, dst);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].count, 3);
  EXPECT_EQ(runs[1].src, 9);
  EXPECT_EQ(runs[1].count, 1);  // src continues (10) but dst jumps 3 -> 7
  EXPECT_EQ(runs[2].src, 10);
  EXPECT_EQ(runs[2].dst, 7);
  EXPECT_EQ(runs[3].src, 2);  // dst continues (8) but src jumps 10 -> 2
}

}  // namespace
}  // namespace kvfleet::kvstore
