// Every KV hand-off is verified before its blocks join a sequence: damaged KV never reaches a
// client. Workers inject the damage themselves (--inject-faults corrupt-kv=P): on the prefill
// side the hand-off's checksums stop matching the blocks (a second pull cannot help: the
// decode worker recomputes the prompt); on the decode side the pulled bytes are damaged after
// the pull (a second pull repairs them). Either way the answers are token-identical to a
// single engine's, and the decode worker counts what it caught. The same holds for KV spilled to
// the host store: a worker that damages its spills (--inject-faults corrupt-spill=P) catches each
// damaged block on restore and recomputes its sequence.

#include <gtest/gtest.h>

#include <future>
#include <random>

#include "tests/cluster/cluster_util.h"

namespace kvfleet::test {
namespace {

struct Case {
  std::vector<std::int32_t> prompt;
  std::int64_t max_tokens = 0;
  std::vector<std::int32_t> expect;
};

std::vector<Case> make_cases(std::uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::vector<Case> cases(n);
  for (Case& c : cases) {
    c.prompt = random_prompt(rng, 17 + rng() % 60);  // two to five blocks of 16 tokens
    c.max_tokens = 2 + static_cast<std::int64_t>(rng() % 3);
    c.expect = reference_tokens(c.prompt, c.max_tokens);
  }
  return cases;
}

void run_cases(const std::string& url, const std::vector<Case>& cases) {
  for (size_t i = 0; i < cases.size(); ++i) {
    const Completion c = complete(url, body_for(cases[i].prompt, cases[i].max_tokens), i % 2 == 0);
    ASSERT_EQ(c.status, 200) << "case " << i << ": " << c.error.dump();
    EXPECT_EQ(c.tokens, cases[i].expect) << "case " << i;
  }
}

constexpr size_t kRequests = 100;

TEST(KvIntegrity, DamagedHandoffsAreCaughtAndRecomputedAndAnswersStayExact) {
  const auto seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto cases = make_cases(seed, kRequests);
  Cluster cluster("disaggregated",
                  {{"--role", "prefill", "--kv-blocks", "256", "--inject-faults", "corrupt-kv=0.3"},
                   {"--role", "decode", "--kv-blocks", "256"}});
  run_cases(cluster.url(), cases);

  const std::string prefill = http(cluster.worker_url(0), "GET", "/metrics").body;
  const std::string decode = http(cluster.worker_url(1), "GET", "/metrics").body;
  // The fault hit: P(no damaged hand-off in 100 at 0.3) is 3e-16.
  const double injected = metric_sum(prefill, "kvfleet_errors_total", "type=\"injected_fault\"");
  EXPECT_GT(injected, 0);
  // Each damaged hand-off failed both pulls, and its prompt was recomputed on the decode side.
  EXPECT_EQ(metric_sum(decode, "kvfleet_kv_integrity_failures_total", "stage=\"transfer\""),
            2 * injected);
  EXPECT_EQ(metric_sum(decode, "kvfleet_errors_total", "type=\"kv_import_recomputed\""), injected);
  EXPECT_EQ(metric_sum(decode, "kvfleet_kv_transfer_seconds_count"), kRequests - injected);
  // The clean hand-offs went over shared memory (same machine, UCX's defaults).
  EXPECT_GT(metric_sum(decode, "kvfleet_kv_transfer_bytes_total", "transport=\"shm\""), 0);
  // /info names the peer the decode worker pulled from and what carried its bytes.
  json peers = json::parse(http(cluster.worker_url(1), "GET", "/info").body)["kv_peers"];
  ASSERT_EQ(peers.size(), 1u) << peers.dump();
  EXPECT_EQ(peers[0]["agent"], cluster.worker_id(0));
  EXPECT_EQ(peers[0]["transport"], "shm") << peers.dump();
  // No hand-off is left held: the recomputed ones were released too.
  for (size_t i = 0; i < 2; ++i) {
    json info = json::parse(http(cluster.worker_url(i), "GET", "/info").body);
    EXPECT_EQ(info["load"]["held_blocks"], 0) << "worker " << i;
  }
}

TEST(KvIntegrity, KvDamagedInTransitIsRepairedByASecondPull) {
  const auto seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto cases = make_cases(seed, kRequests);
  Cluster cluster("disaggregated", {{"--role", "prefill", "--kv-blocks", "256"},
                                    {"--role", "decode", "--kv-blocks", "256", "--inject-faults",
                                     "corrupt-kv=0.3"}});
  run_cases(cluster.url(), cases);

  const std::string decode = http(cluster.worker_url(1), "GET", "/metrics").body;
  const double injected = metric_sum(decode, "kvfleet_errors_total", "type=\"injected_fault\"");
  const double caught =
      metric_sum(decode, "kvfleet_kv_integrity_failures_total", "stage=\"transfer\"");
  const double recomputed =
      metric_sum(decode, "kvfleet_errors_total", "type=\"kv_import_recomputed\"");
  EXPECT_GT(injected, 0);
  EXPECT_EQ(caught, injected);  // every damaged pull was caught
  // Recomputed only when both pulls were damaged; the others were repaired by the second pull
  // (P(none repaired in 100 at 0.3) is about 1e-10).
  EXPECT_GT(caught - 2 * recomputed, 0);
  EXPECT_EQ(metric_sum(decode, "kvfleet_kv_transfer_seconds_count"), kRequests - recomputed);
}

// A fraction of hand-off notices is lost (--inject-faults drop-notice=P: the prefill worker
// goes silent on that stream, keep-alives included). The coordinator's progress deadline fails
// each such run over like a frozen worker's, the request runs again, and every answer is exact.
TEST(KvIntegrity, LostHandoffNoticesAreRunAgainAfterTheProgressDeadline) {
  const auto seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  // P(no notice lost in 24 requests at 0.3) is 2e-4.
  const auto cases = make_cases(seed, 24);
  // Mode auto, every prompt disaggregated while the prefill worker is usable: after a lost
  // notice that worker is excluded for the request (and suspect until its next heartbeat), and
  // the request runs whole on the decode worker; in mode disaggregated it would have no route.
  Cluster cluster(
      "auto",
      {{"--role", "prefill", "--kv-blocks", "256", "--inject-faults", "drop-notice=0.3"},
       {"--role", "decode", "--kv-blocks", "256"}},
      {"--auto-local-prefill-tokens", "0", "--progress-timeout", "1"});
  run_cases(cluster.url(), cases);
  const std::string prefill = http(cluster.worker_url(0), "GET", "/metrics").body;
  const std::string coordinator = http(cluster.url(), "GET", "/metrics").body;
  const double dropped = metric_sum(prefill, "kvfleet_errors_total", "type=\"injected_fault\"");
  EXPECT_GT(dropped, 0);
  // Each lost notice ended its run at the deadline, as a failed worker's run.
  EXPECT_EQ(metric_sum(coordinator, "kvfleet_errors_total", "type=\"worker_failure\""), dropped);
  EXPECT_NE(cluster.worker(0).log().find("is dropped"), std::string::npos);
}

// Sixteen concurrent requests that outgrow the worker's device blocks swap out to its host store
// and back; half the spills get a byte damaged after their checksum. Every damaged block read by
// a restore is caught (stage="restore"), its sequence recomputed, and every answer stays exact.
TEST(KvIntegrity, DamagedHostKvIsCaughtOnRestoreAndAnswersStayExact) {
  const auto seed = test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<Case> cases(16);
  for (Case& c : cases) {
    c.prompt = random_prompt(rng, 40);
    c.max_tokens = 40;  // 80 tokens: 5 blocks of 16 each, 80 for all against 24 on the device
    c.expect = reference_tokens(c.prompt, c.max_tokens);
  }
  Cluster cluster("colocated", {{"--role", "both", "--kv-blocks", "24", "--host-kv-bytes", "64MiB",
                                 "--inject-faults", "corrupt-spill=0.5"}});
  std::vector<std::future<Completion>> running;
  for (size_t i = 0; i < cases.size(); ++i) {
    running.push_back(std::async(std::launch::async, [&, i] {
      return complete(cluster.url(), body_for(cases[i].prompt, cases[i].max_tokens), i % 2 == 0);
    }));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const Completion c = running[i].get();
    ASSERT_EQ(c.status, 200) << "case " << i << ": " << c.error.dump();
    EXPECT_EQ(c.tokens, cases[i].expect) << "case " << i;
  }
  const std::string m = http(cluster.worker_url(0), "GET", "/metrics").body;
  EXPECT_GT(metric_sum(m, "kvfleet_preemptions_total"), 0) << "the load must force swaps";
  EXPECT_GT(metric_sum(m, "kvfleet_kv_integrity_failures_total", "stage=\"restore\""), 0)
      << "a damaged spill must have been read back and caught";
  EXPECT_NE(cluster.worker(0).log().find("it will be recomputed"), std::string::npos);
}

}  // namespace
}  // namespace kvfleet::test
