#pragma once
// `kvfleet bench engine`: micro-benchmarks of the cpu engine, each a ratio to a baseline
// measured in the same run (memcpy, a read pass, raw BLAS on the same shapes), and decode
// compared with the analytical model's prediction for this machine.

#include <cstdint>
#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct BenchEngineOptions {
  std::int64_t context = 32768;        // tokens of KV for the decode-attention benchmark
  std::int64_t prefill_tokens = 512;   // prompt length for the prefill benchmark
  std::int64_t decode_context = 1024;  // context of each sequence in the decode benchmark
  std::string decode_batches = "1,8";
  std::int64_t repeats = 5;  // each figure is the median of this many runs
  bool json = false;
};

CLI::App* add_bench_engine_command(CLI::App& bench, BenchEngineOptions& opts);
int run_bench_engine(const BenchEngineOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
