#pragma once
// `kvfleet simulate`: a whole cluster in one process on a virtual clock (sim/cluster_sim.h): the
// production routing, admission, schedulers, block pools and host stores, with step, swap and
// hand-off times from the analytical model. The workload flags and the output (table and JSON
// keys) are `kvfleet bench serve`'s (and so vLLM's), plus per-phase TTFT means, swaps,
// concurrency over time and utilisation per worker. `--compare` runs the colocated and the
// disaggregated layout of the same workers over the rate sweep and writes the report `kvfleet
// bench compare` writes.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "apps/workload_flags.h"

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct SimulateOptions {
  // The cluster.
  std::string model = "yi-34b-200k";
  std::string hardware = "a100-80g";
  std::int64_t tp = 1;
  std::string link = "nvlink";
  int prefill = 0, decode = 0, colocated = 0;
  std::string mode;  // default: from the worker counts
  // Engines, as `kvfleet worker`.
  std::int32_t kv_blocks = 0;
  std::int64_t block_tokens = 16;
  std::int64_t max_batch_tokens = 512;
  std::int64_t max_running = 64;
  std::string host_kv_bytes = "0";
  std::string kv_dtype;
  // Coordinator, as `kvfleet serve`.
  std::int64_t max_inflight = 256;
  std::int64_t auto_local_prefill_tokens = 256;
  double heartbeat_seconds = 0.5;
  double rpc_seconds = 0.0003;
  double import_wait_seconds = 10;  // as kvfleet worker --kv-import-wait-seconds
  // The workload and output, as `kvfleet bench serve` (--seed also seeds the sim tokens).
  WorkloadFlags workload;
  // --compare: both layouts of the same workers over the sweep, and a report.
  bool compare = false;
  std::string workloads;  // NAME:INPUT:OUTPUT,... (default: one from --input-len/--output-len)
  std::string out = "simulate-compare";
};

CLI::App* add_simulate_command(CLI::App& root, SimulateOptions& opts);
int run_simulate(const SimulateOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
