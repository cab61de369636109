#pragma once
// `kvfleet bench overhead`: what the coordinator adds. Starts a coordinator and one `both`
// worker on this machine and sends the same small requests directly to the worker (the
// baseline) and through the coordinator: added latency (p50/p99, one request at a time),
// throughput under concurrency, and the coordinator's CPU time per request (its capacity on
// this machine, alone).

#include <cstdint>
#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct BenchOverheadOptions {
  std::string model = "tiny";
  std::int64_t requests = 300;     // per path, one at a time
  std::int64_t concurrency = 16;   // for the throughput phase
  std::int64_t load_requests = 2000;
  std::int64_t prompt_tokens = 16;
  std::int64_t max_tokens = 4;
  bool json = false;
};

CLI::App* add_bench_overhead_command(CLI::App& bench, BenchOverheadOptions& opts);
int run_bench_overhead(const BenchOverheadOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
