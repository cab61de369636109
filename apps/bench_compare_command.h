#pragma once
// `kvfleet bench compare`: the same workloads against a colocated layout and a disaggregated
// layout with the same number of workers, over a sweep of request rates, on this machine. Writes
// a markdown report with SVG plots (goodput, TTFT and ITL percentiles vs rate, TTFT CDFs), the
// measured TTFT breakdown by phase from the coordinator's metrics, and beside them what the
// analytical model predicts for this machine (measured memory bandwidth and GEMM rate).

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct BenchCompareOptions {
  std::string model = "small";
  int workers = 2;
  std::string workloads = "long-prompt:768:16,long-output:64:96";  // NAME:INPUT:OUTPUT,...
  std::string rates = "0.5,1,2";
  std::int64_t num_prompts = 12;
  std::int32_t kv_blocks = 512;  // cpu; sim: 0 (what HBM holds) unless given
  std::vector<std::string> goodput = {"ttft:3000", "tpot:150"};
  std::string out = "bench-compare";
  std::uint64_t seed = 0;
  // Worker engine backend: cpu (measured on this machine) or sim (modelled `hardware` at TP `tp`,
  // hand-offs over `link`, time running `time_scale` wall seconds per modelled second; figures
  // are reported in modelled time).
  std::string backend = "cpu";
  std::string hardware = "a100-80g";
  std::int64_t tp = 1;
  std::string link;  // default: nvlink for sim workers, tcp when simulating cpu workers
  double time_scale = 1.0;
  // Also run every point through `kvfleet simulate` (same prompts, arrivals and settings) and
  // report simulated vs measured: for cpu workers the modelled device is `profile` (from
  // `kvfleet bench engine --profile`), for sim workers `hardware`. `link` (default: tcp for cpu
  // workers, whose KV crosses loopback UCX) and `rpc_seconds` price the hand-off and messages.
  // Sim workers' figures are modelled, so the simulation should match them within noise; cpu
  // workers' compute is modelled by the profile's calibration.
  bool simulate = false;
  std::string profile;
  double rpc_seconds = 0;  // 0: measured (a small HTTP exchange with the coordinator)
};

CLI::App* add_bench_compare_command(CLI::App& bench, BenchCompareOptions& opts);
int run_bench_compare(const BenchCompareOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
