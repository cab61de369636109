#include "common/checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>  // the shared library's own build: the reference

#include <algorithm>
#include <cstring>
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

// The fused copy gives checksum64 of the source and an exact copy, for sizes around its 64 KiB
// pieces, at random misalignments.
TEST(Checksum, CopyAndChecksumCopiesExactlyAndHashesLikeChecksum64) {
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<std::byte> src(1 << 20), dst(src.size() + 64);
  for (auto& b : src) b = static_cast<std::byte>(rng());
  const std::size_t piece = 64 * 1024;
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{4160}, piece - 1, piece,
                        piece + 1, 3 * piece + 17, src.size() - 64}) {
    const std::size_t so = rng() % 64, d_off = rng() % 64;
    std::fill(dst.begin(), dst.end(), std::byte{0});
    const auto copy = [](std::byte* d, const std::byte* s, std::size_t k) { std::memcpy(d, s, k); };
    const std::uint64_t h = copy_and_checksum64(dst.data() + d_off, src.data() + so, n, copy);
    EXPECT_EQ(h, checksum64(src.data() + so, n)) << "size " << n;
    EXPECT_EQ(std::memcmp(dst.data() + d_off, src.data() + so, n), 0) << "size " << n;
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
