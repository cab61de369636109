// The coordinator's policies as pure functions of synthetic state: admission (admission.h),
// routing (router.h) and the per-worker request accounting routing reads (registry.h). No
// model, no network: registries are built by hand.
#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coordinator/admission.h"
#include "coordinator/registry.h"
#include "coordinator/router.h"
#include "kvstore/prefix_hash.h"

namespace kvfleet::coordinator {
namespace {

constexpr std::uint64_t kSalt = 7;
constexpr std::int64_t kBlockTokens = 4;

// A worker as the tests describe it; `cached` is how many leading blocks of the test prompt
// (prompt(n) below) its prefix cache holds.
struct W {
  std::string id;
  std::string role;
  std::int64_t free = 100;
  std::int64_t waiting = 0;
  std::int64_t running = 0;
  std::int64_t assigned = 0;
  std::int64_t cached = 0;
  bool suspect = false;
  std::int64_t max_model_len = 4096;
  std::string model = "tiny";
};

// Token i of every test prompt is i % 251: prompts of different lengths share their prefixes.
std::vector<std::int32_t> prompt(std::int64_t n) {
  std::vector<std::int32_t> p(static_cast<size_t>(n));
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::int32_t>(i % 251);
  return p;
}

// The hashes of the first `blocks` full blocks of a test prompt long enough to hold them.
std::vector<kvstore::BlockHash> prefix_hashes(std::int64_t blocks) {
  const auto p = prompt(blocks * kBlockTokens);
  return kvstore::full_block_hashes(kSalt, p, kBlockTokens);
}

WorkerInfo info(const W& w) {
  WorkerInfo i;
  i.id = w.id;
  i.url = "http://127.0.0.1:1";
  i.role = w.role;
  i.model = w.model;
  i.kv_blocks = 100;
  i.block_tokens = kBlockTokens;
  i.block_bytes = 1024;
  i.max_model_len = w.max_model_len;
  i.vocab_size = 259;
  i.prefix_hash_salt = kSalt;
  return i;
}

// A registry holding `workers` with their load as a heartbeat would report it.
Registry registry_of(const std::vector<W>& workers) {
  Registry reg(10);
  for (const W& w : workers) {
    EXPECT_TRUE(reg.add(info(w), 0).is_ok()) << w.id;
    WorkerLoad load;
    load.free_blocks = w.free;
    load.total_blocks = 100;
    load.waiting = w.waiting;
    load.running = w.running;
    for (auto h : prefix_hashes(w.cached)) load.prefix_hashes.insert(h);
    EXPECT_TRUE(reg.heartbeat(w.id, std::move(load), 0));
    for (std::int64_t i = 0; i < w.assigned; ++i) reg.assign(w.id);
    if (w.suspect) reg.find(w.id)->suspect = true;
  }
  return reg;
}

// --- routing ---------------------------------------------------------------------------------

struct RouteCase {
  std::string name;
  ServeMode mode = ServeMode::kDisaggregated;
  std::vector<W> workers;
  std::int64_t prompt_len = 400;
  std::int64_t max_new = 16;
  std::set<std::string> exclude = {};
  std::int64_t local_tokens = 256;  // RouterConfig::auto_local_prefill_tokens
  double cached_fraction = 0.5;     // RouterConfig::auto_cached_fraction
  // Expected:
  Route::Kind kind = Route::Kind::kDisaggregated;
  std::string prefill = "";
  std::string worker = "";
  std::int64_t cached_blocks = -1;  // -1: not checked
  std::string reason = "";          // a substring of Route::reason
};

using K = Route::Kind;
constexpr auto kDis = ServeMode::kDisaggregated;
constexpr auto kCol = ServeMode::kColocated;
constexpr auto kAuto = ServeMode::kAuto;

std::vector<RouteCase> route_cases() {
  return {
      // Prefill pool: prefix overlap first, then load (waiting + running + assigned), then id.
      {.name = "prefill: the most cached prefix wins over a lighter load",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "p2", .role = "prefill", .waiting = 5, .cached = 10},
                   {.id = "d1", .role = "decode"}},
       .prefill = "p2",
       .worker = "d1",
       .cached_blocks = 10,
       .reason = "disaggregated"},
      {.name = "prefill: equal overlap, least waiting + running + assigned",
       .workers = {{.id = "p1", .role = "prefill", .running = 3, .cached = 2},
                   {.id = "p2", .role = "prefill", .waiting = 1, .assigned = 1, .cached = 2},
                   {.id = "d1", .role = "decode"}},
       .prefill = "p2",
       .worker = "d1",
       .cached_blocks = 2},
      {.name = "prefill: requests assigned by this coordinator count as load",
       .workers = {{.id = "p1", .role = "prefill", .assigned = 2},
                   {.id = "p2", .role = "prefill", .waiting = 1},
                   {.id = "d1", .role = "decode"}},
       .prefill = "p2",
       .worker = "d1",
       .cached_blocks = 0},
      {.name = "prefill: a full tie goes to the smallest id",
       .workers = {{.id = "p2", .role = "prefill"},
                   {.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode"}},
       .prefill = "p1",
       .worker = "d1"},
      // Decode pool: free blocks net of assigned requests, then running + assigned, then id.
      // prompt 40 + 24 new = 64 tokens = 16 blocks per request.
      {.name = "decode: the most free blocks",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 10},
                   {.id = "d2", .role = "decode", .free = 90}},
       .prompt_len = 40,
       .max_new = 24,
       .prefill = "p1",
       .worker = "d2"},
      {.name = "decode: free blocks net of the blocks assigned requests will take",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 60},
                   {.id = "d2", .role = "decode", .free = 90, .assigned = 2}},  // 90 - 2 * 16 = 58
       .prompt_len = 40,
       .max_new = 24,
       .prefill = "p1",
       .worker = "d1"},
      {.name = "decode: equal room, fewer running",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 50, .running = 3},
                   {.id = "d2", .role = "decode", .free = 50, .running = 1}},
       .prompt_len = 40,
       .max_new = 24,
       .prefill = "p1",
       .worker = "d2"},
      {.name = "decode: equal room, fewer running + assigned",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 66, .assigned = 1},
                   {.id = "d2", .role = "decode", .free = 50, .running = 2}},  // room 50 each
       .prompt_len = 40,
       .max_new = 24,
       .prefill = "p1",
       .worker = "d1"},
      {.name = "decode: a full tie goes to the smallest id",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d2", .role = "decode"},
                   {.id = "d1", .role = "decode"}},
       .prompt_len = 40,
       .max_new = 24,
       .prefill = "p1",
       .worker = "d1"},
      // Workers that cannot take the request.
      {.name = "suspect workers are skipped",
       .workers = {{.id = "p1", .role = "prefill", .cached = 10, .suspect = true},
                   {.id = "p2", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 90, .suspect = true},
                   {.id = "d2", .role = "decode", .free = 10}},
       .prefill = "p2",
       .worker = "d2",
       .cached_blocks = 0},
      {.name = "excluded workers are skipped",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "p2", .role = "prefill", .cached = 10},
                   {.id = "d1", .role = "decode", .free = 10},
                   {.id = "d2", .role = "decode", .free = 90}},
       .exclude = {"p2", "d2"},
       .prefill = "p1",
       .worker = "d1",
       .cached_blocks = 0},
      {.name = "workers of another model are skipped",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 90, .model = "other"},
                   {.id = "d2", .role = "decode", .free = 10}},
       .prefill = "p1",
       .worker = "d2"},
      {.name = "a worker whose context is shorter than prompt + max_new is skipped",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 90, .max_model_len = 55},
                   {.id = "d2", .role = "decode", .free = 10}},
       .prompt_len = 40,
       .max_new = 16,
       .prefill = "p1",
       .worker = "d2"},
      {.name = "prompt + max_new exactly at a worker's context fits",
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 90, .max_model_len = 56},
                   {.id = "d2", .role = "decode", .free = 10}},
       .prompt_len = 40,
       .max_new = 16,
       .prefill = "p1",
       .worker = "d1"},
      {.name = "a worker that reports no context takes any length",
       .workers = {{.id = "p1", .role = "prefill", .max_model_len = 0},
                   {.id = "d1", .role = "decode", .max_model_len = 0}},
       .prompt_len = 10000,
       .prefill = "p1",
       .worker = "d1"},
      {.name = "a prefill pool whose contexts are all too short fails the request",
       .workers = {{.id = "p1", .role = "prefill", .max_model_len = 100},
                   {.id = "d1", .role = "decode"}},
       .kind = K::kNone,
       .reason = "no usable worker can serve model 'tiny' with 400 tokens + 16 new"},
      // Disaggregated mode without one of its pools.
      {.name = "disaggregated: without prefill workers a colocated pool serves",
       .workers = {{.id = "d1", .role = "decode"}, {.id = "b1", .role = "both"}},
       .kind = K::kColocated,
       .worker = "b1",
       .reason = "colocated"},
      {.name = "disaggregated: without decode workers a colocated pool serves",
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "b1", .role = "both"}},
       .kind = K::kColocated,
       .worker = "b1"},
      {.name = "disaggregated: decode workers alone cannot serve",
       .workers = {{.id = "d1", .role = "decode"}},
       .prompt_len = 1000,
       .kind = K::kNone,
       .reason = "no usable worker can serve model 'tiny' with 1000 tokens + 16 new"},
      {.name = "disaggregated: short prompts are disaggregated too",
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode"}},
       .prompt_len = 8,
       .prefill = "p1",
       .worker = "d1"},
      // Auto: conditional disaggregation.
      {.name = "auto: a short prompt is prefilled on its decode worker",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode"}},
       .prompt_len = 50,
       .kind = K::kColocated,
       .worker = "d1",
       .cached_blocks = 0,
       .reason = "auto: prefill on the decode worker (50 uncached tokens)"},
      {.name = "auto: exactly auto_local_prefill_tokens uncached is still local",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode"}},
       .prompt_len = 256,
       .kind = K::kColocated,
       .worker = "d1"},
      {.name = "auto: one token more is disaggregated",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode"}},
       .prompt_len = 257,
       .prefill = "p1",
       .worker = "d1"},
      {.name = "auto: the threshold is configurable",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode"}},
       .prompt_len = 50,
       .local_tokens = 49,
       .prefill = "p1",
       .worker = "d1"},
      {.name = "auto: uncached tokens are counted net of the decode worker's cache",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode", .cached = 100}},
       .prompt_len = 600,
       .cached_fraction = 0.9,
       .kind = K::kColocated,
       .worker = "d1",
       .cached_blocks = 100,
       .reason = "(200 uncached tokens)"},
      {.name = "auto: a prompt at least auto_cached_fraction cached is prefilled locally",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode", .cached = 125}},
       .prompt_len = 1000,
       .kind = K::kColocated,
       .worker = "d1",
       .cached_blocks = 125,
       .reason = "(500 uncached tokens)"},
      {.name = "auto: just under auto_cached_fraction is disaggregated",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode", .cached = 124}},
       .prompt_len = 1000,
       .prefill = "p1",
       .worker = "d1",
       .cached_blocks = 0},
      {.name = "auto: the cache that counts is the chosen decode worker's (chosen by free blocks)",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "d1", .role = "decode", .free = 50, .cached = 200},
                   {.id = "d2", .role = "decode", .free = 90}},
       .prompt_len = 1000,
       .prefill = "p1",
       .worker = "d2"},
      {.name = "auto: a long prompt is disaggregated to the best prefill worker",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"},
                   {.id = "p2", .role = "prefill", .cached = 30},
                   {.id = "d1", .role = "decode"}},
       .prompt_len = 1000,
       .prefill = "p2",
       .worker = "d1",
       .cached_blocks = 30},
      {.name = "auto: without prefill workers the decode worker does both",
       .mode = kAuto,
       .workers = {{.id = "d1", .role = "decode", .cached = 3}},
       .prompt_len = 1000,
       .kind = K::kColocated,
       .worker = "d1",
       .cached_blocks = 3,
       .reason = "auto: no prefill worker, prefill on the decode worker"},
      {.name = "auto: with every prefill worker suspect the decode worker does both",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill", .suspect = true},
                   {.id = "d1", .role = "decode"}},
       .prompt_len = 1000,
       .kind = K::kColocated,
       .worker = "d1",
       .reason = "no prefill worker"},
      {.name = "auto: without decode workers a colocated pool serves",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "b1", .role = "both"}},
       .prompt_len = 50,
       .kind = K::kColocated,
       .worker = "b1",
       .reason = "colocated"},
      {.name = "auto: prefill workers alone cannot serve",
       .mode = kAuto,
       .workers = {{.id = "p1", .role = "prefill"}},
       .kind = K::kNone,
       .reason = "no usable worker can serve model 'tiny'"},
      // Colocated: `both` workers only, by overlap then load.
      {.name = "colocated: only both workers, never prefill or decode ones",
       .mode = kCol,
       .workers = {{.id = "a", .role = "prefill", .cached = 50},
                   {.id = "b", .role = "decode", .free = 100},
                   {.id = "c", .role = "both", .free = 5, .waiting = 9}},
       .kind = K::kColocated,
       .worker = "c",
       .reason = "colocated"},
      {.name = "colocated: prefix overlap first",
       .mode = kCol,
       .workers = {{.id = "b1", .role = "both"},
                   {.id = "b2", .role = "both", .waiting = 3, .cached = 5}},
       .kind = K::kColocated,
       .worker = "b2",
       .cached_blocks = 5},
      {.name = "colocated: then least load",
       .mode = kCol,
       .workers = {{.id = "b1", .role = "both", .running = 2, .assigned = 1},
                   {.id = "b2", .role = "both", .waiting = 2}},
       .kind = K::kColocated,
       .worker = "b2",
       .cached_blocks = 0},
      {.name = "colocated: without both workers nothing serves",
       .mode = kCol,
       .workers = {{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode"}},
       .kind = K::kNone,
       .reason = "no colocated worker can serve model 'tiny' with 400 tokens + 16 new"},
      {.name = "an empty registry serves nothing",
       .mode = kAuto,
       .workers = {},
       .kind = K::kNone,
       .reason = "no usable worker can serve model 'tiny'"},
  };
}

TEST(RoutingPolicy, TableOfCases) {
  for (const RouteCase& c : route_cases()) {
    SCOPED_TRACE(c.name);
    const Registry reg = registry_of(c.workers);
    const auto tokens = prompt(c.prompt_len);
    RouteRequest rr{"tiny", &tokens, c.max_new, c.exclude};
    RouterConfig cfg;
    cfg.mode = c.mode;
    cfg.auto_local_prefill_tokens = c.local_tokens;
    cfg.auto_cached_fraction = c.cached_fraction;
    const Route r = route(reg, rr, cfg);
    EXPECT_EQ(r.kind, c.kind) << r.reason;
    if (c.kind == K::kNone) {
      EXPECT_TRUE(r.prefill.empty() && r.worker.empty());
    } else {
      EXPECT_EQ(r.prefill, c.prefill);
      EXPECT_EQ(r.worker, c.worker);
    }
    if (c.cached_blocks >= 0) {
      EXPECT_EQ(r.cached_blocks, c.cached_blocks);
    }
    if (!c.reason.empty()) {
      EXPECT_NE(r.reason.find(c.reason), std::string::npos) << r.reason;
    }
  }
}

TEST(RoutingPolicy, OverlapStopsAtTheFirstUncachedBlock) {
  // Blocks 0-3 and 5-9 cached, block 4 not: the chain walk stops at 4.
  Registry reg = registry_of({{.id = "p1", .role = "prefill"}, {.id = "d1", .role = "decode"}});
  const auto hashes = prefix_hashes(10);
  for (size_t i = 0; i < hashes.size(); ++i) {
    if (i != 4) reg.find("p1")->load.prefix_hashes.insert(hashes[i]);
  }
  const auto tokens = prompt(400);
  RouterConfig cfg;
  cfg.mode = kDis;
  const Route r = route(reg, RouteRequest{"tiny", &tokens, 16, {}}, cfg);
  EXPECT_EQ(r.prefill, "p1");
  EXPECT_EQ(r.cached_blocks, 4);
}

TEST(RoutingPolicy, ABurstRoutedWithAssignedCountingSpreadsOverDecodeWorkers) {
  // Nine requests routed at one moment, before any heartbeat: each counts on its workers from
  // the routing decision (Registry::assign), as the server does.
  const std::vector<W> workers = {{.id = "p1", .role = "prefill"},
                                  {.id = "p2", .role = "prefill"},
                                  {.id = "d1", .role = "decode"},
                                  {.id = "d2", .role = "decode"},
                                  {.id = "d3", .role = "decode"}};
  const auto tokens = prompt(400);
  RouterConfig cfg;
  cfg.mode = kDis;
  Registry reg = registry_of(workers);
  std::map<std::string, int> decode, prefill;
  for (int i = 0; i < 9; ++i) {
    const Route r = route(reg, RouteRequest{"tiny", &tokens, 16, {}}, cfg);
    ASSERT_EQ(r.kind, K::kDisaggregated) << r.reason;
    reg.assign(r.worker);
    reg.assign(r.prefill);
    ++decode[r.worker];
    ++prefill[r.prefill];
  }
  EXPECT_EQ(decode, (std::map<std::string, int>{{"d1", 3}, {"d2", 3}, {"d3", 3}}));
  EXPECT_EQ(prefill, (std::map<std::string, int>{{"p1", 5}, {"p2", 4}}));
  EXPECT_EQ(reg.find("d2")->assigned, 3);

  // Without the accounting every request would land on the same worker.
  const Registry fresh = registry_of(workers);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(route(fresh, RouteRequest{"tiny", &tokens, 16, {}}, cfg).worker, "d1");
  }
}

// --- request accounting ----------------------------------------------------------------------

TEST(RequestAccounting, AssignUnassignAndTheScopedCounter) {
  Registry reg = registry_of({{.id = "d1", .role = "decode"}});
  reg.assign("d1");
  {
    Assigned a(reg, "d1");
    Assigned b(reg, "d1");
    EXPECT_EQ(reg.find("d1")->assigned, 3);
  }
  EXPECT_EQ(reg.find("d1")->assigned, 1);
  reg.unassign("d1");
  reg.unassign("d1");  // never below zero
  EXPECT_EQ(reg.find("d1")->assigned, 0);
  reg.assign("gone");  // a worker that left: ignored
  reg.unassign("gone");
  { Assigned c(reg, "gone"); }
  EXPECT_EQ(reg.workers().size(), 1u);
  // A re-registration starts the count afresh.
  reg.assign("d1");
  ASSERT_TRUE(reg.add(info({.id = "d1", .role = "decode"}), 1).is_ok());
  EXPECT_EQ(reg.find("d1")->assigned, 0);
}

TEST(RequestAccounting, ContextIsTheSmallestOfTheModelsWorkers) {
  const Registry reg =
      registry_of({{.id = "a", .role = "both", .max_model_len = 100},
                   {.id = "b", .role = "both", .max_model_len = 80},
                   {.id = "c", .role = "both", .max_model_len = 0},
                   {.id = "x", .role = "both", .max_model_len = 10, .model = "other"}});
  EXPECT_EQ(reg.max_model_len("tiny"), 80);
  EXPECT_EQ(reg.max_model_len("other"), 10);
  EXPECT_EQ(reg.max_model_len("nobody"), 0);
}

// --- admission -------------------------------------------------------------------------------

struct AdmitCase {
  std::string name;
  ServeMode mode = kCol;
  std::vector<W> workers = {{.id = "b1", .role = "both", .max_model_len = 100},
                            {.id = "b2", .role = "both", .max_model_len = 80}};  // context 80
  std::string model = "tiny";
  std::int64_t vocab_size = 259;
  bool chat = false;
  std::vector<std::int32_t> prompt = std::vector<std::int32_t>(10, 65);
  std::optional<std::int64_t> max_tokens = std::nullopt;
  std::int64_t min_tokens = 0;
  std::int64_t inflight = 0;
  std::int64_t max_inflight = 4;
  // Expected:
  int status = 200;
  std::string type = "";
  std::vector<std::string> message = {};  // substrings
  int retry_after = 0;
  std::int64_t max_out = -1;  // accepted: effective max_tokens (-1: not checked)
  std::int64_t min_out = -1;  // accepted: effective min_tokens (-1: not checked)
};

std::vector<AdmitCase> admit_cases() {
  const std::vector<std::int32_t> p70(70, 65), p80(80, 65), p79(79, 65);
  return {
      {.name = "an ordinary completion is accepted with the default of 16 tokens",
       .max_out = 16,
       .min_out = 0},
      {.name = "an explicit max_tokens is kept",
       .max_tokens = 5,
       .min_tokens = 2,
       .max_out = 5,
       .min_out = 2},
      {.name = "an unknown model is a 404 naming it and the served models",
       .model = "gpt-9",
       .vocab_size = 0,
       .status = 404,
       .type = "model_not_found",
       .message = {"The model `gpt-9` does not exist", "(served: tiny)"}},
      {.name = "an unknown model with no worker at all",
       .workers = {},
       .model = "gpt-9",
       .vocab_size = 0,
       .status = 404,
       .type = "model_not_found",
       .message = {"(served: none yet)"}},
      {.name = "an unknown model is reported before anything else",
       .model = "gpt-9",
       .vocab_size = 0,
       .prompt = p80,
       .inflight = 4,
       .status = 404,
       .type = "model_not_found"},
      {.name = "a token id past the vocabulary",
       .prompt = {1, 259},
       .status = 400,
       .type = "invalid_request",
       .message = {"token id 259 is outside the vocabulary [0, 259)"}},
      {.name = "a negative token id",
       .prompt = {-1},
       .status = 400,
       .type = "invalid_request",
       .message = {"token id -1"}},
      {.name = "the prompt alone fills the context (the smallest of the model's workers)",
       .prompt = p80,
       .status = 400,
       .type = "invalid_request",
       .message = {"maximum context length is 80 tokens; the prompt has 80 tokens"}},
      {.name = "prompt + max_tokens over the context",
       .prompt = p70,
       .max_tokens = 11,
       .status = 400,
       .type = "invalid_request",
       .message =
           {"maximum context length is 80 tokens; the prompt (70) + max_tokens (11) exceeds it"}},
      {.name = "a max_tokens of 2^63 - 1 is over the context, not an overflow",
       .prompt = p70,
       .max_tokens = std::numeric_limits<std::int64_t>::max(),
       .status = 400,
       .type = "invalid_request",
       .message = {"the prompt (70) + max_tokens (9223372036854775807) exceeds it"}},
      {.name = "prompt + max_tokens exactly the context",
       .prompt = p70,
       .max_tokens = 10,
       .max_out = 10},
      {.name = "the completions default of 16 counts against the context",
       .prompt = p70,
       .status = 400,
       .type = "invalid_request",
       .message = {"the prompt (70) + max_tokens (16)"}},
      {.name = "chat defaults to the rest of the context",
       .chat = true,
       .prompt = p70,
       .max_out = 10},
      {.name = "chat with one token of room", .chat = true, .prompt = p79, .max_out = 1},
      {.name = "chat without a known context defaults to 256",
       .workers = {{.id = "b1", .role = "both", .max_model_len = 0}},
       .chat = true,
       .max_out = 256},
      {.name = "without a known context there is no length limit",
       .workers = {{.id = "b1", .role = "both", .max_model_len = 0}},
       .prompt = std::vector<std::int32_t>(5000, 65),
       .max_tokens = 100000,
       .max_out = 100000},
      {.name = "min_tokens is clamped to the default max_tokens",
       .min_tokens = 20,
       .max_out = 16,
       .min_out = 16},
      {.name = "min_tokens is clamped to the chat default",
       .chat = true,
       .prompt = p70,
       .min_tokens = 50,
       .max_out = 10,
       .min_out = 10},
      {.name = "at the in-flight bound: 429 with Retry-After 1",
       .inflight = 4,
       .status = 429,
       .type = "overloaded",
       .message = {"the server is at capacity (4 requests in flight); retry later"},
       .retry_after = 1},
      {.name = "one below the in-flight bound is accepted", .inflight = 3, .max_out = 16},
      {.name = "a bad request at the in-flight bound is still a 400",
       .prompt = p80,
       .inflight = 4,
       .status = 400,
       .type = "invalid_request"},
      {.name = "no pool for the mode: 503 with Retry-After 2",
       .workers = {{.id = "d1", .role = "decode"}},
       .status = 503,
       .type = "no_worker",
       .message = {"no colocated worker pool can serve model `tiny` right now"},
       .retry_after = 2},
      {.name = "disaggregated needs a prefill pool",
       .mode = kDis,
       .workers = {{.id = "d1", .role = "decode"}},
       .status = 503,
       .type = "no_worker",
       .message = {"no disaggregated worker pool"},
       .retry_after = 2},
      {.name = "auto serves with decode workers alone",
       .mode = kAuto,
       .workers = {{.id = "d1", .role = "decode"}},
       .max_out = 16},
      {.name = "suspect workers do not count as a pool",
       .workers = {{.id = "b1", .role = "both", .suspect = true}},
       .status = 503,
       .type = "no_worker",
       .retry_after = 2},
      {.name = "at capacity with no pool: the 429 comes first",
       .workers = {{.id = "d1", .role = "decode"}},
       .inflight = 9,
       .status = 429,
       .type = "overloaded",
       .retry_after = 1},
      {.name = "a model whose workers all left: no pool, not unknown",
       .workers = {{.id = "x", .role = "both", .model = "other"}},
       .status = 503,
       .type = "no_worker",
       .message = {"model `tiny`"},
       .retry_after = 2},
  };
}

TEST(AdmissionPolicy, TableOfCases) {
  for (const AdmitCase& c : admit_cases()) {
    SCOPED_TRACE(c.name);
    const Registry reg = registry_of(c.workers);
    RouterConfig router;
    router.mode = c.mode;
    AdmissionConfig config;
    config.max_inflight = c.max_inflight;
    AdmissionRequest r;
    r.model = c.model;
    r.chat = c.chat;
    r.prompt = c.prompt;
    r.vocab_size = c.vocab_size;
    r.max_tokens = c.max_tokens;
    r.min_tokens = c.min_tokens;
    const Admission a = admit(reg, router, config, c.inflight, r);
    EXPECT_EQ(a.accepted, c.status == 200) << a.message;
    if (c.status == 200) {
      if (c.max_out >= 0) {
        EXPECT_EQ(a.max_tokens, c.max_out);
      }
      if (c.min_out >= 0) {
        EXPECT_EQ(a.min_tokens, c.min_out);
      }
      continue;
    }
    EXPECT_EQ(a.status, c.status) << a.message;
    EXPECT_EQ(a.error_type, c.type);
    EXPECT_EQ(a.retry_after_seconds, c.retry_after);
    for (const std::string& m : c.message)
      EXPECT_NE(a.message.find(m), std::string::npos) << a.message;
  }
}

}  // namespace
}  // namespace kvfleet::coordinator
