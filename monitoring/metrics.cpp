#include "monitoring/metrics.h"

#include <prometheus/text_serializer.h>

namespace kvfleet::monitoring {
namespace {

using prometheus::Labels;

Labels base(const ProcessLabels& l) {
  return {{"role", l.role}, {"worker", l.worker}, {"model", l.model}, {"backend", l.backend}};
}

Labels with(const ProcessLabels& l, const std::string& key, std::string_view value) {
  Labels x = base(l);
  x[key] = std::string(value);
  return x;
}

struct Builder {
  std::shared_ptr<prometheus::Registry> reg;
  const ProcessLabels& labels;

  prometheus::Gauge& gauge(const std::string& name, const std::string& help, Labels extra = {}) {
    Labels l = base(labels);
    l.insert(extra.begin(), extra.end());
    return prometheus::BuildGauge().Name(name).Help(help).Register(*reg).Add(l);
  }
  prometheus::Counter& counter(const std::string& name, const std::string& help,
                               Labels extra = {}) {
    Labels l = base(labels);
    l.insert(extra.begin(), extra.end());
    return prometheus::BuildCounter().Name(name).Help(help).Register(*reg).Add(l);
  }
  prometheus::Family<prometheus::Histogram>& histogram_family(const std::string& name,
                                                              const std::string& help) {
    return prometheus::BuildHistogram().Name(name).Help(help).Register(*reg);
  }
  prometheus::Histogram& histogram(const std::string& name, const std::string& help,
                                   const std::vector<double>& buckets, Labels extra = {}) {
    Labels l = base(labels);
    l.insert(extra.begin(), extra.end());
    return histogram_family(name, help).Add(l, buckets);
  }
};

}  // namespace

const std::vector<double>& ttft_buckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08,
                                        0.1,   0.25,   0.5,   0.75, 1.0,   2.5,   5.0,   7.5,
                                        10.0,  20.0,   40.0,  80.0, 160.0, 640.0, 2560.0};
  return b;
}
const std::vector<double>& inter_token_buckets() {
  static const std::vector<double> b = {0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05,
                                        0.075,  0.1,   0.15,   0.2,   0.3,    0.4,  0.5,   0.75,
                                        1.0,    2.5,   5.0,    7.5,   10.0,   20.0, 40.0,  80.0};
  return b;
}
const std::vector<double>& request_buckets() {
  static const std::vector<double> b = {
      0.005, 0.01, 0.025, 0.05, 0.1,  0.3,  0.5,  0.8,   1.0,   1.5,   2.0,   2.5,    5.0,
      10.0,  15.0, 20.0,  30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return b;
}
const std::vector<double>& transfer_buckets() {
  static const std::vector<double> b = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                        0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                        0.5,     1.0,    2.5,     5.0,    10.0};
  return b;
}

const std::vector<double>& token_count_buckets() {
  static const std::vector<double> b = [] {
    std::vector<double> out;
    for (double x = 1; x <= 5e6; x *= 10) {
      for (double m : {1.0, 2.0, 5.0}) out.push_back(x * m);
    }
    return out;
  }();
  return b;
}

#define KVFLEET_B      \
  Builder {            \
    registry_, labels_ \
  }
Metrics::Metrics(ProcessLabels labels, std::shared_ptr<prometheus::Registry> registry)
    : labels_(std::move(labels)),
      registry_(registry ? std::move(registry) : std::make_shared<prometheus::Registry>()),
      requests_running(KVFLEET_B.gauge("kvfleet_requests_running",
                                       "Requests in the running batch (for the coordinator: "
                                       "requests in flight)")),
      requests_waiting(
          KVFLEET_B.gauge("kvfleet_requests_waiting", "Requests waiting to be scheduled")),
      requests_swapped(KVFLEET_B.gauge("kvfleet_requests_swapped",
                                       "Requests whose KV is swapped out to host memory")),
      kv_usage_device(KVFLEET_B.gauge("kvfleet_kv_usage_ratio", "KV blocks in use / total blocks",
                                      {{"tier", "device"}})),
      kv_usage_host(KVFLEET_B.gauge("kvfleet_kv_usage_ratio", "KV blocks in use / total blocks",
                                    {{"tier", "host"}})),
      time_to_first_token(KVFLEET_B.histogram("kvfleet_time_to_first_token_seconds",
                                              "Arrival to first generated token", ttft_buckets())),
      prefill_seconds(KVFLEET_B.histogram("kvfleet_prefill_seconds",
                                          "First scheduled to first token (prompt compute)",
                                          request_buckets())),
      inter_token_latency(KVFLEET_B.histogram("kvfleet_inter_token_latency_seconds",
                                              "Time between consecutive output tokens",
                                              inter_token_buckets())),
      decode_step(KVFLEET_B.histogram("kvfleet_decode_step_seconds",
                                      "Forward time of engine steps that decode",
                                      inter_token_buckets())),
      e2e_latency(KVFLEET_B.histogram("kvfleet_e2e_request_latency_seconds",
                                      "Arrival to the last token", request_buckets())),
      swap_out_seconds(KVFLEET_B.histogram("kvfleet_kv_swap_seconds",
                                           "Context switch: KV copy time per swap",
                                           transfer_buckets(), {{"direction", "out"}})),
      swap_in_seconds(KVFLEET_B.histogram("kvfleet_kv_swap_seconds",
                                          "Context switch: KV copy time per swap",
                                          transfer_buckets(), {{"direction", "in"}})),
      swap_out_bytes(KVFLEET_B.counter("kvfleet_kv_swap_bytes_total",
                                       "KV bytes copied by context switches",
                                       {{"direction", "out"}})),
      swap_in_bytes(KVFLEET_B.counter("kvfleet_kv_swap_bytes_total",
                                      "KV bytes copied by context switches",
                                      {{"direction", "in"}})),
      kv_transfer_seconds(KVFLEET_B.histogram("kvfleet_kv_transfer_seconds",
                                              "Prefill-to-decode KV transfer time per request",
                                              transfer_buckets())),
      kv_transfer_failures(
          KVFLEET_B.counter("kvfleet_kv_transfer_failures_total", "KV transfers that failed")),
      prompt_tokens(KVFLEET_B.counter("kvfleet_prompt_tokens_total", "Prompt tokens processed")),
      generation_tokens(KVFLEET_B.counter("kvfleet_generation_tokens_total", "Tokens generated")),
      prefix_cache_hit_tokens(KVFLEET_B.counter("kvfleet_prefix_cache_hit_tokens_total",
                                                "Prompt tokens whose KV came from the prefix "
                                                "cache (device or host)")),
      prefix_cache_query_tokens(KVFLEET_B.counter("kvfleet_prefix_cache_query_tokens_total",
                                                  "Prompt tokens looked up in the prefix cache "
                                                  "(the denominator of the hit rate)")),
      preemptions(KVFLEET_B.counter("kvfleet_preemptions_total",
                                    "Sequences preempted (swapped out or dropped for "
                                    "recomputation)")),
      request_prompt_tokens(KVFLEET_B.histogram("kvfleet_request_prompt_tokens",
                                                "Prompt tokens per finished request",
                                                token_count_buckets())),
      request_generation_tokens(KVFLEET_B.histogram("kvfleet_request_generation_tokens",
                                                    "Generated tokens per finished request",
                                                    token_count_buckets())) {
  phase_family_ =
      &KVFLEET_B.histogram_family("kvfleet_ttft_phase_seconds", "Time to first token by phase");
  requests_family_ = &prometheus::BuildCounter()
                          .Name("kvfleet_requests_total")
                          .Help("Finished requests by finish reason")
                          .Register(*registry_);
  errors_family_ = &prometheus::BuildCounter()
                        .Name("kvfleet_errors_total")
                        .Help("Errors by type")
                        .Register(*registry_);
  transfer_bytes_family_ = &prometheus::BuildCounter()
                                .Name("kvfleet_kv_transfer_bytes_total")
                                .Help("KV bytes received from prefill workers, by transport")
                                .Register(*registry_);
  integrity_family_ = &prometheus::BuildCounter()
                           .Name("kvfleet_kv_integrity_failures_total")
                           .Help("KV whose checksum did not match, by stage (transfer, restore)")
                           .Register(*registry_);
  for (std::string_view s : {"transfer", "restore"}) kv_integrity_failures(s);
  for (std::string_view p : kTtftPhases) ttft_phase(p);
  for (std::string_view r : {"stop", "length", "abort", "error"}) requests(r);
  // The common error types exist from the start, so rates over them are 0 rather than absent.
  for (std::string_view t : {"invalid_request", "worker_failure", "no_worker", "overloaded",
                             "kv_transfer", "client_disconnect"}) {
    errors(t);
  }
}
#undef KVFLEET_B

std::string Metrics::serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

prometheus::Histogram& Metrics::ttft_phase(std::string_view phase) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = phases_.find(phase);
  if (it != phases_.end()) return *it->second;
  auto& h = phase_family_->Add(with(labels_, "phase", phase), ttft_buckets());
  phases_.emplace(std::string(phase), &h);
  return h;
}

prometheus::Counter& Metrics::requests(std::string_view finish_reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = requests_.find(finish_reason);
  if (it != requests_.end()) return *it->second;
  auto& c = requests_family_->Add(with(labels_, "finish_reason", finish_reason));
  requests_.emplace(std::string(finish_reason), &c);
  return c;
}

prometheus::Counter& Metrics::labelled(
    prometheus::Family<prometheus::Counter>* family,
    std::map<std::string, prometheus::Counter*, std::less<>>& series, std::string_view label,
    std::string_view value) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series.find(value);
  if (it != series.end()) return *it->second;
  auto& c = family->Add(with(labels_, std::string(label), value));
  series.emplace(std::string(value), &c);
  return c;
}

prometheus::Counter& Metrics::kv_transfer_bytes(std::string_view transport) {
  return labelled(transfer_bytes_family_, transfer_bytes_, "transport", transport);
}

prometheus::Counter& Metrics::kv_integrity_failures(std::string_view stage) {
  return labelled(integrity_family_, integrity_, "stage", stage);
}

prometheus::Counter& Metrics::errors(std::string_view type) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = errors_.find(type);
  if (it != errors_.end()) return *it->second;
  auto& c = errors_family_->Add(with(labels_, "type", type));
  errors_.emplace(std::string(type), &c);
  return c;
}

std::vector<std::string> metric_names() {
  return {"kvfleet_requests_running",
          "kvfleet_requests_waiting",
          "kvfleet_requests_swapped",
          "kvfleet_kv_usage_ratio",
          "kvfleet_time_to_first_token_seconds",
          "kvfleet_ttft_phase_seconds",
          "kvfleet_prefill_seconds",
          "kvfleet_inter_token_latency_seconds",
          "kvfleet_decode_step_seconds",
          "kvfleet_e2e_request_latency_seconds",
          "kvfleet_kv_swap_seconds",
          "kvfleet_kv_swap_bytes_total",
          "kvfleet_kv_transfer_seconds",
          "kvfleet_kv_transfer_bytes_total",
          "kvfleet_kv_transfer_failures_total",
          "kvfleet_kv_integrity_failures_total",
          "kvfleet_prompt_tokens_total",
          "kvfleet_generation_tokens_total",
          "kvfleet_requests_total",
          "kvfleet_errors_total",
          "kvfleet_prefix_cache_hit_tokens_total",
          "kvfleet_prefix_cache_query_tokens_total",
          "kvfleet_preemptions_total",
          "kvfleet_request_prompt_tokens",
          "kvfleet_request_generation_tokens"};
}

}  // namespace kvfleet::monitoring
