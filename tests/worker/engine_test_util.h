#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <random>

#include "worker/engine.h"
#include "worker/model.h"

namespace kvfleet::worker::test {

// The tiny model, built once per test binary (seeded weights).
inline std::shared_ptr<const Model> tiny_model() {
  static std::shared_ptr<const Model> m = *Model::random(*load_model_spec("tiny"), 1234);
  return m;
}

struct EngineOptions {
  std::string backend = "cpu";
  std::int32_t blocks = 256;
  std::int64_t block_tokens = 8;
  std::int64_t max_batch_tokens = 256;
  std::int64_t max_running = 64;
  std::size_t host_bytes = 0;
  bool prefix_caching = true;
  DType kv_dtype = DType::kFp32;
  // sim: the modelled device and how fast modelled time runs (tiny steps take microseconds).
  std::string hardware = "a100-80g";
  double time_scale = 0.01;
  std::string inject_faults;  // FaultInjection spec (e.g. "corrupt-spill=1")
  bool host_kv_checksums = true;
};

inline BackendOptions backend_options(const EngineOptions& o) {
  BackendOptions b;
  b.spec = tiny_model()->spec();
  if (o.backend == "cpu") b.model = tiny_model();
  b.seed = 1234;
  b.num_blocks = o.blocks;
  b.block_tokens = o.block_tokens;
  b.kv_dtype = o.kv_dtype;
  b.hardware = o.hardware;
  b.time_scale = o.time_scale;
  return b;
}

inline std::unique_ptr<Engine> make_engine(const EngineOptions& o) {
  auto backend = create_backend(o.backend, backend_options(o));
  EXPECT_TRUE(backend.is_ok()) << backend.status().to_string();
  EngineConfig c;
  c.scheduler.max_batch_tokens = o.max_batch_tokens;
  c.scheduler.max_running = o.max_running;
  c.scheduler.prefix_caching = o.prefix_caching;
  c.host_kv_bytes = o.host_bytes;
  c.host_kv_checksums = o.host_kv_checksums;
  auto faults = FaultInjection::parse(o.inject_faults, 77);
  EXPECT_TRUE(faults.is_ok()) << faults.status().to_string();
  if (faults.is_ok()) c.faults = *faults;
  auto e = Engine::create(c, std::move(backend).value());
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return std::move(e).value();
}

// Collects finished outputs by request id.
class Collector {
 public:
  FinishCallback callback() {
    return [this](const RequestOutput& out) {
      std::lock_guard<std::mutex> lock(mu_);
      outputs_[out.id] = out;
    };
  }
  std::map<RequestId, RequestOutput> outputs() {
    std::lock_guard<std::mutex> lock(mu_);
    return outputs_;
  }

 private:
  std::mutex mu_;
  std::map<RequestId, RequestOutput> outputs_;
};

// Submits every prompt at once and returns the outputs in prompt order.
inline std::vector<RequestOutput> generate(Engine& engine,
                                           const std::vector<std::vector<std::int32_t>>& prompts,
                                           std::int64_t max_tokens) {
  Collector collector;
  std::vector<Request> requests;
  for (const auto& p : prompts) {
    Request r;
    r.prompt = p;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    r.on_finish = collector.callback();
    requests.push_back(std::move(r));
  }
  // All at once: the same schedule however the threads are timed.
  auto submitted = engine.submit_batch(std::move(requests));
  EXPECT_TRUE(submitted.is_ok()) << submitted.status().to_string();
  const std::vector<RequestId> ids = submitted.is_ok() ? *submitted : std::vector<RequestId>{};
  EXPECT_TRUE(engine.wait_idle(std::chrono::seconds(120)));
  auto outs = collector.outputs();
  std::vector<RequestOutput> ordered;
  for (RequestId id : ids) ordered.push_back(outs[id]);
  return ordered;
}

inline std::vector<std::int32_t> random_tokens(std::mt19937_64& rng, size_t n) {
  std::vector<std::int32_t> p(n);
  for (auto& t : p) t = static_cast<std::int32_t>(rng() % 256);
  return p;
}

}  // namespace kvfleet::worker::test
