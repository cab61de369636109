#pragma once
// `kvfleet bench engine`: micro-benchmarks of the cpu engine, each a ratio to a baseline
// measured in the same run (memcpy, a read pass, raw BLAS on the same shapes), and decode
// compared with the analytical model's prediction for this machine.
//
// `--profile FILE` instead measures this machine's kernels on one model and writes a hardware
// spec with a fitted calibration section (perfmodel/hardware.h); `--check-profile FILE` runs a
// grid of decode and prefill steps through the real forward pass and prints the calibrated step
// model's prediction beside each measurement.

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

  // --profile / --check-profile
  std::string profile;        // write this machine's hardware profile to this file
  std::string check_profile;  // compare this profile's predictions with measured steps
  std::string model = "small";
  int threads = 1;          // BLAS threads
  bool wall_clock = false;  // time by the wall clock even with one thread (default: thread CPU)
  bool fastest = false;     // the fastest run stands for a figure (default: the median)
  std::string gemm_tokens = "1,2,3,4,5,6,7,8,9,12,16,24,32,48,64,128,256,512,1024,2048,4096";
  // --profile: the large KV footprint at which decode attention's read rate is measured a
  // second time (0: not measured; the rate is then the same at every footprint).
  std::string large_kv_bytes = "8GiB";
  std::string check_batches = "1,8,32";
  std::string check_contexts = "512,2048,8192,16384";
  std::string check_prefill = "64,128,256,512,1024,2048,4096";
  std::int64_t chunk_tokens = 512;  // chunked prefill: tokens per step, as the engine's budget
};

CLI::App* add_bench_engine_command(CLI::App& bench, BenchEngineOptions& opts);
int run_bench_engine(const BenchEngineOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
