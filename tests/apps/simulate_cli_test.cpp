// `kvfleet simulate` and the sim backend's flags on `worker` / `up`, through the real binary.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/apps/cli_test_util.h"

namespace kvfleet::test {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

TEST(SimulateCli, PaperExampleJsonHasBenchServeKeysAndThePlanFigures) {
  auto r = kvfleet(
      "simulate --model yi-34b-200k --hardware a100-80g --colocated 1 --input-len 49999 "
      "--output-len 250 --num-prompts 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  for (const char* key :
       {"completed", "failed", "request_throughput", "output_throughput", "mean_ttft_ms",
        "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms",
        "input_lens", "output_lens", "ttfts", "itls", "errors", "duration", "total_input_tokens"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["completed"], 1);
  EXPECT_EQ(j["total_input_tokens"], 50000);  // 49,999 bytes + BOS
  EXPECT_NEAR(j["mean_ttft_ms"].get<double>(), 14300, 0.05 * 14300);
  EXPECT_NEAR(j["mean_tpot_ms"].get<double>(), 39.3, 0.05 * 39.3);
  const json& s = j["simulation"];
  EXPECT_EQ(s["backend"], "sim");
  EXPECT_THAT(s["note"].get<std::string>(), HasSubstr("simulated"));
  EXPECT_EQ(s["workers"].size(), 1u);
  EXPECT_GT(s["workers"][0]["utilisation"].get<double>(), 0.99);
  EXPECT_TRUE(s["ttft_phases"].contains("mean_prefill_ms"));
  EXPECT_FALSE(s["concurrency"].empty());
}

TEST(SimulateCli, TableSaysItIsASimulationAndSweepsGiveOneResultPerRate) {
  auto r = kvfleet(
      "simulate --model llama-3-8b --hardware h100-80g --prefill 1 --decode 1 --input-len 512 "
      "--output-len 16 --num-prompts 20 --sweep-rates 1,4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Serving Benchmark Result"));
  EXPECT_THAT(r.out, HasSubstr("Simulation (sim backend: modelled)"));
  EXPECT_THAT(r.out, HasSubstr("kv_transfer"));
  auto j = kvfleet(
      "simulate --model llama-3-8b --hardware h100-80g --prefill 1 --decode 1 --input-len 512 "
      "--output-len 16 --num-prompts 20 --sweep-rates 1,4 --json");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json doc = json::parse(j.out);
  ASSERT_TRUE(doc.is_array());
  EXPECT_EQ(doc.size(), 2u);
}

TEST(SimulateCli, CompareWritesTheReportBenchCompareWrites) {
  TempDir dir;
  auto r = kvfleet(
      "simulate --compare --model llama-3-8b --hardware h100-80g --colocated 2 "
      "--workloads short:256:32,long:4096:8 --sweep-rates 2,8 --num-prompts 30 --out " +
      dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(dir.path() + "/report.md");
  const std::string md((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(md, HasSubstr("**Simulated**"));
  EXPECT_THAT(md, HasSubstr("| colocated | 8 |"));
  EXPECT_THAT(md, HasSubstr("| disaggregated | 8 |"));
  for (const char* f : {"short_goodput.svg", "long_ttft.svg", "long_results.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.path() + "/" + f)) << f;
  }
}

TEST(SimulateCli, BadInputIsAClearErrorWithExitCode2) {
  TempDir dir;
  const std::string profile = dir.write("bad-profile.yaml",
                                        "name: x\nhbm_bytes: 16GiB\nhbm_bandwidth: 10GB/s\n"
                                        "pcie_bandwidth: 5GB/s\nflops: {fp32: 100G}\n"
                                        "calibration: {gemm_efficiency: fast}\n");
  const std::string base = "simulate --model llama-3-8b --colocated 1 --num-prompts 2 ";
  expect_bad_input({
      {base + "--hardware tpu-v9", "unknown hardware 'tpu-v9'"},
      {base + "--hardware h100-80g --link carrier-pigeon", "carrier-pigeon"},
      {"simulate --model gpt-9 --colocated 1", "gpt-9"},
      {base + "--hardware " + profile, "calibration"},
      {"simulate --model llama-3-70b --hardware a100-80g --colocated 1", "fits with tp >= 2"},
      {"simulate --model yi-34b-200k --hardware a100-80g --tp 3 --colocated 1", "tp 3"},
      {"simulate --model llama-3-8b --hardware h100-80g", "needs workers"},
      {base + "--hardware h100-80g --request-rate -1", "request rate"},
      {base + "--hardware h100-80g --compare", "--sweep-rates"},
      {"worker --backend sim --model llama-3-8b --time-scale 0", "time scale"},
      {"worker --backend sim --model llama-3-8b --hardware tpu-v9", "tpu-v9"},
      {"worker --backend sim --model llama-3-70b --hardware a100-80g", "fits with tp >= 2"},
      {"worker --backend quantum", "unknown engine backend 'quantum' (known: cpu, sim)"},
      {"up --backend sim --colocated 1 --time-scale -1", "--time-scale"},
      {"up --backend tpu --colocated 1", "--backend"},
  });
}

}  // namespace
}  // namespace kvfleet::test
