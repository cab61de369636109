#include "apps/bench_compare_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <sstream>
#include <thread>

#include "apps/exit_code.h"
#include "apps/invocation.h"
#include "apps/local_cluster.h"
#include "apps/workload_flags.h"
#include "bench/report.h"
#include "bench/runner.h"
#include "bench/workload.h"
#include "common/model_spec.h"
#include "common/tokenizer.h"
#include "common/units.h"
#include "kernels/cpu/ops.h"
#include "net/http.h"
#include "perfmodel/estimate.h"
#include "perfmodel/hardware.h"
#include "perfmodel/link.h"
#include "sim/cluster_sim.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

using WorkloadSpec = bench::WorkloadShape;

struct Point {
  double rate = 0;
  json summary;
  std::map<std::string, double> phase_ms;  // mean per phase over this run (coordinator metrics)
  std::vector<double> ttfts_ms;
  std::optional<bench::ComparePoint> simulated;
};

// Sum of the samples of `name` whose labels contain `label`.
double metric(const std::string& text, const std::string& name, const std::string& label) {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + "{", 0) != 0 || line.find(label) == std::string::npos) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

std::string scrape(const net::Endpoint& ep) {
  auto r = net::http_call_sync(ep, "GET", "/metrics");
  return r.is_ok() ? r->body : std::string();
}

// One control message between two of the cluster's processes, as the simulation prices it.
// Twenty short streamed requests go through the coordinator one at a time, measured as the
// benchmark measures (TTFT); their TTFT minus the engine time their workers reported (queue +
// prefill, from the coordinator's TTFT phases) is three messages: client -> coordinator ->
// worker, and the first token back.
Result<double> measure_message_seconds(const net::Endpoint& ep, const std::string& url,
                                       const std::string& model, std::ostream& err) {
  auto phases = [](const std::string& text) {
    return metric(text, "kvfleet_ttft_phase_seconds_sum", "phase=\"queue\"") +
           metric(text, "kvfleet_ttft_phase_seconds_sum", "phase=\"prefill\"");
  };
  bench::SyntheticSpec s;
  s.num_prompts = 20;
  s.input = {24, 0};
  s.output = {1, 0};
  s.seed = 424242;
  KVFLEET_ASSIGN_OR_RETURN(auto probes, bench::synthetic_workload(s));
  bench::RunConfig cfg;
  cfg.url = url;
  cfg.model = model;
  cfg.max_concurrency = 1;
  cfg.progress = false;
  const std::string before = scrape(ep);
  KVFLEET_ASSIGN_OR_RETURN(bench::RunResult run, bench::run_benchmark(cfg, probes, &err));
  double ttft = 0;
  for (const auto& r : run.requests) {
    if (!r.success) return Status(StatusCode::kUnavailable, "a probe request failed: " + r.error);
    ttft += r.ttft;
  }
  const double engine = phases(scrape(ep)) - phases(before);
  return std::max(0.0, (ttft - engine) / static_cast<double>(run.requests.size()) / 3.0);
}

// This machine as the analytical model sees it: one core's read bandwidth and GEMM rate.
perfmodel::HardwareSpec measure_machine(std::ostream& err) {
  err << "bench compare: measuring this machine (memory bandwidth, GEMM rate)\n";
  const std::size_t n = 256u << 20;
  std::vector<float> a(n / 4, 1.0f);
  auto best = [](int reps, const std::function<void()>& fn) {
    double t = 1e300;
    for (int i = 0; i < reps; ++i) {
      const auto s = Clock::now();
      fn();
      t = std::min(t, std::chrono::duration<double>(Clock::now() - s).count());
    }
    return t;
  };
  volatile float sink = 0;
  const double t_read = best(3, [&] {
    // Eight independent sums: a single chain would measure add latency, not bandwidth.
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i + 8 <= a.size(); i += 8) {
      for (size_t j = 0; j < 8; ++j) s[j] += a[i + j];
    }
    sink = sink + s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
  });
  const std::int64_t m = 256, k = 1024, o = 1024;
  std::vector<float> x(static_cast<size_t>(m * k), 0.5f), w(static_cast<size_t>(o * k), 0.25f),
      y(static_cast<size_t>(m * o));
  const double t_gemm =
      best(5, [&] { kernels::cpu::linear(y.data(), x.data(), w.data(), nullptr, m, o, k); });
  perfmodel::HardwareSpec hw;
  hw.name = "this machine (one core, measured)";
  hw.hbm_bytes = 16.0 * (1ull << 30);
  hw.hbm_bandwidth = static_cast<double>(n) / t_read;
  hw.flops[DType::kFp32] = 2.0 * static_cast<double>(m * k * o) / t_gemm;
  hw.flops[DType::kTf32] = hw.flops[DType::kFp32];
  hw.pcie_bandwidth = hw.hbm_bandwidth / 2;  // a copy reads and writes
  return hw;
}

Status wait_ready(const net::Endpoint& ep, int workers, std::vector<pid_t>& pids) {
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    for (pid_t p : pids) {
      if (p > 0 && ::kill(p, 0) != 0)
        return Status(StatusCode::kUnavailable, "a cluster process died at start-up");
    }
    auto r = net::http_call_sync(ep, "GET", "/internal/workers");
    if (r.is_ok() && r->status == 200) {
      json w = json::parse(r->body, nullptr, false);
      if (w.is_array() && static_cast<int>(w.size()) == workers) return Status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return Status(StatusCode::kDeadlineExceeded, "the cluster did not register its workers in 120 s");
}

std::string fmt(double v, int precision = 1) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream o;
  o << std::fixed << std::setprecision(precision) << v;
  return o.str();
}

Status run(const BenchCompareOptions& o, std::ostream& out, std::ostream& err) {
  if (o.workers < 2 || o.workers % 2 != 0)
    return invalid_argument("--workers must be even and >= 2");
  if (o.num_prompts < 2) return invalid_argument("--num-prompts must be >= 2");
  std::vector<WorkloadSpec> workloads;
  KVFLEET_ASSIGN_OR_RETURN(workloads, bench::parse_workload_shapes(o.workloads));
  std::vector<double> rates;
  KVFLEET_ASSIGN_OR_RETURN(rates, bench::parse_rates(o.rates, "--rates"));
  for (double r : rates) {
    if (std::isinf(r)) return invalid_argument("--rates: a sweep needs finite rates");
  }
  if (workloads.empty() || rates.empty())
    return invalid_argument("--workloads and --rates must not be empty");
  KVFLEET_ASSIGN_OR_RETURN(bench::Slo slo, bench::parse_goodput(o.goodput));
  KVFLEET_ASSIGN_OR_RETURN(ModelSpec spec, load_model_spec(o.model));
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec) return invalid_argument("cannot create --out '" + o.out + "': " + ec.message());

  const bool sim = o.backend == "sim";
  if (!sim && o.backend != "cpu") {
    return invalid_argument("--backend must be cpu or sim, not '" + o.backend + "'");
  }
  if (!(o.time_scale > 0)) return invalid_argument("--time-scale must be > 0");
  perfmodel::HardwareSpec hw;
  double transfer_bw = 0, transfer_latency = 0;
  const std::string link_name = !o.link.empty() ? o.link : (sim ? "nvlink" : "tcp");
  if (o.simulate && !sim && o.profile.empty()) {
    return invalid_argument(
        "--simulate with cpu workers needs --profile FILE (kvfleet bench engine --profile)");
  }
  if (sim) {
    KVFLEET_ASSIGN_OR_RETURN(hw, perfmodel::load_hardware(o.hardware));
    KVFLEET_ASSIGN_OR_RETURN(perfmodel::LinkSpec link, perfmodel::load_link(link_name));
    transfer_bw = link.bandwidth;
    transfer_latency = link.latency;
  } else {
    hw = measure_machine(err);
    transfer_bw = hw.pcie_bandwidth;
  }
  // Sim workers run `time_scale` wall seconds per modelled second: rates go up and measured
  // times are scaled back, so every figure is in modelled units.
  const double scale = sim ? o.time_scale : 1.0;
  double rpc_seconds = o.rpc_seconds;  // <= 0: measured on the first cluster
  const std::vector<std::string> layouts = {"colocated", "disaggregated"};
  // results[layout][workload] = points
  std::map<std::string, std::map<std::string, std::vector<Point>>> results;
  for (const std::string& layout : layouts) {
    KVFLEET_ASSIGN_OR_RETURN(auto plan, plan_local_cluster("127.0.0.1", 0));
    const std::string url = plan->url;
    std::vector<pid_t> pids;
    std::vector<std::string> serve = {"kvfleet", "--log-level", "warning",   "serve",
                                      "--mode",  layout,        "--backend", o.backend};
    for (const std::string& a : plan->serve_args("127.0.0.1")) serve.push_back(a);
    pids.push_back(spawn(serve, true));
    auto worker = [&](const std::string& role) {
      std::vector<std::string> args = {
          "kvfleet",   "--log-level", "warning", "worker", "--role",
          role,        "--model",     o.model,   "--seed", std::to_string(o.seed),
          "--backend", o.backend};
      for (const std::string& a : plan->worker_args()) args.push_back(a);
      if (sim) {
        for (const std::string& a : {std::string("--hardware"), o.hardware, std::string("--tp"),
                                     std::to_string(o.tp), std::string("--link"), link_name,
                                     std::string("--time-scale"), format_number(o.time_scale, 9)}) {
          args.push_back(a);
        }
        if (o.kv_blocks > 0) {
          args.push_back("--kv-blocks");
          args.push_back(std::to_string(o.kv_blocks));
        }
      } else {
        for (const std::string& a : {std::string("--kv-blocks"), std::to_string(o.kv_blocks),
                                     std::string("--host-kv-bytes"), std::string("256MiB"),
                                     std::string("--threads"), std::string("1")}) {
          args.push_back(a);
        }
      }
      pids.push_back(spawn(args, true));
    };
    for (int i = 0; i < o.workers; ++i) {
      worker(layout == "colocated" ? "both" : (i < o.workers / 2 ? "prefill" : "decode"));
    }
    const net::Endpoint ep = *net::parse_url(url);
    Status ready = wait_ready(*net::parse_url(plan->internal_url), o.workers, pids);
    if (!ready.is_ok()) {
      stop_all(pids, err);
      return ready;
    }
    for (const WorkloadSpec& w : workloads) {
      for (size_t ri = 0; ri < rates.size(); ++ri) {
        const double rate = rates[ri];
        // Fresh prompts per rate: a later run must not hit the prefix cache an earlier one filled.
        bench::SyntheticSpec s;
        s.num_prompts = o.num_prompts;
        s.input = {w.input, 0.2};
        s.output = {w.output, 0};
        s.seed = o.seed * 1000 + ri + 1;
        KVFLEET_ASSIGN_OR_RETURN(auto requests, bench::synthetic_workload(s));
        err << "bench compare: " << layout << ", " << w.name << " (" << w.input << " in, "
            << w.output << " out), " << rate << " req/s\n";
        bench::RunConfig cfg;
        cfg.url = url;
        cfg.model = spec.name;
        cfg.rate = rate / scale;
        cfg.seed = o.seed;
        cfg.warmup = rate == rates.front() ? 1 : 0;
        const std::string before = scrape(ep);
        auto run = bench::run_benchmark(cfg, requests, &err);
        if (!run.is_ok()) {
          stop_all(pids, err);
          return run.status();
        }
        const std::string after = scrape(ep);
        Point p;
        p.rate = rate;
        bench::scale_times(*run, 1.0 / scale);
        cfg.rate = rate;
        p.summary = bench::summarize(cfg, *run, slo, {50, 90, 99});
        for (std::string_view phase :
             {"queue", "prefill", "kv_transfer", "decode_queue", "first_decode_step"}) {
          const std::string lab = "phase=\"" + std::string(phase) + "\"";
          const double n = metric(after, "kvfleet_ttft_phase_seconds_count", lab) -
                           metric(before, "kvfleet_ttft_phase_seconds_count", lab);
          const double sum = metric(after, "kvfleet_ttft_phase_seconds_sum", lab) -
                             metric(before, "kvfleet_ttft_phase_seconds_sum", lab);
          p.phase_ms[std::string(phase)] = n > 0 ? sum / n * 1e3 / scale : std::nan("");
        }
        for (const auto& r : run->requests) {
          if (r.success) p.ttfts_ms.push_back(r.ttft * 1e3);
        }
        if (o.simulate) {
          if (rpc_seconds <= 0) {
            auto measured = measure_message_seconds(ep, url, spec.name, err);
            if (!measured.is_ok()) {
              stop_all(pids, err);
              return measured.status().with_context("measuring message latency");
            }
            rpc_seconds = *measured;
            err << "bench compare: one control message takes " << format_seconds(rpc_seconds)
                << " here (short requests' waiting time beyond their engine time, / 3)\n";
          }
          // The same prompts, arrivals and settings through the discrete-event simulation.
          sim::ClusterConfig c;
          c.model = o.model;
          c.hardware = sim ? o.hardware : o.profile;
          c.tp = sim ? o.tp : 1;
          c.link = link_name;
          c.colocated = layout == "colocated" ? o.workers : 0;
          c.prefill = c.decode = layout == "colocated" ? 0 : o.workers / 2;
          c.mode = layout;
          c.kv_blocks = sim ? std::max(0, o.kv_blocks) : o.kv_blocks;
          c.host_kv_bytes = sim ? 0 : (256u << 20);
          c.seed = o.seed;
          c.rpc_seconds = rpc_seconds;
          if (!sim) c.kv_dtype = DType::kFp32;  // what cpu workers keep
          sim::WorkloadConfig wc;
          wc.rate = rate;
          wc.seed = o.seed;
          KVFLEET_ASSIGN_OR_RETURN(ByteTokenizer tok, ByteTokenizer::for_model(spec));
          std::vector<sim::SimRequest> reqs;
          for (const auto& q : requests)
            reqs.push_back({tok.encode(q.prompt, true), q.output_len, q.session, q.turn});
          auto simulated = sim::simulate(c, wc, reqs);
          if (!simulated.is_ok()) {
            stop_all(pids, err);
            return simulated.status().with_context("simulating " + layout + " at " +
                                                   format_number(rate) + " req/s");
          }
          bench::ComparePoint sp;
          sp.rate = rate;
          sp.summary = bench::summarize(cfg, simulated->run, slo, {50, 90, 99});
          for (const auto& [name, seconds] : simulated->phase_means)
            sp.phase_ms[name] = seconds * 1e3;
          p.simulated = std::move(sp);
        }
        results[layout][w.name].push_back(std::move(p));
      }
    }
    stop_all(pids, err);
  }

  // Report.
  bench::CompareReport rep;
  rep.title =
      "Disaggregated vs colocated: " + spec.name + ", " + std::to_string(o.workers) + " workers";
  rep.command = invocation();
  rep.setup = "Colocated: " + std::to_string(o.workers) +
              " `both` workers; disaggregated: " + std::to_string(o.workers / 2) + " prefill + " +
              std::to_string(o.workers / 2) + " decode (" +
              (sim ? "KV hand-off modelled over " + link_name : std::string("KV over UCX")) + ").";
  if (sim) {
    rep.source =
        "**Simulated**: every worker runs the `sim` backend (no weights, no KV bytes; each "
        "step, swap and hand-off lasts what perfmodel predicts for " +
        o.hardware + ", tp " + std::to_string(o.tp) +
        ") behind the real coordinator, in real time scaled by " + format_number(o.time_scale) +
        "; latencies below are divided by the time scale, so "
        "they are in modelled seconds.";
    rep.prediction_note = "Predicted figures: `kvfleet plan`'s model of " + o.hardware + ".";
  } else {
    rep.source = "Measured on the `cpu` backend (real math, " + std::string(o.model) +
                 " with seeded weights).";
    rep.prediction_note =
        "Predicted figures: `kvfleet plan`'s model on this machine measured as one core with " +
        fmt(hw.hbm_bandwidth / 1e9, 2) + " GB/s read bandwidth and " +
        fmt(hw.flops.at(DType::kFp32) / 1e9, 1) + " GFLOP/s GEMM.";
  }
  rep.slo = slo;
  rep.rates = rates;
  if (o.simulate) {
    rep.simulated_note =
        "Simulated: `kvfleet simulate` of the same layout, prompts and arrivals on " +
        (sim ? o.hardware : "the profile " + o.profile) + ", hand-offs over " + link_name + ", " +
        format_number(rpc_seconds * 1e3, 3) + " ms per control message" +
        (o.rpc_seconds > 0 ? "."
                           : " (measured on the cluster: short requests' TTFT beyond their "
                             "engine time, over three messages).");
  }
  for (const WorkloadSpec& w : workloads) {
    rep.workloads.push_back(predicted_compare_workload(spec, hw, sim ? o.tp : 1, w, 0.2,
                                                       transfer_bw, transfer_latency));
  }
  for (auto& [layout, by_workload] : results) {
    for (auto& [name, points] : by_workload) {
      for (Point& p : points) {
        bench::ComparePoint cp;
        cp.rate = p.rate;
        cp.summary = p.summary;
        cp.phase_ms = p.phase_ms;
        cp.ttfts_ms = p.ttfts_ms;
        rep.results[layout][name].push_back(std::move(cp));
        if (p.simulated) rep.simulated[layout][name].push_back(*p.simulated);
      }
    }
  }
  KVFLEET_RETURN_IF_ERROR(bench::write_compare_report(rep, o.out));
  out << "bench compare: report at " << o.out << "/report.md\n";
  return Status();
}

}  // namespace

CLI::App* add_bench_compare_command(CLI::App& bench, BenchCompareOptions& o) {
  CLI::App* c = bench.add_subcommand(
      "compare", "Colocated vs disaggregated over a sweep of rates, with a report");
  c->add_option("--model", o.model, "model for every worker")->capture_default_str();
  c->add_option("--workers", o.workers, "workers per layout (even)")->capture_default_str();
  c->add_option("--workloads", o.workloads, "NAME:INPUT:OUTPUT,...")->capture_default_str();
  c->add_option("--rates", o.rates, "request rates to sweep")->capture_default_str();
  c->add_option("--num-prompts", o.num_prompts, "requests per rate")->capture_default_str();
  c->add_option("--kv-blocks", o.kv_blocks, "device KV blocks per worker")->capture_default_str();
  c->add_option("--goodput", o.goodput, "SLOs: ttft:MS tpot:MS e2el:MS")->expected(1, 3);
  c->add_option("--out", o.out, "report folder")->capture_default_str();
  c->add_option("--seed", o.seed, "weights and workload seed")->capture_default_str();
  c->add_option("--backend", o.backend, "worker engine backend: cpu | sim")->capture_default_str();
  c->add_option("--hardware", o.hardware, "sim: modelled device (built-in, file or profile)")
      ->capture_default_str();
  c->add_option("--tp", o.tp, "sim: tensor-parallel degree per worker")->capture_default_str();
  c->add_option("--link", o.link, "sim: link KV hand-offs cross")->capture_default_str();
  c->add_option("--time-scale", o.time_scale, "sim: wall seconds per modelled second")
      ->capture_default_str();
  c->add_flag("--simulate", o.simulate,
              "also simulate every point and report simulated vs measured");
  c->add_option("--profile", o.profile,
                "--simulate with cpu workers: this machine's profile (bench engine --profile)");
  c->add_option("--rpc-seconds", o.rpc_seconds,
                "--simulate: one control message between processes (0: measure it)")
      ->capture_default_str();
  return c;
}

int run_bench_compare(const BenchCompareOptions& o, std::ostream& out, std::ostream& err) {
  return finish_command("bench compare", run(o, out, err), err);
}

}  // namespace kvfleet::apps
