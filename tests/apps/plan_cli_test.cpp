// `kvfleet plan` end to end: the real binary, its table, its JSON, its config files and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "perfmodel/estimate.h"
#include "perfmodel/report.h"
#include "tests/apps/cli_test_util.h"

namespace kvfleet {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

using test::kvfleet;

constexpr const char* kExample = "plan --model yi-34b-200k --hardware a100-80g";

TEST(PlanCli, PrintsTheRunningExampleTableWithTheBaseline) {
  auto r = kvfleet(std::string(kExample) + " --sweep context=4000,50000,100000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("yi-34b-200k on a100-80g"));
  EXPECT_THAT(r.out, HasSubstr("4K (base)"));
  EXPECT_THAT(r.out, HasSubstr("100K"));
  EXPECT_THAT(r.out, HasSubstr("14.3 s (x16.1)"));  // 50K prefill against the 4K baseline
  EXPECT_THAT(r.out, HasSubstr("Max concurrency"));
  EXPECT_THAT(r.out, HasSubstr("fits with tp >= 2"));  // 100K does not fit on one A100
}

TEST(PlanCli, SingleContextGetsThe4KBaselineBesideIt) {
  auto r = kvfleet(std::string(kExample) + " --context 50K");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("4K (base)"));
  EXPECT_THAT(r.out, HasSubstr("50K"));
}

TEST(PlanCli, JsonMatchesTheLibraryAndHasTheDocumentedKeys) {
  auto r = kvfleet(std::string(kExample) + " --context 50000 --decode-tokens 250 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_TRUE(j.is_object());
  for (const char* key :
       {"kv_bytes_per_token", "kv_bytes_per_request", "weight_bytes", "weight_bytes_per_device",
        "max_concurrency", "prefill_seconds", "decode_seconds_per_token", "decode_seconds",
        "context_switch_seconds", "sessions_per_second", "bottleneck", "warnings"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["bottleneck"]["concurrency"], "hbm_capacity");
  EXPECT_EQ(j["bottleneck"]["prefill"], "compute");
  EXPECT_EQ(j["bottleneck"]["decode"], "hbm_bandwidth");
  EXPECT_EQ(j["bottleneck"]["context_switch"], "pcie_bandwidth");

  auto expected =
      perfmodel::estimate(*load_model_spec("yi-34b-200k"), *perfmodel::load_hardware("a100-80g"),
                          perfmodel::Deployment{}, perfmodel::Workload{50000, 250, 1});
  ASSERT_TRUE(expected.is_ok());
  EXPECT_EQ(j, json::parse(perfmodel::estimate_to_json(*expected).dump()));
}

TEST(PlanCli, SweepsGiveAJsonList) {
  auto r = kvfleet(std::string(kExample) + " --sweep context=4K,50K,100K --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[1]["context_tokens"], 50000);
  EXPECT_EQ(j[1]["max_concurrency"], 1);
  EXPECT_EQ(j[2]["max_concurrency"], 0);
  EXPECT_TRUE(j[2]["concurrency_limit"].is_string());

  auto tp = kvfleet(std::string(kExample) + " --context 100000 --sweep tp=1,2,4,8 --json");
  ASSERT_EQ(tp.exit_code, 0) << tp.err;
  json t = json::parse(tp.out);
  ASSERT_EQ(t.size(), 4u);
  for (size_t i = 1; i < t.size(); ++i) {
    EXPECT_GT(t[i]["max_concurrency"].get<int>(), t[i - 1]["max_concurrency"].get<int>());
  }
  auto table = kvfleet(std::string(kExample) + " --context 8000 --sweep batch=1,8");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("batch 8"));
}

TEST(PlanCli, OptionsReachTheModel) {
  auto r = kvfleet(std::string(kExample) +
                   " --context 50000 --kv-dtype fp8 --compress layer=0.5,token=1/2 --tp 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["kv_bytes_per_token"].get<double>(), 245760.0 / 2 / 4);
  EXPECT_EQ(j["tp"], 2);
  EXPECT_EQ(j["kv_dtype"], "fp8");
  EXPECT_EQ(j["compression"]["token"], 0.5);
}

TEST(PlanCli, ConfigFileGivesTheSameKeysAndFlagsOverrideIt) {
  test::TempDir dir;
  const std::string cfg = dir.write("plan.yaml",
                                    "model: yi-34b-200k\n"
                                    "hardware: a100-80g\n"
                                    "context: 50000\n"
                                    "decode_tokens: 100\n"
                                    "compress: {layer: 0.5}\n"
                                    "json: true\n");
  auto r = kvfleet("plan --config " + cfg);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["context_tokens"], 50000);
  EXPECT_EQ(j["decode_tokens"], 100);
  EXPECT_EQ(j["compression"]["layer"], 0.5);

  auto over = kvfleet("plan --context 4000 --config=" + cfg);
  ASSERT_EQ(over.exit_code, 0) << over.err;
  EXPECT_EQ(json::parse(over.out)["context_tokens"], 4000);

  const std::string bad = dir.write("bad.yaml", "model: yi-34b-200k\ncontex: 5\n");
  auto b = kvfleet("plan --config " + bad);
  EXPECT_EQ(b.exit_code, 2);
  EXPECT_THAT(b.err, HasSubstr("unknown key 'contex'"));
  auto missing = kvfleet("plan --config " + dir.path() + "/none.yaml");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("none.yaml"));
}

TEST(PlanCli, ModelsFromConfigJsonFiles) {
  test::TempDir dir;
  const std::string good =
      dir.write("config.json",
                R"({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
          "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000})");
  auto r = kvfleet("plan --model " + good + " --hardware a100-40g --context 2000 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["kv_bytes_per_token"].get<double>(), 2.0 * 32 * 4096 * 2);

  const std::string bad =
      dir.write("bad.json", R"({"model_type": "llama", "intermediate_size": 11008,
                      "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000})");
  auto b = kvfleet("plan --model " + bad + " --hardware a100-40g --context 2000");
  EXPECT_EQ(b.exit_code, 2);
  EXPECT_THAT(b.err, HasSubstr("required field 'hidden_size' is missing"));
  EXPECT_THAT(b.err, HasSubstr("bad.json"));
}

TEST(PlanCli, BadInputGetsAClearErrorAndExitCode2) {
  test::expect_bad_input({
      {"plan --model gpt-17 --hardware a100-80g --context 4000", "unknown model 'gpt-17'"},
      {"plan --model gpt-17 --hardware a100-80g --context 4000", "llama-3-8b"},
      {"plan --model yi-34b-200k --hardware tpu --context 4000", "unknown hardware 'tpu'"},
      {"plan --model yi-34b-200k --hardware tpu --context 4000", "h200"},
      {std::string(kExample) + " --context 0", "--context: '0' must be a positive whole number"},
      {std::string(kExample) + " --context -7", "must be a positive whole number"},
      {std::string(kExample) + " --context lots", "--context"},
      {std::string(kExample), "--context is required"},
      {"plan --hardware a100-80g --context 4000", "--model is required"},
      {std::string(kExample) + " --context 4000 --tp 3", "tp 3 must divide"},
      {std::string(kExample) + " --context 4000 --kv-dtype fp9", "--kv-dtype: unknown dtype"},
      {std::string(kExample) + " --context 4000 --compress layer=2", "in (0, 1]"},
      {std::string(kExample) + " --sweep depth=1,2", "unknown key 'depth'"},
      {std::string(kExample) + " --sweep context=4000,x", "--sweep context"},
      {std::string(kExample) + " --context 4000 --decode-tokens 2.5", "--decode-tokens"},
      {std::string(kExample) + " --context 4000 --hbm-utilization 0", "hbm utilization"},
      {std::string(kExample) + " --context 4000 --frobnicate", "frobnicate"},
      {"", "A subcommand is required"},
      {"fly", "fly"},
  });
}

TEST(PlanCli, AModelThatDoesNotFitIsReportedNotACrash) {
  auto r = kvfleet("plan --model llama-3.1-405b --hardware a100-80g --context 4000");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("zero concurrency: weights need"));
  EXPECT_THAT(r.out, HasSubstr("fits with tp >= 16"));
}

TEST(PlanCli, ListsAndHelp) {
  auto models = kvfleet("plan --list-models");
  ASSERT_EQ(models.exit_code, 0);
  EXPECT_THAT(models.out, HasSubstr("yi-34b-200k"));
  EXPECT_THAT(models.out, HasSubstr("mixtral-8x7b"));
  auto hw = kvfleet("plan --list-hardware");
  EXPECT_THAT(hw.out, HasSubstr("a100-80g"));
  auto help = kvfleet("plan --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--compress"));
  auto version = kvfleet("--version");
  EXPECT_EQ(version.exit_code, 0);
}

}  // namespace
}  // namespace kvfleet
