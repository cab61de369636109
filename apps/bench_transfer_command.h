#pragma once
// `kvfleet bench transfer`: KV transfer bandwidth and latency between two processes on this
// machine, beside baselines measured in the same run: ucx_perftest (same transport, size and
// window) and memcpy for ucx; cudaMemcpy device-to-device and peer copies for nccl.

#include <cstdint>
#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct BenchTransferOptions {
  std::string backend = "ucx";  // ucx | loopback | nccl
  std::string sizes = "16KiB,1MiB,4MiB,256MiB";
  std::string pattern = "contiguous";  // contiguous | blocks
  std::string block_bytes = "256KiB";  // block size for --pattern blocks (small's 16-token block)
  std::string ucx_tls;                 // sets UCX_TLS for both sides and the baseline
  std::string devices = "0,1";         // nccl: sending and receiving CUDA devices
  std::int64_t window = 16;            // transfers in flight in the bandwidth pass
  double seconds = 1.0;                // time budget per size and pass
  bool json = false;
};

CLI::App* add_bench_transfer_command(CLI::App& bench, BenchTransferOptions& opts);
int run_bench_transfer(const BenchTransferOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
