#pragma once
// The workload flags `kvfleet bench serve` and `kvfleet simulate` share (same names, defaults and
// meaning, vLLM's where vLLM has them), and what both do with them.

#include <cstdint>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/report.h"
#include "bench/runner.h"
#include "bench/workload.h"
#include "common/model_spec.h"
#include "common/status.h"
#include "perfmodel/hardware.h"

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct WorkloadFlags {
  std::string dataset;  // JSONL; empty: synthetic
  std::int64_t num_prompts = 100;
  std::int64_t input_len = 1024;
  std::int64_t output_len = 128;
  double range_ratio = 0;
  double shared_prefix_fraction = 0;
  std::int64_t turns = 1;
  std::string request_rate = "inf";
  std::string sweep_rates;  // "1,2,4": one run per rate
  double burstiness = 1.0;
  std::int64_t max_concurrency = 0;
  std::vector<std::string> goodput;  // ttft:MS tpot:MS e2el:MS
  std::string percentiles = "99";
  std::uint64_t seed = 0;
  bool json = false;
  std::string save_result;  // write the JSON here too
};

void add_workload_flags(CLI::App* command, WorkloadFlags& flags);

// The workload: the dataset file, or synthetic requests of `input` / `output` tokens (mean) with
// the flags' range ratio, shared prefix and turns, drawn from `seed`.
Result<std::vector<bench::WorkloadRequest>> make_workload(const WorkloadFlags& flags,
                                                          std::int64_t input, std::int64_t output,
                                                          std::uint64_t seed);
// --sweep-rates when given, else --request-rate; plus the checks on burstiness and concurrency.
Result<std::vector<double>> workload_rates(const WorkloadFlags& flags);

// Prints one result per rate (a JSON object for one rate, a list for a sweep) when --json, and
// writes it to --save-result when given.
Status emit_results(const WorkloadFlags& flags, const std::vector<nlohmann::json>& results,
                    std::ostream& out);

// A workload of the colocated-vs-disaggregated report, with what perfmodel predicts for one of
// its requests alone on `hw` at TP `tp` (prefill, a decode step at its context) and the hand-off
// of its KV over a link of `link_bandwidth` bytes/s plus `link_latency` seconds.
bench::CompareWorkload predicted_compare_workload(const ModelSpec& spec,
                                                  const perfmodel::HardwareSpec& hw,
                                                  std::int64_t tp,
                                                  const bench::WorkloadShape& shape,
                                                  double range_ratio, double link_bandwidth,
                                                  double link_latency);

}  // namespace kvfleet::apps
