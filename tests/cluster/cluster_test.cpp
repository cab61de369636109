// End-to-end tests of the cluster: real coordinator and worker processes on loopback, KV over
// UCX, compared against one in-process engine.
#include <gtest/gtest.h>

#include <future>
#include <random>
#include <thread>

#include "tests/cluster/cluster_util.h"

namespace kvfleet::test {
namespace {

struct Case {
  std::vector<std::int32_t> prompt;
  std::int64_t max_tokens = 0;
  std::vector<std::int32_t> want;
};

std::vector<Case> make_cases(std::uint64_t seed, int n, size_t min_len, size_t max_len,
                             std::int64_t min_new, std::int64_t max_new) {
  std::mt19937_64 rng(seed);
  std::vector<Case> cases;
  for (int i = 0; i < n; ++i) {
    Case c;
    c.prompt.resize(min_len + rng() % (max_len - min_len + 1));
    for (auto& t : c.prompt) t = static_cast<std::int32_t>(rng() % 256);
    c.max_tokens = min_new + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(max_new - min_new + 1));
    c.want = reference_tokens(c.prompt, c.max_tokens);
    cases.push_back(std::move(c));
  }
  return cases;
}

json request_body(const Case& c) {
  json b;
  b["model"] = "tiny";
  b["prompt"] = c.prompt;
  b["max_tokens"] = c.max_tokens;
  b["temperature"] = 0;
  b["ignore_eos"] = true;
  return b;
}

// Sends every case at once (half streamed), checks tokens and the response shape.
void run_cases(const std::string& url, const std::vector<Case>& cases, bool stream_even) {
  std::vector<std::future<Completion>> futures;
  for (size_t i = 0; i < cases.size(); ++i) {
    const bool stream = (i % 2 == 0) == stream_even;
    futures.push_back(std::async(std::launch::async, [&, i, stream] {
      return complete(url, request_body(cases[i]), stream);
    }));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const bool stream = (i % 2 == 0) == stream_even;
    Completion c = futures[i].get();
    SCOPED_TRACE("case " + std::to_string(i) + (stream ? " (streamed)" : ""));
    ASSERT_EQ(c.status, 200) << c.error.dump();
    EXPECT_EQ(c.tokens, cases[i].want);
    EXPECT_EQ(c.finish_reason, "length");
    EXPECT_EQ(c.usage["completion_tokens"].get<std::int64_t>(), cases[i].max_tokens);
    EXPECT_EQ(c.usage["prompt_tokens"].get<std::size_t>(), cases[i].prompt.size());
    if (stream) {
      // One event per token, the finishing chunk, the usage chunk; then [DONE].
      EXPECT_EQ(c.events, cases[i].max_tokens + 2);
      EXPECT_TRUE(c.done_marker);
    }
  }
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override { seed_ = test_seed(); }
  std::uint64_t seed_ = 0;
};

TEST_F(ClusterTest, ColocatedAndDisaggregatedClustersGiveSingleEngineTokens) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto cases = make_cases(seed_, 6, 5, 300, 4, 24);
  std::int64_t sent_tokens = 0, prompt_tokens = 0;
  for (const Case& c : cases) {
    sent_tokens += 2 * c.max_tokens;
    prompt_tokens += 2 * static_cast<std::int64_t>(c.prompt.size());
  }
  {
    Cluster colocated("colocated", {{"--role", "both", "--kv-blocks", "256"}});
    run_cases(colocated.url(), cases, true);
    run_cases(colocated.url(), cases, false);
  }
  Cluster disagg("disaggregated", {{"--role", "prefill", "--kv-blocks", "256"},
                                   {"--role", "decode", "--kv-blocks", "256"}});
  run_cases(disagg.url(), cases, true);
  run_cases(disagg.url(), cases, false);

  // Metrics agree with what was sent.
  const std::string coord = http(disagg.url(), "GET", "/metrics").body;
  EXPECT_EQ(metric_sum(coord, "kvfleet_requests_total"), 2.0 * cases.size());
  EXPECT_EQ(metric_sum(coord, "kvfleet_requests_total", "finish_reason=\"length\""), 2.0 * cases.size());
  EXPECT_EQ(metric_sum(coord, "kvfleet_generation_tokens_total"), static_cast<double>(sent_tokens));
  EXPECT_EQ(metric_sum(coord, "kvfleet_prompt_tokens_total"), static_cast<double>(prompt_tokens));
  EXPECT_EQ(metric_sum(coord, "kvfleet_time_to_first_token_seconds_count"), 2.0 * cases.size());
  EXPECT_EQ(metric_sum(coord, "kvfleet_ttft_phase_seconds_count", "phase=\"kv_transfer\""),
            2.0 * cases.size());
  const std::string prefill = http(disagg.worker_url(0), "GET", "/metrics").body;
  const std::string decode = http(disagg.worker_url(1), "GET", "/metrics").body;
  EXPECT_EQ(metric_sum(prefill, "kvfleet_requests_total"), 2.0 * cases.size());
  EXPECT_EQ(metric_sum(prefill, "kvfleet_prompt_tokens_total"), static_cast<double>(prompt_tokens));
  EXPECT_EQ(metric_sum(decode, "kvfleet_generation_tokens_total"),
            static_cast<double>(sent_tokens) - 2.0 * cases.size());  // the prefill made the first
  EXPECT_GT(metric_sum(decode, "kvfleet_kv_transfer_bytes_total"), 0);
  EXPECT_EQ(metric_sum(decode, "kvfleet_kv_transfer_seconds_count"), 2.0 * cases.size());
  EXPECT_GT(metric_sum(decode, "kvfleet_decode_step_seconds_count"), 0);
  for (const std::string* text : {&coord, &prefill, &decode}) {
    TempDir dir;
    const std::string path = dir.write("metrics.txt", *text);
    const auto r = run_command("promtool check metrics < " + path);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  // Nothing is left held or used once every request finished.
  for (size_t i = 0; i < 2; ++i) {
    json info = json::parse(http(disagg.worker_url(i), "GET", "/info").body);
    EXPECT_EQ(info["load"]["held_blocks"], 0) << "worker " << i;
    EXPECT_EQ(info["load"]["running"], 0) << "worker " << i;
  }
}

TEST_F(ClusterTest, TextPromptMatchesKvfleetGenerate) {
  const std::string prompt = "The KV cache of a 100K-token context";
  const auto gen = run_command(std::string(KVFLEET_BINARY) + " generate --model tiny --max-tokens 10 --json --prompt '" + prompt + "'");
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  const auto want = json::parse(gen.out)["requests"][0]["tokens"].get<std::vector<std::int32_t>>();
  Cluster disagg("disaggregated", {{"--role", "prefill"}, {"--role", "decode"}});
  json body;
  body["model"] = "tiny";
  body["prompt"] = prompt;
  body["max_tokens"] = 10;
  body["temperature"] = 0;
  body["ignore_eos"] = true;
  for (bool stream : {false, true}) {
    Completion c = complete(disagg.url(), body, stream);
    ASSERT_EQ(c.status, 200) << c.error.dump();
    EXPECT_EQ(c.tokens, want) << (stream ? "streamed" : "whole");
  }
  json chat;
  chat["model"] = "tiny";
  chat["messages"] = json::array({{{"role", "user"}, {"content", "hello"}}});
  chat["max_tokens"] = 5;
  chat["temperature"] = 0;
  chat["ignore_eos"] = true;
  Completion whole = complete(disagg.url(), chat, false, true);
  Completion streamed = complete(disagg.url(), chat, true, true);
  ASSERT_EQ(whole.status, 200) << whole.error.dump();
  EXPECT_EQ(whole.tokens.size(), 5u);
  EXPECT_EQ(whole.tokens, streamed.tokens);
  EXPECT_EQ(whole.text, streamed.text);
}

TEST_F(ClusterTest, DecodeWorkerSwapsUnderASmallKvBudgetWithoutChangingTokens) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto cases = make_cases(seed_, 6, 50, 70, 40, 60);
  // 16 blocks of 16 tokens hold two of these requests; six arrive at once.
  Cluster disagg("disaggregated",
                 {{"--role", "prefill", "--kv-blocks", "256"},
                  {"--role", "decode", "--kv-blocks", "16", "--host-kv-bytes", "64MiB",
                   "--max-batch-tokens", "64"}});
  run_cases(disagg.url(), cases, true);
  const std::string decode = http(disagg.worker_url(1), "GET", "/metrics").body;
  EXPECT_GT(metric_sum(decode, "kvfleet_kv_swap_bytes_total", "direction=\"out\""), 0) << decode;
  EXPECT_GT(metric_sum(decode, "kvfleet_kv_swap_seconds_count", "direction=\"in\""), 0);
}

TEST_F(ClusterTest, AutoModePrefillsShortPromptsOnTheDecodeWorkerAndDisaggregatesLongOnes) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  Cluster c("auto", {{"--role", "prefill", "--kv-blocks", "256"}, {"--role", "decode", "--kv-blocks", "256"}},
            {"--auto-local-prefill-tokens", "64"});
  const auto shorts = make_cases(seed_, 3, 10, 40, 6, 6);
  run_cases(c.url(), shorts, true);
  const std::string prefill_after_short = http(c.worker_url(0), "GET", "/metrics").body;
  const std::string decode_after_short = http(c.worker_url(1), "GET", "/metrics").body;
  EXPECT_EQ(metric_sum(prefill_after_short, "kvfleet_requests_total"), 0);  // never used
  EXPECT_EQ(metric_sum(decode_after_short, "kvfleet_kv_transfer_seconds_count"), 0);
  double short_prompt_tokens = 0;
  for (const Case& k : shorts) short_prompt_tokens += static_cast<double>(k.prompt.size());
  EXPECT_EQ(metric_sum(decode_after_short, "kvfleet_prompt_tokens_total"), short_prompt_tokens);
  const auto longs = make_cases(seed_ + 1, 2, 200, 300, 6, 6);
  run_cases(c.url(), longs, false);
  const std::string prefill = http(c.worker_url(0), "GET", "/metrics").body;
  const std::string decode = http(c.worker_url(1), "GET", "/metrics").body;
  EXPECT_EQ(metric_sum(prefill, "kvfleet_requests_total"), 2.0);
  EXPECT_EQ(metric_sum(decode, "kvfleet_kv_transfer_seconds_count"), 2.0);
}

TEST_F(ClusterTest, CoordinatorDrainsInFlightStreamsOnSigterm) {
  Cluster c("colocated", {{"--role", "both"}});
  const auto cases = make_cases(seed_, 1, 20, 20, 400, 400);
  json b = request_body(cases[0]);
  b["stream"] = true;
  b["return_token_ids"] = true;
  std::vector<std::int32_t> tokens;
  bool signalled = false, done = false;
  const int status = http_stream(c.url(), "/v1/completions", b.dump(), [&](const std::string& line) {
    if (line == "data: [DONE]") done = true;
    if (line.rfind("data: {", 0) != 0) return true;
    json j = json::parse(line.substr(6));
    for (const auto& t : j["choices"][0]["token_ids"]) tokens.push_back(t.get<std::int32_t>());
    if (tokens.size() == 3 && !signalled) {
      signalled = true;
      c.coordinator().kill(SIGTERM);
    }
    return true;
  });
  EXPECT_EQ(status, 200);
  EXPECT_TRUE(signalled);
  EXPECT_TRUE(done);
  EXPECT_EQ(tokens, cases[0].want);  // the request in flight finished whole
  EXPECT_EQ(c.coordinator().wait(std::chrono::seconds(30)), 0);
}

}  // namespace
}  // namespace kvfleet::test
