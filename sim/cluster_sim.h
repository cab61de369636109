#pragma once
// A discrete-event simulation of a whole kvfleet cluster on a virtual clock (`kvfleet simulate`).
// It runs the production code, not a re-implementation: the coordinator's admission (admit()),
// registry and routing (route()) with its request accounting, and per worker an EngineCore
// (scheduler, block pool, host store index, hand-off bookkeeping) over a `sim` backend whose
// steps, swaps and hand-offs last what perfmodel predicts. What it models instead of running:
// the network (one `rpc_seconds` per control message between processes, the link spec for KV)
// and the clock.
//
// The flows mirror coordinator/server.cpp and worker/server.cpp: colocated requests run `full` on
// one worker; disaggregated ones prefill (hold_kv, one token) on a prefill worker, then the decode
// worker reserves blocks at its next step boundary, pulls the KV over the link, releases the
// prefill's lease and joins the sequence to its running batch (or recomputes the prompt when the
// reservation does not fit); `auto` prefills short or mostly cached prompts on the decode worker.
// Workers report their load to the registry every `heartbeat_seconds` (staggered), from the
// statistics their engine published at its last step boundary, as the worker process does.
//
// Single-threaded and deterministic: the same configuration and workload give the same result.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "bench/runner.h"
#include "common/dtype.h"
#include "common/model_spec.h"
#include "common/status.h"

namespace kvfleet::sim {

struct ClusterConfig {
  // Workers: every one runs `model` on `hardware` (built-in, file or profile) at TP `tp`.
  std::string model = "yi-34b-200k";
  std::string hardware = "a100-80g";
  std::int64_t tp = 1;
  std::string link = "nvlink";  // what KV hand-offs cross (perfmodel/link.h)
  int prefill = 0, decode = 0, colocated = 0;
  std::string mode;  // disaggregated | colocated | auto; empty: from the worker counts, as `up`
  // Engine settings, as `kvfleet worker`'s flags (same defaults).
  std::int32_t kv_blocks = 0;  // 0: what HBM holds after the weights
  std::int64_t block_tokens = 16;
  std::int64_t max_batch_tokens = 512;
  std::int64_t max_running = 64;
  std::size_t host_kv_bytes = 0;
  std::optional<DType> kv_dtype;
  std::uint64_t seed = 0;
  double import_wait_seconds = 10;  // as kvfleet worker --kv-import-wait-seconds
  // Coordinator settings, as `kvfleet serve`'s.
  std::int64_t max_inflight = 256;
  std::int64_t auto_local_prefill_tokens = 256;
  double heartbeat_seconds = 0.5;
  // One control message between two processes (coordinator <-> worker, worker <-> worker), and
  // the client's request reaching the coordinator; tokens reach the client one message after
  // the step that made them.
  double rpc_seconds = 0.0003;
};

// One request as a client sends it: prompt tokens (already tokenized), how many tokens to
// generate (the engine runs to max_tokens: simulated tokens never hit EOS), and where it sits in
// the workload (sessions run their turns in order, one after the other, as `bench serve`).
struct SimRequest {
  std::vector<std::int32_t> prompt;
  std::int64_t output_len = 0;
  std::int64_t session = -1;
  std::int64_t turn = 0;
};

struct WorkloadConfig {
  double rate = 0;                   // requests (chains) per second; <= 0 or infinite: all at once
  double burstiness = 1.0;           // gamma shape of the gaps (1: Poisson)
  std::int64_t max_concurrency = 0;  // 0: unbounded
  std::uint64_t seed = 0;
};

struct WorkerReport {
  std::string id, role;
  double busy_seconds = 0;  // summed step durations
  double utilisation = 0;   // busy / duration
  std::int64_t steps = 0, prompt_tokens = 0, generated_tokens = 0;
  std::int64_t swap_outs = 0, swap_ins = 0, recompute_preemptions = 0;
  std::int64_t prefix_hit_tokens = 0;
  // Times the engine had work it could not run (every free block taken, the rest held for
  // hand-offs or set aside for imports) and idled until something was released.
  std::int64_t stalls = 0;
  std::int64_t max_running = 0, max_waiting = 0;
  std::int32_t kv_blocks = 0;
};

// Cluster state at one heartbeat: summed over workers.
struct ConcurrencySample {
  double t = 0;
  std::int64_t running = 0, waiting = 0, swapped = 0, inflight = 0;
  double kv_usage = 0;  // device blocks used / total, all workers
};

struct SimResult {
  bench::RunResult run;  // per request, as `bench serve` measures them (seconds from the start)
  // Mean seconds of each TTFT phase over the requests that went through it, as the coordinator's
  // kvfleet_ttft_phase_seconds records them: queue, prefill, kv_transfer, decode_queue,
  // first_decode_step.
  std::vector<std::pair<std::string, double>> phase_means;
  std::vector<WorkerReport> workers;
  std::vector<ConcurrencySample> concurrency;
  std::int64_t swaps_out = 0, swaps_in = 0, recompute_preemptions = 0;
  std::int64_t handoffs = 0, handoff_recomputes = 0, local_prefills = 0;
  // Hand-offs whose decode worker had no room for the KV at once and waited for blocks (granted
  // or, after --kv-import-wait-seconds, recomputed), and the summed seconds from the decode
  // worker receiving a hand-off to its blocks being granted or refused (waits included).
  std::int64_t handoff_waits = 0;
  double handoff_reserve_seconds = 0;
  std::int64_t events = 0;     // simulation events processed
  double wall_seconds = 0;     // real time the simulation took
  std::string backend_detail;  // one worker's `sim` backend description
  std::int32_t kv_blocks_per_worker = 0;
};

// Progress: called now and then with (requests finished, requests in total).
using ProgressFn = std::function<void(std::int64_t done, std::int64_t total)>;

// Validates the configuration (unknown model, hardware or link, a model that does not fit:
// invalid_argument / not_found with the reason) and runs the workload to its end.
Result<SimResult> simulate(const ClusterConfig& cluster, const WorkloadConfig& workload,
                           const std::vector<SimRequest>& requests,
                           const ProgressFn& progress = {});

}  // namespace kvfleet::sim
