#include "kvstore/host_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>

#include "common/checksum.h"
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
  // Checksummed (the default), the copies go block by block.
  EXPECT_EQ(store->stats().copy_runs_total, 7);

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

TEST_F(HostStoreTest, WithoutChecksumsCopiesCoalesceIntoRuns) {
  auto store = HostKvStore::create({16 * kBlock, kBlock, 0.95, 0.8, /*checksums=*/false});
  ASSERT_TRUE(store.is_ok());
  const std::vector<BlockId> src = {3, 4, 5, 6, 20, 11, 12};
  auto host = (*store)->spill(device_.data(), src);
  ASSERT_TRUE(host.is_ok());
  // {3..6} and {11, 12} are consecutive on both sides, 20 stands alone.
  EXPECT_EQ((*store)->stats().copy_runs_total, 3);
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(checksum((*store)->block_data((*host)[i]), kBlock),
              checksum(device_.data() + static_cast<size_t>(src[i]) * kBlock, kBlock));
    EXPECT_FALSE((*store)->index().checksum((*host)[i]).has_value());
  }
  (*store)->release(*host);
}

// Blocks large enough for streaming stores (pieces streamed without a fence each, one fence at
// the end): the bytes arrive intact and each checksum is checksum64 of the block.
TEST_F(HostStoreTest, LargeBlocksAreCopiedIntactWithTheirChecksums) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  constexpr std::size_t kLarge = 3 * 64 * 1024 + 96;
  std::vector<std::byte> pool(6 * kLarge + 32);
  for (auto& b : pool) b = static_cast<std::byte>(rng_());
  std::byte* base = pool.data() + 32 - (reinterpret_cast<std::uintptr_t>(pool.data()) & 31);
  auto store = HostKvStore::create({8 * kLarge, kLarge, 0.95, 0.8});
  ASSERT_TRUE(store.is_ok());
  const std::vector<BlockId> src = {4, 1, 2};
  auto host = (*store)->spill(base, src);
  ASSERT_TRUE(host.is_ok());
  for (size_t i = 0; i < src.size(); ++i) {
    const std::byte* s = base + static_cast<size_t>(src[i]) * kLarge;
    EXPECT_EQ(std::memcmp((*store)->block_data((*host)[i]), s, kLarge), 0) << i;
    EXPECT_EQ((*store)->index().checksum((*host)[i]), checksum64(s, kLarge)) << i;
  }
  std::vector<std::byte> back(4 * kLarge);
  const std::vector<BlockId> dst = {0, 1, 3};
  ASSERT_TRUE((*store)->restore(*host, back.data(), dst).is_ok());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(std::memcmp(back.data() + static_cast<size_t>(dst[i]) * kLarge,
                          base + static_cast<size_t>(src[i]) * kLarge, kLarge),
              0)
        << i;
  }
  (*store)->release(*host);
}

// Host memory that changed after a spill (one flipped byte) is refused on restore as data_loss
// naming the block; the block leaves the prefix index and is freed, the intact ones restore.
TEST_F(HostStoreTest, ARestoreOfDamagedHostBytesIsDataLossAndTheBlockIsNeverFoundAgain) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto store = make(8);
  const std::vector<BlockId> src = {1, 2, 3};
  auto host = store->spill(device_.data(), src);
  ASSERT_TRUE(host.is_ok());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(store->index().checksum((*host)[i]),
              checksum64(device_.data() + static_cast<size_t>(src[i]) * kBlock, kBlock));
  }
  store->publish((*host)[0], 0xa0);
  store->publish((*host)[1], 0xa1);
  const BlockId bad = (*host)[1];
  const_cast<std::byte*>(store->block_data(bad))[rng_() % kBlock] ^= std::byte{0x10};

  std::vector<std::byte> other(8 * kBlock);
  const std::vector<BlockId> dst = {0, 1, 2};
  const Status st = store->restore(*host, other.data(), dst);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.to_string();
  EXPECT_NE(st.message().find("host KV block " + std::to_string(bad)), std::string::npos)
      << st.message();
  EXPECT_EQ(store->stats().corrupt_blocks_total, 1);
  EXPECT_FALSE(store->contains(0xa1));
  EXPECT_TRUE(store->contains(0xa0));
  // Another holder reading the same block later is refused too (the checksum stays with it).
  const std::vector<BlockId> again = {bad};
  const std::vector<BlockId> dst1 = {7};
  EXPECT_EQ(store->restore(again, other.data(), dst1).code(), StatusCode::kDataLoss);
  EXPECT_EQ(store->stats().corrupt_blocks_total, 2);
  const std::vector<BlockId> intact = {(*host)[0], (*host)[2]};
  const std::vector<BlockId> dst2 = {4, 5};
  EXPECT_TRUE(store->restore(intact, other.data(), dst2).is_ok());
  EXPECT_EQ(checksum(other.data() + 5 * kBlock, kBlock),
            checksum(device_.data() + 3 * kBlock, kBlock));
  store->release(*host);
  const auto s = store->stats();
  EXPECT_EQ(s.cached_blocks, 1);  // block 0's prefix; the damaged one was freed
  EXPECT_EQ(s.free_blocks, 7);
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
