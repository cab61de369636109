// The real cluster on `sim` workers: the same coordinator, worker processes, HTTP API and
// metrics as on cpu, with modelled step and hand-off times, labelled as simulated everywhere.
#include <gtest/gtest.h>

#include <future>
#include <random>

#include "perfmodel/hardware.h"
#include "perfmodel/step_model.h"
#include "tests/cluster/cluster_util.h"

namespace kvfleet::test {
namespace {

std::vector<std::int32_t> prompt_of(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> p(n);
  for (auto& t : p) t = static_cast<std::int32_t>(32 + rng() % 95);
  return p;
}

json body(const std::vector<std::int32_t>& prompt, std::int64_t max_tokens,
          const std::string& model) {
  json b;
  b["model"] = model;
  b["prompt"] = prompt;
  b["max_tokens"] = max_tokens;
  b["temperature"] = 0;
  b["ignore_eos"] = true;
  return b;
}

std::vector<std::string> sim_worker(const std::string& role, const std::string& model,
                                    const std::string& hardware) {
  return {"--role", role,         "--backend", "sim",    "--model",
          model,    "--hardware", hardware,    "--link", "nvlink"};
}

TEST(SimCluster, ServesTheOpenAiApiDisaggregatedAndSaysItIsSimulated) {
  Cluster cluster("disaggregated",
                  {sim_worker("prefill", "llama-3-8b", "h100-80g"),
                   sim_worker("decode", "llama-3-8b", "h100-80g")},
                  {"--backend", "sim"});
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<std::future<Completion>> futures;
  std::vector<std::vector<std::int32_t>> prompts;
  for (int i = 0; i < 6; ++i)
    prompts.push_back(
        prompt_of(300 + 50 * static_cast<std::size_t>(i), seed + static_cast<std::uint64_t>(i)));
  for (int i = 0; i < 6; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] {
      return complete(cluster.url(), body(prompts[static_cast<size_t>(i)], 24, "llama-3-8b"),
                      i % 2 == 0);
    }));
  }
  std::vector<Completion> got;
  for (auto& f : futures) got.push_back(f.get());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    ASSERT_EQ(got[i].status, 200) << got[i].error.dump();
    EXPECT_EQ(got[i].tokens.size(), 24u);
    EXPECT_EQ(got[i].finish_reason, "length");
    EXPECT_EQ(got[i].text.size(), 24u) << "sim tokens are printable bytes";
  }
  // Deterministic: the same prompt again (a prefix-cache hit now) gives the same tokens.
  const Completion again = complete(cluster.url(), body(prompts[0], 24, "llama-3-8b"), false);
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(again.tokens, got[0].tokens);

  // Every process labels its series with the backend; the decode worker modelled hand-offs.
  const std::string coord = http(cluster.url(), "GET", "/metrics").body;
  EXPECT_GT(metric_sum(coord, "kvfleet_requests_total", "backend=\"sim\""), 6.5);
  const std::string decode = http(cluster.worker_url(1), "GET", "/metrics").body;
  EXPECT_GE(metric_sum(decode, "kvfleet_kv_transfer_seconds_count", "backend=\"sim\""), 6.0);
  EXPECT_GT(metric_sum(decode, "kvfleet_kv_transfer_bytes_total", "backend=\"sim\""), 0.0);
  const json info = json::parse(http(cluster.worker_url(1), "GET", "/info").body);
  EXPECT_EQ(info["backend"], "sim");
  EXPECT_EQ(info["transfer"], "modelled");
  EXPECT_NE(info["backend_detail"].get<std::string>().find("h100-80g"), std::string::npos);
}

// The coordinator of a sim cluster refuses workers of another backend: modelled and measured
// numbers never mix.
TEST(SimCluster, ACoordinatorForSimRefusesACpuWorker) {
  Cluster cluster("colocated", {sim_worker("both", "tiny", "a100-80g")}, {"--backend", "sim"});
  json reg = json::parse(http(cluster.worker_url(0), "GET", "/info").body);
  reg["worker_id"] = "intruder";
  reg["backend"] = "cpu";
  const net::HttpResponse r = signed_http(cluster.secret(), cluster.internal_url(), "POST",
                                          "/internal/register", reg.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("differs"), std::string::npos) << r.body;
  EXPECT_EQ(json::parse(http(cluster.internal_url(), "GET", "/internal/workers").body).size(), 1u);
}

// In real time, a sim worker's decode steps last what perfmodel predicts: the inter-token
// latency a client sees is the modelled step (Yi-34B on an A100: ~34 ms at 1K context), within
// what the loopback and the machine's load add.
TEST(SimCluster, RealTimeStepsLastWhatTheModelPredicts) {
  Cluster cluster("colocated", {sim_worker("both", "yi-34b-200k", "a100-80g")},
                  {"--backend", "sim"});
  const auto prompt = prompt_of(999, test_seed());
  const Completion c = complete(cluster.url(), body(prompt, 12, "yi-34b-200k"), true);
  ASSERT_EQ(c.status, 200) << c.error.dump();
  ASSERT_EQ(c.tokens.size(), 12u);
  const auto model = perfmodel::StepModel::create(*load_model_spec("yi-34b-200k"),
                                                  *perfmodel::load_hardware("a100-80g"), {});
  ASSERT_TRUE(model.is_ok());
  const std::string m = http(cluster.worker_url(0), "GET", "/metrics").body;
  const double steps = metric_sum(m, "kvfleet_decode_step_seconds_count");
  const double seconds = metric_sum(m, "kvfleet_decode_step_seconds_sum");
  ASSERT_GE(steps, 11.0);
  const double predicted = model->decode(1, 1006).seconds;
  EXPECT_NEAR(seconds / steps, predicted, 0.1 * predicted);
}

}  // namespace
}  // namespace kvfleet::test
