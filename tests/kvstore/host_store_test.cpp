#include "kvstore/host_store.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "tests/test_util.h"

namespace kvfleet::kvstore {
namespace {

constexpr std::size_t kBlock = 4096 + 64;  // an odd size: no alignment luck

std::uint64_t checksum(const std::byte* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint64_t>(p[i])) * 1099511628211ull;
  return h;
}

class HostStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = test::test_seed();
    rng_.seed(seed_);
    device_.resize(32 * kBlock);
    for (auto& b : device_) b = static_cast<std::byte>(rng_());
  }
  std::unique_ptr<HostKvStore> make(std::size_t blocks, double high = 0.95, double low = 0.8) {
    auto s = HostKvStore::create({blocks * kBlock, kBlock, high, low});
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? std::move(s).value() : nullptr;
  }
  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::vector<std::byte> device_;
};

TEST_F(HostStoreTest, SpillAndRestoreMoveBytesIntact) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto store = make(16);
  const std::vector<BlockId> src = {3, 4, 5, 6, 20, 11, 12};
  std::vector<std::uint64_t> sums;
  for (BlockId b : src)
    sums.push_back(checksum(device_.data() + static_cast<size_t>(b) * kBlock, kBlock));
  auto host = store->spill(device_.data(), src);
  ASSERT_TRUE(host.is_ok()) << host.status().to_string();
  ASSERT_EQ(host->size(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(checksum(store->block_data((*host)[i]), kBlock), sums[i]);
  }
  // Runs coalesce: {3..6} and {11, 12} are consecutive on both sides, 20 stands alone.
  EXPECT_EQ(store->stats().copy_runs_total, 3);

  std::vector<std::byte> other(32 * kBlock, std::byte{0});
  const std::vector<BlockId> dst = {0, 1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(store->restore(*host, other.data(), dst).is_ok());
  for (size_t i = 0; i < dst.size(); ++i) {
    EXPECT_EQ(checksum(other.data() + static_cast<size_t>(dst[i]) * kBlock, kBlock), sums[i]);
  }
  const auto st = store->stats();
  EXPECT_EQ(st.spilled_bytes_total, static_cast<std::int64_t>(7 * kBlock));
  EXPECT_EQ(st.restored_bytes_total, static_cast<std::int64_t>(7 * kBlock));
  EXPECT_EQ(st.used_blocks, 7);
  store->release(*host);
  EXPECT_EQ(store->stats().used_blocks, 0);
  EXPECT_EQ(store->stats().free_blocks, 16);
}

TEST_F(HostStoreTest, FullStoreIsAClearErrorAndChangesNothing) {
  auto store = make(4);
  auto first = store->spill(device_.data(), std::vector<BlockId>{0, 1, 2});
  ASSERT_TRUE(first.is_ok());
  auto second = store->spill(device_.data(), std::vector<BlockId>{3, 4});
  ASSERT_FALSE(second.is_ok());
  EXPECT_EQ(second.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(second.status().message().find("2 blocks needed, 1 available"), std::string::npos);
  EXPECT_EQ(store->stats().used_blocks, 3);
  EXPECT_FALSE(
      store->restore(std::vector<BlockId>{3}, device_.data(), std::vector<BlockId>{0}).is_ok())
      << "block 3 is not held";
}

TEST_F(HostStoreTest, PrefixBlocksAreFoundAgainUntilEvicted) {
  auto store = make(10, 0.85, 0.5);
  std::vector<BlockId> held;
  for (BlockId b = 0; b < 9; ++b) {
    auto ids = store->spill(device_.data(), std::vector<BlockId>{b});
    ASSERT_TRUE(ids.is_ok());
    store->publish(ids->front(), 1000 + static_cast<BlockHash>(b));
    held.push_back(ids->front());
  }
  store->release(held);  // 9 cached of 10 > 85%: evicts LRU down to 5
  auto st = store->stats();
  EXPECT_EQ(st.cached_blocks, 5);
  EXPECT_EQ(st.evicted_blocks_total, 4);
  EXPECT_FALSE(store->lookup_and_retain(1000).has_value());  // oldest went first
  auto hit = store->lookup_and_retain(1008);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(checksum(store->block_data(*hit), kBlock),
            checksum(device_.data() + 8 * kBlock, kBlock));
  EXPECT_EQ(store->stats().lookup_hits_total, 1);
  EXPECT_EQ(store->stats().lookups_total, 2);
  // Held (pinned) blocks are never evicted, whatever the pressure.
  auto more =
      store->spill(device_.data(), std::vector<BlockId>{10, 11, 12, 13, 14, 15, 16, 17, 18});
  ASSERT_TRUE(more.is_ok()) << more.status().to_string();
  auto again = store->lookup_and_retain(1008);
  EXPECT_TRUE(again.has_value());
  store->release(std::vector<BlockId>{*hit, *again});
  store->release(*more);
}

TEST(HostStoreConfig, RejectsBadSettings) {
  EXPECT_FALSE(HostKvStore::create({1 << 20, 0}).is_ok());
  EXPECT_FALSE(HostKvStore::create({1 << 20, 4096, 0.5, 0.9}).is_ok());
  EXPECT_FALSE(HostKvStore::create({1 << 20, 4096, 1.5, 0.9}).is_ok());
}

}  // namespace
}  // namespace kvfleet::kvstore
