// `kvfleet bench ...`, `serve`, `worker`, `up`: flags are checked before any work starts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "perfmodel/hardware.h"
#include "tests/apps/cli_test_util.h"
#include "transfer/device.h"

namespace kvfleet {
namespace {

TEST(BenchCli, BadInputGetsAClearErrorAndExitCode2) {
  test::expect_bad_input({
      {"bench", "A subcommand is required"},
      {"bench engine --repeats 0", "--repeats must be positive"},
      {"bench engine --decode-batches 1,x", "--decode-batches"},
      {"bench engine --context 3", "sizes and --repeats must be positive"},
      {"bench engine --profile p.yaml --gemm-tokens 2,4", "--gemm-tokens must start at 1"},
      {"bench engine --profile p.yaml --gemm-tokens 1,x", "--gemm-tokens"},
      {"bench engine --profile p.yaml --threads 0", "--threads must be positive"},
      {"bench engine --profile p.yaml --model mixtral-8x7b", "cannot run on the cpu engine"},
      {"bench engine --check-profile /no/such/profile.yaml", "unknown hardware"},
      {"bench engine --check-profile a100-80g --check-batches 0", "--check-batches"},
      {"bench transfer --sizes 1MiB,lots", "--sizes: 'lots' is not a positive byte size"},
      {"bench transfer --pattern zigzag", "--pattern must be contiguous or blocks"},
      {"bench transfer --backend carrier-pigeon", "--backend must be ucx, loopback or nccl"},
      {"bench transfer --window 0", "--window must be in [1, 1024]"},
      {"bench transfer --backend nccl --devices 0,0", "sender and receiver need different GPUs"},
      {"bench transfer --backend nccl --devices one", "--devices takes two CUDA device numbers"},
      {"bench transfer --seconds 0", "--seconds must be positive"},
      {"bench transfer --pattern blocks --block-bytes 8", "--block-bytes must be >= 64"},
      {"bench overhead --requests 2", "--requests >= 10"},
      {"worker --role chef", "--role must be prefill, decode or both"},
      {"worker --model no-such-model", "no-such-model"},
      {"worker --coordinator nowhere", "--coordinator"},
      {"serve --mode sideways", "--mode must be disaggregated, colocated or auto"},
      {"serve --internal-port 70000", "--internal-port must be in [0, 65535]"},
      {"serve --progress-timeout 0", "--progress-timeout must be >= 1 s"},
      {"serve --cluster-secret-file /no/such/secret", "cluster secret file /no/such/secret"},
      {"serve --port 0 --internal-host 10.1.2.3", "a cluster secret is required"},
      {"worker --host 10.1.2.3", "a cluster secret is required"},
      {"worker --cluster-secret-file /no/such/secret", "cluster secret file /no/such/secret"},
      {"worker --inject-faults corrupt-kv=1.5", "corrupt-kv='1.5' is not a probability in [0, 1]"},
      {"worker --inject-faults corrupt-kv", "'corrupt-kv' is not NAME=PROBABILITY"},
      {"worker --inject-faults melt-gpu=0.1", "unknown fault 'melt-gpu'"},
      {"worker --inject-faults corrupt-kv=nan", "is not a probability"},
      {"worker --inject-faults corrupt-spill=2",
       "corrupt-spill='2' is not a probability in [0, 1]"},
      {"worker --inject-faults drop-notice=-0.5", "drop-notice='-0.5' is not a probability"},
      {"worker --inject-faults drop-notice", "'drop-notice' is not NAME=PROBABILITY"},
      {"worker --inject-faults corrupt-kv=0.1,,", "'' is not NAME=PROBABILITY"},
      {"up", "give --prefill N --decode M, or --colocated N"},
      {"up --prefill 1", "needs --prefill and --decode"},
      {"bench serve --url nowhere", "--url"},
      {"bench serve --request-rate fast", "request rate 'fast' must be a positive number or 'inf'"},
      {"bench serve --goodput speed:3", "--goodput takes ttft:MS, tpot:MS or e2el:MS"},
      {"bench serve --percentiles 100", "percentile '100' must be in (0, 100)"},
      {"bench serve --dataset /no/such/file.jsonl", "cannot open workload file"},
      {"bench serve --url http://127.0.0.1:1 --num-prompts 1", "unreachable"},
      {"bench compare --workers 3", "--workers must be even"},
      {"bench compare --workloads x:1", "--workloads takes NAME:INPUT:OUTPUT"},
      {"bench compare --rates 1,-2", "--rates: request rate '-2' must be a positive number"},
  });
}

// The profile and its check on the tiny model with small grids: the file parses back with sane
// fields, plan accepts it, and the check has a row per grid point. Timings are not asserted.
TEST(BenchCli, EngineProfileWritesAHardwareSpecThatPlanAndTheCheckUse) {
  test::TempDir dir;
  const std::string path = dir.path() + "/profile.yaml";
  auto r = test::kvfleet("bench engine --profile " + path +
                         " --model tiny --repeats 1 --gemm-tokens 1,2,8,32 --large-kv-bytes 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, ::testing::HasSubstr("linear layers at 32 tokens per step: "));
  EXPECT_THAT(r.out, ::testing::HasSubstr("wrote " + path));

  auto hw = perfmodel::load_hardware(path);
  ASSERT_TRUE(hw.is_ok()) << hw.status().to_string();
  EXPECT_GT(hw->hbm_bytes, 0);
  EXPECT_GT(hw->hbm_bandwidth, 1e8);
  EXPECT_GT(hw->pcie_bandwidth, 1e8);
  ASSERT_TRUE(hw->flops_for(DType::kFp32).has_value());
  EXPECT_GT(*hw->flops_for(DType::kFp32), 1e8);
  ASSERT_TRUE(hw->calibration.has_value());
  const perfmodel::Calibration& c = *hw->calibration;
  for (double e : {c.weight_read_efficiency, c.kv_read_efficiency, c.prefill_attention_efficiency,
                   c.swap_efficiency}) {
    EXPECT_TRUE(std::isfinite(e) && e > 0) << e;
  }
  for (double s : {c.step_overhead, c.token_overhead, c.attention_call_overhead}) {
    EXPECT_TRUE(std::isfinite(s) && s >= 0 && s < 1) << s;
  }
  ASSERT_EQ(c.gemm_efficiency.size(), 4u);
  const std::int64_t expected_tokens[] = {1, 2, 8, 32};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(c.gemm_efficiency[i].tokens, expected_tokens[i]);
    EXPECT_GT(c.gemm_efficiency[i].efficiency, 0);
  }
  EXPECT_FALSE(c.provenance.cpu.empty());
  EXPECT_EQ(c.provenance.threads, 1);
  EXPECT_EQ(c.provenance.model, "tiny");
  EXPECT_FALSE(c.provenance.date.empty());
  EXPECT_FALSE(c.provenance.kvfleet_version.empty());
  EXPECT_THAT(c.provenance.command, ::testing::HasSubstr("--profile " + path));

  auto plan = test::kvfleet("plan --model tiny --hardware " + path + " --context 1000 --json");
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const auto j = nlohmann::json::parse(plan.out);
  EXPECT_EQ(j["calibrated"], true);
  EXPECT_GT(j["prefill_seconds"].get<double>(), 0);
  EXPECT_GE(j["roofline"]["decode_step"]["overhead_seconds"].get<double>(), 0);
  auto table = test::kvfleet("plan --model tiny --hardware " + path + " --context 1000");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, ::testing::HasSubstr("calibrated step model"));

  auto check = test::kvfleet("bench engine --check-profile " + path +
                             " --model tiny --repeats 1 --check-batches 1,2 --check-contexts "
                             "64,256 --check-prefill 32,96 --chunk-tokens 64 --json");
  ASSERT_EQ(check.exit_code, 0) << check.err;
  const auto rows = nlohmann::json::parse(check.out);
  ASSERT_TRUE(rows.is_array());
  // 2 batches x 2 contexts of decode, 2 one-pass prefills, 96 tokens again in chunks of 64.
  ASSERT_EQ(rows.size(), 7u) << check.out;
  int decode = 0, chunked = 0;
  for (const auto& row : rows) {
    EXPECT_GT(row["predicted_seconds"].get<double>(), 0) << row;
    EXPECT_GT(row["measured_seconds"].get<double>(), 0) << row;
    EXPECT_TRUE(std::isfinite(row["error"].get<double>())) << row;
    if (row["kind"] == "decode") ++decode;
    if (row["kind"] == "prefill" && row["steps"] == 2) ++chunked;
  }
  EXPECT_EQ(decode, 4);
  EXPECT_EQ(chunked, 1);
  auto text = test::kvfleet("bench engine --check-profile " + path +
                            " --model tiny --repeats 1 --check-batches 1 --check-contexts 64 "
                            "--check-prefill 32");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, ::testing::HasSubstr("decode, batch 1, context 64"));
  EXPECT_THAT(text.out, ::testing::HasSubstr("largest |error|"));
}

TEST(BenchCli, LoopbackTransferBenchmarkReportsItsRows) {
  auto r = test::kvfleet("bench transfer --backend loopback --sizes 64KiB --seconds 0.05 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"size_bytes\": 65536"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"ops_per_request\": 1"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"memcpy_gbps\""));
}

// Where the nccl benchmark cannot run (a build without CUDA, fewer than two GPUs), it says which
// and exits with 2: no rows, no hang.
TEST(BenchCli, NcclTransferBenchmarkSaysWhyItCannotRunHere) {
  const int gpus = transfer::device::count();
  if (gpus >= 2) GTEST_SKIP() << gpus << " GPUs: the benchmark runs (next test)";
  auto r = test::kvfleet("bench transfer --backend nccl --sizes 1MiB --seconds 0.05 --json");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.out, "");
  const std::string why = transfer::device::built_with_cuda()
                              ? "needs two CUDA devices (NCCL does not put two ranks of one "
                                "communicator on one GPU); this machine has " +
                                    std::to_string(gpus)
                              : "needs a kvfleet built with CUDA and NCCL";
  EXPECT_THAT(r.err, ::testing::HasSubstr(why));
}

// Two GPUs: every size arrives intact (the receiver's checksum of random bytes), scattered
// blocks go as coalesced ranges, and the cudaMemcpy baselines are there.
TEST(BenchCli, NcclTransferBenchmarkVerifiesEverySizeAndReportsBaselines) {
  const int gpus = transfer::device::count();
  if (gpus < 2) GTEST_SKIP() << "needs two CUDA devices, found " << gpus;
  auto r = test::kvfleet(
      "bench transfer --backend nccl --sizes 64KiB,4MiB --pattern blocks --block-bytes 16KiB "
      "--seconds 0.05 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = nlohmann::json::parse(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  for (const auto& row : rows) {
    EXPECT_TRUE(row.at("verified").get<bool>()) << row.dump();
    EXPECT_GT(row.at("gbps").get<double>(), 0) << row.dump();
    EXPECT_GT(row.at("cuda_memcpy_peer_gbps").get<double>(), 0) << row.dump();
    EXPECT_GT(row.at("cuda_memcpy_d2d_gbps").get<double>(), 0) << row.dump();
    EXPECT_LE(row.at("ops_per_request").get<std::int64_t>(), row.at("blocks").get<std::int64_t>());
  }
}

TEST(BenchCli, AWorkloadFileWithABadLineIsRejectedBeforeAnythingIsSent) {
  test::TempDir dir;
  const std::string path =
      dir.write("w.jsonl", "{\"prompt\": \"hi\", \"output_len\": 2}\n{\"prompt\": 3}\n");
  auto r = test::kvfleet("bench serve --url http://127.0.0.1:1 --dataset " + path);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, ::testing::HasSubstr("w.jsonl:2: 'prompt' must be a non-empty string"));
}

TEST(BenchCli, CompareWritesAReportWithPlotsForBothLayouts) {
  test::TempDir dir;
  auto r = test::kvfleet(
      "bench compare --model tiny --workloads short:48:4 --rates 4,8 --num-prompts 4 --out " +
      dir.path() + "/report");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(dir.path() + "/report/report.md");
  const std::string md((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(md, ::testing::HasSubstr("| colocated | 4 |"));
  EXPECT_THAT(md, ::testing::HasSubstr("| disaggregated | 8 |"));
  EXPECT_THAT(md, ::testing::HasSubstr("Predicted (batch 1, no queueing): prefill"));
  for (const char* plot : {"goodput", "ttft", "itl", "ttft_cdf"}) {
    std::ifstream svg(dir.path() + "/report/short_" + std::string(plot) + ".svg");
    std::string head(5, ' ');
    svg.read(head.data(), 4);
    EXPECT_EQ(head.substr(0, 4), "<svg") << plot;
  }
}

TEST(BenchCli, OverheadBenchmarkComparesDirectAndCoordinatorPaths) {
  auto r = test::kvfleet("bench overhead --requests 10 --load-requests 40 --concurrency 4 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"failures\": 0"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"added_p50_ms\""));
  EXPECT_THAT(r.out, ::testing::HasSubstr("\"coordinator_max_rps_per_core\""));
}

TEST(ClusterCli, ServeAndWorkerRefuseAPortInUseOrABadAddress) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string port = std::to_string(ntohs(a.sin_port));
  for (const std::string& cmd : {"serve --port " + port, "worker --port " + port}) {
    auto r = test::kvfleet(cmd);
    EXPECT_EQ(r.exit_code, 2) << cmd << ": " << r.err;
    EXPECT_THAT(r.err, ::testing::HasSubstr("cannot listen on 127.0.0.1:" + port)) << cmd;
  }
  ::close(fd);
  auto r = test::kvfleet("serve --host 256.0.0.1 --port 1");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, ::testing::HasSubstr("256.0.0.1"));
}

}  // namespace
}  // namespace kvfleet
