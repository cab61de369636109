// The monitoring bundle against a live cluster: the real Prometheus server (Debian package)
// scrapes a disaggregated cluster through the shipped configuration while `kvfleet bench serve`
// loads it; every PromQL expression of the shipped Grafana dashboard must return data, and the
// benchmark's own figures must agree with the server's metrics.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmath>
#include <fstream>
#include <regex>

#include "monitoring/metrics.h"
#include "tests/cluster/cluster_util.h"

namespace kvfleet::test {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string form_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// A PromQL instant query; the "data" object of the answer.
json promql(const std::string& prometheus, const std::string& expr) {
  std::vector<net::Header> h;
  h.push_back({"Content-Type", "application/x-www-form-urlencoded"});
  net::ClientOptions o;
  o.timeout = net::Seconds(30);
  auto r = net::http_call_sync(endpoint(prometheus), "POST", "/api/v1/query", "query=" + form_encode(expr), o, h);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  if (!r.is_ok()) return json();
  json j = json::parse(r->body, nullptr, false);
  EXPECT_EQ(j.value("status", ""), "success") << expr << "\n" << r->body;
  return j.value("data", json());
}

double scalar_of(const json& data) {
  if (!data.is_object() || data["result"].empty()) return std::nan("");
  return std::stod(data["result"][0]["value"][1].get<std::string>());
}

TEST(Monitoring, PromtoolAcceptsTheShippedConfig) {
  const auto r = run_command("promtool check config " + std::string(KVFLEET_SOURCE_DIR) +
                             "/deploy/prometheus/prometheus.yml");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(Monitoring, EveryDashboardQueryReturnsDataAndBenchAgreesWithTheServer) {
  Cluster cluster("disaggregated", {{"--role", "prefill"}, {"--role", "decode", "--kv-blocks", "64",
                                                            "--host-kv-bytes", "32MiB"}});
  const std::string coord_hostport = endpoint(cluster.internal_url()).to_string();
  TempDir dir;
  // The shipped configuration, pointed at this coordinator, scraping every second.
  std::string config = read_file(std::string(KVFLEET_SOURCE_DIR) + "/deploy/prometheus/prometheus.yml");
  config = std::regex_replace(config, std::regex("localhost:8001"), coord_hostport);
  config = std::regex_replace(config, std::regex("5s"), "1s");
  const std::string config_path = dir.write("prometheus.yml", config);
  const std::string prom_url = "http://127.0.0.1:" + std::to_string(unused_port());
  std::vector<std::string> args = {"--config.file=" + config_path, "--storage.tsdb.path=" + dir.path() + "/tsdb",
                                   "--web.listen-address=" + endpoint(prom_url).to_string()};
  const pid_t prom = ::fork();
  if (prom == 0) {
    std::vector<char*> argv;
    std::string bin = "prometheus";
    argv.push_back(bin.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::FILE* log = std::fopen((dir.path() + "/prometheus.log").c_str(), "w");
    if (log) {
      ::dup2(fileno(log), 1);
      ::dup2(fileno(log), 2);
    }
    ::execvp("prometheus", argv.data());
    ::_exit(127);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{prom};
  // Ready, and discovering all three targets through the coordinator.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = net::http_call_sync(endpoint(prom_url), "GET", "/api/v1/targets?state=active");
    if (r.is_ok() && r->status == 200) {
      json t = json::parse(r->body, nullptr, false);
      if (!t.is_discarded() && t["data"]["activeTargets"].size() == 3) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_LT(std::chrono::steady_clock::now(), deadline) << read_file(dir.path() + "/prometheus.log");

  // Load from the benchmark.
  const std::int64_t n = 60;
  const auto bench = run_command(std::string(KVFLEET_BINARY) + " bench serve --url " + cluster.url() +
                                 " --num-prompts " + std::to_string(n) +
                                 " --input-len 120 --range-ratio 0.5 --output-len 24 --request-rate 15 "
                                 "--percentiles 50,99 --json --seed 7");
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  const json result = json::parse(bench.out);
  EXPECT_EQ(result["completed"], n);

  // Wait until Prometheus has scraped the end of the run.
  const std::string count_expr = "sum(kvfleet_requests_total{role=\"coordinator\"})";
  // (From now: the run itself may take long, e.g. under a sanitizer.)
  double seen = 0;
  const auto scraped = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (true) {
    seen = scalar_of(promql(prom_url, count_expr));
    if (seen == static_cast<double>(n)) break;
    if (std::chrono::steady_clock::now() > scraped) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // Request counts agree exactly; tokens too.
  EXPECT_EQ(seen, static_cast<double>(n));
  EXPECT_EQ(scalar_of(promql(prom_url, "sum(kvfleet_generation_tokens_total{role=\"coordinator\"})")),
            result["total_output_tokens"].get<double>());
  EXPECT_EQ(scalar_of(promql(prom_url, "sum(kvfleet_prompt_tokens_total{role=\"coordinator\"})")),
            result["total_input_tokens"].get<double>());
  // Latencies agree within the histogram's bucket resolution: the server's median lies in the
  // bucket of the client's median or a neighbour.
  auto within_buckets = [&](const std::string& metric, const std::vector<double>& buckets, double client_ms) {
    const double server = scalar_of(promql(prom_url, "histogram_quantile(0.5, sum by (le) (" + metric +
                                                         "_bucket{role=\"coordinator\"}))"));
    const double client = client_ms / 1e3;
    size_t i = 0;
    while (i < buckets.size() && buckets[i] < client) ++i;
    const double lo = i >= 2 ? buckets[i - 2] : 0.0;
    const double hi = i + 1 < buckets.size() ? buckets[i + 1] : 1e9;
    EXPECT_GE(server, lo) << metric << ": client median " << client << " s, server " << server << " s";
    EXPECT_LE(server, hi) << metric << ": client median " << client << " s, server " << server << " s";
  };
  within_buckets("kvfleet_time_to_first_token_seconds", monitoring::ttft_buckets(),
                 result["median_ttft_ms"].get<double>());
  within_buckets("kvfleet_inter_token_latency_seconds", monitoring::inter_token_buckets(),
                 result["median_itl_ms"].get<double>());
  within_buckets("kvfleet_e2e_request_latency_seconds", monitoring::request_buckets(),
                 result["median_e2el_ms"].get<double>());

  // Every expression of the dashboard returns data.
  const json dash = json::parse(read_file(std::string(KVFLEET_SOURCE_DIR) + "/deploy/grafana/dashboards/kvfleet.json"));
  int checked = 0;
  for (const json& panel : dash["panels"]) {
    if (!panel.contains("targets")) continue;
    for (const json& target : panel["targets"]) {
      std::string expr = target["expr"].get<std::string>();
      expr = std::regex_replace(expr, std::regex("\\$__rate_interval"), "2m");
      expr = std::regex_replace(expr, std::regex("\\$(role|worker)"), ".*");
      const json data = promql(prom_url, expr);
      EXPECT_FALSE(data.is_null() || data["result"].empty())
          << "panel '" << panel["title"].get<std::string>() << "': no data for " << expr;
      ++checked;
    }
  }
  EXPECT_GE(checked, 20);
  // Each of the paper's four metrics and the TTFT phases are on the dashboard.
  const std::string text = dash.dump();
  for (const std::string& name : monitoring::metric_names()) {
    EXPECT_NE(text.find(name), std::string::npos) << name << " is on no panel";
  }
  // Every request has each phase, except `kv_transfer` when there was no transfer: a decode
  // worker that finds no room for the KV within --kv-import-wait-seconds recomputes the prompt
  // itself (kvfleet_errors_total{type="kv_import_recomputed"}). Rare at full speed; under a
  // sanitizer most hand-offs can take that path. The worker counts a recompute when it starts
  // it, so its count may reach Prometheus a scrape after the coordinator's last request.
  auto phase_count = [&](std::string_view phase) {
    return scalar_of(
        promql(prom_url, "sum(kvfleet_ttft_phase_seconds_count{role=\"coordinator\", phase=\"" +
                             std::string(phase) + "\"})"));
  };
  // (The series exists from the first recompute on: `or vector(0)` before that.)
  const std::string recomputed_expr =
      "sum(kvfleet_errors_total{type=\"kv_import_recomputed\"}) or vector(0)";
  double transferred = 0, recomputed = 0;
  const auto settled = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (true) {
    transferred = phase_count("kv_transfer");
    recomputed = scalar_of(promql(prom_url, recomputed_expr));
    if (transferred + recomputed == static_cast<double>(n)) break;
    if (std::chrono::steady_clock::now() > settled) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::cout << "hand-offs: " << transferred << " transferred, " << recomputed << " recomputed\n";
  EXPECT_EQ(transferred + recomputed, static_cast<double>(n))
      << "hand-offs: " << transferred << " transferred, " << recomputed << " recomputed";
  for (std::string_view phase : monitoring::kTtftPhases) {
    if (phase == "kv_transfer") continue;
    EXPECT_EQ(phase_count(phase), static_cast<double>(n)) << phase;
  }
  if (HasFailure()) ADD_FAILURE() << cluster.logs() << read_file(dir.path() + "/prometheus.log");
}

}  // namespace
}  // namespace kvfleet::test
