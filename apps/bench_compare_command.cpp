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
#include <ostream>
#include <sstream>
#include <thread>

#include "apps/exit_code.h"
#include "apps/local_cluster.h"
#include "bench/runner.h"
#include "bench/svg_plot.h"
#include "bench/workload.h"
#include "common/model_spec.h"
#include "kernels/cpu/ops.h"
#include "net/http.h"
#include "perfmodel/estimate.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct WorkloadSpec {
  std::string name;
  std::int64_t input = 0, output = 0;
};

struct Point {
  double rate = 0;
  json summary;
  std::map<std::string, double> phase_ms;  // mean per phase over this run (coordinator metrics)
  std::vector<double> ttfts_ms;
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
  const double t_gemm = best(5, [&] { kernels::cpu::linear(y.data(), x.data(), w.data(), nullptr, m, o, k); });
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
      if (p > 0 && ::kill(p, 0) != 0) return Status(StatusCode::kUnavailable, "a cluster process died at start-up");
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
  if (o.workers < 2 || o.workers % 2 != 0) return invalid_argument("--workers must be even and >= 2");
  if (o.num_prompts < 2) return invalid_argument("--num-prompts must be >= 2");
  std::vector<WorkloadSpec> workloads;
  {
    std::stringstream in(o.workloads);
    std::string item;
    while (std::getline(in, item, ',')) {
      WorkloadSpec w;
      const auto a = item.find(':'), b = item.rfind(':');
      try {
        if (a == std::string::npos || a == b) throw std::invalid_argument("");
        w.name = item.substr(0, a);
        w.input = std::stoll(item.substr(a + 1, b - a - 1));
        w.output = std::stoll(item.substr(b + 1));
      } catch (const std::exception&) {
        return invalid_argument("--workloads takes NAME:INPUT:OUTPUT,..., not '" + item + "'");
      }
      if (w.name.empty() || w.input < 1 || w.output < 1) return invalid_argument("--workloads: bad '" + item + "'");
      workloads.push_back(w);
    }
  }
  std::vector<double> rates;
  {
    std::stringstream in(o.rates);
    std::string item;
    while (std::getline(in, item, ',')) {
      char* end = nullptr;
      const double r = std::strtod(item.c_str(), &end);
      if (end == item.c_str() || *end != '\0' || !(r > 0)) return invalid_argument("--rates: '" + item + "' is not a positive rate");
      rates.push_back(r);
    }
  }
  if (workloads.empty() || rates.empty()) return invalid_argument("--workloads and --rates must not be empty");
  KVFLEET_ASSIGN_OR_RETURN(bench::Slo slo, bench::parse_goodput(o.goodput));
  KVFLEET_ASSIGN_OR_RETURN(ModelSpec spec, load_model_spec(o.model));
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec) return invalid_argument("cannot create --out '" + o.out + "': " + ec.message());

  const perfmodel::HardwareSpec hw = measure_machine(err);
  const std::vector<std::string> layouts = {"colocated", "disaggregated"};
  // results[layout][workload] = points
  std::map<std::string, std::map<std::string, std::vector<Point>>> results;
  for (const std::string& layout : layouts) {
    KVFLEET_ASSIGN_OR_RETURN(std::uint16_t port, free_port("127.0.0.1"));
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    std::vector<pid_t> pids;
    pids.push_back(spawn({"kvfleet", "--log-level", "warning", "serve", "--port", std::to_string(port), "--mode", layout}, true));
    auto worker = [&](const std::string& role) {
      pids.push_back(spawn({"kvfleet", "--log-level", "warning", "worker", "--role", role, "--model", o.model,
                            "--coordinator", url, "--kv-blocks", std::to_string(o.kv_blocks),
                            "--host-kv-bytes", "256MiB", "--seed", std::to_string(o.seed)},
                           true));
    };
    for (int i = 0; i < o.workers; ++i) {
      worker(layout == "colocated" ? "both" : (i < o.workers / 2 ? "prefill" : "decode"));
    }
    const net::Endpoint ep = *net::parse_url(url);
    Status ready = wait_ready(ep, o.workers, pids);
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
        err << "bench compare: " << layout << ", " << w.name << " (" << w.input << " in, " << w.output
            << " out), " << rate << " req/s\n";
        bench::RunConfig cfg;
        cfg.url = url;
        cfg.model = spec.name;
        cfg.rate = rate;
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
        p.summary = bench::summarize(cfg, *run, slo, {50, 99});
        for (std::string_view phase : {"queue", "prefill", "kv_transfer", "decode_queue", "first_decode_step"}) {
          const std::string lab = "phase=\"" + std::string(phase) + "\"";
          const double n = metric(after, "kvfleet_ttft_phase_seconds_count", lab) -
                           metric(before, "kvfleet_ttft_phase_seconds_count", lab);
          const double sum = metric(after, "kvfleet_ttft_phase_seconds_sum", lab) -
                             metric(before, "kvfleet_ttft_phase_seconds_sum", lab);
          p.phase_ms[std::string(phase)] = n > 0 ? sum / n * 1e3 : std::nan("");
        }
        for (const auto& r : run->requests) {
          if (r.success) p.ttfts_ms.push_back(r.ttft * 1e3);
        }
        results[layout][w.name].push_back(std::move(p));
      }
    }
    stop_all(pids, err);
  }

  // Report.
  std::ofstream md(o.out + "/report.md");
  md << "# Disaggregated vs colocated: " << spec.name << ", " << o.workers << " workers\n\n";
  md << "Command: `kvfleet bench compare --model " << o.model << " --workers " << o.workers << " --workloads "
     << o.workloads << " --rates " << o.rates << " --num-prompts " << o.num_prompts << "`. "
     << "Colocated: " << o.workers << " `both` workers; disaggregated: " << o.workers / 2 << " prefill + "
     << o.workers / 2 << " decode (KV over UCX). SLOs for goodput:";
  for (const auto& [k, v] : slo.ms) md << " " << k << " <= " << v << " ms";
  md << ". Predicted figures: `kvfleet plan`'s model on this machine measured as one core with "
     << fmt(hw.hbm_bandwidth / 1e9, 2) << " GB/s read bandwidth and " << fmt(hw.flops.at(DType::kFp32) / 1e9, 1)
     << " GFLOP/s GEMM.\n\n";
  for (const WorkloadSpec& w : workloads) {
    perfmodel::Deployment dep;
    perfmodel::Workload work;
    work.context_tokens = w.input;
    work.decode_tokens = w.output;
    auto est = perfmodel::estimate(spec, hw, dep, work);
    const double pred_prefill_ms = est.is_ok() ? est->prefill_seconds * 1e3 : std::nan("");
    const double pred_step_ms = est.is_ok() ? est->decode_seconds_per_token * 1e3 : std::nan("");
    const double pred_transfer_ms =
        est.is_ok() ? est->kv_bytes_per_request / hw.pcie_bandwidth * 1e3 : std::nan("");
    md << "## Workload `" << w.name << "`: " << w.input << " prompt tokens (+-20%), " << w.output
       << " output tokens\n\n";
    md << "Predicted (batch 1, no queueing): prefill " << fmt(pred_prefill_ms) << " ms (the TTFT floor), decode step "
       << fmt(pred_step_ms) << " ms (the ITL floor), KV hand-off " << fmt(pred_transfer_ms, 2)
       << " ms (one request's KV at memory-copy speed).\n\n";
    md << "| layout | rate (req/s) | throughput (req/s) | goodput (req/s) | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | "
          "E2E p50 (ms) | TTFT phases (mean ms): queue / prefill / kv_transfer / decode_queue / first_decode_step |\n";
    md << "|---|---|---|---|---|---|---|---|\n";
    for (const std::string& layout : layouts) {
      for (const Point& p : results[layout][w.name]) {
        const json& s = p.summary;
        md << "| " << layout << " | " << p.rate << " | " << fmt(s["request_throughput"].get<double>(), 2) << " | "
           << fmt(s["request_goodput"].is_null() ? std::nan("") : s["request_goodput"].get<double>(), 2) << " | "
           << fmt(s["median_ttft_ms"].get<double>()) << " / " << fmt(s["p99_ttft_ms"].get<double>()) << " | "
           << fmt(s["median_itl_ms"].get<double>()) << " / " << fmt(s["p99_itl_ms"].get<double>()) << " | "
           << fmt(s["median_e2el_ms"].get<double>(), 0) << " | ";
        bool first = true;
        for (const char* ph : {"queue", "prefill", "kv_transfer", "decode_queue", "first_decode_step"}) {
          md << (first ? "" : " / ") << fmt(p.phase_ms.at(ph), 2);
          first = false;
        }
        md << " |\n";
      }
    }
    // Plots.
    auto series_of = [&](const std::string& layout, const std::string& key, bool dashed) {
      bench::Series s;
      s.name = layout + " " + key;
      s.dashed = dashed;
      for (const Point& p : results[layout][w.name]) {
        const json& v = p.summary[key];
        s.points.push_back({p.rate, v.is_number() ? v.get<double>() : std::nan("")});
      }
      return s;
    };
    auto flat = [&](const std::string& name, double y) {
      bench::Series s;
      s.name = name;
      s.dashed = true;
      s.points = {{rates.front(), y}, {rates.back(), y}};
      return s;
    };
    const std::string base = o.out + "/" + w.name;
    bench::Chart goodput{"Goodput vs rate: " + w.name, "request rate (req/s)", "goodput (req/s)", {}, false};
    bench::Chart ttft{"TTFT vs rate: " + w.name, "request rate (req/s)", "TTFT (ms)", {}, false};
    bench::Chart itl{"Inter-token latency vs rate: " + w.name, "request rate (req/s)", "ITL (ms)", {}, false};
    for (const std::string& layout : layouts) {
      goodput.series.push_back(series_of(layout, "request_goodput", false));
      ttft.series.push_back(series_of(layout, "median_ttft_ms", false));
      ttft.series.push_back(series_of(layout, "p99_ttft_ms", true));
      itl.series.push_back(series_of(layout, "median_itl_ms", false));
      itl.series.push_back(series_of(layout, "p99_itl_ms", true));
    }
    ttft.series.push_back(flat("predicted prefill", pred_prefill_ms));
    itl.series.push_back(flat("predicted decode step", pred_step_ms));
    bench::Chart cdf{"TTFT CDF at " + fmt(rates.back(), 1) + " req/s: " + w.name, "TTFT (ms)", "fraction of requests", {}, true};
    for (const std::string& layout : layouts) {
      std::vector<double> v = results[layout][w.name].back().ttfts_ms;
      std::sort(v.begin(), v.end());
      bench::Series s;
      s.name = layout;
      s.points.push_back({v.empty() ? 0 : v.front(), 0});
      for (size_t i = 0; i < v.size(); ++i) s.points.push_back({v[i], static_cast<double>(i + 1) / static_cast<double>(v.size())});
      cdf.series.push_back(s);
    }
    const std::pair<std::string, const bench::Chart*> charts[] = {
        {"goodput", &goodput}, {"ttft", &ttft}, {"itl", &itl}, {"ttft_cdf", &cdf}};
    md << "\n";
    for (const auto& [suffix, chart] : charts) {
      std::ofstream(base + "_" + suffix + ".svg") << bench::render_svg(*chart);
      md << "![" << suffix << "](" << w.name << "_" << suffix << ".svg)\n";
    }
    // Which layout won, by goodput at the highest rate (ties: lower p99 TTFT).
    const Point& c = results["colocated"][w.name].back();
    const Point& d = results["disaggregated"][w.name].back();
    const double gc = c.summary["request_goodput"].is_number() ? c.summary["request_goodput"].get<double>() : 0;
    const double gd = d.summary["request_goodput"].is_number() ? d.summary["request_goodput"].get<double>() : 0;
    const std::string winner = gc > gd * 1.02 ? "colocated" : gd > gc * 1.02 ? "disaggregated" : "neither (within 2%)";
    md << "\nAt " << rates.back() << " req/s the higher goodput: **" << winner << "** (" << fmt(gc, 2)
       << " vs " << fmt(gd, 2) << " req/s).\n\n";
    json all;
    for (const std::string& layout : layouts) {
      for (const Point& p : results[layout][w.name]) all[layout].push_back(p.summary);
    }
    std::ofstream(base + "_results.json") << all.dump(1) << "\n";
  }
  out << "bench compare: report at " << o.out << "/report.md\n";
  return Status();
}

}  // namespace

CLI::App* add_bench_compare_command(CLI::App& bench, BenchCompareOptions& o) {
  CLI::App* c = bench.add_subcommand("compare", "Colocated vs disaggregated over a sweep of rates, with a report");
  c->add_option("--model", o.model, "model for every worker")->capture_default_str();
  c->add_option("--workers", o.workers, "workers per layout (even)")->capture_default_str();
  c->add_option("--workloads", o.workloads, "NAME:INPUT:OUTPUT,...")->capture_default_str();
  c->add_option("--rates", o.rates, "request rates to sweep")->capture_default_str();
  c->add_option("--num-prompts", o.num_prompts, "requests per rate")->capture_default_str();
  c->add_option("--kv-blocks", o.kv_blocks, "device KV blocks per worker")->capture_default_str();
  c->add_option("--goodput", o.goodput, "SLOs: ttft:MS tpot:MS e2el:MS")->expected(1, 3);
  c->add_option("--out", o.out, "report folder")->capture_default_str();
  c->add_option("--seed", o.seed, "weights and workload seed")->capture_default_str();
  return c;
}

int run_bench_compare(const BenchCompareOptions& o, std::ostream& out, std::ostream& err) {
  return finish_command("bench compare", run(o, out, err), err);
}

}  // namespace kvfleet::apps
