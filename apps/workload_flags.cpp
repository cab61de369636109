#include "apps/workload_flags.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <fstream>
#include <ostream>

#include "perfmodel/estimate.h"

namespace kvfleet::apps {

void add_workload_flags(CLI::App* c, WorkloadFlags& o) {
  c->add_option(
      "--dataset", o.dataset,
      "JSONL workload: {\"prompt\"|\"input_len\", \"output_len\"[, \"session\", \"turn\"]}");
  c->add_option("--num-prompts", o.num_prompts, "synthetic: requests")->capture_default_str();
  c->add_option("--input-len", o.input_len, "synthetic: prompt tokens (mean)")
      ->capture_default_str();
  c->add_option("--output-len", o.output_len, "synthetic: output tokens (mean)")
      ->capture_default_str();
  c->add_option("--range-ratio", o.range_ratio, "synthetic: lengths uniform in mean*(1 -+ r)")
      ->capture_default_str();
  c->add_option("--shared-prefix-fraction", o.shared_prefix_fraction,
                "synthetic: prompt share common to all")
      ->capture_default_str();
  c->add_option("--turns", o.turns, "synthetic: turns per session (each extends the last)")
      ->capture_default_str();
  c->add_option("--request-rate", o.request_rate, "requests/s or inf")->capture_default_str();
  c->add_option("--sweep-rates", o.sweep_rates, "one run per rate: 1,2,4");
  c->add_option("--burstiness", o.burstiness, "gamma shape of arrival gaps (1: Poisson)")
      ->capture_default_str();
  c->add_option("--max-concurrency", o.max_concurrency, "requests in flight at most (0: unbounded)")
      ->capture_default_str();
  c->add_option("--goodput", o.goodput, "SLOs: ttft:MS tpot:MS e2el:MS")->expected(1, 3);
  c->add_option("--percentiles", o.percentiles, "percentiles to report")->capture_default_str();
  c->add_option("--seed", o.seed, "workload and arrival seed")->capture_default_str();
  c->add_flag("--json", o.json, "JSON (vLLM's keys) instead of the table");
  c->add_option("--save-result", o.save_result, "also write the JSON to this file");
}

Result<std::vector<bench::WorkloadRequest>> make_workload(const WorkloadFlags& o,
                                                          std::int64_t input, std::int64_t output,
                                                          std::uint64_t seed) {
  if (!o.dataset.empty()) return bench::load_workload_file(o.dataset, seed);
  bench::SyntheticSpec spec;
  spec.num_prompts = o.num_prompts;
  spec.input = {input, o.range_ratio};
  spec.output = {output, o.range_ratio};
  spec.shared_prefix_fraction = o.shared_prefix_fraction;
  spec.turns = o.turns;
  spec.seed = seed;
  return bench::synthetic_workload(spec);
}

Result<std::vector<double>> workload_rates(const WorkloadFlags& o) {
  if (!(o.burstiness > 0)) return invalid_argument("--burstiness must be > 0");
  if (o.max_concurrency < 0) return invalid_argument("--max-concurrency must be >= 0");
  if (!o.sweep_rates.empty()) return bench::parse_rates(o.sweep_rates, "--sweep-rates");
  KVFLEET_ASSIGN_OR_RETURN(double r, bench::parse_rate(o.request_rate));
  return std::vector<double>{r};
}

Status emit_results(const WorkloadFlags& o, const std::vector<nlohmann::json>& results,
                    std::ostream& out) {
  const nlohmann::json doc = results.size() == 1 ? results[0] : nlohmann::json(results);
  if (o.json) out << doc.dump(2) << "\n";
  if (!o.save_result.empty()) {
    std::ofstream f(o.save_result);
    if (!f) return invalid_argument("cannot write --save-result '" + o.save_result + "'");
    f << doc.dump(2) << "\n";
  }
  return Status::ok();
}

bench::CompareWorkload predicted_compare_workload(const ModelSpec& spec,
                                                  const perfmodel::HardwareSpec& hw,
                                                  std::int64_t tp,
                                                  const bench::WorkloadShape& shape,
                                                  double range_ratio, double link_bandwidth,
                                                  double link_latency) {
  perfmodel::Deployment dep;
  dep.tp = tp;
  perfmodel::Workload work;
  work.context_tokens = shape.input;
  work.decode_tokens = shape.output;
  auto est = perfmodel::estimate(spec, hw, dep, work);
  bench::CompareWorkload cw;
  cw.name = shape.name;
  cw.input = shape.input;
  cw.output = shape.output;
  cw.range_ratio = range_ratio;
  const double nan = std::nan("");
  cw.predicted_prefill_ms = est.is_ok() ? est->prefill_seconds * 1e3 : nan;
  cw.predicted_step_ms = est.is_ok() ? est->decode_seconds_per_token * 1e3 : nan;
  cw.predicted_transfer_ms =
      est.is_ok() ? (link_latency + est->kv_bytes_per_request_per_device / link_bandwidth) * 1e3
                  : nan;
  return cw;
}

}  // namespace kvfleet::apps
