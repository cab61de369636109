#pragma once
// The worker process: one engine, one transfer agent, an HTTP server for the coordinator's
// internal API, /health and /metrics, and a heartbeat that keeps its lease in the
// coordinator's registry. The internal API (JSON over HTTP, NDJSON streams) is described in
// worker/README.md.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/cluster_secret.h"
#include "common/status.h"

namespace kvfleet::worker {

struct WorkerConfig {
  std::string role = "both";   // prefill | decode | both
  std::string model = "tiny";  // built-in name or config.json path
  std::string weights;         // safetensors; empty: seeded random weights
  std::uint64_t seed = 0;
  std::string backend = "cpu";  // cpu | sim (| cuda): see worker/backend.h
  std::string coordinator;      // URL; empty: standalone (no registration)
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;      // 0: any free port
  std::string advertise_host;  // the host others reach this worker at; default: host
  std::string id;              // default: ROLE-HOST-PORT
  std::int32_t kv_blocks = 0;  // 0: the backend's default (cpu 1024; sim: what HBM holds)
  std::int64_t block_tokens = 16;
  std::size_t host_kv_bytes = 0;
  std::string kv_dtype;  // empty: the backend's default (cpu fp32; sim the model's dtype)
  int threads = 0;       // cpu: BLAS threads (0: the library's default)
  // sim: the modelled device (built-in name or a hardware/profile file), its TP degree, the
  // link hand-offs cross (perfmodel/link.h), and wall seconds per modelled second.
  std::string hardware = "a100-80g";
  std::int64_t tp = 1;
  std::string link = "nvlink";
  double time_scale = 1.0;
  std::int64_t max_batch_tokens = 512;
  std::int64_t max_running = 64;
  std::int64_t max_model_len = 0;  // 0: the model's
  std::int64_t max_queued = 1024;  // waiting + running beyond which requests get 429
  std::string transfer = "ucx";    // ucx | loopback | nccl
  double heartbeat_seconds = 0.5;
  double kv_lease_seconds = 30;  // held prefill KV is freed when not released by then
  // A decode worker without room for an imported request's KV waits this long for blocks to
  // free up (imports first come, first served, ahead of new admissions), then recomputes the
  // prompt itself. Keep it below the prefill's lease.
  double kv_import_wait_seconds = 10;
  double drain_seconds = 30;  // graceful stop: time given to in-flight requests
  // Signs this worker's calls and KV hand-offs and authenticates the calls it serves (see
  // common/cluster_secret.h). Required when the worker listens off loopback.
  std::optional<ClusterSecret> secret;
  // Faults to inject on purpose (worker/fault_injection.h), e.g. "corrupt-kv=0.3"; empty: none.
  std::string inject_faults;
};

class WorkerServer {
 public:
  // Builds the engine and agent, binds the port, registers with the coordinator (when set).
  static Result<std::unique_ptr<WorkerServer>> create(const WorkerConfig& config);
  virtual ~WorkerServer() = default;
  virtual std::uint16_t port() const = 0;
  virtual std::string url() const = 0;
  virtual const std::string& id() const = 0;
  // Serves until stop() (from any thread, or a signal handler via request_stop()).
  virtual void run() = 0;
  // Graceful: stops accepting, deregisters, drains in-flight requests, then run() returns.
  virtual void stop() = 0;
};

}  // namespace kvfleet::worker
