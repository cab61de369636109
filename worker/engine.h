#pragma once
// Engine: an EngineCore (engine_core.h) on its own loop thread, for a worker process. Other
// threads submit and cancel through a locked inbox; results come back through the request's
// callbacks, called on the engine thread.
//
// Lifecycle: create() starts the thread; the destructor (or stop()) finishes every unfinished
// request with FinishReason::kAbort and joins. submit()/cancel()/stats() are thread-safe.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "worker/engine_core.h"

namespace kvfleet::worker {

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> create(const EngineConfig& config,
                                                std::unique_ptr<EngineBackend> backend);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request (errors as EngineCore::make_sequence, or
  // failed_precondition when stopped).
  Result<RequestId> submit(Request request);
  // Queues several requests at once: all are validated first (one bad request queues none) and
  // reach the scheduler in the same step, in order.
  Result<std::vector<RequestId>> submit_batch(std::vector<Request> requests);
  // Finishes the request with kAbort and frees its blocks; unknown or finished ids are ignored.
  void cancel(RequestId id);
  // Sets aside blocks for the KV of `tokens` tokens; `done` runs on the engine thread with the
  // blocks, or resource_exhausted when fewer are free and none free up within `wait_seconds`
  // (0: fail at once). See EngineCore::reserve.
  void reserve(std::int64_t tokens, std::function<void(Result<Reservation>)> done,
               double wait_seconds = 0);
  // Frees an unused reservation (an import that failed). Unknown ids are ignored.
  void cancel_reservation(std::uint64_t id);
  // Frees the KV kept by a hold_kv request. Unknown ids are ignored.
  void release_held(RequestId id);
  // Up to kPrefixSummaryLimit hashes of full blocks in the device prefix cache, refreshed by
  // the engine thread at most every kPrefixSummarySeconds.
  std::vector<kvstore::BlockHash> prefix_summary() const;
  static constexpr double kPrefixSummarySeconds = 0.25;
  static constexpr std::size_t kPrefixSummaryLimit = 8192;

  // Waits until no request is queued or running and every reserve/release call took effect
  // (stats() shows it); false on timeout.
  bool wait_idle(std::chrono::milliseconds timeout);
  void stop();

  EngineStats stats() const;
  const EngineBackend& backend() const { return core_->backend(); }
  const kvstore::BlockPool& device_pool() const { return core_->device_pool(); }  // stopped only
  std::int64_t max_model_len() const { return core_->max_model_len(); }
  std::uint64_t prefix_hash_salt() const { return core_->prefix_hash_salt(); }

 private:
  Engine(const EngineConfig& config, std::unique_ptr<EngineCore> core);
  void loop();
  void drain_inbox();
  // Publishes stats, then lets wait_idle() see the requests finished since the last call.
  void settle();

  EngineConfig config_;
  std::unique_ptr<EngineCore> core_;  // engine thread only (after construction)
  double last_summary_time_ = -1;

  // Shared with other threads.
  mutable std::mutex mu_;
  std::condition_variable cv_;       // wakes the loop
  std::condition_variable idle_cv_;  // wakes wait_idle
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<RequestId> cancels_;
  struct PendingReserve {
    std::int64_t tokens;
    double wait_seconds;
    double asked;  // clock time of the call: ordered against requests' arrival times
    std::function<void(Result<Reservation>)> done;
  };
  std::vector<PendingReserve> reserves_;
  std::vector<std::uint64_t> unreserves_;
  std::vector<RequestId> unholds_;
  std::vector<kvstore::BlockHash> prefix_summary_;
  std::int64_t in_flight_ = 0;  // submitted and not finished, plus unsettled control calls
  std::int64_t settled_controls_ = 0;
  bool stopping_ = false;
  EngineStats published_;
  std::thread thread_;
};

}  // namespace kvfleet::worker
