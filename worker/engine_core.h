#pragma once
// EngineCore: the engine without a thread. It owns a backend, the device block pool, the host
// KV store's index, the scheduler and every sequence, and runs one step at a time when its owner
// calls step(). The threaded Engine (engine.h) wraps one for a worker process; the discrete-event
// simulator (`kvfleet simulate`) drives many on a virtual clock. Both run this same code.
//
// Threading: make_sequence() and the const queries of immutable state may be called from any
// thread; everything else from the owner's thread only.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "kvstore/host_index.h"
#include "worker/backend.h"
#include "worker/fault_injection.h"
#include "worker/scheduler.h"
#include "worker/sequence.h"

namespace kvfleet::worker {

struct StepReport {
  double start = 0;                   // clock time the step began
  double seconds = 0;                 // the whole step: copies + forward
  double forward_seconds = 0;         // the backend's step
  std::int64_t decode_sequences = 0;  // sequences that computed one token to produce the next
  std::int64_t prefill_tokens = 0;    // tokens of prefill chunks
  std::int64_t swap_outs = 0, swap_ins = 0;
  std::int64_t failed = 0;  // requests failed by this step (a backend error)
  // Nothing could run and nothing changed: the waiting sequences need blocks that only
  // something from outside frees (a lease released, a request cancelled, a reservation
  // resolved), so the next step would plan the same nothing. The owner waits for such an event
  // instead of stepping again (a loop of empty steps would spin; on a virtual clock, stop time).
  bool stalled = false;
};

struct EngineConfig {
  SchedulerConfig scheduler;
  std::size_t host_kv_bytes = 0;   // 0: no host store (preemption recomputes)
  bool offload_finished = true;    // copy finished requests' full blocks to the host store
  // Checksum every block spilled to the host store and verify it on restore; a block that fails
  // is never used (the sequence is recomputed). On whenever the host KV has bytes; off only to
  // measure what it costs.
  bool host_kv_checksums = true;
  FaultInjection faults;           // corrupt-spill (fault_injection.h); none by default
  std::int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  std::string name = "engine";     // thread name and log prefix
  std::shared_ptr<Clock> clock;    // default: the steady clock
  // Called on the owner's thread after every step that ran a forward pass (keep it short).
  std::function<void(const StepReport&)> on_step;
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
  std::int64_t failed_steps_total = 0;
  std::int64_t held_blocks = 0;           // kept for hand-off (hold_kv)
  std::int64_t reserved_blocks = 0;       // set aside for imports
  std::int64_t waiting_reservations = 0;  // imports waiting for blocks
  double last_step_seconds = 0;
  std::uint64_t prefix_hash_salt = 0;
};

// invalid_argument naming the first prompt token outside [0, vocab_size) and its position.
Status check_prompt_tokens(const std::vector<std::int32_t>& prompt, std::int64_t vocab_size);

class EngineCore {
 public:
  static Result<std::unique_ptr<EngineCore>> create(const EngineConfig& config,
                                                    std::unique_ptr<EngineBackend> backend);
  EngineCore(const EngineCore&) = delete;
  EngineCore& operator=(const EngineCore&) = delete;

  // Validates a request and builds its sequence (any thread). Errors: invalid_argument (empty
  // prompt, token ids outside the vocabulary, bad sampling parameters), out_of_range (prompt +
  // max_tokens beyond the model's context or the KV pool).
  Result<std::unique_ptr<Sequence>> make_sequence(Request request) const;

  // Owner's thread. Queues a sequence (one with an import adopts its reservation and joins the
  // running batch; an unknown reservation finishes it with kError).
  void add(std::unique_ptr<Sequence> seq);
  // Finishes the request with kAbort and frees its blocks; unknown or finished ids are ignored.
  void cancel(RequestId id);
  // Sets aside blocks for the KV of `tokens` tokens (an import). When fewer are free, the
  // reservation waits, FIFO, until enough are, or until clock time `deadline`; while one waits,
  // no new waiting sequence is admitted into the blocks it needs (it arrived first; running and
  // swapped sequences go on). `done` is called on the owner's thread exactly once, with the
  // blocks or resource_exhausted: at once when possible, else from service_reservations() or
  // step(). A deadline at or before now fails at once when the blocks are not free.
  // `asked`: when the import was asked for (default: now), the time it queues by against
  // requests' arrival times.
  void reserve(std::int64_t tokens, double deadline, std::function<void(Result<Reservation>)> done,
               std::optional<double> asked = std::nullopt);
  // Grants waiting reservations that fit now and fails those past their deadline.
  void service_reservations();
  // The earliest deadline of a waiting reservation (an idle owner wakes up then), if any.
  std::optional<double> next_reservation_deadline() const;
  void cancel_reservation(std::uint64_t id);  // unknown ids are ignored
  void release_held(RequestId id);            // frees a hold_kv request's KV; unknown: ignored
  // Whether a step would do anything.
  bool has_work() const { return !scheduler_.idle(); }
  // Runs one step: swap-outs, restores, the backend's step over every scheduled chunk, sampling,
  // finishing. A backend error fails only the requests of this step.
  StepReport step();
  // Finishes every request (kAbort when the engine stops, kError after an internal failure).
  void finish_all(FinishReason reason, const std::string& why);
  // Requests finished (their on_finish called) since the last call.
  std::int64_t take_finished();

  EngineStats stats() const;
  // Up to `limit` hashes of full blocks in the device prefix cache.
  std::vector<kvstore::BlockHash> prefix_summary(std::size_t limit) const;
  std::uint64_t prefix_hash_salt() const { return salt_; }
  const EngineBackend& backend() const { return *backend_; }
  const kvstore::BlockPool& device_pool() const { return device_; }
  const kvstore::HostKvIndex* host_index() const { return host_.get(); }
  std::int64_t max_model_len() const { return max_model_len_; }
  double now() const { return clock_->now(); }
  const std::shared_ptr<Clock>& clock() const { return clock_; }
  std::size_t num_sequences() const { return sequences_.size(); }

 private:
  EngineCore(const EngineConfig& config, std::unique_ptr<EngineBackend> backend,
             std::unique_ptr<kvstore::HostKvIndex> host);
  void finish(Sequence* seq, FinishReason reason, std::string error = {});
  void append_token(Sequence* seq, std::int32_t token, double now, double step_seconds);
  void offload(Sequence* seq);
  void swap_out(SwapOut& out, StepReport& report);
  // Device -> host copies of spills, checksummed when checksums_ (and, with the corrupt-spill
  // fault, one byte of a spilled block damaged afterwards).
  Result<std::int64_t> spill_copy(std::span<const kvstore::BlockId> device,
                                  std::span<const kvstore::BlockId> host);
  // Host -> device copy of a restore, verified when checksums_: data_loss when a host block's
  // bytes are not what was spilled into it.
  Status restore_copy(const Restore& r);
  // Drops a sequence's KV and queues it to be computed again from its tokens.
  void recompute(Sequence* seq);

  EngineConfig config_;
  std::shared_ptr<Clock> clock_;
  std::unique_ptr<EngineBackend> backend_;
  std::unique_ptr<kvstore::HostKvIndex> host_;
  bool checksums_ = false;  // spills and restores are checksummed (see EngineConfig)
  std::vector<std::uint64_t> sums_;
  kvstore::BlockPool device_;
  std::uint64_t salt_;
  Scheduler scheduler_;
  std::int64_t max_model_len_ = 0;

  std::unordered_map<RequestId, std::unique_ptr<Sequence>> sequences_;
  std::uint64_t next_arrival_ = 0;
  StepOutput output_;
  std::vector<float> processed_;  // one logits row after bias and penalties
  std::vector<StepSequence> batch_;
  EngineStats totals_;
  std::int64_t finished_ = 0;
  std::unordered_map<std::uint64_t, std::vector<kvstore::BlockId>> reserved_;
  struct WaitingReservation {
    std::int64_t blocks;
    double deadline;
    double asked;  // clock time of reserve(): sequences queued before it go first
    std::function<void(Result<Reservation>)> done;
  };
  std::deque<WaitingReservation> waiting_reservations_;
  Reservation grant(std::int64_t blocks);
  void update_headroom();
  std::unordered_map<RequestId, std::vector<kvstore::BlockId>> held_;
  std::uint64_t next_reservation_ = 1;
  double last_step_seconds_ = 0;
  mutable std::atomic<RequestId> next_id_{1};
  // Unseeded requests sample from this (random per engine) mixed with their id.
  const std::uint64_t unseeded_base_ = std::random_device{}();
};

}  // namespace kvfleet::worker
