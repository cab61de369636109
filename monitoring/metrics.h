#pragma once
// kvfleet's metric families, one registry per process (prometheus-cpp), and their text
// exposition. Names, labels and units are fixed here because dashboards and users depend on
// them (see README.md); every process creates the same families so a dashboard can select by
// `role`. Histogram buckets follow vLLM's boundaries, extended below 10 ms where CPU-scale
// steps land.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace kvfleet::monitoring {

struct ProcessLabels {
  std::string role;    // coordinator | prefill | decode | both
  std::string worker;  // worker id, or the coordinator's name
  std::string model;
  // The engine backend the numbers come from: cpu and cuda measure real work; sim models it
  // (perfmodel), so every series it exports says so. The coordinator's is its workers'.
  std::string backend;
};

// TTFT phases, in the order a disaggregated request goes through them.
inline constexpr std::string_view kTtftPhases[] = {"queue", "prefill", "kv_transfer",
                                                   "decode_queue", "first_decode_step"};

class Metrics {
  ProcessLabels labels_;
  std::shared_ptr<prometheus::Registry> registry_;

 public:
  // `registry`: shared with other Metrics of the same process whose labels differ (the
  // coordinator has one per model); families of the same name merge. Null: a new registry.
  explicit Metrics(ProcessLabels labels, std::shared_ptr<prometheus::Registry> registry = nullptr);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  const ProcessLabels& labels() const { return labels_; }
  // The registry in Prometheus text format (version 0.0.4).
  std::string serialize() const;
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Concurrency.
  prometheus::Gauge& requests_running;
  prometheus::Gauge& requests_waiting;
  prometheus::Gauge& requests_swapped;
  prometheus::Gauge& kv_usage_device;
  prometheus::Gauge& kv_usage_host;
  // Prefill.
  prometheus::Histogram& time_to_first_token;
  prometheus::Histogram& prefill_seconds;
  prometheus::Histogram& ttft_phase(std::string_view phase);
  // Decode.
  prometheus::Histogram& inter_token_latency;
  prometheus::Histogram& decode_step;
  prometheus::Histogram& e2e_latency;
  // Context switch.
  prometheus::Histogram& swap_out_seconds;
  prometheus::Histogram& swap_in_seconds;
  prometheus::Counter& swap_out_bytes;
  prometheus::Counter& swap_in_bytes;
  // Transfer.
  prometheus::Histogram& kv_transfer_seconds;
  // By the transport that carried the bytes (transfer::TransferInfo::transport: shm, tcp,
  // rdma, cuda_ipc, nccl, loopback; "modelled" for a sim backend's hand-offs).
  prometheus::Counter& kv_transfer_bytes(std::string_view transport);
  prometheus::Counter& kv_transfer_failures;
  // KV whose checksum did not match: stage "transfer" (a pulled hand-off) or "restore" (a block
  // back from the host store).
  prometheus::Counter& kv_integrity_failures(std::string_view stage);
  // Totals.
  prometheus::Counter& prompt_tokens;
  prometheus::Counter& generation_tokens;
  prometheus::Counter& prefix_cache_hit_tokens;
  // vLLM's families under kvfleet's names (monitoring/README.md maps them).
  prometheus::Counter& prefix_cache_query_tokens;  // prompt tokens looked up in the prefix cache
  prometheus::Counter& preemptions;                // swaps out and recompute preemptions
  prometheus::Histogram& request_prompt_tokens;    // per finished request
  prometheus::Histogram& request_generation_tokens;
  prometheus::Counter& requests(std::string_view finish_reason);
  prometheus::Counter& errors(std::string_view type);

 private:
  prometheus::Family<prometheus::Histogram>* phase_family_ = nullptr;
  prometheus::Family<prometheus::Counter>* requests_family_ = nullptr;
  prometheus::Family<prometheus::Counter>* errors_family_ = nullptr;
  prometheus::Family<prometheus::Counter>* transfer_bytes_family_ = nullptr;
  prometheus::Family<prometheus::Counter>* integrity_family_ = nullptr;
  // One series per label value of a counter family, created on first use.
  prometheus::Counter& labelled(prometheus::Family<prometheus::Counter>* family,
                                std::map<std::string, prometheus::Counter*, std::less<>>& series,
                                std::string_view label, std::string_view value);
  std::mutex mu_;
  std::map<std::string, prometheus::Histogram*, std::less<>> phases_;
  std::map<std::string, prometheus::Counter*, std::less<>> requests_;
  std::map<std::string, prometheus::Counter*, std::less<>> errors_;
  std::map<std::string, prometheus::Counter*, std::less<>> transfer_bytes_;
  std::map<std::string, prometheus::Counter*, std::less<>> integrity_;
};

// Bucket boundaries (seconds).
const std::vector<double>& ttft_buckets();
const std::vector<double>& inter_token_buckets();
const std::vector<double>& request_buckets();
const std::vector<double>& transfer_buckets();
// Token counts: 1, 2, 5, 10, ... 5,000,000 (vLLM's 1-2-5 series).
const std::vector<double>& token_count_buckets();

// Every metric name this module defines (without _bucket/_sum/_count suffixes).
std::vector<std::string> metric_names();

}  // namespace kvfleet::monitoring
