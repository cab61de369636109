#pragma once
// Workloads for `kvfleet bench serve`: requests from a JSONL file or synthetic (input and output
// length distributions, a shared-prefix fraction, multi-turn sessions), and their arrival times
// (Poisson or gamma at a rate, or all at once for a fixed concurrency).

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvfleet::bench {

struct WorkloadRequest {
  std::string prompt;          // text; for the byte-level models one byte is one token
  std::int64_t input_len = 0;  // intended prompt tokens (the server's usage is what counts)
  std::int64_t output_len = 0;
  std::int64_t session = -1;   // multi-turn: requests of one session run in turn order
  std::int64_t turn = 0;
};

struct LengthSpec {
  std::int64_t mean = 0;
  double range_ratio = 0;  // uniform in [mean * (1 - r), mean * (1 + r)], as vLLM's random dataset
};

struct SyntheticSpec {
  std::int64_t num_prompts = 100;
  LengthSpec input{1024, 0};
  LengthSpec output{128, 0};
  double shared_prefix_fraction = 0;  // of each prompt, a prefix common to every request
  std::int64_t turns = 1;             // > 1: sessions of this many turns, each turn's prompt
                                      // extends the previous one (history + new input)
  std::uint64_t seed = 0;
};

Result<std::vector<WorkloadRequest>> synthetic_workload(const SyntheticSpec& spec);

// JSONL: one object per line, {"prompt": "...", "output_len": N} or {"input_len": N,
// "output_len": M} (a synthetic prompt of that length); optional "session" and "turn". Blank
// lines are skipped; any other bad line is an error naming its number.
Result<std::vector<WorkloadRequest>> load_workload_file(const std::string& path, std::uint64_t seed);

// Arrival offsets in seconds for n requests: rate <= 0 or infinite means all at time 0; else
// gamma-distributed gaps with shape `burstiness` (1: Poisson) and mean 1/rate.
std::vector<double> arrival_times(std::size_t n, double rate, double burstiness, std::uint64_t seed);

}  // namespace kvfleet::bench
