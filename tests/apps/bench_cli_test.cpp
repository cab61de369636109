// `kvfleet bench engine|transfer`: flags are checked before any work starts.
#include "tests/apps/cli_test_util.h"

namespace kvfleet {
namespace {

TEST(BenchCli, BadInputGetsAClearErrorAndExitCode2) {
  test::expect_bad_input({
      {"bench", "A subcommand is required"},
      {"bench engine --repeats 0", "--repeats must be positive"},
      {"bench engine --decode-batches 1,x", "--decode-batches"},
      {"bench engine --context 3", "sizes and --repeats must be positive"},
      {"bench transfer --sizes 1MiB,lots", "--sizes: 'lots' is not a positive byte size"},
      {"bench transfer --pattern zigzag", "--pattern must be contiguous or blocks"},
      {"bench transfer --backend carrier-pigeon", "--backend must be ucx, loopback or nccl"},
      {"bench transfer --window 0", "--window must be in [1, 1024]"},
      {"bench transfer --backend nccl", "does not drive the nccl backend yet"},
      {"bench transfer --pattern blocks --block-bytes 8", "--block-bytes must be >= 64"},
  });
}

TEST(BenchCli, LoopbackTransferBenchmarkReportsItsRows) {
  auto r = test::kvfleet("bench transfer --backend loopback --sizes 64KiB --seconds 0.05 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"size_bytes\": 65536"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"ops_per_request\": 1"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"memcpy_gbps\""));
}

}  // namespace
}  // namespace kvfleet
