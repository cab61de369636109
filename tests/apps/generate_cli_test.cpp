// `kvfleet generate` end to end: the real binary runs the engine and reports per-request figures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/apps/cli_test_util.h"

namespace kvfleet {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

using test::kvfleet;

json run_json(const std::string& args) {
  auto r = kvfleet("generate " + args + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

TEST(GenerateCli, SwappingUnderATinyBudgetChangesNoToken) {
  const std::string base = "--prompt-tokens 20 --requests 6 --max-tokens 60 --seed 5";
  const json roomy = run_json(base);
  const json tight = run_json(base + " --kv-blocks 12");
  const json recompute = run_json(base + " --kv-blocks 12 --host-kv-bytes 0");
  ASSERT_EQ(roomy["requests"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(tight["requests"][i]["tokens"], roomy["requests"][i]["tokens"]) << i;
    EXPECT_EQ(recompute["requests"][i]["tokens"], roomy["requests"][i]["tokens"]) << i;
    EXPECT_EQ(roomy["requests"][i]["tokens"].size(), 60u);
  }
  EXPECT_EQ(roomy["engine"]["swap_outs"], 0);
  EXPECT_GT(tight["engine"]["swap_outs"].get<int>(), 0);
  EXPECT_EQ(tight["engine"]["swap_outs"], tight["engine"]["swap_ins"]);
  EXPECT_GT(recompute["engine"]["recompute_preemptions"].get<int>(), 0);
  std::int64_t bytes = 0;
  for (const auto& r : tight["requests"]) bytes += r["swap_out_bytes"].get<std::int64_t>();
  EXPECT_GT(bytes, 0);
  EXPECT_TRUE(tight["requests"][0].contains("prefill_seconds"));
}

TEST(GenerateCli, TextPromptAndPlainOutput) {
  auto r = kvfleet("generate --prompt 'Hello, kvfleet' --max-tokens 5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("(length, 5 tokens"));
  // Same prompt, same seed: same tokens every time; another weight seed differs.
  const json a = run_json("--prompt hi --max-tokens 6 --requests 2");
  EXPECT_EQ(a["requests"][0]["tokens"], a["requests"][1]["tokens"]);
  EXPECT_EQ(a["requests"][1]["prefix_hit_tokens"], 0);  // 3 tokens: no full block to share
  const json b = run_json("--prompt hi --max-tokens 6 --seed 9");
  EXPECT_NE(a["requests"][0]["tokens"], b["requests"][0]["tokens"]);
}

TEST(GenerateCli, BadInputGetsAClearErrorAndExitCode2) {
  test::expect_bad_input({
      {"generate --max-tokens 4", "exactly one of --prompt"},
      {"generate --prompt hi --prompt-tokens 5", "exactly one of --prompt"},
      {"generate --prompt-tokens 5000 --max-tokens 4", "does not fit the model's context of 4096"},
      {"generate --prompt-tokens 10 --max-tokens 4 --kv-blocks 0 --block-tokens 0",
       "--block-tokens"},
      {"generate --model gpt-17 --prompt hi", "unknown model 'gpt-17'"},
      {"generate --model mixtral-8x7b --prompt hi", "cannot run on the cpu engine"},
      {"generate --prompt hi --weights /nonexistent/w.safetensors", "/nonexistent/w.safetensors"},
      {"generate --prompt hi --kv-dtype int3", "unknown dtype 'int3'"},
      {"generate --prompt hi --kv-dtype int8", "KV cache dtype must be fp32, fp16 or bf16"},
      {"generate --prompt hi --backend tpu", "unknown engine backend 'tpu' (known: cpu, sim)"},
      {"generate --prompt hi --max-tokens 0", "--max-tokens"},
      {"generate --prompt-tokens 200 --max-tokens 10 --kv-blocks 3", "KV blocks"},
      {"generate --prompt hi --host-kv-bytes lots", "--host-kv-bytes"},
  });
}

}  // namespace
}  // namespace kvfleet
