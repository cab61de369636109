#pragma once
// Engine: one loop thread that owns a backend (model + device KV), the device block pool, the
// scheduler and every sequence. Other threads submit and cancel through a locked queue; results
// come back through the request's callbacks, called on the engine thread.
//
// Lifecycle: create() starts the thread; the destructor (or stop()) finishes every unfinished
// request with FinishReason::kAbort and joins. submit()/cancel()/stats() are thread-safe.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kvstore/host_store.h"
#include "worker/backend.h"
#include "worker/scheduler.h"
#include "worker/sequence.h"

namespace kvfleet::worker {

struct EngineConfig {
  SchedulerConfig scheduler;
  std::size_t host_kv_bytes = 0;   // 0: no host store (preemption recomputes)
  bool offload_finished = true;    // copy finished requests' full blocks to the host store
  std::int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  std::string name = "engine";     // thread name and log prefix
  std::function<double()> clock;   // seconds; default: steady clock
  // Called on the engine thread after every forward pass (keep it short).
  std::function<void(const struct StepReport&)> on_step;
};

struct StepReport {
  double forward_seconds = 0;
  std::int64_t decode_sequences = 0;  // sequences that computed one token to produce the next
  std::int64_t prefill_tokens = 0;    // tokens of prefill chunks
};

// Device blocks set aside for KV that arrives from elsewhere (see KvImport).
struct Reservation {
  std::uint64_t id = 0;
  std::vector<kvstore::BlockId> blocks;
};

// A consistent snapshot for metrics.
struct EngineStats {
  std::int64_t running = 0, waiting = 0, swapped = 0;
  std::int32_t device_blocks_total = 0, device_blocks_used = 0, device_blocks_cached = 0;
  kvstore::HostKvStoreStats host;
  std::int64_t steps = 0;
  std::int64_t prompt_tokens_total = 0;  // computed prompt tokens (prefix hits excluded)
  std::int64_t generated_tokens_total = 0;
  std::int64_t prefix_hit_tokens_total = 0;  // device + host
  std::int64_t swap_outs_total = 0, swap_ins_total = 0, recompute_preemptions_total = 0;
  std::int64_t finished_total = 0;
  std::int64_t held_blocks = 0;      // kept for hand-off (hold_kv)
  std::int64_t reserved_blocks = 0;  // set aside for imports
  double last_step_seconds = 0;
  std::uint64_t prefix_hash_salt = 0;
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(const EngineConfig& config,
                                                std::unique_ptr<EngineBackend> backend);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request. Errors: invalid_argument (empty prompt, token ids outside
  // the vocabulary, bad sampling parameters), out_of_range (prompt + max_tokens beyond the
  // model's context or the KV pool), failed_precondition (stopped).
  Result<RequestId> submit(Request request);
  // Queues several requests at once: all are validated first (one bad request queues none) and
  // reach the scheduler in the same step, in order.
  Result<std::vector<RequestId>> submit_batch(std::vector<Request> requests);
  // Finishes the request with kAbort and frees its blocks; unknown or finished ids are ignored.
  void cancel(RequestId id);
  // Sets aside blocks for the KV of `tokens` tokens; `done` runs on the engine thread with the
  // blocks, or resource_exhausted when fewer blocks are available (nothing is queued).
  void reserve(std::int64_t tokens, std::function<void(Result<Reservation>)> done);
  // Frees an unused reservation (an import that failed). Unknown ids are ignored.
  void cancel_reservation(std::uint64_t id);
  // Frees the KV kept by a hold_kv request. Unknown ids are ignored.
  void release_held(RequestId id);
  // Up to `limit` hashes of full blocks in the device prefix cache (most recently used first),
  // refreshed by the engine thread at most every `prefix_summary_seconds`.
  std::vector<kvstore::BlockHash> prefix_summary() const;

  // Waits until no request is queued or running and every reserve/release call took effect
  // (stats() shows it); false on timeout.
  bool wait_idle(std::chrono::milliseconds timeout);
  void stop();

  EngineStats stats() const;
  const EngineBackend& backend() const { return *backend_; }
  const kvstore::BlockPool& device_pool() const { return device_; }  // engine thread or stopped
  std::int64_t max_model_len() const { return max_model_len_; }

 private:
  Engine(const EngineConfig& config, std::unique_ptr<EngineBackend> backend,
         std::unique_ptr<kvstore::HostKvStore> host);
  Result<std::unique_ptr<Sequence>> make_sequence(Request request);
  void loop();
  void drain_inbox();
  double step();  // returns the forward pass's seconds
  // Publishes stats, then lets wait_idle() see the requests finished since the last call.
  void settle(double step_seconds);
  void finish(Sequence* seq, FinishReason reason, std::string error = {});
  void sample_and_append(Sequence* seq, const float* logits, double now, double step_seconds);
  void offload(Sequence* seq);
  void publish_stats(double step_seconds);
  double now() const { return clock_(); }

  EngineConfig config_;
  std::function<double()> clock_;
  std::unique_ptr<EngineBackend> backend_;
  std::unique_ptr<kvstore::HostKvStore> host_;
  kvstore::BlockPool device_;
  Scheduler scheduler_;
  std::int64_t max_model_len_ = 0;

  // Engine-thread state.
  std::unordered_map<RequestId, std::unique_ptr<Sequence>> sequences_;
  std::uint64_t next_arrival_ = 0;
  std::vector<float> logits_;
  EngineStats totals_;
  std::int64_t finished_unsettled_ = 0;

  // Shared with other threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;       // wakes the loop
  std::condition_variable idle_cv_;  // wakes wait_idle
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<RequestId> cancels_;
  struct PendingReserve {
    std::int64_t tokens;
    std::function<void(Result<Reservation>)> done;
  };
  std::vector<PendingReserve> reserves_;
  std::vector<std::uint64_t> unreserves_;
  std::vector<RequestId> unholds_;
  std::vector<kvstore::BlockHash> prefix_summary_;
  // Engine-thread state for hand-offs.
  std::unordered_map<std::uint64_t, std::vector<kvstore::BlockId>> reserved_;
  std::unordered_map<RequestId, std::vector<kvstore::BlockId>> held_;
  std::uint64_t next_reservation_ = 1;
  double last_summary_time_ = -1;
  std::int64_t in_flight_ = 0;  // submitted and not finished
  bool stopping_ = false;
  EngineStats published_;
  std::atomic<RequestId> next_id_{1};
  // Unseeded requests sample from this (random per engine) mixed with their id.
  const std::uint64_t unseeded_base_ = std::random_device{}();
  std::thread thread_;
};

}  // namespace kvfleet::worker
