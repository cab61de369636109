#pragma once
// The coordinator's view of its workers: who they are (registration), how loaded they are
// (heartbeats), and until when they are trusted (leases). Pure state with an injected clock:
// no I/O, no threads (the coordinator's event loop owns it).

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvfleet::coordinator {

// Hashes of the full blocks in a worker's device prefix cache, as its last report gave them.
// Rebuilt at every heartbeat of every worker (thousands of hashes each), so it is one flat
// open-addressing table (one allocation, no sort; the hashes are already uniformly mixed), and
// copies share it (a summary that did not change is handed on without copying).
class PrefixHashes {
 public:
  PrefixHashes() = default;
  explicit PrefixHashes(const std::vector<std::uint64_t>& hashes);
  bool contains(std::uint64_t hash) const;
  void insert(std::uint64_t hash);  // rebuilds the table: for tests and small sets
  bool empty() const { return size() == 0; }
  std::size_t size() const { return table_ ? table_->count : 0; }

 private:
  struct Table {
    std::vector<std::uint64_t> slots;  // 0: empty (a zero hash is kept in has_zero)
    bool has_zero = false;
    std::size_t count = 0;
  };
  std::shared_ptr<const Table> table_;
};

struct WorkerLoad {
  std::int64_t running = 0, waiting = 0, swapped = 0;
  std::int64_t free_blocks = 0, total_blocks = 0, host_free_blocks = 0, held_blocks = 0;
  PrefixHashes prefix_hashes;  // full blocks in its device prefix cache
  double step_seconds = 0;     // its longest engine step in its last report
};

struct WorkerInfo {
  std::string id, url, role, model, transfer, backend;
  std::int64_t max_model_len = 0, vocab_size = 0, kv_blocks = 0, block_tokens = 16;
  std::int64_t block_bytes = 0;
  std::int64_t bos_token_id = -1, eos_token_id = -1;
  std::uint64_t prefix_hash_salt = 0;
  WorkerLoad load;
  double lease_expiry = 0;  // clock seconds
  double registered_at = 0;
  // Requests this coordinator routed to it and not yet finished, counted from the routing
  // decision (a disaggregated request counts on its prefill worker only while prefilling).
  std::int64_t assigned = 0;
  bool suspect = false;  // a call failed; skipped until its next heartbeat
};

class Registry {
 public:
  explicit Registry(double lease_seconds) : lease_seconds_(lease_seconds) {}
  // Adds or replaces a worker (a restarted worker re-registers under its id). A live worker's
  // id from another URL is refused (already_exists) until its lease ran out.
  Status add(WorkerInfo info, double now);
  // failed_precondition when live workers of info's model (other ids) have another vocabulary,
  // BOS/EOS id or context: the coordinator refuses such registrations, so that one worker cannot
  // change a model for every user. (Routing and admission themselves handle workers of one model
  // with different contexts, as the simulator may configure them.)
  Status check_model_agreement(const WorkerInfo& info, double now) const;
  // Renews a lease and records load; false when the id is unknown (the worker re-registers).
  bool heartbeat(const std::string& id, WorkerLoad load, double now);
  bool remove(const std::string& id);
  // Removes workers whose lease ran out; returns their ids.
  std::vector<std::string> expire(double now);
  WorkerInfo* find(const std::string& id);
  const std::map<std::string, WorkerInfo>& workers() const { return workers_; }
  std::vector<std::string> models() const;
  // The context of `model`: the smallest max_model_len among its workers that report one;
  // 0 when none does (no limit known).
  std::int64_t max_model_len(const std::string& model) const;

  // Request accounting (WorkerInfo::assigned, which routing reads). A request counts on a
  // worker from the routing decision until it no longer needs it: on its colocated or decode
  // worker until it ends, on a disaggregated request's prefill worker while it prefills. So a
  // burst routed at one moment spreads over the pool instead of landing on the worker whose
  // last report looked emptiest. Unknown ids are ignored (the worker left); unassign never
  // goes below 0 (a re-registration resets the count).
  void assign(const std::string& id);
  void unassign(const std::string& id);
  double lease_seconds() const { return lease_seconds_; }

 private:
  double lease_seconds_;
  std::map<std::string, WorkerInfo> workers_;
};

// Counts one request on a worker (Registry::assign) for as long as it is in scope.
class Assigned {
 public:
  Assigned(Registry& registry, std::string id) : registry_(registry), id_(std::move(id)) {
    registry_.assign(id_);
  }
  ~Assigned() { registry_.unassign(id_); }
  Assigned(const Assigned&) = delete;
  Assigned& operator=(const Assigned&) = delete;

 private:
  Registry& registry_;
  std::string id_;
};

}  // namespace kvfleet::coordinator
