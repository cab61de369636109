#include "apps/bench_overhead_command.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <sstream>
#include <thread>
#include <utility>  // before Asio (Boost 1.74 needs std::exchange)

#include "apps/exit_code.h"
#include "apps/local_cluster.h"
#include "common/internal_api.h"
#include "net/auth.h"
#include "net/http.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// utime + stime of a process, seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  double ut = 0, st = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) ut = std::stod(f);
    if (i == 15) st = std::stod(f);
  }
  return (ut + st) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct Target {
  net::Endpoint ep;
  std::string path;
  std::string body;
  const ClusterSecret* secret = nullptr;  // internal routes: signed, as the coordinator signs
};

// One request; true when it succeeded.
net::Task<bool> one(const Target& t) {
  net::ClientOptions o;
  o.timeout = net::Seconds(60);
  std::string method = "POST", path = t.path, body = t.body;
  auto r = co_await net::signed_call(t.secret, t.ep, method, path, body, o);
  co_return r.is_ok() && r->status == 200;
}

// Runs `n` requests with `concurrency` clients; returns latencies, fills failures and wall time.
std::vector<double> drive(const Target& t, std::int64_t n, std::int64_t concurrency, std::int64_t& failures,
                          double& wall) {
  boost::asio::io_context io;
  std::vector<double> lat;
  std::int64_t next = 0;
  failures = 0;
  const auto t0 = Clock::now();
  for (std::int64_t c = 0; c < concurrency; ++c) {
    boost::asio::co_spawn(
        io,
        [&]() -> net::Task<void> {
          while (next < n) {
            ++next;
            const auto s = Clock::now();
            const bool ok = co_await one(t);
            if (ok) {
              lat.push_back(seconds_since(s));
            } else {
              ++failures;
            }
          }
        },
        boost::asio::detached);
  }
  io.run();
  wall = seconds_since(t0);
  return lat;
}

}  // namespace

CLI::App* add_bench_overhead_command(CLI::App& bench, BenchOverheadOptions& o) {
  CLI::App* c = bench.add_subcommand("overhead", "Coordinator overhead vs direct-to-worker requests");
  c->add_option("--model", o.model, "model of the worker")->capture_default_str();
  c->add_option("--requests", o.requests, "requests per path for latency (one at a time)")->capture_default_str();
  c->add_option("--concurrency", o.concurrency, "clients in the throughput phase")->capture_default_str();
  c->add_option("--load-requests", o.load_requests, "requests per path in the throughput phase")
      ->capture_default_str();
  c->add_option("--prompt-tokens", o.prompt_tokens, "prompt length")->capture_default_str();
  c->add_option("--max-tokens", o.max_tokens, "tokens generated per request")->capture_default_str();
  c->add_flag("--json", o.json, "JSON output");
  return c;
}

int run_bench_overhead(const BenchOverheadOptions& o, std::ostream& out, std::ostream& err) {
  if (o.requests < 10 || o.concurrency < 1 || o.load_requests < o.concurrency || o.prompt_tokens < 1 ||
      o.max_tokens < 1) {
    return finish_command("bench overhead",
                          invalid_argument("need --requests >= 10, --concurrency >= 1, "
                                           "--load-requests >= concurrency, positive token counts"),
                          err);
  }
  auto plan = plan_local_cluster("127.0.0.1", 0);
  if (!plan.is_ok()) return finish_command("bench overhead", plan.status(), err);
  const LocalClusterPlan& cluster = **plan;
  const std::string url = cluster.url;
  std::vector<pid_t> pids;
  std::vector<std::string> serve = {"kvfleet", "--log-level", "warning",        "serve",
                                    "--mode",  "colocated",   "--max-inflight", "100000"};
  for (const std::string& a : cluster.serve_args("127.0.0.1")) serve.push_back(a);
  pids.push_back(spawn(serve, true));
  std::vector<std::string> worker = {"kvfleet", "--log-level", "warning", "worker",       "--role",
                                     "both",    "--model",     o.model,   "--max-queued", "100000"};
  for (const std::string& a : cluster.worker_args()) worker.push_back(a);
  pids.push_back(spawn(worker, true));
  const pid_t coordinator = pids[0];
  auto ep = *net::parse_url(url);
  const auto internal = *net::parse_url(cluster.internal_url);
  std::string worker_url;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && worker_url.empty()) {
    auto r = net::http_call_sync(internal, "GET", "/internal/workers");
    if (r.is_ok() && r->status == 200) {
      json w = json::parse(r->body, nullptr, false);
      if (w.is_array() && !w.empty()) worker_url = w[0]["url"].get<std::string>();
    }
    if (worker_url.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (worker_url.empty()) {
    stop_all(pids, err);
    return finish_command("bench overhead", Status(StatusCode::kUnavailable, "the cluster did not start"), err);
  }
  std::mt19937_64 rng(1);
  std::vector<std::int32_t> prompt(static_cast<size_t>(o.prompt_tokens));
  for (auto& t : prompt) t = static_cast<std::int32_t>(rng() % 256);
  internal_api::GenerateRequest direct_body;
  direct_body.tokens = prompt;
  direct_body.mode = "full";
  direct_body.params.max_tokens = o.max_tokens;
  direct_body.params.ignore_eos = true;
  json api_body;
  api_body["model"] = o.model;
  api_body["prompt"] = prompt;
  api_body["max_tokens"] = o.max_tokens;
  api_body["temperature"] = 0;
  api_body["ignore_eos"] = true;
  const Target direct{*net::parse_url(worker_url), "/internal/generate",
                      internal_api::encode(direct_body), &*cluster.secret};
  const Target via{ep, "/v1/completions", api_body.dump()};

  std::int64_t f1 = 0, f2 = 0;
  double wall = 0;
  drive(direct, 20, 1, f1, wall);  // warm-up
  drive(via, 20, 1, f2, wall);
  if (!o.json) err << "latency: " << o.requests << " requests per path, one at a time\n";
  std::vector<double> lat_direct, lat_via;
  std::int64_t failures = 0;
  for (std::int64_t i = 0; i < o.requests; ++i) {  // interleaved, so drift hits both alike
    auto a = drive(direct, 1, 1, f1, wall);
    auto b = drive(via, 1, 1, f2, wall);
    lat_direct.insert(lat_direct.end(), a.begin(), a.end());
    lat_via.insert(lat_via.end(), b.begin(), b.end());
    failures += f1 + f2;
  }
  if (!o.json) err << "throughput: " << o.load_requests << " requests per path, " << o.concurrency << " clients\n";
  double wall_direct = 0, wall_via = 0;
  drive(direct, o.load_requests, o.concurrency, f1, wall_direct);
  const double cpu0 = cpu_seconds(coordinator);
  drive(via, o.load_requests, o.concurrency, f2, wall_via);
  const double cpu_per_request = (cpu_seconds(coordinator) - cpu0) / static_cast<double>(o.load_requests);
  failures += f1 + f2;
  stop_all(pids, err);

  const double p50d = percentile(lat_direct, 0.5), p99d = percentile(lat_direct, 0.99);
  const double p50v = percentile(lat_via, 0.5), p99v = percentile(lat_via, 0.99);
  // Added latency per pair of back-to-back requests (direct, then through the coordinator).
  std::vector<double> added;
  for (size_t i = 0; i < std::min(lat_direct.size(), lat_via.size()); ++i) {
    added.push_back(lat_via[i] - lat_direct[i]);
  }
  const double p50a = percentile(added, 0.5), p99a = percentile(added, 0.99);
  json j;
  j["model"] = o.model;
  j["prompt_tokens"] = o.prompt_tokens;
  j["max_tokens"] = o.max_tokens;
  j["direct_p50_ms"] = p50d * 1e3;
  j["direct_p99_ms"] = p99d * 1e3;
  j["coordinator_p50_ms"] = p50v * 1e3;
  j["coordinator_p99_ms"] = p99v * 1e3;
  j["added_p50_ms"] = p50a * 1e3;
  j["added_p99_ms"] = p99a * 1e3;
  j["direct_rps"] = static_cast<double>(o.load_requests) / wall_direct;
  j["coordinator_rps"] = static_cast<double>(o.load_requests) / wall_via;
  j["coordinator_cpu_ms_per_request"] = cpu_per_request * 1e3;
  j["coordinator_max_rps_per_core"] = cpu_per_request > 0 ? 1.0 / cpu_per_request : 0.0;
  j["failures"] = failures;
  if (o.json) {
    out << j.dump(2) << "\n";
  } else {
    out << std::fixed << std::setprecision(3);
    out << "path          p50 ms    p99 ms    req/s (" << o.concurrency << " clients)\n";
    out << "direct        " << std::setw(8) << p50d * 1e3 << "  " << std::setw(8) << p99d * 1e3 << "  "
        << std::setprecision(1) << j["direct_rps"].get<double>() << "\n" << std::setprecision(3);
    out << "coordinator   " << std::setw(8) << p50v * 1e3 << "  " << std::setw(8) << p99v * 1e3 << "  "
        << std::setprecision(1) << j["coordinator_rps"].get<double>() << "\n" << std::setprecision(3);
    out << "added (pairs) " << std::setw(8) << p50a * 1e3 << "  " << std::setw(8) << p99a * 1e3
        << "  (ratio of throughput " << std::setprecision(2)
        << j["coordinator_rps"].get<double>() / j["direct_rps"].get<double>() << ")\n";
    out << "coordinator CPU per request " << std::setprecision(3) << cpu_per_request * 1e3
        << " ms -> at most " << std::setprecision(0) << j["coordinator_max_rps_per_core"].get<double>()
        << " requests/s per core\n";
    if (failures) out << "failures: " << failures << "\n";
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace kvfleet::apps
