#include "apps/cluster_launch_command.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <thread>

#include "apps/exit_code.h"
#include "common/cluster_secret.h"
#include "common/config_file.h"
#include "common/units.h"
#include "net/http.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct WorkerGroup {
  std::string host, address, role;
  std::int64_t count = 1, port = 0, kv_blocks = 1024;
  std::string host_kv_bytes = "0";
};

struct ClusterFile {
  std::string model, weights, mode, transfer;
  std::int64_t seed = 0;
  std::map<std::string, std::string> env;
  std::string method, binary, log_dir;
  std::vector<std::string> ssh_options;
  double timeout = 120;
  std::string coord_host, coord_address;
  std::int64_t coord_port = 8000;
  std::int64_t internal_port = 0;  // the coordinator's internal listener (default: port + 1)
  std::vector<WorkerGroup> workers;
  std::string internal_url() const {
    return "http://" + coord_address + ":" + std::to_string(internal_port);
  }
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Result<ClusterFile> parse_cluster_file(const std::string& path) {
  KVFLEET_ASSIGN_OR_RETURN(json j, load_config_file(path));
  if (!j.is_object()) return invalid_argument(path + ": expected a map at the top level");
  ClusterFile c;
  FieldReader top(j, path);
  KVFLEET_ASSIGN_OR_RETURN(c.model, top.string("model"));
  KVFLEET_ASSIGN_OR_RETURN(c.weights, top.string_or("weights", ""));
  KVFLEET_ASSIGN_OR_RETURN(c.mode, top.string_or("mode", "disaggregated"));
  KVFLEET_ASSIGN_OR_RETURN(c.transfer, top.string_or("transfer", "ucx"));
  KVFLEET_ASSIGN_OR_RETURN(c.seed, top.integer_or("seed", 0));
  if (c.mode != "disaggregated" && c.mode != "colocated" && c.mode != "auto") {
    return invalid_argument(path + ": mode must be disaggregated, colocated or auto, not '" + c.mode + "'");
  }
  if (j.contains("env") && !j["env"].is_null()) {
    if (!j["env"].is_object()) return invalid_argument(path + ": env must be a map of variables");
    for (auto& [k, v] : j["env"].items()) {
      if (k.empty() || k.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos) {
        return invalid_argument(path + ": env: '" + k + "' is not a variable name");
      }
      c.env[k] = v.is_string() ? v.get<std::string>() : v.dump();
    }
  }
  const json launch = j.value("launch", json::object());
  if (!launch.is_object()) return invalid_argument(path + ": launch must be a map");
  FieldReader l(launch, path + ": launch");
  KVFLEET_ASSIGN_OR_RETURN(c.method, l.string_or("method", "ssh"));
  KVFLEET_ASSIGN_OR_RETURN(c.binary, l.string_or("binary", "kvfleet"));
  KVFLEET_ASSIGN_OR_RETURN(c.log_dir, l.string_or("log_dir", "/tmp/kvfleet"));
  KVFLEET_ASSIGN_OR_RETURN(c.timeout, l.number_or("timeout_seconds", 120));
  if (c.method != "ssh" && c.method != "netns" && c.method != "local") {
    return invalid_argument(path + ": launch: method must be ssh, netns or local, not '" + c.method + "'");
  }
  if (launch.contains("ssh_options")) {
    if (!launch["ssh_options"].is_array()) return invalid_argument(path + ": launch: ssh_options must be a list");
    for (const json& o : launch["ssh_options"]) c.ssh_options.push_back(o.is_string() ? o.get<std::string>() : o.dump());
  }
  if (!j.contains("coordinator") || !j["coordinator"].is_object()) {
    return invalid_argument(path + ": a 'coordinator' map (host, address, port) is required");
  }
  FieldReader co(j["coordinator"], path + ": coordinator");
  KVFLEET_ASSIGN_OR_RETURN(c.coord_host, co.string("host"));
  KVFLEET_ASSIGN_OR_RETURN(c.coord_address, co.string_or("address", c.coord_host));
  KVFLEET_ASSIGN_OR_RETURN(c.coord_port, co.integer_or("port", 8000));
  KVFLEET_ASSIGN_OR_RETURN(c.internal_port, co.integer_or("internal_port", c.coord_port + 1));
  if (c.internal_port < 1 || c.internal_port > 65535 || c.internal_port == c.coord_port) {
    return invalid_argument(path + ": coordinator: internal_port must be a port other than port");
  }
  if (c.coord_port < 1 || c.coord_port > 65535) return invalid_argument(path + ": coordinator: port must be in [1, 65535]");
  if (!j.contains("workers") || !j["workers"].is_array() || j["workers"].empty()) {
    return invalid_argument(path + ": 'workers' must be a non-empty list");
  }
  std::set<std::string> roles;
  std::set<std::pair<std::string, std::int64_t>> ports = {{c.coord_address, c.coord_port}};
  for (size_t i = 0; i < j["workers"].size(); ++i) {
    const json& w = j["workers"][i];
    const std::string where = path + ": workers[" + std::to_string(i) + "]";
    if (!w.is_object()) return invalid_argument(where + " must be a map");
    FieldReader r(w, where);
    WorkerGroup g;
    KVFLEET_ASSIGN_OR_RETURN(g.host, r.string("host"));
    KVFLEET_ASSIGN_OR_RETURN(g.address, r.string_or("address", g.host));
    KVFLEET_ASSIGN_OR_RETURN(g.role, r.string("role"));
    KVFLEET_ASSIGN_OR_RETURN(g.count, r.integer_or("count", 1));
    KVFLEET_ASSIGN_OR_RETURN(g.port, r.integer_or("port", 0));
    KVFLEET_ASSIGN_OR_RETURN(g.kv_blocks, r.integer_or("kv_blocks", 1024));
    if (w.contains("host_kv_bytes")) {
      g.host_kv_bytes = w["host_kv_bytes"].is_string() ? w["host_kv_bytes"].get<std::string>() : w["host_kv_bytes"].dump();
      if (!parse_quantity(g.host_kv_bytes, Quantity::kBytes).is_ok()) {
        return invalid_argument(where + ": host_kv_bytes '" + g.host_kv_bytes + "' is not a byte size");
      }
    }
    if (g.role != "prefill" && g.role != "decode" && g.role != "both") {
      return invalid_argument(where + ": role must be prefill, decode or both, not '" + g.role + "'");
    }
    if (g.count < 1 || g.count > 64) return invalid_argument(where + ": count must be in [1, 64]");
    if (g.port < 0 || g.port + g.count > 65536) return invalid_argument(where + ": port out of range");
    if (g.kv_blocks < 1) return invalid_argument(where + ": kv_blocks must be >= 1");
    for (std::int64_t k = 0; g.port > 0 && k < g.count; ++k) {
      if (!ports.insert({g.address, g.port + k}).second) {
        return invalid_argument(where + ": port " + std::to_string(g.port + k) + " on " + g.address + " is used twice");
      }
    }
    roles.insert(g.role);
    c.workers.push_back(g);
  }
  if (c.mode == "colocated" && roles.count("both") == 0) {
    return invalid_argument(path + ": mode colocated needs workers with role both");
  }
  if (c.mode == "disaggregated" && roles.count("both") == 0 && (roles.count("prefill") == 0 || roles.count("decode") == 0)) {
    return invalid_argument(path + ": mode disaggregated needs prefill and decode workers");
  }
  return c;
}

struct Ran {
  int exit_code = -1;
  std::string out, err;
};

// Runs argv with a deadline, capturing output; `input` (small) is its standard input. exit_code
// -1: could not run or timed out.
Ran run_process(const std::vector<std::string>& argv, double timeout_s,
                const std::string& input = {}) {
  Ran r;
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0 || ::pipe(in_pipe) != 0) return r;
  // Fits the pipe's buffer: written before the child runs, so no deadlock.
  if (!input.empty() &&
      ::write(in_pipe[1], input.data(), input.size()) != static_cast<ssize_t>(input.size())) {
    return r;
  }
  ::close(in_pipe[1]);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    const int devnull = in_pipe[0];
    ::dup2(devnull, 0);
    // Only 0, 1 and 2 may reach the command: a background server must not keep the pipes open.
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    ::close(devnull);
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execvp(a[0], a.data());
    std::fprintf(stderr, "cannot run %s: %s", a[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(in_pipe[0]);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  while (open_fds > 0 && Clock::now() < deadline) {
    if (::poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = 0;
  if (open_fds > 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    r.err += "(timed out after " + std::to_string(static_cast<int>(timeout_s)) + " s)";
    return r;
  }
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The argv that runs a shell command line on `host`.
std::vector<std::string> on_host(const ClusterFile& c, const std::string& host, const std::string& cmd) {
  if (c.method == "ssh") {
    std::vector<std::string> a = {"ssh"};
    a.insert(a.end(), c.ssh_options.begin(), c.ssh_options.end());
    a.push_back(host);
    a.push_back(cmd);
    return a;
  }
  if (c.method == "netns") return {"ip", "netns", "exec", host, "sh", "-c", cmd};
  return {"sh", "-c", cmd};
}

bool port_in_use(const std::string& address, std::int64_t port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res) return false;
  const int fd = ::socket(res->ai_family, SOCK_STREAM, 0);
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  bool in_use = false;
  if (::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    in_use = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 2000) == 1) {
      int e = 0;
      socklen_t len = sizeof e;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
      in_use = e == 0;
    }
  }
  ::close(fd);
  ::freeaddrinfo(res);
  return in_use;
}

struct Started {
  std::string host, name;
  long pid = 0;
};

void stop_processes(const ClusterFile& c, std::vector<Started> procs, std::ostream& err) {
  // Workers first (they drain and deregister), the coordinator last.
  std::reverse(procs.begin(), procs.end());
  for (const Started& p : procs) {
    run_process(on_host(c, p.host, "kill -TERM " + std::to_string(p.pid) + " 2>/dev/null"), 15);
  }
  for (const Started& p : procs) {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline &&
           run_process(on_host(c, p.host, "kill -0 " + std::to_string(p.pid) + " 2>/dev/null"), 15).exit_code == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (run_process(on_host(c, p.host, "kill -0 " + std::to_string(p.pid) + " 2>/dev/null"), 15).exit_code == 0) {
      err << "kvfleet cluster: " << p.name << " (pid " << p.pid << " on " << p.host << ") did not stop; killing it\n";
      run_process(on_host(c, p.host, "kill -KILL " + std::to_string(p.pid)), 15);
    }
  }
}

Result<Started> launch(const ClusterFile& c, const std::string& host, const std::string& name,
                       const std::vector<std::string>& args, std::ostream& err) {
  // `;` (not `&&`): only the server itself goes to the background, so $! is its pid.
  std::string cmd = "mkdir -p " + quote(c.log_dir) + "; ";
  for (const auto& [k, v] : c.env) cmd += k + "=" + quote(v) + " ";
  cmd += "nohup " + quote(c.binary);
  for (const auto& a : args) cmd += " " + quote(a);
  const std::string log = c.log_dir + "/" + name + ".log";
  cmd += " >" + quote(log) + " 2>&1 </dev/null & echo $!";
  const Ran r = run_process(on_host(c, host, cmd), 30);
  long pid = 0;
  try {
    pid = std::stol(r.out);
  } catch (const std::exception&) {
    pid = 0;
  }
  if (r.exit_code != 0 || pid <= 0) {
    return Status(StatusCode::kUnavailable, "cannot start " + name + " on " + host + ": " + r.err + r.out);
  }
  err << "kvfleet cluster: started " << name << " on " << host << " (pid " << pid << ", log " << log << ")\n";
  return Started{host, name, pid};
}

std::string remote_log_tail(const ClusterFile& c, const Started& p) {
  const Ran r = run_process(on_host(c, p.host, "tail -n 15 " + quote(c.log_dir + "/" + p.name + ".log")), 10);
  return r.out;
}

json state_json(const std::string& url, const std::vector<Started>& procs) {
  json j;
  j["coordinator"] = url;
  for (const Started& p : procs) j["processes"].push_back({{"host", p.host}, {"name", p.name}, {"pid", p.pid}});
  return j;
}

// The command line of each process, in one place per kind of process.
// Where `cluster start` puts the cluster secret on every host.
std::string secret_path(const ClusterFile& c) { return c.log_dir + "/cluster-secret"; }

std::vector<std::string> coordinator_args(const ClusterFile& c) {
  return {"serve",           "--host",          c.coord_address, "--port",
          std::to_string(c.coord_port),          "--internal-host", c.coord_address,
          "--internal-port", std::to_string(c.internal_port),    "--cluster-secret-file",
          secret_path(c),    "--mode",          c.mode};
}

std::vector<std::string> worker_args(const ClusterFile& c, const WorkerGroup& g, std::int64_t k,
                                     const std::string& id, const std::string& coordinator_url) {
  std::vector<std::string> a = {"worker"};
  auto flag = [&a](const char* name, std::string value) {
    a.push_back(name);
    a.push_back(std::move(value));
  };
  flag("--role", g.role);
  flag("--model", c.model);
  flag("--coordinator", coordinator_url);  // the coordinator's internal listener
  flag("--cluster-secret-file", secret_path(c));
  flag("--host", g.address);
  flag("--advertise-host", g.address);
  flag("--port", std::to_string(g.port > 0 ? g.port + k : 0));
  flag("--id", id);
  flag("--kv-blocks", std::to_string(g.kv_blocks));
  flag("--host-kv-bytes", g.host_kv_bytes);
  flag("--transfer", c.transfer);
  flag("--seed", std::to_string(c.seed));
  if (!c.weights.empty()) flag("--weights", c.weights);
  return a;
}

Status start(const ClusterFile& c, const std::string& state_path, std::ostream& out, std::ostream& err) {
  if (std::ifstream(state_path).good()) {
    return Status(StatusCode::kFailedPrecondition, "a cluster from this file is already running (state in " + state_path +
                                                       "); stop it first");
  }
  // 1. Every host answers.
  std::set<std::string> hosts = {c.coord_host};
  for (const auto& g : c.workers) hosts.insert(g.host);
  for (const std::string& h : hosts) {
    const Ran r = run_process(on_host(c, h, "command -v " + quote(c.binary) + " >/dev/null || echo missing"), 20);
    if (r.exit_code != 0) {
      return Status(StatusCode::kUnavailable, "host '" + h + "' is unreachable (" + c.method + "): " +
                                                  (r.err.empty() ? "exit code " + std::to_string(r.exit_code) : r.err));
    }
    if (r.out.find("missing") != std::string::npos) {
      return Status(StatusCode::kFailedPrecondition, "host '" + h + "' has no kvfleet binary at '" + c.binary + "'");
    }
  }
  // 2. Fixed ports are free.
  if (port_in_use(c.coord_address, c.coord_port)) {
    return Status(StatusCode::kFailedPrecondition, "port " + std::to_string(c.coord_port) + " on " + c.coord_address +
                                                       " is already in use (coordinator)");
  }
  for (const auto& g : c.workers) {
    for (std::int64_t k = 0; g.port > 0 && k < g.count; ++k) {
      if (port_in_use(g.address, g.port + k)) {
        return Status(StatusCode::kFailedPrecondition, "port " + std::to_string(g.port + k) + " on " + g.address +
                                                           " is already in use (" + g.role + " worker)");
      }
    }
  }
  if (port_in_use(c.coord_address, c.internal_port)) {
    return Status(StatusCode::kFailedPrecondition,
                  "port " + std::to_string(c.internal_port) + " on " + c.coord_address +
                      " is already in use (coordinator, internal)");
  }
  // 3. A fresh cluster secret on every host, readable by the launching user only (sent on ssh's
  // standard input, never on a command line).
  const std::string secret_file = secret_path(c);
  const ClusterSecret secret = ClusterSecret::generate();
  for (const std::string& h : hosts) {
    const Ran r = run_process(on_host(c, h,
                                      "umask 077 && mkdir -p " + quote(c.log_dir) + " && rm -f " +
                                          quote(secret_file) + " && cat > " + quote(secret_file)),
                              20, secret.text() + "\n");
    if (r.exit_code != 0) {
      return Status(StatusCode::kUnavailable,
                    "cannot write the cluster secret on '" + h + "': " + r.err);
    }
  }
  // 4. Coordinator, then workers; any failure stops what started.
  std::vector<Started> procs;
  auto fail = [&](Status s) {
    stop_processes(c, procs, err);
    return s;
  };
  const std::string url = "http://" + c.coord_address + ":" + std::to_string(c.coord_port);
  auto coord = launch(c, c.coord_host, "coordinator", coordinator_args(c), err);
  if (!coord.is_ok()) return fail(coord.status());
  procs.push_back(*coord);
  const net::Endpoint ep = *net::parse_url(url);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c.timeout));
  net::ClientOptions co;
  co.connect_timeout = net::Seconds(1);
  co.timeout = net::Seconds(3);
  while (!net::http_call_sync(ep, "GET", "/health", "", co).is_ok()) {
    if (Clock::now() > deadline) {
      const std::string tail = remote_log_tail(c, procs[0]);
      return fail(Status(StatusCode::kDeadlineExceeded, "the coordinator did not answer at " + url + ":\n" + tail));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::int64_t total = 0;
  // Worker ids (and so log files) number the workers of one role on one host across all groups
  // placing that role there: two groups of prefill workers on node1 give prefill-node1-0, -1, ...
  std::map<std::pair<std::string, std::string>, std::int64_t> next_index;
  for (const auto& g : c.workers) {
    for (std::int64_t k = 0; k < g.count; ++k, ++total) {
      const std::string id =
          g.role + "-" + g.host + "-" + std::to_string(next_index[{g.role, g.host}]++);
      auto w = launch(c, g.host, id, worker_args(c, g, k, id, c.internal_url()), err);
      if (!w.is_ok()) return fail(w.status());
      procs.push_back(*w);
    }
  }
  // 5. Ready: every worker registered and /health 200.
  const net::Endpoint internal = *net::parse_url(c.internal_url());
  while (true) {
    auto h = net::http_call_sync(ep, "GET", "/health", "", co);
    auto w = net::http_call_sync(internal, "GET", "/internal/workers", "", co);
    if (h.is_ok() && h->status == 200 && w.is_ok() && w->status == 200) {
      json list = json::parse(w->body, nullptr, false);
      if (list.is_array() && static_cast<std::int64_t>(list.size()) == total) break;
    }
    if (Clock::now() > deadline) {
      std::string logs;
      for (size_t i = 1; i < procs.size(); ++i) logs += "--- " + procs[i].name + "\n" + remote_log_tail(c, procs[i]);
      return fail(Status(StatusCode::kDeadlineExceeded, "not every worker registered within " +
                                                            std::to_string(static_cast<int>(c.timeout)) + " s:\n" + logs));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::ofstream(state_path) << state_json(url, procs).dump(2) << "\n";
  out << "kvfleet cluster: " << total << " workers ready; coordinator at " << url << std::endl;
  return Status();
}

Status stop(const ClusterFile& c, const std::string& state_path, std::ostream& out, std::ostream& err) {
  std::ifstream in(state_path);
  if (!in) return Status(StatusCode::kNotFound, "no running cluster recorded in " + state_path);
  json s = json::parse(in, nullptr, false);
  if (s.is_discarded() || !s.contains("processes")) return invalid_argument(state_path + " is not a cluster state file");
  std::vector<Started> procs;
  for (const json& p : s["processes"]) procs.push_back({p["host"], p["name"], p["pid"].get<long>()});
  stop_processes(c, procs, err);
  std::set<std::string> hosts = {c.coord_host};
  for (const auto& g : c.workers) hosts.insert(g.host);
  for (const std::string& h : hosts)
    run_process(on_host(c, h, "rm -f " + quote(secret_path(c))), 20);
  std::remove(state_path.c_str());
  out << "kvfleet cluster: stopped " << procs.size() << " processes" << std::endl;
  return Status();
}

Status status(const ClusterFile& c, std::ostream& out) {
  const std::string url = "http://" + c.coord_address + ":" + std::to_string(c.coord_port);
  net::ClientOptions co;
  co.connect_timeout = net::Seconds(2);
  co.timeout = net::Seconds(5);
  auto h = net::http_call_sync(*net::parse_url(url), "GET", "/health", "", co);
  if (!h.is_ok()) return Status(StatusCode::kUnavailable, "the coordinator at " + url + " does not answer: " + h.status().message());
  auto w =
      net::http_call_sync(*net::parse_url(c.internal_url()), "GET", "/internal/workers", "", co);
  out << "coordinator " << url << ": /health " << h->status << "\n";
  if (w.is_ok()) {
    for (const json& x : json::parse(w->body, nullptr, false)) {
      out << "  " << x.value("worker_id", "?") << "  " << x.value("role", "?") << "  " << x.value("url", "?")
          << "  running " << x.value("running", 0) << "  free blocks " << x.value("free_blocks", 0) << "\n";
    }
  }
  if (h->status != 200) return Status(StatusCode::kUnavailable, "the cluster is not ready");
  return Status();
}

}  // namespace

CLI::App* add_cluster_launch_command(CLI::App& root, ClusterLaunchOptions& o) {
  CLI::App* c = root.add_subcommand("cluster", "Start, check or stop a multi-node cluster from a cluster file");
  c->add_option("action", o.action, "start | status | stop | check (the file only)")->required();
  c->add_option("--file", o.file, "cluster description (YAML)")->required();
  c->add_option("--state", o.state, "where start records the processes (default: FILE.state.json)");
  return c;
}

int run_cluster_launch(const ClusterLaunchOptions& o, std::ostream& out, std::ostream& err) {
  if (o.action != "start" && o.action != "status" && o.action != "stop" && o.action != "check") {
    return finish_command("cluster", invalid_argument("the action must be start, status, stop or check, not '" + o.action + "'"), err);
  }
  auto c = parse_cluster_file(o.file);
  if (!c.is_ok()) return finish_command("cluster", c.status(), err);
  if (o.action == "check") {  // the file alone: no host is contacted
    std::int64_t n = 0;
    for (const auto& g : c->workers) n += g.count;
    out << "kvfleet cluster: " << o.file << " is valid: coordinator on " << c->coord_host << ", " << n
        << " workers, mode " << c->mode << ", launch over " << c->method << std::endl;
    return 0;
  }
  const std::string state = o.state.empty() ? o.file + ".state.json" : o.state;
  Status s = o.action == "start" ? start(*c, state, out, err) : o.action == "stop" ? stop(*c, state, out, err) : status(*c, out);
  return finish_command("cluster", s, err);
}

}  // namespace kvfleet::apps
