// The paper's running example: Yi-34B-200K on one A100 80GB, 250 generated tokens, batch 1.
// Published figures (PAPER.md) must be reproduced within 3% (concurrency within its range).
#include "tests/perfmodel/perfmodel_test_util.h"

namespace kvfleet::perfmodel {
namespace {

using namespace test;

class PaperExample : public ::testing::Test {
 protected:
  Estimate at(std::int64_t context) {
    return run(model("yi-34b-200k"), hardware("a100-80g"), Deployment{}, workload(context, 250));
  }
};

MATCHER_P2(WithinRelative, expected, tolerance, "") {
  const double rel = std::abs(arg - expected) / expected;
  *result_listener << "relative error " << rel;
  return rel <= tolerance;
}

TEST_F(PaperExample, KvCacheSize) {
  EXPECT_EQ(at(4000).kv_bytes_per_token, 245760.0);
  EXPECT_THAT(at(4000).kv_bytes_per_request / kGiB, WithinRelative(0.91, 0.03));
  EXPECT_THAT(at(100000).kv_bytes_per_request / kGiB, WithinRelative(22.8, 0.03));
}

TEST_F(PaperExample, Prefill) {
  EXPECT_THAT(at(4000).prefill_seconds, WithinRelative(0.89, 0.03));
  EXPECT_THAT(at(50000).prefill_seconds, WithinRelative(14.1, 0.03));
  EXPECT_EQ(at(4000).prefill.bound, Bound::kCompute);
  EXPECT_EQ(at(50000).prefill.bound, Bound::kCompute);
}

TEST_F(PaperExample, Decode) {
  EXPECT_THAT(at(4000).decode_seconds, WithinRelative(8.5, 0.03));
  EXPECT_THAT(at(50000).decode_seconds, WithinRelative(9.8, 0.03));
  EXPECT_EQ(at(4000).decode_step.bound, Bound::kHbmBandwidth);
}

TEST_F(PaperExample, Concurrency) {
  const Estimate short_ctx = at(4000);
  EXPECT_GE(short_ctx.max_concurrency, 12);
  EXPECT_LE(short_ctx.max_concurrency, 20);
  EXPECT_EQ(at(50000).max_concurrency, 1);
}

// "From 4K to 50K, prefill grows ~16x for 12.5x more tokens, while batch-1 decode grows only ~15%;
// prefill's share of a request rises from ~10% to ~60%."
TEST_F(PaperExample, WhatGrowsWithContext) {
  const Estimate a = at(4000);
  const Estimate b = at(50000);
  EXPECT_THAT(b.prefill_seconds / a.prefill_seconds, WithinRelative(16.0, 0.03));
  EXPECT_THAT(b.decode_seconds / a.decode_seconds, WithinRelative(1.15, 0.03));
  auto share = [](const Estimate& e) {
    return e.prefill_seconds / (e.prefill_seconds + e.decode_seconds);
  };
  EXPECT_NEAR(share(a), 0.10, 0.02);
  EXPECT_NEAR(share(b), 0.60, 0.03);
}

// Context switch: (KV out + KV in) / PCIe at the documented 25 GB/s.
TEST_F(PaperExample, ContextSwitch) {
  const Estimate e = at(50000);
  EXPECT_DOUBLE_EQ(e.context_switch_bytes, 2 * 245760.0 * 50000);
  EXPECT_DOUBLE_EQ(e.context_switch_seconds, 2 * 245760.0 * 50000 / 25e9);
  EXPECT_EQ(e.context_switch_bound(), Bound::kPcieBandwidth);
}

}  // namespace
}  // namespace kvfleet::perfmodel
