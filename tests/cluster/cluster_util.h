#pragma once
// Real processes on loopback for cluster tests: the kvfleet binary started as coordinator and
// workers (ports from the OS), HTTP helpers, and the single-engine reference.

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster_secret.h"
#include "net/auth.h"
#include "net/http.h"
#include "tests/test_util.h"
#include "worker/engine.h"

namespace kvfleet::test {

using nlohmann::json;

// A child process running the kvfleet binary; stdout is a pipe (its first line announces the
// URL), stderr goes to a file kept for failure messages. Killed on destruction.
class Process {
 public:
  Process(const std::vector<std::string>& args, const std::string& log_path) : log_(log_path) {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      FILE* err = std::fopen(log_path.c_str(), "w");
      if (err) ::dup2(fileno(err), 2);
      ::close(fds[0]);
      std::vector<char*> argv;
      std::string bin = KVFLEET_BINARY;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
  }
  ~Process() {
    kill(SIGKILL);
    if (out_ >= 0) ::close(out_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Waits for the announcement line ("... listening on URL") and returns the URL.
  std::string wait_url(std::chrono::seconds timeout = std::chrono::seconds(60)) {
    return wait_line("http://", timeout);
  }
  // Waits for a line of stdout containing `needle`; returns it from the first "http://" (the
  // whole line when it has no URL), or "" on timeout or end of output.
  std::string wait_line(const std::string& needle,
                        std::chrono::seconds timeout = std::chrono::seconds(60)) {
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char c;
      const ssize_t n = ::read(out_, &c, 1);
      if (n <= 0) break;
      if (c == '\n') {
        if (line.find(needle) != std::string::npos) {
          const auto at = line.find("http://");
          return at != std::string::npos ? line.substr(at) : line;
        }
        line.clear();
      } else {
        line += c;
      }
    }
    ADD_FAILURE() << "no line with '" << needle << "' announced; log:\n" << log();
    return "";
  }
  void kill(int sig) {
    if (pid_ > 0) {
      ::kill(pid_, sig);
      if (sig == SIGKILL) {
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
      }
    }
  }
  // Waits for the process to exit; its exit code, or -1 on timeout/signal.
  int wait(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  std::string log() const {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string log_;
};

inline net::Endpoint endpoint(const std::string& url) {
  return *net::parse_url(url);
}

inline net::HttpResponse http(const std::string& url, const std::string& method,
                              const std::string& target, const std::string& body = "") {
  net::ClientOptions o;
  o.timeout = net::Seconds(120);
  auto r = net::http_call_sync(endpoint(url), method, target, body, o);
  EXPECT_TRUE(r.is_ok()) << method << " " << target << ": " << r.status().to_string();
  return r.is_ok() ? *r : net::HttpResponse{};
}

// Streams a POST, calling on_line per line; returns the status (or -1 on a transport error).
inline int http_stream(const std::string& url, const std::string& target, const std::string& body,
                       std::function<bool(const std::string&)> on_line) {
  boost::asio::io_context io;
  int status = -1;
  boost::asio::co_spawn(
      io,
      [&]() -> net::Task<void> {
        net::ClientOptions o;
        o.timeout = net::Seconds(120);
        net::LineHandler h = [&](std::string_view line) -> net::Task<bool> {
          co_return on_line(std::string(line));
        };
        std::string method = "POST", t = target, b = body;
        auto r = co_await net::http_stream_lines(endpoint(url), method, t, b, h, o);
        status = r.is_ok() ? *r : -1;
      },
      boost::asio::detached);
  io.run();
  return status;
}

struct Completion {
  int status = 0;
  std::vector<std::int32_t> tokens;
  std::string text, finish_reason;
  json usage, error;
  int events = 0;
  bool done_marker = false;
};

// POST /v1/completions (or chat) and collect tokens, streamed or not.
inline Completion complete(const std::string& url, json body, bool stream, bool chat = false) {
  body["return_token_ids"] = true;
  body["stream"] = stream;
  if (stream) body["stream_options"] = {{"include_usage", true}};
  const std::string target = chat ? "/v1/chat/completions" : "/v1/completions";
  Completion c;
  if (!stream) {
    net::HttpResponse r = http(url, "POST", target, body.dump());
    c.status = r.status;
    json j = json::parse(r.body, nullptr, false);
    if (r.status != 200) {
      c.error = j;
      return c;
    }
    const json& choice = j["choices"][0];
    c.tokens = choice["token_ids"].get<std::vector<std::int32_t>>();
    c.text =
        chat ? choice["message"]["content"].get<std::string>() : choice["text"].get<std::string>();
    c.finish_reason = choice["finish_reason"].get<std::string>();
    c.usage = j["usage"];
    return c;
  }
  std::string raw;
  c.status = http_stream(url, target, body.dump(), [&](const std::string& line) {
    raw += line + "\n";
    if (line.rfind("data: ", 0) != 0) return true;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      c.done_marker = true;
      return true;
    }
    json j = json::parse(data, nullptr, false);
    if (j.is_discarded()) {
      ADD_FAILURE() << "bad SSE data: " << data;
      return true;
    }
    if (j.contains("error")) {
      c.error = j;
      return true;
    }
    ++c.events;
    if (j.contains("usage") && !j["usage"].is_null()) c.usage = j["usage"];
    if (j["choices"].empty()) return true;
    const json& choice = j["choices"][0];
    for (const auto& t : choice["token_ids"]) c.tokens.push_back(t.get<std::int32_t>());
    c.text += chat ? choice["delta"].value("content", "") : choice["text"].get<std::string>();
    if (!choice["finish_reason"].is_null())
      c.finish_reason = choice["finish_reason"].get<std::string>();
    return true;
  });
  if (c.status != 200 && c.error.is_null()) c.error = json::parse(raw, nullptr, false);
  return c;
}

// Sampling for a reference run; the default is greedy.
struct Sampling {
  double temperature = 0;
  double top_p = 1;
  std::uint64_t seed = 0;
};

// The reference: one in-process engine with the workers' model (tiny, seed 0), each prompt alone.
inline std::vector<std::int32_t> reference_tokens(const std::vector<std::int32_t>& prompt,
                                                  std::int64_t max_tokens, Sampling sampling = {}) {
  worker::BackendOptions bo;
  bo.spec = *load_model_spec("tiny");
  bo.seed = 0;
  bo.num_blocks = static_cast<std::int32_t>((prompt.size() + max_tokens) / 16 + 2);
  bo.block_tokens = 16;
  auto backend = worker::create_backend("cpu", bo);
  worker::EngineConfig ec;
  auto engine = std::move(worker::Engine::create(ec, std::move(backend).value())).value();
  std::vector<std::int32_t> out;
  worker::Request r;
  r.prompt = prompt;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.params.temperature = sampling.temperature;
  r.params.top_p = sampling.top_p;
  r.params.seed = sampling.seed;
  r.on_finish = [&](const worker::RequestOutput& o) { out = o.tokens; };
  EXPECT_TRUE(engine->submit(std::move(r)).is_ok());
  EXPECT_TRUE(engine->wait_idle(std::chrono::seconds(300)));
  return out;
}

// A signed call to an internal route, as a process holding the cluster secret makes it.
inline net::HttpResponse signed_http(const ClusterSecret& secret, const std::string& url,
                                     const std::string& method, const std::string& target,
                                     const std::string& body = "") {
  net::ClientOptions o;
  o.timeout = net::Seconds(120);
  auto r = net::signed_call_sync(&secret, endpoint(url), method, target, body, o);
  EXPECT_TRUE(r.is_ok()) << method << " " << target << ": " << r.status().to_string();
  return r.is_ok() ? *r : net::HttpResponse{};
}

// A /v1/completions body for the tiny model that generates exactly max_tokens (greedy unless
// `sampling` says otherwise).
inline json body_for(const std::vector<std::int32_t>& prompt, std::int64_t max_tokens,
              Sampling sampling = {}) {
  json b;
  b["model"] = "tiny";
  b["prompt"] = prompt;
  b["max_tokens"] = max_tokens;
  b["temperature"] = sampling.temperature;
  if (sampling.temperature > 0) {
    b["top_p"] = sampling.top_p;
    b["seed"] = sampling.seed;
  }
  b["ignore_eos"] = true;
  return b;
}

inline std::vector<std::int32_t> random_prompt(std::mt19937_64& rng, size_t n) {
  std::vector<std::int32_t> p(n);
  for (auto& t : p) t = static_cast<std::int32_t>(rng() % 256);
  return p;
}

// A cluster: one coordinator and workers, all on loopback with OS-chosen ports, sharing a
// cluster secret as `kvfleet up` makes them.
class Cluster {
 public:
  Cluster(const std::string& mode, std::vector<std::vector<std::string>> workers,
          std::vector<std::string> serve_extra = {}) {
    secret_file_ = dir_.path() + "/cluster-secret";
    EXPECT_TRUE(secret_.write_file(secret_file_).is_ok());
    std::vector<std::string> args = {
        "serve", "--port",          "0", "--internal-port",       "0",         "--mode",
        mode,    "--lease-seconds", "2", "--cluster-secret-file", secret_file_};
    args.insert(args.end(), serve_extra.begin(), serve_extra.end());
    coordinator_ = std::make_unique<Process>(args, dir_.path() + "/coordinator.log");
    url_ = coordinator_->wait_url();
    internal_url_ = coordinator_->wait_url();
    for (size_t i = 0; i < workers.size(); ++i) add_worker(workers[i]);
  }

  // Starts a worker (`args` after "worker"), waits until it is registered.
  void add_worker(std::vector<std::string> args) {
    const std::string id = "w" + std::to_string(workers_.size());
    std::vector<std::string> a = {"worker",
                                  "--coordinator",
                                  internal_url_,
                                  "--cluster-secret-file",
                                  secret_file_,
                                  "--port",
                                  "0",
                                  "--id",
                                  id + "-" + std::to_string(::getpid()),
                                  "--heartbeat-seconds",
                                  "0.2"};
    a.insert(a.end(), args.begin(), args.end());
    workers_.push_back(std::make_unique<Process>(a, dir_.path() + "/" + id + ".log"));
    worker_urls_.push_back(workers_.back()->wait_url());
    ids_.push_back(id + "-" + std::to_string(::getpid()));
    wait_registered(workers_.size());
  }

  void wait_registered(size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = net::http_call_sync(endpoint(internal_url_), "GET", "/internal/workers");
      if (r.is_ok() && json::parse(r->body).size() >= n) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "workers did not register; coordinator log:\n" << coordinator_->log();
  }
  // Waits until the coordinator lists exactly `ids`; returns the seconds it took.
  double wait_workers(size_t n, std::chrono::seconds timeout) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() < t0 + timeout) {
      auto r = net::http_call_sync(endpoint(internal_url_), "GET", "/internal/workers");
      if (r.is_ok() && json::parse(r->body).size() == n) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  const std::string& url() const { return url_; }
  // The coordinator's internal listener (registration, the worker list).
  const std::string& internal_url() const { return internal_url_; }
  const ClusterSecret& secret() const { return secret_; }
  const std::string& secret_file() const { return secret_file_; }
  const std::string& worker_url(size_t i) const { return worker_urls_[i]; }
  const std::string& worker_id(size_t i) const { return ids_[i]; }
  Process& worker(size_t i) { return *workers_[i]; }
  Process& coordinator() { return *coordinator_; }
  size_t size() const { return workers_.size(); }
  // A failed test shows every process's log, however it ended (an ASSERT returns early).
  ~Cluster() {
    if (::testing::Test::HasFailure()) std::cerr << logs();
  }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  std::string logs() const {
    std::string s = "--- coordinator\n" + coordinator_->log();
    for (size_t i = 0; i < workers_.size(); ++i)
      s += "--- worker " + std::to_string(i) + "\n" + workers_[i]->log();
    return s;
  }

 private:
  TempDir dir_;
  ClusterSecret secret_ = ClusterSecret::generate();
  std::string secret_file_;
  std::unique_ptr<Process> coordinator_;
  std::string url_, internal_url_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::vector<std::string> worker_urls_, ids_;
};

// Sums samples of a metric family in Prometheus text, optionally only those whose labels
// contain `label` (e.g. finish_reason="length").
inline double metric_sum(const std::string& text, const std::string& name,
                         const std::string& label = "") {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : ' ';
    if (next != '{' && next != ' ') continue;
    if (!label.empty() && line.find(label) == std::string::npos) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

}  // namespace kvfleet::test
