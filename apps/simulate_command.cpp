#include "apps/simulate_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "apps/exit_code.h"
#include "apps/invocation.h"
#include "bench/report.h"
#include "bench/runner.h"
#include "bench/workload.h"
#include "common/model_spec.h"
#include "common/tokenizer.h"
#include "common/units.h"
#include "perfmodel/estimate.h"
#include "perfmodel/hardware.h"
#include "perfmodel/link.h"
#include "sim/cluster_sim.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;

std::string fixed(double v, int precision) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream o;
  o << std::fixed << std::setprecision(precision) << v;
  return o.str();
}

Result<sim::ClusterConfig> cluster_config(const SimulateOptions& o) {
  sim::ClusterConfig c;
  c.model = o.model;
  c.hardware = o.hardware;
  c.tp = o.tp;
  c.link = o.link;
  c.prefill = o.prefill;
  c.decode = o.decode;
  c.colocated = o.colocated;
  c.mode = o.mode;
  c.kv_blocks = o.kv_blocks;
  c.block_tokens = o.block_tokens;
  c.max_batch_tokens = o.max_batch_tokens;
  c.max_running = o.max_running;
  KVFLEET_ASSIGN_OR_RETURN(double host, parse_quantity(o.host_kv_bytes, Quantity::kBytes));
  if (host < 0) return invalid_argument("--host-kv-bytes must be >= 0");
  c.host_kv_bytes = static_cast<std::size_t>(host);
  if (!o.kv_dtype.empty()) {
    auto d = parse_dtype(o.kv_dtype);
    if (!d.is_ok()) return d.status().with_context("--kv-dtype");
    c.kv_dtype = *d;
  }
  c.seed = o.workload.seed;
  c.max_inflight = o.max_inflight;
  c.auto_local_prefill_tokens = o.auto_local_prefill_tokens;
  c.heartbeat_seconds = o.heartbeat_seconds;
  c.rpc_seconds = o.rpc_seconds;
  c.import_wait_seconds = o.import_wait_seconds;
  if (!(o.import_wait_seconds >= 0))
    return invalid_argument("--kv-import-wait-seconds must be >= 0");
  if (o.tp < 1) return invalid_argument("--tp must be >= 1");
  if (o.block_tokens < 1 || o.block_tokens > 4096)
    return invalid_argument("--block-tokens must be in [1, 4096]");
  if (o.max_batch_tokens < 1 || o.max_running < 1) {
    return invalid_argument("--max-batch-tokens and --max-running must be >= 1");
  }
  if (o.kv_blocks < 0) return invalid_argument("--kv-blocks must be >= 0");
  return c;
}

// The workload as the coordinator would see it: text through the model's tokenizer (the byte
// tokenizer: one byte per token, after BOS).
Result<std::vector<sim::SimRequest>> tokenize(const std::vector<bench::WorkloadRequest>& workload,
                                              const ModelSpec& spec) {
  KVFLEET_ASSIGN_OR_RETURN(ByteTokenizer tok, ByteTokenizer::for_model(spec));
  std::vector<sim::SimRequest> out;
  out.reserve(workload.size());
  for (const auto& w : workload) {
    sim::SimRequest r;
    r.prompt = tok.encode(w.prompt, true);
    r.output_len = w.output_len;
    r.session = w.session;
    r.turn = w.turn;
    out.push_back(std::move(r));
  }
  return out;
}

// What bench serve's summary reports of its configuration, for a simulated run.
bench::RunConfig summary_config(const ModelSpec& spec, const WorkloadFlags& wf, double rate) {
  bench::RunConfig rc;
  rc.model = spec.name;
  rc.rate = rate;
  rc.burstiness = wf.burstiness;
  rc.max_concurrency = wf.max_concurrency;
  rc.seed = wf.seed;
  rc.backend = "kvfleet-simulate";
  return rc;
}

std::map<std::string, double> phase_ms(const sim::SimResult& r) {
  std::map<std::string, double> m;
  for (const auto& [name, seconds] : r.phase_means) m[name] = seconds * 1e3;
  return m;
}

// The simulation's own figures, beside bench serve's keys.
json simulation_json(const sim::SimResult& r, const std::string& layout) {
  json j;
  j["backend"] = "sim";
  j["note"] = "simulated: step, swap and hand-off times modelled by perfmodel";
  j["layout"] = layout;
  j["backend_detail"] = r.backend_detail;
  j["kv_blocks_per_worker"] = r.kv_blocks_per_worker;
  json phases = json::object();
  for (const auto& [name, seconds] : r.phase_means) {
    phases["mean_" + name + "_ms"] = std::isfinite(seconds) ? json(seconds * 1e3) : json(nullptr);
  }
  j["ttft_phases"] = phases;
  j["swaps_out"] = r.swaps_out;
  j["swaps_in"] = r.swaps_in;
  j["recompute_preemptions"] = r.recompute_preemptions;
  j["kv_handoffs"] = r.handoffs;
  j["kv_handoff_recomputes"] = r.handoff_recomputes;
  j["kv_handoff_waits"] = r.handoff_waits;
  const std::int64_t answered = r.handoffs + r.handoff_recomputes;
  j["kv_handoff_reserve_seconds_mean"] =
      answered > 0 ? json(r.handoff_reserve_seconds / static_cast<double>(answered))
                   : json(nullptr);
  j["local_prefills"] = r.local_prefills;
  json workers = json::array();
  for (const auto& w : r.workers) {
    workers.push_back({{"id", w.id},
                       {"role", w.role},
                       {"utilisation", w.utilisation},
                       {"busy_seconds", w.busy_seconds},
                       {"steps", w.steps},
                       {"prompt_tokens", w.prompt_tokens},
                       {"generated_tokens", w.generated_tokens},
                       {"swap_outs", w.swap_outs},
                       {"swap_ins", w.swap_ins},
                       {"recompute_preemptions", w.recompute_preemptions},
                       {"prefix_hit_tokens", w.prefix_hit_tokens},
                       {"max_running", w.max_running},
                       {"max_waiting", w.max_waiting},
                       {"stalls", w.stalls},
                       {"kv_blocks", w.kv_blocks}});
  }
  j["workers"] = workers;
  // Concurrency over time, at most ~500 samples (evenly thinned).
  json conc = json::array();
  const std::size_t n = r.concurrency.size();
  const std::size_t step = std::max<std::size_t>(1, (n + 499) / 500);
  for (std::size_t i = 0; i < n; i += step) {
    const auto& c = r.concurrency[i];
    conc.push_back({{"t", c.t},
                    {"running", c.running},
                    {"waiting", c.waiting},
                    {"swapped", c.swapped},
                    {"inflight", c.inflight},
                    {"kv_usage", c.kv_usage}});
  }
  j["concurrency"] = conc;
  j["events"] = r.events;
  j["wall_seconds"] = r.wall_seconds;
  return j;
}

std::string simulation_table(const sim::SimResult& r, const std::string& layout) {
  std::string out;
  out += "=============== Simulation (sim backend: modelled) ===============\n";
  out += "Layout: " + layout + "; " + r.backend_detail + "\n";
  out += "TTFT phases (mean ms):";
  for (const auto& [name, seconds] : r.phase_means)
    out += " " + name + " " + fixed(seconds * 1e3, 2);
  out += "\n";
  std::int64_t peak_running = 0, peak_waiting = 0, peak_swapped = 0;
  double peak_kv = 0;
  for (const auto& c : r.concurrency) {
    peak_running = std::max(peak_running, c.running);
    peak_waiting = std::max(peak_waiting, c.waiting);
    peak_swapped = std::max(peak_swapped, c.swapped);
    peak_kv = std::max(peak_kv, c.kv_usage);
  }
  out += "Peak concurrency: running " + std::to_string(peak_running) + ", waiting " +
         std::to_string(peak_waiting) + ", swapped " + std::to_string(peak_swapped) +
         "; peak KV usage " + fixed(peak_kv * 100, 1) + "% of " +
         std::to_string(r.kv_blocks_per_worker) + " blocks per worker\n";
  out += "Swaps out / in: " + std::to_string(r.swaps_out) + " / " + std::to_string(r.swaps_in) +
         ", recompute preemptions " + std::to_string(r.recompute_preemptions) + ", KV hand-offs " +
         std::to_string(r.handoffs) + " (" + std::to_string(r.handoff_waits) +
         " waited for blocks, " + std::to_string(r.handoff_recomputes) +
         " recomputed for lack of room), prefills on decode workers " +
         std::to_string(r.local_prefills) + "\n";
  out += "Utilisation:";
  for (const auto& w : r.workers) out += " " + w.id + " " + fixed(w.utilisation * 100, 1) + "%";
  out += "\n";
  out +=
      "Simulated " + std::to_string(r.events) + " events in " + fixed(r.wall_seconds, 2) + " s\n";
  out += "==================================================================\n";
  return out;
}

Status run_compare(const SimulateOptions& o, const sim::ClusterConfig& base, const ModelSpec& spec,
                   const std::vector<double>& rates, const bench::Slo& slo, std::ostream& out,
                   std::ostream& err) {
  std::vector<bench::WorkloadShape> shapes;
  if (!o.workloads.empty()) {
    KVFLEET_ASSIGN_OR_RETURN(shapes, bench::parse_workload_shapes(o.workloads));
  } else {
    shapes.push_back({"workload", o.workload.input_len, o.workload.output_len});
  }
  const int workers = base.colocated > 0 ? base.colocated : base.prefill + base.decode;
  if (workers < 2 || workers % 2 != 0) {
    return invalid_argument(
        "--compare needs an even number of workers (>= 2) to split into prefill and decode");
  }
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec) return invalid_argument("cannot create --out '" + o.out + "': " + ec.message());
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::HardwareSpec hw, perfmodel::load_hardware(o.hardware));
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::LinkSpec link, perfmodel::load_link(o.link));
  bench::CompareReport rep;
  rep.title = "Disaggregated vs colocated (simulated): " + spec.name + " on " +
              std::to_string(workers) + " x " + hw.name +
              (o.tp > 1 ? " (tp " + std::to_string(o.tp) + " each)" : "");
  rep.command = invocation();
  rep.setup = "Colocated: " + std::to_string(workers) +
              " `both` workers; disaggregated: " + std::to_string(workers / 2) + " prefill + " +
              std::to_string(workers / 2) + " decode, KV hand-offs over " + link.name + ".";
  rep.source =
      "**Simulated** by `kvfleet simulate`: the production routing, admission, schedulers, "
      "block pools and host stores on a virtual clock, with every step, swap and hand-off "
      "lasting what perfmodel predicts (sim backend, no weights, no KV bytes).";
  rep.prediction_note = "Predicted figures: `kvfleet plan` for " + hw.name + ".";
  rep.slo = slo;
  rep.rates = rates;
  for (const auto& s : shapes) {
    rep.workloads.push_back(predicted_compare_workload(spec, hw, o.tp, s, o.workload.range_ratio,
                                                       link.bandwidth, link.latency));
  }
  for (const std::string layout : {"colocated", "disaggregated"}) {
    sim::ClusterConfig c = base;
    c.colocated = layout == "colocated" ? workers : 0;
    c.prefill = c.decode = layout == "colocated" ? 0 : workers / 2;
    c.mode = layout;
    for (const auto& s : shapes) {
      for (size_t ri = 0; ri < rates.size(); ++ri) {
        // Fresh prompts per rate, as `bench compare`.
        KVFLEET_ASSIGN_OR_RETURN(auto workload, make_workload(o.workload, s.input, s.output,
                                                              o.workload.seed * 1000 + ri + 1));
        KVFLEET_ASSIGN_OR_RETURN(auto requests, tokenize(workload, spec));
        sim::WorkloadConfig wc;
        wc.rate = rates[ri];
        wc.burstiness = o.workload.burstiness;
        wc.max_concurrency = o.workload.max_concurrency;
        wc.seed = o.workload.seed;
        err << "simulate: " << layout << ", " << s.name << ", " << rates[ri] << " req/s\n";
        KVFLEET_ASSIGN_OR_RETURN(sim::SimResult r, sim::simulate(c, wc, requests));
        const bench::RunConfig rc = summary_config(spec, o.workload, rates[ri]);
        bench::ComparePoint p;
        p.rate = rates[ri];
        p.summary = bench::summarize(rc, r.run, slo, {50, 99});
        p.summary["simulation"] = simulation_json(r, layout);
        p.phase_ms = phase_ms(r);
        for (const auto& q : r.run.requests) {
          if (q.success) p.ttfts_ms.push_back(q.ttft * 1e3);
        }
        rep.results[layout][s.name].push_back(std::move(p));
      }
    }
  }
  KVFLEET_RETURN_IF_ERROR(bench::write_compare_report(rep, o.out));
  out << "simulate: report at " << o.out << "/report.md\n";
  return Status::ok();
}

Status run(const SimulateOptions& o, std::ostream& out, std::ostream& err) {
  KVFLEET_ASSIGN_OR_RETURN(sim::ClusterConfig cluster, cluster_config(o));
  KVFLEET_ASSIGN_OR_RETURN(ModelSpec spec, load_model_spec(o.model));
  const WorkloadFlags& wf = o.workload;
  KVFLEET_ASSIGN_OR_RETURN(bench::Slo slo, bench::parse_goodput(wf.goodput));
  KVFLEET_ASSIGN_OR_RETURN(auto percentiles, bench::parse_percentiles(wf.percentiles));
  KVFLEET_ASSIGN_OR_RETURN(std::vector<double> rates, workload_rates(wf));
  if (o.compare) {
    if (wf.sweep_rates.empty()) return invalid_argument("--compare needs --sweep-rates");
    return run_compare(o, cluster, spec, rates, slo, out, err);
  }
  KVFLEET_ASSIGN_OR_RETURN(auto workload, make_workload(wf, wf.input_len, wf.output_len, wf.seed));
  KVFLEET_ASSIGN_OR_RETURN(auto requests, tokenize(workload, spec));
  const std::string layout = o.colocated > 0 ? std::to_string(o.colocated) + " colocated"
                                             : std::to_string(o.prefill) + " prefill + " +
                                                   std::to_string(o.decode) + " decode";
  std::vector<json> results;
  for (double rate : rates) {
    sim::WorkloadConfig wc;
    wc.rate = rate;
    wc.burstiness = wf.burstiness;
    wc.max_concurrency = wf.max_concurrency;
    wc.seed = wf.seed;
    err << "simulate: " << requests.size() << " requests, " << layout << " workers (" << spec.name
        << " on " << o.hardware << "), rate "
        << (std::isinf(rate) ? std::string("inf") : format_number(rate)) << " req/s\n";
    auto progress = [&err](std::int64_t done, std::int64_t total) {
      if (done % std::max<std::int64_t>(1, total / 10) == 0 || done == total) {
        err << "simulate: " << done << " / " << total << " requests done\n";
      }
    };
    KVFLEET_ASSIGN_OR_RETURN(sim::SimResult r, sim::simulate(cluster, wc, requests, progress));
    const bench::RunConfig rc = summary_config(spec, wf, rate);
    json s = bench::summarize(rc, r.run, slo, percentiles);
    if (!wf.json) out << bench::format_table(s, percentiles) << simulation_table(r, layout);
    s["simulation"] = simulation_json(r, layout);
    results.push_back(std::move(s));
  }
  return emit_results(wf, results, out);
}

}  // namespace

CLI::App* add_simulate_command(CLI::App& root, SimulateOptions& o) {
  CLI::App* c = root.add_subcommand(
      "simulate",
      "Simulate a cluster on a virtual clock: production policies, modelled step times");
  c->add_option("--model", o.model, "built-in model name or HF config.json")->capture_default_str();
  c->add_option("--hardware", o.hardware, "device: built-in name, hardware file or profile")
      ->capture_default_str();
  c->add_option("--tp", o.tp, "tensor-parallel degree of every worker")->capture_default_str();
  c->add_option("--link", o.link,
                "link KV hand-offs cross: nvlink, infiniband, pcie, tcp or a file")
      ->capture_default_str();
  c->add_option("--prefill", o.prefill, "prefill workers");
  c->add_option("--decode", o.decode, "decode workers");
  c->add_option("--colocated", o.colocated, "workers doing both phases");
  c->add_option("--mode", o.mode,
                "disaggregated | colocated | auto (default from the worker counts)");
  c->add_option("--kv-blocks", o.kv_blocks, "KV blocks per worker (0: what HBM holds)")
      ->capture_default_str();
  c->add_option("--block-tokens", o.block_tokens, "tokens per KV block")->capture_default_str();
  c->add_option("--max-batch-tokens", o.max_batch_tokens, "tokens per engine step")
      ->capture_default_str();
  c->add_option("--max-running", o.max_running, "sequences per batch")->capture_default_str();
  c->add_option("--host-kv-bytes", o.host_kv_bytes, "host KV store per worker (0: none)")
      ->capture_default_str();
  c->add_option("--kv-dtype", o.kv_dtype, "KV dtype (default: the model's)");
  c->add_option("--max-inflight", o.max_inflight, "coordinator: requests in flight before 429")
      ->capture_default_str();
  c->add_option(
       "--auto-local-prefill-tokens", o.auto_local_prefill_tokens,
       "auto mode: prompts with at most this many uncached tokens prefill on the decode worker")
      ->capture_default_str();
  c->add_option("--heartbeat-seconds", o.heartbeat_seconds, "workers' load reports")
      ->capture_default_str();
  c->add_option("--rpc-seconds", o.rpc_seconds, "one control message between processes")
      ->capture_default_str();
  c->add_option("--kv-import-wait-seconds", o.import_wait_seconds,
                "decode workers: wait this long for room for imported KV before recomputing")
      ->capture_default_str();
  add_workload_flags(c, o.workload);
  c->add_flag("--compare", o.compare,
              "colocated vs disaggregated over --sweep-rates, with a report");
  c->add_option("--workloads", o.workloads, "--compare: NAME:INPUT:OUTPUT,...");
  c->add_option("--out", o.out, "--compare: report folder")->capture_default_str();
  return c;
}

int run_simulate(const SimulateOptions& o, std::ostream& out, std::ostream& err) {
  return finish_command("simulate", run(o, out, err), err);
}

}  // namespace kvfleet::apps
