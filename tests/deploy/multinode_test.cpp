// Multi-host launch: network namespaces on this machine stand for hosts; `kvfleet cluster`
// starts the coordinator and workers in different namespaces from a cluster file, KV moves
// between them over UCX/TCP, requests succeed, and the launcher stops everything. Needs root
// (to create namespaces); skipped otherwise. Bad cluster files fail before anything starts.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "tests/cluster/cluster_util.h"

namespace kvfleet::test {
namespace {

std::string kvfleet_cmd(const std::string& args) { return std::string(KVFLEET_BINARY) + " " + args; }

// A bridge in the root namespace and one namespace per host, each with a veth on the bridge.
class NetnsHosts {
 public:
  explicit NetnsHosts(int n) {
    const int id = static_cast<int>(::getpid() % 10000);
    subnet_ = "10.213." + std::to_string(id % 250) + ".";
    bridge_ = "kvb" + std::to_string(id);
    ok_ = sh("ip link add " + bridge_ + " type bridge && ip addr add " + subnet_ + "1/24 dev " + bridge_ +
             " && ip link set " + bridge_ + " up");
    for (int i = 0; ok_ && i < n; ++i) {
      const std::string ns = "kvfns" + std::to_string(id) + "-" + std::to_string(i);
      const std::string v = "kv" + std::to_string(id) + "v" + std::to_string(i);
      const std::string p = "kv" + std::to_string(id) + "p" + std::to_string(i);
      const std::string addr = subnet_ + std::to_string(i + 2);
      ok_ = sh("ip netns add " + ns) && sh("ip link add " + v + " type veth peer name " + p) &&
            sh("ip link set " + p + " netns " + ns) && sh("ip link set " + v + " master " + bridge_) &&
            sh("ip link set " + v + " up") &&
            sh("ip netns exec " + ns + " sh -c 'ip link set lo up && ip addr add " + addr + "/24 dev " + p +
               " && ip link set " + p + " up'");
      names_.push_back(ns);
      addresses_.push_back(addr);
      veths_.push_back(v);
    }
  }
  ~NetnsHosts() {
    for (const std::string& ns : names_) {
      sh("for p in $(ip netns pids " + ns + " 2>/dev/null); do kill -9 $p; done; ip netns del " + ns + " 2>/dev/null");
    }
    for (const std::string& v : veths_) sh("ip link del " + v + " 2>/dev/null");
    sh("ip link del " + bridge_ + " 2>/dev/null");
  }
  bool ok() const { return ok_; }
  const std::string& name(size_t i) const { return names_[i]; }
  const std::string& address(size_t i) const { return addresses_[i]; }
  std::string pids(size_t i) const { return run_command("ip netns pids " + names_[i]).out; }

 private:
  static bool sh(const std::string& cmd) { return run_command(cmd).exit_code == 0; }
  bool ok_ = false;
  std::string subnet_, bridge_;
  std::vector<std::string> names_, addresses_, veths_;
};

TEST(MultiHost, LauncherStartsAClusterAcrossNamespacesAndKvMovesOverTcp) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  NetnsHosts hosts(3);
  if (!hosts.ok()) GTEST_SKIP() << "cannot create network namespaces here (ip netns / veth / bridge)";
  TempDir dir;
  const std::string file = dir.write("cluster.yaml",
      "model: tiny\n"
      "mode: disaggregated\n"
      "env: {UCX_TLS: tcp}\n"
      "launch: {method: netns, binary: " + std::string(KVFLEET_BINARY) + ", log_dir: " + dir.path() + "/logs, timeout_seconds: 60}\n"
      "coordinator: {host: " + hosts.name(0) + ", address: " + hosts.address(0) + ", port: 8000}\n"
      "workers:\n"
      "  - {host: " + hosts.name(1) + ", address: " + hosts.address(1) + ", role: prefill, kv_blocks: 256}\n"
      "  - {host: " + hosts.name(2) + ", address: " + hosts.address(2) + ", role: decode, kv_blocks: 256}\n");
  const auto started = run_command(kvfleet_cmd("cluster start --file " + file));
  struct Stop {
    std::string file;
    ~Stop() { run_command(kvfleet_cmd("cluster stop --file " + file)); }
  } stop{file};
  ASSERT_EQ(started.exit_code, 0) << started.err << started.out;
  EXPECT_NE(started.out.find("2 workers ready"), std::string::npos) << started.out;
  EXPECT_EQ(run_command(kvfleet_cmd("cluster status --file " + file)).exit_code, 0);
  // Starting twice is refused.
  const auto again = run_command(kvfleet_cmd("cluster start --file " + file));
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("already running"), std::string::npos) << again.err;

  const std::string url = "http://" + hosts.address(0) + ":8000";
  std::mt19937_64 rng(test_seed());
  for (int i = 0; i < 3; ++i) {
    std::vector<std::int32_t> prompt(40 + rng() % 100);
    for (auto& t : prompt) t = static_cast<std::int32_t>(rng() % 256);
    json body;
    body["model"] = "tiny";
    body["prompt"] = prompt;
    body["max_tokens"] = 12;
    body["temperature"] = 0;
    body["ignore_eos"] = true;
    Completion c = complete(url, body, i % 2 == 1);
    ASSERT_EQ(c.status, 200) << c.error.dump();
    EXPECT_EQ(c.tokens, reference_tokens(prompt, 12));
  }
  // The KV crossed namespaces: the decode worker (in its own namespace) received it.
  // The worker list is on the coordinator's internal listener (port + 1 by default).
  json workers =
      json::parse(http("http://" + hosts.address(0) + ":8001", "GET", "/internal/workers").body);
  ASSERT_EQ(workers.size(), 2u);
  for (const json& w : workers) {
    if (w["role"] != "decode") continue;
    EXPECT_NE(w["url"].get<std::string>().find(hosts.address(2)), std::string::npos);
    const std::string metrics = http(w["url"].get<std::string>(), "GET", "/metrics").body;
    EXPECT_GT(metric_sum(metrics, "kvfleet_kv_transfer_bytes_total"), 0);
  }
  // Stop: every process in every namespace is gone.
  const auto stopped = run_command(kvfleet_cmd("cluster stop --file " + file));
  EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(hosts.pids(i), "") << hosts.name(i);
  EXPECT_FALSE(std::filesystem::exists(file + ".state.json"));
}

TEST(MultiHost, BadClusterFilesUnreachableHostsAndBusyPortsFailBeforeAnythingStarts) {
  TempDir dir;
  auto expect_error = [&](const std::string& yaml, const std::string& needle) {
    const std::string file = dir.write("c.yaml", yaml);
    const auto r = run_command(kvfleet_cmd("cluster start --file " + file));
    EXPECT_EQ(r.exit_code, 2) << yaml;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "want '" << needle << "' in: " << r.err;
    EXPECT_FALSE(std::filesystem::exists(file + ".state.json"));
  };
  const std::string local = "launch: {method: local, binary: " + std::string(KVFLEET_BINARY) + ", log_dir: " + dir.path() + "}\n";
  expect_error("model: [unclosed\n", "c.yaml");
  expect_error(local + "coordinator: {host: a, port: 8000}\nworkers: [{host: a, role: both}]\n", "model");
  expect_error("model: tiny\n" + local + "coordinator: {host: a}\nworkers: [{host: a, role: chef}]\n",
               "role must be prefill, decode or both");
  expect_error("model: tiny\nmode: colocated\n" + local + "coordinator: {host: a}\nworkers: [{host: a, role: prefill}]\n",
               "mode colocated needs workers with role both");
  expect_error("model: tiny\n" + local + "coordinator: {host: a, address: 127.0.0.1, port: 9000}\n"
               "workers: [{host: a, address: 127.0.0.1, role: both, port: 9000}]\n", "used twice");
  expect_error("model: tiny\nlaunch: {method: teleport}\ncoordinator: {host: a}\nworkers: [{host: a, role: both}]\n",
               "method must be ssh, netns or local");
  expect_error("model: tiny\nmode: colocated\nlaunch: {method: netns, binary: " + std::string(KVFLEET_BINARY) +
                   "}\ncoordinator: {host: kvfleet-no-such-namespace}\nworkers: [{host: kvfleet-no-such-namespace, role: both}]\n",
               "unreachable");
  // A busy coordinator port, with a listener this test holds.
  LoopbackListener busy;
  ASSERT_TRUE(busy.ok());
  const std::string port = std::to_string(busy.port());
  expect_error("model: tiny\nmode: colocated\n" + local +
                   "coordinator: {host: a, address: 127.0.0.1, port: " + port +
                   "}\nworkers: [{host: a, address: 127.0.0.1, role: both}]\n",
               "port " + port + " on 127.0.0.1 is already in use");
  const auto bad_action = run_command(kvfleet_cmd("cluster launch --file x.yaml"));
  EXPECT_EQ(bad_action.exit_code, 2);
}

TEST(DeployFiles, ExampleClusterFileSlurmScriptAndKubernetesManifestsAreWellFormed) {
  const std::string deploy = std::string(KVFLEET_SOURCE_DIR) + "/deploy";
  const auto check = run_command(kvfleet_cmd("cluster check --file " + deploy + "/cluster.example.yaml"));
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("3 workers, mode disaggregated, launch over ssh"), std::string::npos) << check.out;
  const auto slurm = run_command("bash -n " + deploy + "/slurm/kvfleet.sbatch");
  EXPECT_EQ(slurm.exit_code, 0) << slurm.err;
  const auto docs = YAML::LoadAllFromFile(deploy + "/k8s/kvfleet.yaml");
  std::multiset<std::string> kinds;
  for (const auto& d : docs) kinds.insert(d["kind"].as<std::string>());
  EXPECT_EQ(kinds.count("Deployment"), 3u);
  EXPECT_EQ(kinds.count("Service"), 2u);
  EXPECT_EQ(kinds.count("PodMonitor"), 1u);
  std::map<std::string, YAML::Node> services;
  for (const auto& d : docs) {
    if (d["kind"].as<std::string>() == "Service")
      services[d["metadata"]["name"].as<std::string>()] = d;
  }
  for (const auto& d : docs) {
    if (d["kind"].as<std::string>() != "Deployment") continue;
    const std::string name = d["metadata"]["name"].as<std::string>();
    SCOPED_TRACE(name);
    const auto c = d["spec"]["template"]["spec"]["containers"][0];
    std::set<std::string> port_names;
    for (const auto& p : c["ports"]) port_names.insert(p["name"].as<std::string>());
    // Both probes: an HTTP path on a port the container declares.
    for (const char* probe : {"livenessProbe", "readinessProbe"}) {
      ASSERT_TRUE(c[probe]["httpGet"]["path"].IsDefined()) << probe;
      EXPECT_EQ(port_names.count(c[probe]["httpGet"]["port"].as<std::string>()), 1u) << probe;
    }
    std::vector<std::string> args;
    for (const auto& a : c["args"]) args.push_back(a.as<std::string>());
    auto flag = [&](const std::string& f) {
      const auto it = std::find(args.begin(), args.end(), f);
      return it != args.end() && it + 1 != args.end() ? *(it + 1) : std::string();
    };
    // cpu backend: cpu requests and limits, no GPU, BLAS threads = the cpu limit.
    EXPECT_EQ(flag("--backend"), "cpu");
    EXPECT_TRUE(c["resources"]["requests"]["cpu"].IsDefined());
    EXPECT_TRUE(c["resources"]["limits"]["cpu"].IsDefined());
    EXPECT_TRUE(c["resources"]["limits"]["memory"].IsDefined());
    EXPECT_FALSE(c["resources"]["limits"]["nvidia.com/gpu"].IsDefined());
    if (args[0] != "worker") continue;
    EXPECT_EQ(flag("--threads"), c["resources"]["limits"]["cpu"].as<std::string>());
    // Workers register through a Service that publishes the coordinator before it is ready
    // (it becomes ready only once workers have registered).
    const std::string coordinator = flag("--coordinator");
    const std::string host = coordinator.substr(7, coordinator.rfind(':') - 7);
    ASSERT_EQ(services.count(host), 1u) << coordinator;
    const auto svc = services[host];
    EXPECT_TRUE(svc["spec"]["publishNotReadyAddresses"].as<bool>(false)) << host;
    EXPECT_EQ(svc["spec"]["selector"]["app.kubernetes.io/component"].as<std::string>(),
              "coordinator");
    EXPECT_EQ(svc["spec"]["ports"][0]["port"].as<std::string>(),
              coordinator.substr(coordinator.rfind(':') + 1));
  }
  // The image the manifests name is built by the Dockerfile at the root (docker build -t kvfleet
  // .).
  std::ifstream dockerfile(std::string(KVFLEET_SOURCE_DIR) + "/Dockerfile");
  const std::string df((std::istreambuf_iterator<char>(dockerfile)),
                       std::istreambuf_iterator<char>());
  for (const char* want :
       {"FROM debian:12", "scripts/setup", "scripts/build", "ENTRYPOINT [\"kvfleet\"]"}) {
    EXPECT_NE(df.find(want), std::string::npos) << "Dockerfile lacks " << want;
  }
  for (const char* f : {"/docker-compose.yml", "/grafana/provisioning/datasources/kvfleet.yml",
                        "/grafana/provisioning/dashboards/kvfleet.yml"}) {
    EXPECT_NO_THROW(YAML::LoadFile(deploy + f)) << f;
  }
}

// The probes of the Kubernetes manifests against the real processes: liveness answers 200 with
// or without workers; the coordinator's readiness turns 200 only once a worker registered.
TEST(DeployFiles, KubernetesProbesReferToRealRoutesWithLivenessIndependentOfWorkers) {
  const auto docs =
      YAML::LoadAllFromFile(std::string(KVFLEET_SOURCE_DIR) + "/deploy/k8s/kvfleet.yaml");
  std::map<std::string, std::pair<std::string, std::string>>
      probes;  // process -> (liveness, readiness)
  for (const auto& d : docs) {
    if (d["kind"].as<std::string>() != "Deployment") continue;
    const auto c = d["spec"]["template"]["spec"]["containers"][0];
    probes[c["args"][0].as<std::string>()] = {
        c["livenessProbe"]["httpGet"]["path"].as<std::string>(),
        c["readinessProbe"]["httpGet"]["path"].as<std::string>()};
  }
  ASSERT_EQ(probes.size(), 2u) << "serve and worker";
  TempDir dir;
  Process coordinator({"serve", "--port", "0", "--internal-port", "0", "--mode", "colocated"},
                      dir.path() + "/coordinator.log");
  const std::string url = coordinator.wait_url();
  const std::string internal = coordinator.wait_url();  // where workers register
  ASSERT_FALSE(internal.empty());
  auto get = [](const std::string& base, const std::string& path) {
    net::ClientOptions o;
    o.timeout = net::Seconds(10);
    auto r = net::http_call_sync(endpoint(base), "GET", path, "", o);
    return r.is_ok() ? r->status : -1;
  };
  EXPECT_EQ(get(url, probes["serve"].first), 200) << "liveness without workers";
  EXPECT_EQ(get(url, probes["serve"].second), 503) << "not ready without workers";
  Process worker({"worker", "--role", "both", "--model", "tiny", "--coordinator", internal, "--port",
                  "0", "--kv-blocks", "64", "--host-kv-bytes", "0"},
                 dir.path() + "/worker.log");
  const std::string worker_url = worker.wait_url();
  ASSERT_FALSE(worker_url.empty());
  EXPECT_EQ(get(worker_url, probes["worker"].first), 200);
  EXPECT_EQ(get(worker_url, probes["worker"].second), 200);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (get(url, probes["serve"].second) != 200 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(get(url, probes["serve"].second), 200) << "ready once a worker registered";
  EXPECT_EQ(get(url, probes["serve"].first), 200);
}

}  // namespace
}  // namespace kvfleet::test
