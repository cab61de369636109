#pragma once
// Drives an OpenAI-compatible server (kvfleet or any other) with a workload and measures each
// request as `vllm bench serve` does: TTFT (first streamed token), ITL (between streamed
// tokens), TPOT ((E2E - TTFT) / (output tokens - 1)), E2E, token counts from the usage chunk.

#include <cstdint>
#include <iosfwd>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/workload.h"
#include "common/status.h"

namespace kvfleet::bench {

struct RunConfig {
  std::string url;  // http://HOST:PORT
  std::string model;
  bool chat = false;  // /v1/chat/completions instead of /v1/completions
  double rate = std::numeric_limits<double>::infinity();  // requests/s
  double burstiness = 1.0;           // gamma shape of arrival gaps (1: Poisson)
  std::int64_t max_concurrency = 0;  // 0: unbounded
  std::int64_t warmup = 0;           // requests sent (and dropped) before measuring
  double temperature = 0;
  bool ignore_eos = true;
  std::uint64_t seed = 0;
  double timeout_seconds = 600;
  bool progress = true;
  std::string backend = "openai";  // the summary's "backend" (vLLM's key: the client API used)
};

struct RequestResult {
  bool success = false;
  std::string error;
  std::int64_t prompt_tokens = 0, output_tokens = 0;
  double start = 0;  // seconds from the run's start
  double ttft = 0, e2e = 0;
  std::vector<double> itls;
};

struct RunResult {
  std::vector<RequestResult> requests;
  double duration = 0;
  double rate = 0;
};

// Runs the workload; progress (a bar on a terminal, a line per 10% otherwise) goes to `progress`.
Result<RunResult> run_benchmark(const RunConfig& config,
                                const std::vector<WorkloadRequest>& workload,
                                std::ostream* progress);

// Multiplies every time of the run by `factor` (starts, TTFTs, E2Es, ITLs, the duration): a run
// against sim workers at time scale S, scaled by 1/S, is in modelled seconds.
void scale_times(RunResult& run, double factor);

// A request rate: a positive number, or "inf"/"infinity" (everything at once).
Result<double> parse_rate(const std::string& text);
// "1,2,4": positive rates or inf; `what` names the flag in errors.
Result<std::vector<double>> parse_rates(const std::string& text, const std::string& what);
// "50,90,99": percentiles in (0, 100).
Result<std::vector<double>> parse_percentiles(const std::string& text);

// A named synthetic workload shape: NAME:INPUT:OUTPUT.
struct WorkloadShape {
  std::string name;
  std::int64_t input = 0, output = 0;
};
// "long-prompt:768:16,long-output:64:96".
Result<std::vector<WorkloadShape>> parse_workload_shapes(const std::string& text);

struct Slo {
  std::map<std::string, double> ms;  // "ttft", "tpot", "e2el" -> limit in milliseconds
};
Result<Slo> parse_goodput(const std::vector<std::string>& items);  // "ttft:500" ...

// The result as vLLM's JSON (same keys: completed, request_throughput, mean_ttft_ms, p99_itl_ms,
// ...), plus request_goodput and slo_attainment when SLOs are given.
nlohmann::json summarize(const RunConfig& config, const RunResult& run, const Slo& slo,
                         const std::vector<double>& percentiles);
// The table `vllm bench serve` prints.
std::string format_table(const nlohmann::json& summary, const std::vector<double>& percentiles);

}  // namespace kvfleet::bench
