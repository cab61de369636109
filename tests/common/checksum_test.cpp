#include "common/checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>  // the shared library's own build: the reference

#include <random>
#include <vector>

#include "tests/test_util.h"

namespace kvfleet {
namespace {

TEST(Checksum, KnownValueOfTheEmptyInput) {
  // XXH3-64 of no bytes with seed 0, from the algorithm's specification.
  EXPECT_EQ(checksum64("", 0), 0x2D06800538D394C2ull);
}

TEST(Checksum, MatchesTheLibraryAtEverySizeAndAlignment) {
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", implementation " +
               std::string(checksum_implementation()));
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> buf(3 << 20);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  // Every size up to 300 (the algorithm's short-input branches), then random ones up to 3 MiB
  // (stripes and blocks), each at a random misalignment.
  std::vector<std::size_t> sizes;
  for (std::size_t n = 0; n <= 300; ++n) sizes.push_back(n);
  for (int i = 0; i < 200; ++i) sizes.push_back(rng() % (buf.size() - 64));
  for (std::size_t n : sizes) {
    const std::size_t off = rng() % 64;
    ASSERT_EQ(checksum64(buf.data() + off, n), XXH3_64bits(buf.data() + off, n))
        << "size " << n << " offset " << off;
  }
}

TEST(Checksum, OneFlippedBitChangesIt) {
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> buf(1 << 20);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  const std::uint64_t before = checksum64(buf.data(), buf.size());
  for (int i = 0; i < 100; ++i) {
    const std::size_t at = rng() % buf.size();
    const unsigned char bit = static_cast<unsigned char>(1u << (rng() % 8));
    buf[at] ^= bit;
    EXPECT_NE(checksum64(buf.data(), buf.size()), before) << "byte " << at;
    buf[at] ^= bit;
  }
  EXPECT_EQ(checksum64(buf.data(), buf.size()), before);
}

}  // namespace
}  // namespace kvfleet
