#pragma once
// `kvfleet bench serve`: the load generator. Drives any OpenAI-compatible server with a
// workload (JSONL or synthetic), arrivals at a rate (Poisson/gamma), a fixed concurrency, or a
// sweep of rates, and reports what `vllm bench serve` reports (same table, same JSON keys), plus
// goodput and SLO attainment.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "apps/workload_flags.h"

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct BenchServeOptions {
  std::string url = "http://127.0.0.1:8000";
  std::string model;  // default: the server's first model
  std::string endpoint = "completions";
  WorkloadFlags workload;
  std::int64_t warmup = 0;
  double timeout = 600;
  double temperature = 0;
};

CLI::App* add_bench_serve_command(CLI::App& bench, BenchServeOptions& opts);
int run_bench_serve(const BenchServeOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
