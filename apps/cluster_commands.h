#pragma once
// The cluster's processes: `kvfleet worker`, `kvfleet serve` (the coordinator) and
// `kvfleet up` (a local cluster in one command).

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "coordinator/server.h"
#include "worker/server.h"

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct WorkerOptions {
  worker::WorkerConfig config;
  std::string host_kv_bytes = "0";
  std::string secret_file;  // --cluster-secret-file
};
CLI::App* add_worker_command(CLI::App& root, WorkerOptions& opts);
int run_worker(const WorkerOptions& opts, std::ostream& out, std::ostream& err);

struct ServeOptions {
  coordinator::CoordinatorConfig config;
  std::string secret_file;  // --cluster-secret-file
  int internal_port = -1;   // -1: --port + 1 (any free port when --port is 0)
  std::vector<std::string> models;  // --model [NAME=]DIR: Hugging Face folders served
};
CLI::App* add_serve_command(CLI::App& root, ServeOptions& opts);
int run_serve(const ServeOptions& opts, std::ostream& out, std::ostream& err);

struct UpOptions {
  std::string model = "tiny";
  std::string weights;
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;  // 0: any free port
  int prefill = 0, decode = 0, colocated = 0;
  std::string mode;            // default: colocated with --colocated, else disaggregated
  std::int32_t kv_blocks = 0;  // 0: the backend's default
  std::int64_t block_tokens = 16;
  std::string host_kv_bytes;  // empty: cpu 64MiB, sim none
  std::string backend = "cpu";
  int threads = 0;  // cpu: 0 divides this machine's cores among the workers
  std::string hardware = "a100-80g";
  std::int64_t tp = 1;
  std::string link = "nvlink";
  double time_scale = 1.0;
  std::string transfer = "ucx";
  std::int64_t max_batch_tokens = 512;
  std::uint64_t seed = 0;
  double timeout_seconds = 120;  // for /health to turn 200
};
CLI::App* add_up_command(CLI::App& root, UpOptions& opts);
int run_up(const UpOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
