// Device helpers: with a GPU, bytes survive a round trip and the cudaMemcpy baseline really
// copies; without one (or without CUDA), every call says why instead of crashing.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "tests/test_util.h"
#include "transfer/device.h"

namespace kvfleet::transfer::device {
namespace {

TEST(Device, WithoutAGpuEveryCallSaysWhy) {
  if (count() > 0) GTEST_SKIP() << count() << " CUDA device(s) present";
  const Status use0 = use(0);
  EXPECT_FALSE(use0.is_ok());
  EXPECT_NE(use0.message().find(built_with_cuda() ? "does not exist (0 present)"
                                                  : "built without CUDA"),
            std::string::npos)
      << use0.message();
  auto p = allocate(0, 1024);
  EXPECT_FALSE(p.is_ok());
  char byte = 0;
  EXPECT_FALSE(copy_rate(0, &byte, 0, &byte, 1, 1).is_ok());
}

TEST(Device, BytesRoundTripAndTheCopyBaselineCopies) {
  if (count() < 1) GTEST_SKIP() << "needs a CUDA device";
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  constexpr std::size_t kBytes = 3 * 1024 * 1024 + 17;
  std::vector<unsigned char> host(kBytes), back(kBytes);
  std::mt19937_64 rng(seed);
  for (auto& b : host) b = static_cast<unsigned char>(rng());
  auto a = allocate(0, kBytes);
  auto b = allocate(count() > 1 ? 1 : 0, kBytes);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  ASSERT_TRUE(copy_to_device(*a, host.data(), kBytes).is_ok());
  auto rate = copy_rate(count() > 1 ? 1 : 0, *b, 0, *a, kBytes, 4);
  ASSERT_TRUE(rate.is_ok()) << rate.status().to_string();
  EXPECT_GT(rate->gbps, 0);
  ASSERT_TRUE(copy_to_host(back.data(), *b, kBytes).is_ok());
  EXPECT_EQ(std::memcmp(back.data(), host.data(), kBytes), 0);
  EXPECT_FALSE(use(count()).is_ok());
  release(*a);
  release(*b);
}

}  // namespace
}  // namespace kvfleet::transfer::device
