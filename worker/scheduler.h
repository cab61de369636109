#pragma once
// The engine's scheduling policy: which sequences run in the next step, with how many tokens,
// and which are preempted or resumed. Pure bookkeeping: it moves sequences between queues and
// allocates or releases device blocks in the BlockPool, and returns a plan of the copies the
// engine must do; it performs no copies, I/O or clock reads.
//
// Per step, under a token budget (chunked prefill):
//  1. running sequences in admission order: a decoding sequence gets one token, a prefilling
//     one the next chunk. When blocks run out, the latest-admitted running sequence is preempted:
//     swapped out to the host store when it has room, else dropped for recomputation;
//  2. if nothing was preempted, swapped sequences resume (oldest first) when their blocks fit;
//  3. then waiting sequences are admitted in order, reusing cached prefix blocks (device, then
//     host) and allocating the rest.

#include <cstdint>
#include <deque>
#include <vector>

#include "kernels/kv_layout.h"
#include "kvstore/block_pool.h"
#include "kvstore/host_index.h"
#include "worker/sequence.h"

namespace kvfleet::worker {

struct SchedulerConfig {
  std::int64_t max_batch_tokens = 512;  // tokens per step (prefill chunks + decode tokens)
  std::int64_t max_running = 256;       // sequences in one batch
  bool prefix_caching = true;
  std::uint64_t hash_salt = 0;  // separates models (see kvstore/prefix_hash.h)
};

struct ScheduledChunk {
  Sequence* seq = nullptr;
  std::int64_t num_tokens = 0;  // tokens [num_computed, num_computed + num_tokens)
};

// Copies of KV between device blocks and host blocks that must happen before the step runs, in
// this order: swap-outs (device -> host), then restores (host -> device).
struct SwapOut {
  Sequence* seq = nullptr;
  std::vector<kvstore::BlockId> device_blocks;  // already released in the pool: copy them first
};
struct Restore {
  Sequence* seq = nullptr;
  std::vector<kvstore::BlockId> host_blocks;  // held references, released after the copy
  std::vector<kvstore::BlockId> device_blocks;
  bool resume = false;  // a swapped sequence resuming (else a host prefix hit)
};

struct StepPlan {
  std::vector<SwapOut> swap_outs;
  std::vector<Restore> restores;
  std::vector<ScheduledChunk> chunks;
  std::vector<Sequence*> recomputed;  // preempted without a copy: back to waiting
  bool empty() const { return chunks.empty() && swap_outs.empty() && restores.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, const kernels::KvLayout& layout,
            kvstore::BlockPool& device, kvstore::HostKvIndex* host);

  void add(Sequence* seq);  // a new request, at the back of the waiting queue
  // A sequence that arrives with its KV in device blocks (imported from a prefill worker): it
  // joins the running batch at once, where it can be preempted like any other. (Waiting with
  // blocks held could starve swapped sequences of the blocks they need to resume.)
  void add_running(Sequence* seq);
  // Removes a sequence wherever it is and releases its device and host blocks.
  void remove(Sequence* seq);
  // Plans the next step. `host_available` is the host store's free + cached blocks now.
  StepPlan schedule(std::int64_t host_available);
  // After the step ran: publishes the hashes of blocks that became full.
  void publish_full_blocks(Sequence* seq);
  // Blocks that admitting waiting sequences which arrived at or after `from_arrival` must leave
  // free (imports waiting for room, which were asked for first). Running and swapped sequences,
  // and waiting ones that arrived earlier (a preempted sequence, a request already queued), are
  // not held back by it: one queue, first come, first served.
  void set_admission_headroom(std::int64_t blocks, double from_arrival = 0) {
    headroom_ = blocks;
    headroom_from_ = from_arrival;
  }
  // Whether a swapped or waiting sequence arrived before `t`: an import asked for at `t` waits
  // behind it.
  bool has_queued_before(double t) const;

  std::int64_t num_running() const { return static_cast<std::int64_t>(running_.size()); }
  std::int64_t num_waiting() const { return static_cast<std::int64_t>(waiting_.size()); }
  std::int64_t num_swapped() const { return static_cast<std::int64_t>(swapped_.size()); }
  bool idle() const { return running_.empty() && waiting_.empty() && swapped_.empty(); }

 private:
  // Gives `seq` blocks for `tokens` tokens when that leaves at least `keep_free` available.
  bool allocate_blocks(Sequence* seq, std::int64_t tokens, std::int64_t keep_free = 0);
  void preempt(Sequence* victim, StepPlan& plan, std::int64_t& host_available);
  void release_device(Sequence* seq);
  void match_prefix(Sequence* seq, StepPlan& plan);
  void extend_hashes(Sequence* seq);

  SchedulerConfig config_;
  kernels::KvLayout layout_;
  kvstore::BlockPool& device_;
  kvstore::HostKvIndex* host_;
  std::vector<Sequence*> running_;  // admission order
  std::deque<Sequence*> waiting_;   // admission order (preempted sequences go to the front)
  std::vector<Sequence*> swapped_;  // admission order
  std::int64_t headroom_ = 0;
  double headroom_from_ = 0;
};

}  // namespace kvfleet::worker
