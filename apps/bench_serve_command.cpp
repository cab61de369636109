#include "apps/bench_serve_command.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "apps/exit_code.h"
#include "bench/runner.h"
#include "net/http.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;

Status run(const BenchServeOptions& o, std::ostream& out, std::ostream& err) {
  const WorkloadFlags& wf = o.workload;
  bench::RunConfig cfg;
  cfg.url = o.url;
  auto parsed = net::parse_url(o.url);
  if (!parsed.is_ok()) return parsed.status().with_context("--url");
  const net::Endpoint ep = *parsed;
  if (o.endpoint != "completions" && o.endpoint != "chat") {
    return invalid_argument("--endpoint must be completions or chat");
  }
  cfg.chat = o.endpoint == "chat";
  cfg.burstiness = wf.burstiness;
  cfg.max_concurrency = wf.max_concurrency;
  cfg.warmup = o.warmup;
  cfg.seed = wf.seed;
  cfg.timeout_seconds = o.timeout;
  cfg.temperature = o.temperature;
  if (o.warmup < 0) return invalid_argument("--warmup must be >= 0");
  KVFLEET_ASSIGN_OR_RETURN(std::vector<double> rates, workload_rates(wf));
  KVFLEET_ASSIGN_OR_RETURN(bench::Slo slo, bench::parse_goodput(wf.goodput));
  KVFLEET_ASSIGN_OR_RETURN(auto percentiles, bench::parse_percentiles(wf.percentiles));
  KVFLEET_ASSIGN_OR_RETURN(auto workload, make_workload(wf, wf.input_len, wf.output_len, wf.seed));

  // The server must answer before anything is sent.
  net::ClientOptions co;
  co.connect_timeout = net::Seconds(5);
  co.timeout = net::Seconds(10);
  auto models = net::http_call_sync(ep, "GET", "/v1/models", "", co);
  if (!models.is_ok())
    return Status(StatusCode::kUnavailable,
                  "the server at " + o.url + " is unreachable: " + models.status().message());
  if (models->status != 200) {
    return Status(StatusCode::kUnavailable,
                  "GET " + o.url + "/v1/models answered " + std::to_string(models->status));
  }
  cfg.model = o.model;
  if (cfg.model.empty()) {
    json m = json::parse(models->body, nullptr, false);
    if (m.is_discarded() || !m.contains("data") || !m["data"].is_array() || m["data"].empty()) {
      return Status(StatusCode::kUnavailable, "the server lists no model; pass --model");
    }
    cfg.model = m["data"][0].value("id", "");
  }

  std::vector<json> results;
  for (double rate : rates) {
    cfg.rate = rate;
    err << "bench serve: " << workload.size() << " requests to " << o.url << " (" << cfg.model
        << "), rate " << (std::isinf(rate) ? std::string("inf") : std::to_string(rate)) << " req/s"
        << (wf.max_concurrency > 0
                ? ", at most " + std::to_string(wf.max_concurrency) + " in flight"
                : "")
        << "\n";
    KVFLEET_ASSIGN_OR_RETURN(bench::RunResult run, bench::run_benchmark(cfg, workload, &err));
    json s = bench::summarize(cfg, run, slo, percentiles);
    if (!wf.json) out << bench::format_table(s, percentiles);
    results.push_back(std::move(s));
  }
  return emit_results(wf, results, out);
}

}  // namespace

CLI::App* add_bench_serve_command(CLI::App& bench, BenchServeOptions& o) {
  CLI::App* c = bench.add_subcommand("serve", "Load generator against an OpenAI-compatible server");
  c->add_option("--url", o.url, "server base URL")->capture_default_str();
  c->add_option("--model", o.model, "model (default: the server's first)");
  c->add_option("--endpoint", o.endpoint, "completions | chat")->capture_default_str();
  add_workload_flags(c, o.workload);
  c->add_option("--warmup", o.warmup, "unmeasured requests first")->capture_default_str();
  c->add_option("--timeout", o.timeout, "seconds per request")->capture_default_str();
  c->add_option("--temperature", o.temperature, "sampling temperature")->capture_default_str();
  return c;
}

int run_bench_serve(const BenchServeOptions& o, std::ostream& out, std::ostream& err) {
  return finish_command("bench serve", run(o, out, err), err);
}

}  // namespace kvfleet::apps
