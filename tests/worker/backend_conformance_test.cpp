// The backend conformance suite: every registered engine backend runs the same cases through the
// production engine (scheduler, block pool, host store). Backends that compute (cpu, cuda) must
// give the cpu backend's tokens; every backend must keep the engine's accounting exact (blocks,
// swaps, prefix hits, cancellation, hand-offs) and be self-consistent: chunked prefill, batching,
// swapping and prefix reuse change no token. Numeric cases are skipped by capability for
// backends that model their work (sim).

#include <gtest/gtest.h>

#include <cstring>
#include <future>

#include "tests/test_util.h"
#include "tests/worker/engine_test_util.h"

namespace kvfleet::worker {
namespace {

using namespace test;

void expect_all_blocks_free(const Engine& engine) {
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.device_blocks_used, 0);
  EXPECT_EQ(s.host.used_blocks, 0);
  EXPECT_EQ(s.held_blocks, 0);
  EXPECT_EQ(s.reserved_blocks, 0);
  EXPECT_EQ(s.running + s.waiting + s.swapped, 0);
}

std::vector<std::vector<std::int32_t>> tokens_of(const std::vector<RequestOutput>& outs) {
  std::vector<std::vector<std::int32_t>> t;
  for (const auto& o : outs) t.push_back(o.tokens);
  return t;
}

class BackendConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    seed_ = kvfleet::test::test_seed();
    rng_.seed(seed_);
    auto probe = create_backend(GetParam(), backend_options(options()));
    if (!probe.is_ok() && probe.status().code() == StatusCode::kUnavailable) {
      GTEST_SKIP() << "backend " << GetParam() << " cannot run here: " << probe.status().message();
    }
    ASSERT_TRUE(probe.is_ok()) << probe.status().to_string();
    caps_ = (*probe)->capabilities();
  }
  EngineOptions options() const {
    EngineOptions o;
    o.backend = GetParam();
    return o;
  }
  std::vector<std::vector<std::int32_t>> prompts(int n, size_t min_len, size_t max_len) {
    std::vector<std::vector<std::int32_t>> out;
    for (int i = 0; i < n; ++i) {
      out.push_back(random_tokens(rng_, min_len + rng_() % (max_len - min_len + 1)));
    }
    return out;
  }
  // Each prompt alone, in one pass, in a roomy engine of this backend without prefix caching.
  std::vector<std::vector<std::int32_t>> alone(const std::vector<std::vector<std::int32_t>>& ps,
                                               std::int64_t max_tokens) {
    EngineOptions o = options();
    o.blocks = 512;
    o.prefix_caching = false;
    o.max_batch_tokens = 4096;
    auto engine = make_engine(o);
    std::vector<std::vector<std::int32_t>> out;
    for (const auto& p : ps) out.push_back(generate(*engine, {p}, max_tokens)[0].tokens);
    return out;
  }
  // The same on the cpu backend: the numeric reference.
  std::vector<std::vector<std::int32_t>> cpu_reference(
      const std::vector<std::vector<std::int32_t>>& ps, std::int64_t max_tokens) {
    auto engine = make_engine({.blocks = 512, .max_batch_tokens = 4096, .prefix_caching = false});
    std::vector<std::vector<std::int32_t>> out;
    for (const auto& p : ps) out.push_back(generate(*engine, {p}, max_tokens)[0].tokens);
    return out;
  }
  void expect_reference(const std::vector<std::vector<std::int32_t>>& got,
                        const std::vector<std::vector<std::int32_t>>& ps, std::int64_t max_tokens) {
    EXPECT_EQ(got, alone(ps, max_tokens)) << "backend " << GetParam() << " is not self-consistent";
    if (!caps_.computes) return;  // modelled tokens: nothing numeric to compare
    EXPECT_EQ(got, cpu_reference(ps, max_tokens))
        << "backend " << GetParam() << " differs from the cpu backend";
  }

  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  BackendCapabilities caps_;
};

TEST_P(BackendConformance, DescribesItsKvMemory) {
  auto engine = make_engine(options());
  const EngineBackend& b = engine->backend();
  const KvMemory m = b.kv_memory();
  EXPECT_EQ(m.block_stride, b.kv_layout().block_bytes());
  EXPECT_EQ(m.bytes, static_cast<std::size_t>(b.num_blocks()) * b.kv_layout().block_bytes());
  if (caps_.computes) {
    EXPECT_NE(m.kind, KvMemory::Kind::kNone) << "a backend that computes keeps real KV";
    EXPECT_NE(m.base, nullptr);
  } else {
    EXPECT_EQ(m.kind, KvMemory::Kind::kNone);
    EXPECT_TRUE(b.handoff_seconds(1 << 20).has_value()) << "modelled KV needs a modelled hand-off";
  }
  EXPECT_FALSE(b.describe().empty());
  EXPECT_EQ(b.name(), GetParam());
}

TEST_P(BackendConformance, ChunkedPrefillAndBatchedDecodeChangeNoToken) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + ", backend " + GetParam());
  const auto ps = prompts(6, 5, 70);
  EngineOptions o = options();
  o.max_batch_tokens = 24;  // prompts prefill in chunks, interleaved with others' decode tokens
  auto engine = make_engine(o);
  const auto got = generate(*engine, ps, 12);
  for (const auto& out : got) {
    EXPECT_EQ(out.finish, FinishReason::kLength);
    EXPECT_EQ(out.tokens.size(), 12u);
  }
  expect_reference(tokens_of(got), ps, 12);
  std::int64_t prompt_tokens = 0;
  for (const auto& p : ps) prompt_tokens += static_cast<std::int64_t>(p.size());
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.prompt_tokens_total, prompt_tokens);
  EXPECT_EQ(s.generated_tokens_total, 6 * 12);
  expect_all_blocks_free(*engine);
}

TEST_P(BackendConformance, SwapOutAndInChangeNoToken) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + ", backend " + GetParam());
  EngineOptions o = options();
  const std::size_t block = tiny_model()->kv_layout(o.block_tokens, DType::kFp32).block_bytes();
  o.blocks = 20;  // 160 tokens: four sequences of ~60 cannot all stay resident
  o.max_batch_tokens = 64;
  o.host_bytes = 200 * block;
  std::vector<std::vector<std::int32_t>> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(random_tokens(rng_, 30));
  auto engine = make_engine(o);
  const auto got = generate(*engine, ps, 30);
  std::int64_t outs = 0, ins = 0, bytes_out = 0;
  for (const auto& r : got) {
    outs += r.timings.swap_out_count;
    ins += r.timings.swap_in_count;
    bytes_out += r.timings.swap_out_bytes;
  }
  EXPECT_GT(outs, 0) << "the pool was meant to force swaps";
  EXPECT_EQ(outs, ins);
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.swap_outs_total, outs);
  EXPECT_GE(s.host.spilled_bytes_total, bytes_out);
  EXPECT_GT(s.host.restored_blocks_total, 0);
  expect_reference(tokens_of(got), ps, 30);
  expect_all_blocks_free(*engine);
}

TEST_P(BackendConformance, PrefixReuseFromDeviceAndHostChangesNoToken) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + ", backend " + GetParam());
  EngineOptions o = options();
  const std::size_t block = tiny_model()->kv_layout(o.block_tokens, DType::kFp32).block_bytes();
  o.blocks = 24;
  o.host_bytes = 64 * block;
  auto engine = make_engine(o);
  const auto shared = random_tokens(rng_, 48);
  auto with_tail = [&](size_t n) {
    auto p = shared;
    const auto tail = random_tokens(rng_, n);
    p.insert(p.end(), tail.begin(), tail.end());
    return p;
  };
  const std::vector<std::vector<std::int32_t>> ps = {with_tail(9), with_tail(17)};
  const auto first = generate(*engine, {ps[0]}, 8);
  const auto second = generate(*engine, {ps[1]}, 8);  // device cache hit on the shared blocks
  EXPECT_GE(second[0].timings.prefix_hit_tokens, 40);
  // Evict the device cache with unrelated prompts; the prefix comes back from the host store.
  for (int i = 0; i < 4; ++i) generate(*engine, {random_tokens(rng_, 90)}, 4);
  const auto third = generate(*engine, {ps[0]}, 8);
  EXPECT_GE(third[0].timings.prefix_hit_tokens + third[0].timings.host_prefix_hit_tokens, 40);
  EXPECT_GT(third[0].timings.host_prefix_hit_tokens, 0);
  expect_reference({first[0].tokens, second[0].tokens, third[0].tokens}, {ps[0], ps[1], ps[0]}, 8);
  expect_all_blocks_free(*engine);
}

TEST_P(BackendConformance, CancellationFreesEverythingAndTheEngineGoesOn) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + ", backend " + GetParam());
  EngineOptions o = options();
  o.time_scale = 100;  // sim: ~0.2 ms per step of tiny, so 2000 tokens outlast the cancel
  auto engine = make_engine(o);
  Collector collector;
  Request r;
  r.prompt = random_tokens(rng_, 40);
  r.params.max_tokens = 2000;
  r.params.ignore_eos = true;
  std::promise<void> first_token;
  bool signalled = false;
  r.on_token = [&](RequestId, std::int32_t) {
    if (!signalled) {
      signalled = true;
      first_token.set_value();
    }
  };
  r.on_finish = collector.callback();
  auto id = engine->submit(std::move(r));
  ASSERT_TRUE(id.is_ok());
  ASSERT_EQ(first_token.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  engine->cancel(*id);
  ASSERT_TRUE(engine->wait_idle(std::chrono::seconds(30)));
  const auto out = collector.outputs().at(*id);
  EXPECT_EQ(out.finish, FinishReason::kAbort);
  EXPECT_LT(out.tokens.size(), 2000u);
  expect_all_blocks_free(*engine);
  const auto p = random_tokens(rng_, 20);
  expect_reference({generate(*engine, {p}, 5)[0].tokens}, {p}, 5);
}

TEST_P(BackendConformance, SeededSamplingReproducesAndReRunsContinue) {
  auto engine = make_engine(options());
  auto run = [&](const std::vector<std::int32_t>& prompt, std::int64_t offset, std::uint64_t seed) {
    Collector c;
    Request r;
    r.prompt = prompt;
    r.params.max_tokens = 12 - offset;
    r.params.temperature = 1.0;
    r.params.seed = seed;
    r.params.sample_offset = offset;
    r.params.ignore_eos = true;
    r.on_finish = c.callback();
    auto id = *engine->submit(std::move(r));
    EXPECT_TRUE(engine->wait_idle(std::chrono::seconds(30)));
    return c.outputs().at(id).tokens;
  };
  const std::vector<std::int32_t> prompt = {256, 10, 20, 30, 40};
  const auto a = run(prompt, 0, 7);
  EXPECT_EQ(a, run(prompt, 0, 7));
  EXPECT_NE(a, run(prompt, 0, 8));
  // A re-run from the prompt plus the first 5 tokens continues with the same 7.
  auto resumed = prompt;
  resumed.insert(resumed.end(), a.begin(), a.begin() + 5);
  EXPECT_EQ(run(resumed, 5, 7), std::vector<std::int32_t>(a.begin() + 5, a.end()));
}

// KV held by one engine and imported into another of the same backend continues with the
// tokens of one engine doing both (the disaggregated hand-off, without the network).
TEST_P(BackendConformance, HeldKvImportedIntoAnotherEngineContinuesTheSame) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + ", backend " + GetParam());
  const auto p = random_tokens(rng_, 37);
  const auto want = alone({p}, 10)[0];
  auto prefill = make_engine(options());
  auto decode = make_engine(options());
  Collector pc;
  Request pr;
  pr.prompt = p;
  pr.params.max_tokens = 1;
  pr.hold_kv = true;
  pr.on_finish = pc.callback();
  const RequestId pid = *prefill->submit(std::move(pr));
  ASSERT_TRUE(prefill->wait_idle(std::chrono::seconds(60)));
  const RequestOutput first = pc.outputs()[pid];
  ASSERT_EQ(first.tokens.size(), 1u);
  ASSERT_EQ(first.tokens[0], want[0]);
  std::promise<Result<Reservation>> reserved;
  decode->reserve(first.held_tokens, [&](Result<Reservation> r) { reserved.set_value(r); });
  Result<Reservation> res = reserved.get_future().get();
  ASSERT_TRUE(res.is_ok()) << res.status().to_string();
  ASSERT_TRUE(decode->wait_idle(std::chrono::seconds(10)));
  const KvMemory src = prefill->backend().kv_memory(), dst = decode->backend().kv_memory();
  if (src.kind == KvMemory::Kind::kHost) {
    // Both engines are idle: their pools may be read and written from this thread.
    for (size_t b = 0; b < res->blocks.size(); ++b) {
      std::memcpy(dst.base + res->blocks[b] * dst.block_stride,
                  src.base + first.held_blocks[b] * src.block_stride, src.block_stride);
    }
  } else {
    ASSERT_EQ(src.kind, KvMemory::Kind::kNone) << "device KV moves through a transfer agent";
  }
  prefill->release_held(pid);
  Collector dc;
  Request dr;
  dr.prompt = p;
  dr.prompt.push_back(first.tokens[0]);
  dr.params.max_tokens = 10;
  dr.params.ignore_eos = true;
  dr.kv_import =
      KvImport{res->id, static_cast<std::int64_t>(p.size()), static_cast<std::int64_t>(p.size())};
  dr.on_finish = dc.callback();
  const RequestId did = *decode->submit(std::move(dr));
  ASSERT_TRUE(decode->wait_idle(std::chrono::seconds(60)));
  EXPECT_EQ(dc.outputs()[did].tokens, want);
  ASSERT_TRUE(prefill->wait_idle(std::chrono::seconds(10)));  // the release took effect
  expect_all_blocks_free(*prefill);
  expect_all_blocks_free(*decode);
}

// A backend whose step fails: the requests of that step fail, the engine keeps serving others.
class FailingBackend final : public EngineBackend {
 public:
  explicit FailingBackend(std::unique_ptr<EngineBackend> inner) : inner_(std::move(inner)) {}
  std::atomic<int> fail_steps{0};
  std::string_view name() const override { return inner_->name(); }
  const ModelSpec& spec() const override { return inner_->spec(); }
  const kernels::KvLayout& kv_layout() const override { return inner_->kv_layout(); }
  std::int32_t num_blocks() const override { return inner_->num_blocks(); }
  std::size_t weight_bytes() const override { return inner_->weight_bytes(); }
  BackendCapabilities capabilities() const override { return inner_->capabilities(); }
  std::string describe() const override { return "failing " + inner_->describe(); }
  Status step(std::span<const StepSequence> batch, StepOutput& out) override {
    if (fail_steps > 0) {
      --fail_steps;
      return Status(StatusCode::kInternal, "injected step failure");
    }
    return inner_->step(batch, out);
  }
  KvMemory kv_memory() const override { return inner_->kv_memory(); }
  Status allocate_host_kv(std::int32_t blocks) override { return inner_->allocate_host_kv(blocks); }
  KvMemory host_kv_memory() const override { return inner_->host_kv_memory(); }
  Result<std::int64_t> copy_blocks(CopyDirection d, std::span<const kvstore::BlockId> device,
                                   std::span<const kvstore::BlockId> host) override {
    return inner_->copy_blocks(d, device, host);
  }
  Status sync() override { return inner_->sync(); }

 private:
  std::unique_ptr<EngineBackend> inner_;
};

TEST_P(BackendConformance, AFailedStepFailsOnlyItsRequests) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + ", backend " + GetParam());
  auto inner = create_backend(GetParam(), backend_options(options()));
  ASSERT_TRUE(inner.is_ok());
  auto failing = std::make_unique<FailingBackend>(std::move(inner).value());
  FailingBackend* raw = failing.get();
  raw->fail_steps = 1;
  auto engine = Engine::create(EngineConfig{}, std::move(failing));
  ASSERT_TRUE(engine.is_ok());
  const auto p = random_tokens(rng_, 12);
  const auto out = generate(**engine, {p}, 4)[0];
  EXPECT_EQ(out.finish, FinishReason::kError);
  EXPECT_NE(out.error.find("injected step failure"), std::string::npos) << out.error;
  EXPECT_EQ((*engine)->stats().failed_steps_total, 1);
  expect_all_blocks_free(**engine);
  // The next request runs normally.
  const auto ok = generate(**engine, {p}, 4)[0];
  EXPECT_EQ(ok.finish, FinishReason::kLength);
  EXPECT_EQ(ok.tokens.size(), 4u);
}

INSTANTIATE_TEST_SUITE_P(AllRegistered, BackendConformance, ::testing::ValuesIn(backend_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace kvfleet::worker
