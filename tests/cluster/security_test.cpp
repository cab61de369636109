// The attacks of a user who reaches the cluster's ports, each as a test that now does no harm:
// internal calls without the cluster secret, registrations that would hijack requests or change a
// model for everyone, forged KV descriptors, and listeners outside loopback.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <set>

#include "common/internal_api.h"
#include "tests/cluster/cluster_util.h"
#include "transfer/transfer.h"

namespace kvfleet::test {
namespace {

namespace api = internal_api;

void expect_status(const net::HttpResponse& r, int status, const std::string& needle) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_NE(r.body.find(needle), std::string::npos) << r.body;
}

// Answers are what one engine alone computes: nothing an attacker did reached them.
void expect_served_correctly(const Cluster& c, std::mt19937_64& rng, const std::string& when) {
  const auto prompt = random_prompt(rng, 20);
  Completion got = complete(c.url(), body_for(prompt, 6), false);
  ASSERT_EQ(got.status, 200) << when << ": " << got.error.dump();
  EXPECT_EQ(got.tokens, reference_tokens(prompt, 6)) << when;
}

TEST(Security, InternalCallsWithoutTheClusterSecretAreRefused) {
  const auto seed = test_seed();
  std::mt19937_64 rng(seed);
  Cluster c("colocated", {{"--role", "both"}});
  const std::string internal = c.internal_url();
  json reg = json::parse(http(c.worker_url(0), "GET", "/info").body);
  json fake = reg;
  fake["worker_id"] = "fake";
  fake["url"] = "http://127.0.0.1:1";
  fake["load"]["free_blocks"] = 1 << 20;  // an attractive load
  const ClusterSecret other = ClusterSecret::generate();
  // Unsigned, and signed with another secret: 401, nothing registered.
  expect_status(http(internal, "POST", "/internal/register", fake.dump()), 401, "not signed");
  expect_status(signed_http(other, internal, "POST", "/internal/register", fake.dump()), 401,
                "bad signature");
  // Re-registering under the live worker's id, a heartbeat, a deregistration loop: all refused.
  json steal = reg;
  steal["url"] = "http://127.0.0.1:1";
  expect_status(http(internal, "POST", "/internal/register", steal.dump()), 401, "not signed");
  const std::string beat = json{{"worker_id", c.worker_id(0)}, {"free_blocks", 5}}.dump();
  expect_status(http(internal, "POST", "/internal/heartbeat", beat), 401, "not signed");
  for (int i = 0; i < 20; ++i) {
    const std::string dereg = json{{"worker_id", c.worker_id(0)}}.dump();
    expect_status(http(internal, "POST", "/internal/deregister", dereg), 401, "not signed");
  }
  // A valid signature from outside the replay window (a replayed message).
  net::HttpRequest old;
  old.method = "POST";
  old.target = "/internal/deregister";
  const std::string dereg = json{{"worker_id", c.worker_id(0)}}.dump();
  const std::int64_t t = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count() -
                         600'000;
  const std::string text =
      "kvfleet-request-v1\nPOST\n/internal/deregister\n" + std::to_string(t) + "\n" + dereg;
  auto replay = net::http_call_sync(
      endpoint(internal), "POST", "/internal/deregister", dereg, {},
      {net::Header{"X-Kvfleet-Auth", "t=" + std::to_string(t) + ",mac=" + c.secret().mac(text)}});
  ASSERT_TRUE(replay.is_ok());
  expect_status(*replay, 401, "away from this host's clock");
  // The worker's own internal routes too.
  json gen = {{"tokens", {1, 2, 3}}, {"params", {{"max_tokens", 2}}}};
  expect_status(http(c.worker_url(0), "POST", "/internal/generate", gen.dump()), 401, "not signed");
  expect_status(http(c.worker_url(0), "POST", "/internal/release", R"({"lease": "x"})"), 401,
                "not signed");
  // Still one worker, the real one, serving right answers.
  json workers = json::parse(http(internal, "GET", "/internal/workers").body);
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0]["url"], c.worker_url(0));
  expect_served_correctly(c, rng, "after the refused calls (seed " + std::to_string(seed) + ")");
  const std::string metrics = http(c.url(), "GET", "/metrics").body;
  EXPECT_GE(metric_sum(metrics, "kvfleet_errors_total", "type=\"unauthenticated\""), 25);
}

TEST(Security, ARegistrationCannotChangeAModelForEveryoneOrTakeALiveWorkersId) {
  const auto seed = test_seed();
  std::mt19937_64 rng(seed);
  Cluster c("colocated", {{"--role", "both"}});
  const ClusterSecret& key = c.secret();
  const std::string internal = c.internal_url();
  json reg = json::parse(http(c.worker_url(0), "GET", "/info").body);
  auto refused = [&](json r, const std::string& needle) {
    r["worker_id"] = "newcomer";
    r["url"] = "http://127.0.0.1:1";
    expect_status(signed_http(key, internal, "POST", "/internal/register", r.dump()), 409, needle);
  };
  json eos = reg;
  eos["eos_token_id"] = 7;
  refused(eos, "eos_token_id");
  json bos = reg;
  bos["bos_token_id"] = 9;
  refused(bos, "bos_token_id");
  json vocab = reg;
  vocab["vocab_size"] = 300;
  refused(vocab, "vocab_size");
  json context = reg;
  context["max_model_len"] = 8;
  refused(context, "max_model_len");
  // A tokenizer the coordinator does not have for a built-in model (its byte tokenizer).
  json tokenizer = reg;
  tokenizer["tokenizer_id"] = "0123456789abcdef";
  refused(tokenizer, "served from a Hugging Face folder");
  // The live worker's id from another address.
  json steal = reg;
  steal["url"] = "http://127.0.0.1:1";
  expect_status(signed_http(key, internal, "POST", "/internal/register", steal.dump()), 409,
                "belongs to a live worker");
  // A matching registration of a new worker is fine (and is removed again).
  json ok = reg;
  ok["worker_id"] = "twin";
  ok["url"] = "http://127.0.0.1:1";
  EXPECT_EQ(signed_http(key, internal, "POST", "/internal/register", ok.dump()).status, 200);
  EXPECT_EQ(
      signed_http(key, internal, "POST", "/internal/deregister", R"({"worker_id":"twin"})").status,
      200);
  json models = json::parse(http(c.url(), "GET", "/v1/models").body);
  EXPECT_EQ(models["data"][0]["max_model_len"], reg["max_model_len"]);
  expect_served_correctly(c, rng,
                          "after the refused registrations (seed " + std::to_string(seed) + ")");
  EXPECT_NE(c.coordinator().log().find("refused the registration"), std::string::npos);
}

// Acting as the coordinator (holding the secret), takes a real hand-off from the prefill worker,
// then sends the decode worker altered copies of it.
TEST(Security, ForgedOrOutOfRegionKvDescriptorsAreRefusedAndThePrefillWorkerStaysUp) {
  const auto seed = test_seed();
  std::mt19937_64 rng(seed);
  Cluster c("disaggregated", {{"--role", "prefill"}, {"--role", "decode"}});
  const ClusterSecret& key = c.secret();
  const auto prompt = random_prompt(rng, 40);
  api::GenerateRequest pre;
  pre.tokens = prompt;
  pre.mode = "prefill";
  pre.params.max_tokens = 8;
  pre.params.ignore_eos = true;
  std::optional<api::KvHandoff> kv;
  std::int32_t first = -1;
  {
    boost::asio::io_context io;
    int status = 0;
    boost::asio::co_spawn(
        io,
        [&]() -> net::Task<void> {
          net::LineHandler h = [&](std::string_view line) -> net::Task<bool> {
            auto j = api::parse_object(line, "line");
            if (j.is_ok() && j->contains("token")) first = (*j)["token"].get<std::int32_t>();
            if (j.is_ok() && j->contains("finish")) {
              auto f = api::decode_FinishLine(*j);
              if (f.is_ok()) kv = f->kv;
            }
            co_return true;
          };
          auto r = co_await net::signed_stream_lines(&key, endpoint(c.worker_url(0)), "POST",
                                                     "/internal/generate", api::encode(pre), h);
          status = r.is_ok() ? *r : -1;
        },
        boost::asio::detached);
    io.run();
    ASSERT_EQ(status, 200);
  }
  ASSERT_TRUE(kv.has_value());
  ASSERT_GE(first, 0);
  EXPECT_EQ(kv->lease.size(), 32u);  // 128 random bits
  EXPECT_EQ(kv->lease.find(c.worker_id(0)), std::string::npos);
  auto decode = [&](const api::KvHandoff& h) {
    api::GenerateRequest d;
    d.tokens = prompt;
    d.tokens.push_back(first);
    d.prompt_len = static_cast<std::int64_t>(prompt.size());
    d.mode = "decode";
    d.params.max_tokens = 8;
    d.params.ignore_eos = true;
    d.kv = h;
    return signed_http(key, c.worker_url(1), "POST", "/internal/generate", api::encode(d));
  };
  auto region = transfer::RemoteRegion::parse(kv->region);
  ASSERT_TRUE(region.is_ok());
  // 1. The address moved past the region, its unkeyed check recomputed: the MAC fails.
  api::KvHandoff moved = *kv;
  transfer::RemoteRegion r = *region;
  r.addr += 98304;
  moved.region = r.serialize();
  expect_status(decode(moved), 400, "signature does not match");
  // 2. An unmapped address, likewise.
  api::KvHandoff wild = *kv;
  r = *region;
  r.addr = 0x10;
  wild.region = r.serialize();
  expect_status(decode(wild), 400, "signature does not match");
  // 3. No MAC at all.
  api::KvHandoff bare = *kv;
  bare.mac.clear();
  expect_status(decode(bare), 400, "not signed");
  // 4. Signed (a bug that signs anything), but a block beyond the region: refused before reading.
  api::KvHandoff outside = *kv;
  outside.blocks.back() = static_cast<std::int32_t>(region->length / kv->block_bytes);
  outside.sign(key);
  expect_status(decode(outside), 400, "outside the described region");
  // The prefill worker is alive, and the genuine hand-off still works.
  EXPECT_EQ(http(c.worker_url(0), "GET", "/health").status, 200);
  net::HttpResponse real = decode(*kv);
  EXPECT_EQ(real.status, 200) << real.body;
  std::vector<std::int32_t> tokens = {first};
  std::istringstream lines(real.body);
  for (std::string line; std::getline(lines, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("token")) tokens.push_back(j["token"].get<std::int32_t>());
  }
  EXPECT_EQ(tokens, reference_tokens(prompt, 8)) << "seed " << seed;
  expect_served_correctly(c, rng,
                          "after the forged descriptors (seed " + std::to_string(seed) + ")");
}

// Every listener of a `kvfleet up` cluster (HTTP and UCX) is on loopback.
TEST(Security, AnUpClusterListensOnLoopbackOnly) {
  TempDir dir;
  Process up({"up", "--model", "tiny", "--prefill", "1", "--decode", "1", "--port", "0"},
             dir.path() + "/up.log");
  const std::string url = up.wait_line("ready at", std::chrono::seconds(120));
  ASSERT_FALSE(url.empty()) << up.log();
  // The cluster's processes: `up` and its children.
  std::set<std::string> pids = {std::to_string(up.pid())};
  {
    std::ifstream children("/proc/" + std::to_string(up.pid()) + "/task/" +
                           std::to_string(up.pid()) + "/children");
    for (std::string p; children >> p;) pids.insert(p);
  }
  ASSERT_EQ(pids.size(), 4u);  // up, coordinator, two workers
  FILE* ss = ::popen("ss -Hltnp 2>/dev/null", "r");
  ASSERT_NE(ss, nullptr);
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, ss)) out += buf;
  ::pclose(ss);
  int ours = 0;
  std::set<std::string> with_listeners;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::string owner;
    for (const std::string& p : pids) {
      if (line.find("pid=" + p + ",") != std::string::npos) owner = p;
    }
    if (owner.empty()) continue;
    ++ours;
    with_listeners.insert(owner);
    std::istringstream f(line);
    std::string state, recvq, sendq, local;
    f >> state >> recvq >> sendq >> local;
    const bool loopback = local.rfind("127.", 0) == 0 || local.rfind("[::1]", 0) == 0 ||
                          local.rfind("[::ffff:127.", 0) == 0;
    EXPECT_TRUE(loopback) << "listener outside loopback: " << line;
  }
  // The check saw the coordinator's two listeners and each worker's.
  EXPECT_GE(ours, 4) << out;
  EXPECT_EQ(with_listeners.size(), 3u) << out;
  up.kill(SIGTERM);
  EXPECT_EQ(up.wait(std::chrono::seconds(60)), 0) << up.log();
}

}  // namespace
}  // namespace kvfleet::test
