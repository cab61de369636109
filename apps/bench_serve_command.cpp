#include "apps/bench_serve_command.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "apps/exit_code.h"
#include "bench/runner.h"
#include "bench/workload.h"
#include "net/http.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;

Status run(const BenchServeOptions& o, std::ostream& out, std::ostream& err) {
  bench::RunConfig cfg;
  cfg.url = o.url;
  auto parsed = net::parse_url(o.url);
  if (!parsed.is_ok()) return parsed.status().with_context("--url");
  const net::Endpoint ep = *parsed;
  if (o.endpoint != "completions" && o.endpoint != "chat") {
    return invalid_argument("--endpoint must be completions or chat");
  }
  cfg.chat = o.endpoint == "chat";
  cfg.burstiness = o.burstiness;
  cfg.max_concurrency = o.max_concurrency;
  cfg.warmup = o.warmup;
  cfg.seed = o.seed;
  cfg.timeout_seconds = o.timeout;
  cfg.temperature = o.temperature;
  if (!(o.burstiness > 0)) return invalid_argument("--burstiness must be > 0");
  if (o.max_concurrency < 0 || o.warmup < 0) return invalid_argument("--max-concurrency and --warmup must be >= 0");
  KVFLEET_ASSIGN_OR_RETURN(bench::Slo slo, bench::parse_goodput(o.goodput));
  KVFLEET_ASSIGN_OR_RETURN(auto percentiles, bench::parse_percentiles(o.percentiles));
  std::vector<double> rates;
  if (!o.sweep_rates.empty()) {
    KVFLEET_ASSIGN_OR_RETURN(rates, bench::parse_rates(o.sweep_rates, "--sweep-rates"));
  } else {
    KVFLEET_ASSIGN_OR_RETURN(double r, bench::parse_rate(o.request_rate));
    rates.push_back(r);
  }
  std::vector<bench::WorkloadRequest> workload;
  if (!o.dataset.empty()) {
    KVFLEET_ASSIGN_OR_RETURN(workload, bench::load_workload_file(o.dataset, o.seed));
  } else {
    bench::SyntheticSpec spec;
    spec.num_prompts = o.num_prompts;
    spec.input = {o.input_len, o.range_ratio};
    spec.output = {o.output_len, o.range_ratio};
    spec.shared_prefix_fraction = o.shared_prefix_fraction;
    spec.turns = o.turns;
    spec.seed = o.seed;
    KVFLEET_ASSIGN_OR_RETURN(workload, bench::synthetic_workload(spec));
  }

  // The server must answer before anything is sent.
  net::ClientOptions co;
  co.connect_timeout = net::Seconds(5);
  co.timeout = net::Seconds(10);
  auto models = net::http_call_sync(ep, "GET", "/v1/models", "", co);
  if (!models.is_ok()) return Status(StatusCode::kUnavailable, "the server at " + o.url + " is unreachable: " + models.status().message());
  if (models->status != 200) {
    return Status(StatusCode::kUnavailable, "GET " + o.url + "/v1/models answered " + std::to_string(models->status));
  }
  cfg.model = o.model;
  if (cfg.model.empty()) {
    json m = json::parse(models->body, nullptr, false);
    if (m.is_discarded() || !m.contains("data") || !m["data"].is_array() || m["data"].empty()) {
      return Status(StatusCode::kUnavailable, "the server lists no model; pass --model");
    }
    cfg.model = m["data"][0].value("id", "");
  }

  json results = json::array();
  for (double rate : rates) {
    cfg.rate = rate;
    err << "bench serve: " << workload.size() << " requests to " << o.url << " (" << cfg.model
        << "), rate " << (std::isinf(rate) ? std::string("inf") : std::to_string(rate)) << " req/s"
        << (o.max_concurrency > 0 ? ", at most " + std::to_string(o.max_concurrency) + " in flight" : "") << "\n";
    KVFLEET_ASSIGN_OR_RETURN(bench::RunResult run, bench::run_benchmark(cfg, workload, &err));
    json s = bench::summarize(cfg, run, slo, percentiles);
    if (!o.json) out << bench::format_table(s, percentiles);
    results.push_back(std::move(s));
  }
  const json doc = results.size() == 1 ? results[0] : results;
  if (o.json) out << doc.dump(2) << "\n";
  if (!o.save_result.empty()) {
    std::ofstream f(o.save_result);
    if (!f) return invalid_argument("cannot write --save-result '" + o.save_result + "'");
    f << doc.dump(2) << "\n";
  }
  return Status();
}

}  // namespace

CLI::App* add_bench_serve_command(CLI::App& bench, BenchServeOptions& o) {
  CLI::App* c = bench.add_subcommand("serve", "Load generator against an OpenAI-compatible server");
  c->add_option("--url", o.url, "server base URL")->capture_default_str();
  c->add_option("--model", o.model, "model (default: the server's first)");
  c->add_option("--endpoint", o.endpoint, "completions | chat")->capture_default_str();
  c->add_option("--dataset", o.dataset, "JSONL workload: {\"prompt\"|\"input_len\", \"output_len\"[, \"session\", \"turn\"]}");
  c->add_option("--num-prompts", o.num_prompts, "synthetic: requests")->capture_default_str();
  c->add_option("--input-len", o.input_len, "synthetic: prompt tokens (mean)")->capture_default_str();
  c->add_option("--output-len", o.output_len, "synthetic: output tokens (mean)")->capture_default_str();
  c->add_option("--range-ratio", o.range_ratio, "synthetic: lengths uniform in mean*(1 -+ r)")->capture_default_str();
  c->add_option("--shared-prefix-fraction", o.shared_prefix_fraction, "synthetic: prompt share common to all")
      ->capture_default_str();
  c->add_option("--turns", o.turns, "synthetic: turns per session (each extends the last)")->capture_default_str();
  c->add_option("--request-rate", o.request_rate, "requests/s or inf")->capture_default_str();
  c->add_option("--sweep-rates", o.sweep_rates, "one run per rate: 1,2,4");
  c->add_option("--burstiness", o.burstiness, "gamma shape of arrival gaps (1: Poisson)")->capture_default_str();
  c->add_option("--max-concurrency", o.max_concurrency, "requests in flight at most (0: unbounded)")
      ->capture_default_str();
  c->add_option("--warmup", o.warmup, "unmeasured requests first")->capture_default_str();
  c->add_option("--goodput", o.goodput, "SLOs: ttft:MS tpot:MS e2el:MS")->expected(1, 3);
  c->add_option("--percentiles", o.percentiles, "percentiles to report")->capture_default_str();
  c->add_option("--seed", o.seed, "workload and arrival seed")->capture_default_str();
  c->add_option("--timeout", o.timeout, "seconds per request")->capture_default_str();
  c->add_option("--temperature", o.temperature, "sampling temperature")->capture_default_str();
  c->add_flag("--json", o.json, "JSON (vLLM's keys) instead of the table");
  c->add_option("--save-result", o.save_result, "also write the JSON to this file");
  return c;
}

int run_bench_serve(const BenchServeOptions& o, std::ostream& out, std::ostream& err) {
  return finish_command("bench serve", run(o, out, err), err);
}

}  // namespace kvfleet::apps
