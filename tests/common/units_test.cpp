#include "common/units.h"

#include <gtest/gtest.h>

namespace kvfleet {
namespace {

double q(const char* text, Quantity kind) {
  auto r = parse_quantity(text, kind);
  EXPECT_TRUE(r.is_ok()) << text << ": " << r.status().to_string();
  return r.is_ok() ? *r : -1;
}

TEST(Units, ParsesBytesWithDecimalAndBinaryPrefixes) {
  EXPECT_DOUBLE_EQ(q("80GiB", Quantity::kBytes), 80.0 * 1024 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(q("80 GB", Quantity::kBytes), 80e9);
  EXPECT_DOUBLE_EQ(q("16KiB", Quantity::kBytes), 16384);
  EXPECT_DOUBLE_EQ(q("1.5e9", Quantity::kBytes), 1.5e9);
  EXPECT_DOUBLE_EQ(q("  4096 B ", Quantity::kBytes), 4096);
}

TEST(Units, ParsesRates) {
  EXPECT_DOUBLE_EQ(q("2039GB/s", Quantity::kBytesPerSecond), 2039e9);
  EXPECT_DOUBLE_EQ(q("25 GiB/s", Quantity::kBytesPerSecond), 25.0 * (1 << 30));
  EXPECT_DOUBLE_EQ(q("312T", Quantity::kFlopsPerSecond), 312e12);
  EXPECT_DOUBLE_EQ(q("312 TFLOPS", Quantity::kFlopsPerSecond), 312e12);
  EXPECT_DOUBLE_EQ(q("1.979PFLOP/s", Quantity::kFlopsPerSecond), 1.979e15);
}

TEST(Units, ParsesCounts) {
  EXPECT_EQ(*parse_positive_count("50K"), 50000);
  EXPECT_EQ(*parse_positive_count("4Ki"), 4096);
  EXPECT_EQ(*parse_positive_count("100000"), 100000);
  EXPECT_EQ(*parse_positive_count("1M"), 1000000);
}

TEST(Units, ParsesDurations) {
  EXPECT_DOUBLE_EQ(q("5us", Quantity::kSeconds), 5e-6);
  EXPECT_DOUBLE_EQ(q("1.5 ms", Quantity::kSeconds), 1.5e-3);
  EXPECT_DOUBLE_EQ(q("20ns", Quantity::kSeconds), 20e-9);
  EXPECT_DOUBLE_EQ(q("2s", Quantity::kSeconds), 2.0);
  EXPECT_DOUBLE_EQ(q("2e-6", Quantity::kSeconds), 2e-6);
  for (const char* bad : {"5 parsecs", "5 Ms", "5GB", "-1us"}) {
    EXPECT_FALSE(parse_quantity(bad, Quantity::kSeconds).is_ok()) << bad;
  }
}

TEST(Units, RejectsGarbageWithTheTextInTheMessage) {
  for (const char* bad : {"", "abc", "12 parsecs", "GB", "-5GB", "nan", "1e400"}) {
    auto r = parse_quantity(bad, Quantity::kBytes);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_NE(r.status().message().find(std::string("'") + bad + "'"), std::string::npos)
        << r.status().message();
  }
  EXPECT_FALSE(parse_quantity("2039GB", Quantity::kBytesPerSecond).is_ok());  // missing /s
  EXPECT_FALSE(parse_quantity("80GiB/s", Quantity::kBytes).is_ok());
  EXPECT_FALSE(parse_quantity("3Ti", Quantity::kFlopsPerSecond).is_ok());
  for (const char* bad : {"0", "-3", "2.5", "x", "1e30"}) {
    EXPECT_FALSE(parse_positive_count(bad).is_ok()) << bad;
  }
}

TEST(Units, FormatsForHumans) {
  EXPECT_EQ(format_bytes(983040000.0), "938 MiB");
  EXPECT_EQ(format_bytes(22.89 * 1024 * 1024 * 1024), "22.9 GiB");
  EXPECT_EQ(format_seconds(14.3), "14.3 s");
  EXPECT_EQ(format_seconds(0.0342), "34.2 ms");
  EXPECT_EQ(format_seconds(0.892), "892 ms");
  EXPECT_EQ(format_seconds(12e-6), "12.0 us");
  EXPECT_EQ(format_rate_bytes(2039e9), "2.04 TB/s");
  EXPECT_EQ(format_flops(312e12), "312 TFLOP/s");
  EXPECT_EQ(format_count(34.39e9), "34.4 B");
}

}  // namespace
}  // namespace kvfleet

#include "common/hex.h"

namespace kvfleet {
namespace {

TEST(Hex, RoundTripsBytesAndRejectsGarbage) {
  const std::string bytes("\x00\x01\x7f\x80\xff", 5);
  EXPECT_EQ(to_hex(bytes), "00017f80ff");
  EXPECT_EQ(*from_hex("00017F80ff"), bytes);
  EXPECT_FALSE(from_hex("abc").is_ok());
  EXPECT_FALSE(from_hex("zz").is_ok());
}

}  // namespace
}  // namespace kvfleet
