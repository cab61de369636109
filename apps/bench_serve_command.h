#pragma once
// `kvfleet bench serve`: the load generator. Drives any OpenAI-compatible server with a
// workload (JSONL or synthetic), arrivals at a rate (Poisson/gamma), a fixed concurrency, or a
// sweep of rates, and reports what `vllm bench serve` reports (same table, same JSON keys), plus
// goodput and SLO attainment.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct BenchServeOptions {
  std::string url = "http://127.0.0.1:8000";
  std::string model;  // default: the server's first model
  std::string endpoint = "completions";
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
  std::int64_t warmup = 0;
  std::vector<std::string> goodput;  // ttft:MS tpot:MS e2el:MS
  std::string percentiles = "99";
  std::uint64_t seed = 0;
  double timeout = 600;
  double temperature = 0;
  bool json = false;
  std::string save_result;  // write the JSON here too
};

CLI::App* add_bench_serve_command(CLI::App& bench, BenchServeOptions& opts);
int run_bench_serve(const BenchServeOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
