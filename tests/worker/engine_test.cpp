#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <map>
#include <optional>
#include <thread>

#include "common/clock.h"
#include "tests/test_util.h"
#include "tests/worker/engine_test_util.h"
#include "worker/engine_core.h"
#include "worker/sampler.h"

namespace kvfleet::worker {
namespace {

using namespace test;

// Cancellation, seeded sampling and hand-offs between engines are conformance cases run for
// every backend (backend_conformance_test.cpp).

// Reference: each prompt alone in a roomy engine without prefix caching.
std::vector<std::vector<std::int32_t>> reference(
    const std::vector<std::vector<std::int32_t>>& prompts, std::int64_t max_tokens) {
  std::vector<std::vector<std::int32_t>> out;
  auto engine = make_engine({.blocks = 512, .prefix_caching = false});
  for (const auto& p : prompts) out.push_back(generate(*engine, {p}, max_tokens)[0].tokens);
  return out;
}

void expect_same_tokens(const std::vector<RequestOutput>& got,
                        const std::vector<std::vector<std::int32_t>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
    EXPECT_EQ(got[i].finish, FinishReason::kLength) << "request " << i;
  }
}

void expect_all_blocks_free(const Engine& engine) {
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.device_blocks_used, 0);
  EXPECT_EQ(s.host.used_blocks, 0);
  EXPECT_EQ(s.running + s.waiting + s.swapped, 0);
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = kvfleet::test::test_seed();
    rng_.seed(seed_);
  }
  std::vector<std::vector<std::int32_t>> prompts(int n, size_t min_len, size_t max_len) {
    std::vector<std::vector<std::int32_t>> out;
    for (int i = 0; i < n; ++i) {
      out.push_back(random_tokens(rng_, min_len + rng_() % (max_len - min_len + 1)));
    }
    return out;
  }
  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(EngineTest, ContinuousBatchingAndChunkedPrefillGiveSingleRequestTokens) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto ps = prompts(6, 5, 60);
  const auto want = reference(ps, 12);
  auto batched = make_engine({.blocks = 512, .max_batch_tokens = 512});
  expect_same_tokens(generate(*batched, ps, 12), want);
  auto chunked = make_engine({.blocks = 512, .max_batch_tokens = 7});
  expect_same_tokens(generate(*chunked, ps, 12), want);
  expect_all_blocks_free(*chunked);
}

TEST_F(EngineTest, PrefixReuseGivesTheSameTokens) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto shared = random_tokens(rng_, 40);
  std::vector<std::vector<std::int32_t>> ps;
  for (int i = 0; i < 4; ++i) {
    auto p = shared;
    auto tail = random_tokens(rng_, 3 + static_cast<size_t>(i) * 5);
    p.insert(p.end(), tail.begin(), tail.end());
    ps.push_back(p);
  }
  const auto want = reference(ps, 10);
  auto engine = make_engine({.blocks = 512});
  // One at a time, so later requests find the earlier ones' blocks in the cache.
  std::vector<RequestOutput> got;
  for (const auto& p : ps) got.push_back(generate(*engine, {p}, 10)[0]);
  expect_same_tokens(got, want);
  EXPECT_EQ(got[0].timings.prefix_hit_tokens, 0);
  for (size_t i = 1; i < got.size(); ++i) {
    EXPECT_EQ(got[i].timings.prefix_hit_tokens, 40) << i;  // 5 full blocks of 8
  }
  expect_all_blocks_free(*engine);
}

TEST_F(EngineTest, SwappingOutAndInManyTimesChangesNoToken) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto ps = prompts(8, 32, 32);  // random tokens, fixed length: the same pressure per seed
  const auto want = reference(ps, 40);
  // 14 blocks of 8 tokens for 8 sequences that grow to 72 tokens (9 blocks) each: all are
  // admitted (4 blocks each), then every growth step preempts someone.
  auto engine =
      make_engine({.blocks = 14,
                   .max_batch_tokens = 64,
                   .host_bytes = 512 * tiny_model()->kv_layout(8, DType::kFp32).block_bytes()});
  const auto got = generate(*engine, ps, 40);
  expect_same_tokens(got, want);
  std::int64_t swaps_out = 0, swaps_in = 0, bytes_out = 0;
  for (const auto& o : got) {
    swaps_out += o.timings.swap_out_count;
    swaps_in += o.timings.swap_in_count;
    bytes_out += o.timings.swap_out_bytes;
  }
  EXPECT_GE(swaps_out, 8) << "the budget must force many context switches";
  std::int64_t most = 0;
  for (const auto& o : got) most = std::max(most, o.timings.swap_out_count);
  EXPECT_GE(most, 2) << "some sequence must be switched out and back in repeatedly";
  EXPECT_EQ(swaps_in, swaps_out);
  EXPECT_GT(bytes_out, 0);
  expect_all_blocks_free(*engine);
  EXPECT_EQ(engine->stats().swap_outs_total, swaps_out);
}

// Every spill has one byte of one block damaged after its checksum (as failing host memory
// would): each restore that reads a damaged block finds it (the count proves the damage was
// read), the sequence is recomputed from its tokens, and no token changes.
TEST_F(EngineTest, DamagedHostKvIsFoundOnRestoreAndRecomputedWithoutChangingAToken) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto ps = prompts(8, 32, 32);
  const auto want = reference(ps, 40);
  const std::size_t host = 512 * tiny_model()->kv_layout(8, DType::kFp32).block_bytes();
  auto engine = make_engine({.blocks = 14,
                             .max_batch_tokens = 64,
                             .host_bytes = host,
                             .inject_faults = "corrupt-spill=1"});
  const auto got = generate(*engine, ps, 40);
  expect_same_tokens(got, want);
  const EngineStats s = engine->stats();
  EXPECT_GT(s.swap_outs_total, 0);
  EXPECT_GT(s.host.corrupt_blocks_total, 0) << "the damage must have been read by a restore";
  EXPECT_GE(s.recompute_preemptions_total, 1);
  expect_all_blocks_free(*engine);
}

TEST_F(EngineTest, RecomputePreemptionWithoutHostStoreChangesNoToken) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto ps = prompts(6, 20, 40);
  const auto want = reference(ps, 20);
  auto engine = make_engine({.blocks = 16, .max_batch_tokens = 64});
  const auto got = generate(*engine, ps, 20);
  expect_same_tokens(got, want);
  std::int64_t recomputes = 0;
  for (const auto& o : got) recomputes += o.timings.recompute_preemptions;
  EXPECT_GT(recomputes, 0);
  expect_all_blocks_free(*engine);
}

TEST_F(EngineTest, HostStoreServesPrefixesEvictedFromTheDevice) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const auto first = random_tokens(rng_, 64);
  const std::size_t block = tiny_model()->kv_layout(8, DType::kFp32).block_bytes();
  auto engine = make_engine({.blocks = 24, .host_bytes = 256 * block});
  const auto want = reference({first}, 4);
  EXPECT_EQ(generate(*engine, {first}, 4)[0].tokens, want[0]);
  // Other requests push the first one's cached blocks off the device.
  for (int i = 0; i < 3; ++i) generate(*engine, {random_tokens(rng_, 150)}, 2);
  const auto again = generate(*engine, {first}, 4)[0];
  EXPECT_EQ(again.tokens, want[0]);
  EXPECT_EQ(again.timings.prefix_hit_tokens, 0);
  EXPECT_EQ(again.timings.host_prefix_hit_tokens, 56);  // 7 of the 8 full blocks: 1 token computed
  expect_all_blocks_free(*engine);
}

TEST_F(EngineTest, HalfPrecisionKvRunsAndFreesEverything) {
  auto engine = make_engine({.blocks = 64, .kv_dtype = DType::kBf16});
  const auto got = generate(*engine, prompts(3, 10, 30), 8);
  for (const auto& o : got) EXPECT_EQ(o.tokens.size(), 8u);
  expect_all_blocks_free(*engine);
}

TEST_F(EngineTest, StressManySequencesNeverLeak) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  const std::size_t block = tiny_model()->kv_layout(8, DType::kFp32).block_bytes();
  auto engine = make_engine(
      {.blocks = 48, .max_batch_tokens = 96, .max_running = 16, .host_bytes = 96 * block});
  Collector collector;
  std::vector<RequestId> ids;
  for (int i = 0; i < 60; ++i) {
    Request r;
    r.prompt = random_tokens(rng_, 1 + rng_() % 80);
    r.params.max_tokens = 1 + static_cast<std::int64_t>(rng_() % 30);
    r.params.temperature = (i % 3 == 0) ? 0.8 : 0.0;
    r.params.seed = static_cast<std::uint64_t>(i);
    r.on_finish = collector.callback();
    auto id = engine->submit(std::move(r));
    ASSERT_TRUE(id.is_ok()) << id.status().to_string();
    ids.push_back(*id);
    if (i % 7 == 3) engine->cancel(ids[rng_() % ids.size()]);
    const EngineStats s = engine->stats();
    ASSERT_LE(s.device_blocks_used + s.device_blocks_cached, 48);
  }
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(120)));
  const auto outs = collector.outputs();
  EXPECT_EQ(outs.size(), ids.size());
  for (const auto& [id, o] : outs) {
    if (o.finish != FinishReason::kAbort) {
      EXPECT_TRUE(o.finish == FinishReason::kLength || o.finish == FinishReason::kStop);
      EXPECT_GE(o.tokens.size(), 1u);
    }
  }
  expect_all_blocks_free(*engine);
}

// The draw for output token k depends only on (seed, k): a request re-run from its prompt plus
// its first k sampled tokens (what the coordinator sends after a worker failure) continues with
// the tokens the first run produced.
TEST_F(EngineTest, ASampledRequestReRunFromItsFirstTokensContinuesTheSame) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto engine = make_engine({});
  auto run = [&](std::vector<std::int32_t> prompt, std::int64_t max_tokens, std::int64_t offset) {
    Collector c;
    Request r;
    r.prompt = std::move(prompt);
    r.params.max_tokens = max_tokens;
    r.params.temperature = 1.0;
    r.params.top_p = 0.95;
    r.params.seed = seed_;
    r.params.sample_offset = offset;
    r.params.ignore_eos = true;
    r.on_finish = c.callback();
    auto id = *engine->submit(std::move(r));
    EXPECT_TRUE(engine->wait_idle(std::chrono::seconds(30)));
    return c.outputs().at(id).tokens;
  };
  const auto prompt = random_tokens(rng_, 20);
  const auto whole = run(prompt, 24, 0);
  ASSERT_EQ(whole.size(), 24u);
  for (std::int64_t k : {1, 9, 23}) {
    auto resumed_prompt = prompt;
    resumed_prompt.insert(resumed_prompt.end(), whole.begin(), whole.begin() + k);
    const auto rest = run(resumed_prompt, 24 - k, k);
    EXPECT_EQ(rest, std::vector<std::int32_t>(whole.begin() + k, whole.end())) << "after " << k;
  }
  // Without the offset the re-run would draw token 0's number again: a different stream.
  EXPECT_NE(run(prompt, 24, 5), whole);
  // Unseeded requests differ from each other.
  Collector c;
  std::vector<RequestId> ids;
  for (int i = 0; i < 2; ++i) {
    Request r;
    r.prompt = prompt;
    r.params.max_tokens = 24;
    r.params.temperature = 1.0;
    r.params.ignore_eos = true;
    r.on_finish = c.callback();
    ids.push_back(*engine->submit(std::move(r)));
  }
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(30)));
  EXPECT_NE(c.outputs().at(ids[0]).tokens, c.outputs().at(ids[1]).tokens);
}

// A thread-less engine on the sim backend and a virtual clock: 16 blocks of 8 tokens, 64 tokens
// per step. Each call to step() is one step, so a test sees every step's report.
struct SimCore {
  std::shared_ptr<VirtualClock> clock = std::make_shared<VirtualClock>();
  std::map<RequestId, RequestOutput> done;  // finished requests by id (outlives the engine)
  std::unique_ptr<EngineCore> core;

  // Queues a prompt of n tokens first, first + 1, ... (cycling over 50 ids; prompts with other
  // `first`s share no prefix), generating max_tokens; `hold` keeps its KV as for a hand-off.
  RequestId submit(std::int32_t first, std::size_t n, std::int64_t max_tokens, bool hold) {
    Request r;
    for (std::size_t i = 0; i < n; ++i) {
      r.prompt.push_back(first + static_cast<std::int32_t>(i % 50));
    }
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    r.hold_kv = hold;
    r.on_finish = [this](const RequestOutput& out) { done[out.id] = out; };
    auto seq = core->make_sequence(std::move(r));
    EXPECT_TRUE(seq.is_ok()) << seq.status().to_string();
    const RequestId id = (*seq)->id;
    core->add(std::move(seq).value());
    return id;
  }
};
std::unique_ptr<SimCore> make_sim_core() {
  auto out = std::make_unique<SimCore>();  // on the heap: the callbacks point at it
  test::EngineOptions o;
  o.backend = "sim";
  o.blocks = 16;
  o.block_tokens = 8;
  BackendOptions b = test::backend_options(o);
  b.clock = out->clock;
  auto backend = create_backend("sim", b);
  EXPECT_TRUE(backend.is_ok()) << backend.status().to_string();
  EngineConfig c;
  c.scheduler.max_batch_tokens = 64;
  c.clock = out->clock;
  auto core = EngineCore::create(c, std::move(backend).value());
  EXPECT_TRUE(core.is_ok()) << core.status().to_string();
  out->core = std::move(core).value();
  return out;
}

// A step that can run nothing says so, and stays so until blocks are released: the engine's
// owner then waits for news instead of stepping again (an empty step at once would spin a real
// engine thread and stop a virtual clock). Here a held request (the KV a prefill worker keeps
// for a hand-off) takes 12 of 16 blocks and the next prompt's first chunk needs 8.
TEST(EngineCoreStall, AStepThatCanRunNothingSaysSoUntilBlocksAreReleased) {
  auto sim = make_sim_core();
  EngineCore& e = *sim->core;
  const RequestId held = sim->submit(1, 95, 1, true);
  while (e.has_work()) ASSERT_FALSE(e.step().stalled);
  ASSERT_EQ(sim->done.count(held), 1u);
  ASSERT_EQ(e.stats().held_blocks, 12);

  const RequestId next = sim->submit(60, 64, 4, false);
  const std::int64_t steps = e.stats().steps;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(e.step().stalled);
    EXPECT_TRUE(e.has_work());
  }
  EXPECT_EQ(e.stats().steps, steps) << "a stalled step ran nothing";
  EXPECT_EQ(sim->done.count(next), 0u);

  e.release_held(held);
  ASSERT_FALSE(e.step().stalled);
  while (e.has_work()) ASSERT_FALSE(e.step().stalled);
  ASSERT_EQ(sim->done.count(next), 1u);
  EXPECT_EQ(sim->done[next].tokens.size(), 4u);
  EXPECT_EQ(e.stats().device_blocks_used, 0);
}

// Imports and requests queue in one line, first come first served: an import asked for after a
// request was queued (here one that cannot start until a hand-off's held blocks are released)
// waits behind it even when its own blocks are free. Before, each step granted newer imports
// first, and on a full decode worker a preempted sequence could wait for minutes.
TEST(EngineCoreQueue, AnImportWaitsBehindASequenceQueuedBeforeIt) {
  auto sim = make_sim_core();
  EngineCore& e = *sim->core;
  VirtualClock& clock = *sim->clock;
  const RequestId held = sim->submit(1, 95, 1, true);  // 12 of 16 blocks, held
  while (e.has_work()) e.step();
  const RequestId queued = sim->submit(60, 64, 4, false);  // its first chunk needs 8: queued
  EXPECT_TRUE(e.step().stalled);
  clock.advance_to(clock.now() + 1);
  std::optional<Result<Reservation>> import;
  e.reserve(16, clock.now() + 10, [&](Result<Reservation> r) { import = std::move(r); });
  EXPECT_FALSE(import.has_value()) << "4 blocks are free, but a sequence was queued first";
  EXPECT_EQ(e.stats().waiting_reservations, 1);
  e.release_held(held);
  e.step();  // the queued sequence starts
  EXPECT_EQ(e.stats().running, 1);
  e.service_reservations();
  ASSERT_TRUE(import.has_value());
  ASSERT_TRUE(import->is_ok()) << import->status().to_string();
  EXPECT_EQ((*import)->blocks.size(), 2u);
  while (e.has_work()) e.step();
  EXPECT_EQ(sim->done.at(queued).tokens.size(), 4u);
}

TEST(Sampler, UniformDrawsAreInRangeAndDependOnSeedAndIndex) {
  for (std::int64_t k = 0; k < 1000; ++k) {
    const double u = sample_uniform(42, k);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  EXPECT_EQ(sample_uniform(42, 7), sample_uniform(42, 7));
  EXPECT_NE(sample_uniform(42, 7), sample_uniform(42, 8));
  EXPECT_NE(sample_uniform(42, 7), sample_uniform(43, 7));
  double mean = 0;
  for (std::int64_t k = 0; k < 100000; ++k) mean += sample_uniform(9, k);
  EXPECT_NEAR(mean / 100000, 0.5, 0.01);
}

TEST_F(EngineTest, EosStopsUnlessIgnoredAndMinTokensDelaysIt) {
  auto engine = make_engine({});
  const std::int32_t eos = 257;
  // Make EOS the greedy choice by stopping on whatever token comes first instead.
  Collector c;
  Request r;
  r.prompt = {256, 1, 2, 3};
  r.params.max_tokens = 10;
  r.on_finish = c.callback();
  auto first = generate(*engine, {r.prompt}, 3)[0].tokens;
  r.params.stop_token_ids = {first[0]};
  auto id = *engine->submit(r);
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(30)));
  EXPECT_EQ(c.outputs().at(id).finish, FinishReason::kStop);
  EXPECT_EQ(c.outputs().at(id).tokens.size(), 1u);
  r.params.min_tokens = 3;
  auto id2 = *engine->submit(r);
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(30)));
  EXPECT_GE(c.outputs().at(id2).tokens.size(), 3u);
  (void)eos;
}

// Disaggregation inside one process: engine P prefills and holds the KV, engine D reserves
// blocks, the KV bytes are copied block by block, D decodes the rest. Tokens match one engine.
TEST_F(EngineTest, ReservationsFailClearlyWhenBlocksRunOutAndCanBeCancelled) {
  auto engine = make_engine({.blocks = 4, .block_tokens = 8});
  std::promise<Result<Reservation>> too_big;
  engine->reserve(8 * 5, [&](Result<Reservation> r) { too_big.set_value(r); });
  Result<Reservation> r = too_big.get_future().get();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("needs 5 KV blocks; the engine has 4"), std::string::npos)
      << r.status().message();
  std::promise<Result<Reservation>> ok;
  engine->reserve(8 * 4, [&](Result<Reservation> x) { ok.set_value(x); });
  Result<Reservation> all = ok.get_future().get();
  ASSERT_TRUE(all.is_ok());
  engine->cancel_reservation(all->id);
  std::promise<Result<Reservation>> again;
  engine->reserve(8 * 4, [&](Result<Reservation> x) { again.set_value(x); });
  EXPECT_TRUE(again.get_future().get().is_ok());
  // An import naming an unknown reservation finishes with an error, not a hang.
  Collector c;
  Request bad;
  bad.prompt = {1, 2, 3, 4};
  bad.params.max_tokens = 3;
  bad.kv_import = KvImport{999, 3, 3};
  bad.on_finish = c.callback();
  const RequestId id = *engine->submit(std::move(bad));
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(10)));
  EXPECT_EQ(c.outputs()[id].finish, FinishReason::kError);
}

// An import without room waits for blocks (first come, first served, ahead of new admissions)
// instead of failing at once, and gives up at its deadline.
TEST_F(EngineTest, ReservationsWaitForRoomAheadOfNewRequestsUntilTheirDeadline) {
  auto engine = make_engine({.blocks = 4, .block_tokens = 8});
  std::promise<Result<Reservation>> three;
  engine->reserve(8 * 3, [&](Result<Reservation> r) { three.set_value(r); });
  const Result<Reservation> first = three.get_future().get();
  ASSERT_TRUE(first.is_ok());
  // One block is free; this reservation needs two: it waits (up to 30 s)...
  std::promise<Result<Reservation>> waiting;
  auto granted = waiting.get_future();
  engine->reserve(
      8 * 2, [&](Result<Reservation> r) { waiting.set_value(r); }, 30);
  // ...and a new request that would fit in the free block does not pass it.
  Collector c;
  Request late;
  late.prompt = random_tokens(rng_, 4);
  late.params.max_tokens = 3;
  late.params.ignore_eos = true;
  late.on_finish = c.callback();
  const RequestId late_id = *engine->submit(std::move(late));
  // Both reached the engine: the reservation waits, and so does the request behind it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         !(engine->stats().waiting_reservations == 1 && engine->stats().waiting == 1)) {
    std::this_thread::yield();
  }
  EXPECT_EQ(engine->stats().waiting_reservations, 1);
  EXPECT_EQ(engine->stats().waiting, 1);
  EXPECT_EQ(engine->stats().running, 0);
  EXPECT_EQ(granted.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  // Freeing the first reservation grants the waiting one; then the request runs.
  engine->cancel_reservation(first->id);
  ASSERT_EQ(granted.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  const Result<Reservation> second = granted.get();
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_EQ(second->blocks.size(), 2u);
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(30)));
  EXPECT_EQ(c.outputs().at(late_id).tokens.size(), 3u);
  // A reservation that cannot be met in time fails at its deadline (two blocks are reserved).
  std::promise<Result<Reservation>> late_reservation;
  const auto t0 = std::chrono::steady_clock::now();
  engine->reserve(
      8 * 3, [&](Result<Reservation> r) { late_reservation.set_value(r); }, 0.3);
  const Result<Reservation> expired = late_reservation.get_future().get();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(expired.is_ok());
  EXPECT_EQ(expired.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(expired.status().message().find("deadline"), std::string::npos)
      << expired.status().message();
  EXPECT_GE(waited, 0.3);
  engine->cancel_reservation(second->id);
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(10)));
  EXPECT_EQ(engine->stats().reserved_blocks, 0);
  EXPECT_EQ(engine->stats().waiting_reservations, 0);
}

TEST_F(EngineTest, BadRequestsGetClearErrors) {
  auto engine = make_engine({.blocks = 64});
  auto expect = [&](Request r, StatusCode code, const std::string& fragment) {
    auto id = engine->submit(std::move(r));
    ASSERT_FALSE(id.is_ok());
    EXPECT_EQ(id.status().code(), code);
    EXPECT_NE(id.status().message().find(fragment), std::string::npos) << id.status().message();
  };
  Request empty;
  expect(empty, StatusCode::kInvalidArgument, "prompt is empty");
  Request vocab;
  vocab.prompt = {1, 2, 300};
  expect(vocab, StatusCode::kInvalidArgument, "prompt token 300 at position 2 is outside");
  Request negative;
  negative.prompt = {-1};
  expect(negative, StatusCode::kInvalidArgument, "outside the vocabulary");
  Request too_long;
  too_long.prompt.assign(5000, 65);
  expect(too_long, StatusCode::kOutOfRange, "does not fit the model's context of 4096");
  Request with_tokens;
  with_tokens.prompt.assign(4000, 65);
  with_tokens.params.max_tokens = 200;
  expect(with_tokens, StatusCode::kOutOfRange, "exceeds the model's context");
  Request pool;
  pool.prompt.assign(600, 65);
  expect(pool, StatusCode::kOutOfRange, "KV blocks");
  Request zero;
  zero.prompt = {65};
  zero.params.max_tokens = 0;
  expect(zero, StatusCode::kInvalidArgument, "max_tokens");
  Request temp;
  temp.prompt = {65};
  temp.params.temperature = -1;
  expect(temp, StatusCode::kInvalidArgument, "temperature");
  Request top_p;
  top_p.prompt = {65};
  top_p.params.top_p = 0;
  expect(top_p, StatusCode::kInvalidArgument, "top_p");
  Request penalty;
  penalty.prompt = {65};
  penalty.params.frequency_penalty = 2.5;
  expect(penalty, StatusCode::kInvalidArgument, "frequency_penalty");
  Request repetition;
  repetition.prompt = {65};
  repetition.params.repetition_penalty = 0;
  expect(repetition, StatusCode::kInvalidArgument, "repetition_penalty");
  Request bias;
  bias.prompt = {65};
  bias.params.logit_bias = {{259, 1.0}};
  expect(bias, StatusCode::kInvalidArgument, "logit_bias");
  Request logprobs;
  logprobs.prompt = {65};
  logprobs.params.logprobs = 21;
  expect(logprobs, StatusCode::kInvalidArgument, "logprobs");
  // The engine still serves good requests afterwards.
  EXPECT_EQ(generate(*engine, {{256, 65, 66}}, 3)[0].tokens.size(), 3u);
}

// The sim backend models tokens without logits: logprobs are refused, not made up.
TEST(EngineCoreSim, ASimBackendRefusesLogprobs) {
  auto sim = make_sim_core();
  Request r;
  r.prompt = {65, 66};
  r.params.logprobs = 1;
  auto seq = sim->core->make_sequence(std::move(r));
  ASSERT_FALSE(seq.is_ok());
  EXPECT_NE(seq.status().message().find("logprobs"), std::string::npos) << seq.status().message();
}

// Logprobs from the engine are the raw row's: greedy tokens are the top alternative.
TEST_F(EngineTest, LogprobsComeWithEachTokenAndGreedyTokensAreTheBest) {
  auto engine = make_engine({.blocks = 64});
  std::vector<TokenLogprobs> seen;
  std::vector<std::int32_t> tokens;
  Request r;
  r.prompt = {256, 72, 105};
  r.params.max_tokens = 4;
  r.params.ignore_eos = true;
  r.params.logprobs = 3;
  r.on_logprobs = [&](RequestId, const TokenLogprobs& lp) { seen.push_back(lp); };
  r.on_token = [&](RequestId, std::int32_t t) { tokens.push_back(t); };
  ASSERT_TRUE(engine->submit(std::move(r)).is_ok());
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(60)));
  ASSERT_EQ(seen.size(), 4u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].chosen.token, tokens[i]);
    ASSERT_EQ(seen[i].top.size(), 3u);
    EXPECT_EQ(seen[i].top[0].token, tokens[i]);
    EXPECT_FLOAT_EQ(seen[i].top[0].logprob, seen[i].chosen.logprob);
    EXPECT_LE(seen[i].chosen.logprob, 0.0f);
  }
}

TEST(EngineBackends, UnknownBackendListsTheKnownOnes) {
  auto b = create_backend("tpu", BackendOptions{});
  ASSERT_FALSE(b.is_ok());
  EXPECT_NE(b.status().message().find("known: cpu, sim"), std::string::npos)
      << b.status().message();
}

}  // namespace
}  // namespace kvfleet::worker
