#include "coordinator/server.h"

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "common/log.h"
#include "common/model_spec.h"
#include "common/tokenizer.h"
#include "coordinator/admission.h"
#include "coordinator/openai.h"
#include "coordinator/registry.h"
#include "coordinator/router.h"
#include "monitoring/metrics.h"
#include "net/http.h"

namespace kvfleet::coordinator {
namespace {

using net::Task;
using nlohmann::json;
namespace asio = boost::asio;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<net::Header> retry_after(int seconds) {
  std::vector<net::Header> h;
  h.push_back(net::Header{std::string("Retry-After"), std::to_string(seconds)});
  return h;
}

// What one run on a worker ended with.
enum class RunEnd {
  kFinished,  // the worker finished the request (tokens may continue on a decode worker)
  kStopped,   // we stopped reading: a stop string matched or the client went away
  kRetry,     // the worker failed or refused: try another
  kFatal,     // the request itself is bad: give up with job.error
};

struct Job {
  CompletionRequest req;
  std::vector<std::int32_t> prompt;
  std::int64_t max_tokens = 0;
  // The request's sampling seed, or one drawn here: every run of the job (re-runs after a
  // failure included) samples with it, so a re-run continues as the lost run would have.
  std::uint64_t seed = 0;
  std::vector<std::int32_t> generated;
  // Set by the sink: false when the client is gone or a stop string matched.
  std::function<Task<bool>(std::int32_t)> on_token;
  bool stop_matched = false;
  bool client_gone = false;
  std::string finish;  // stop | length | abort | error
  int error_status = 0;
  std::string error, error_type;
  double arrival = 0, first_token = -1, last_token = -1;
  // From the last worker run.
  json last_finish;
  json kv;  // a prefill's KV hand-off
  double kv_transfer_seconds = -1;
  std::string last_error;
  std::set<std::string> exclude;
};

class Server final : public Coordinator {
 public:
  Server(const CoordinatorConfig& config, ServeMode mode)
      : cfg_(config),
        registry_(config.lease_seconds),
        metrics_(monitoring::ProcessLabels{"coordinator", config.name, "", config.backend}) {
    router_.mode = mode;
    router_.auto_local_prefill_tokens = config.auto_local_prefill_tokens;
    admission_.max_inflight = config.max_inflight;
  }

  Status start() {
    net::ServerConfig sc;
    sc.host = cfg_.host;
    sc.port = cfg_.port;
    sc.body_limit = cfg_.max_body_bytes;
    sc.max_connections_per_client = cfg_.max_connections_per_client;
    sc.name = cfg_.name;
    KVFLEET_ASSIGN_OR_RETURN(
        http_,
        net::HttpServer::start(
            io_, sc, [this](const net::HttpRequest& r, net::ResponseWriter& w) -> Task<void> {
              co_await handle(r, w);
            }));
    url_ = "http://" + cfg_.host + ":" + std::to_string(http_->port());
    return Status();
  }

  std::uint16_t port() const override { return http_->port(); }
  std::string url() const override { return url_; }

  void run() override {
    asio::signal_set signals(io_, SIGINT, SIGTERM);
    signals.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (!ec) {
        KVFLEET_LOG(kInfo) << cfg_.name << ": signal " << sig << ", draining";
        begin_stop();
      }
    });
    asio::co_spawn(io_, expire_loop(), asio::detached);
    KVFLEET_LOG(kInfo) << cfg_.name << " (" << serve_mode_name(router_.mode) << ") serving at "
                       << url_;
    io_.run();
  }

  void stop() override {
    asio::post(io_, [this] { begin_stop(); });
  }

 private:
  void begin_stop() {
    if (stopping_) return;
    stopping_ = true;
    http_->stop();
    asio::co_spawn(io_, drain(), asio::detached);
  }

  Task<void> drain() {
    const double deadline = now_seconds() + cfg_.drain_seconds;
    while (inflight_ > 0 && now_seconds() < deadline) co_await net::sleep_for(net::Seconds(0.02));
    io_.stop();
  }

  Task<void> expire_loop() {
    while (!stopping_) {
      co_await net::sleep_for(net::Seconds(std::max(0.05, cfg_.lease_seconds / 8)));
      for (const std::string& id : registry_.expire(now_seconds())) {
        KVFLEET_LOG(kWarning) << cfg_.name << ": worker " << id << " missed its lease; removed";
        metrics_.errors("worker_lease_expired").Increment();
      }
    }
  }

  // --- routes ---------------------------------------------------------------------------------

  Task<void> handle(const net::HttpRequest& req, net::ResponseWriter& w) {
    const std::string& p = req.path;
    if (p == "/v1/completions" || p == "/v1/chat/completions") {
      if (req.method != "POST") {
        co_await w.send_error(405, "use POST for " + p);
        co_return;
      }
      co_await completions(req, w, p == "/v1/chat/completions");
    } else if (p == "/health") {
      const bool ready = !stopping_ && can_serve_any(registry_, router_.mode);
      json j;
      j["status"] = stopping_ ? "draining" : ready ? "ok" : "no usable worker pool yet";
      j["workers"] = registry_.workers().size();
      j["mode"] = std::string(serve_mode_name(router_.mode));
      co_await w.send(ready ? 200 : 503, json_text(j));
    } else if (p == "/metrics") {
      update_gauges();
      co_await w.send(200, metrics_.serialize(), "text/plain; version=0.0.4; charset=utf-8");
    } else if (p == "/v1/models") {
      json data = json::array();
      for (const std::string& m : registry_.models()) {
        json e;
        e["id"] = m;
        e["object"] = "model";
        e["created"] = started_;
        e["owned_by"] = "kvfleet";
        e["max_model_len"] = registry_.max_model_len(m);
        data.push_back(e);
      }
      json j;
      j["object"] = "list";
      j["data"] = data;
      co_await w.send(200, json_text(j));
    } else if (p == "/internal/register" && req.method == "POST") {
      co_await register_worker(req, w);
    } else if (p == "/internal/heartbeat" && req.method == "POST") {
      co_await heartbeat(req, w);
    } else if (p == "/internal/deregister" && req.method == "POST") {
      json j = json::parse(req.body, nullptr, false);
      const bool removed = !j.is_discarded() && j.is_object() && j.contains("worker_id") &&
                           j["worker_id"].is_string() &&
                           registry_.remove(j["worker_id"].get<std::string>());
      if (removed) {
        KVFLEET_LOG(kInfo) << cfg_.name << ": worker " << j["worker_id"].get<std::string>()
                           << " deregistered";
      }
      json out;
      out["removed"] = removed;
      co_await w.send(200, json_text(out));
    } else if (p == "/internal/prometheus-targets") {
      co_await w.send(200, json_text(prometheus_targets(req)));
    } else if (p == "/internal/workers") {
      co_await w.send(200, json_text(workers_json()));
    } else {
      co_await w.send_error(404, "no route for " + req.method + " " + p);
    }
  }

  // Prometheus HTTP service discovery: this coordinator and every registered worker.
  json prometheus_targets(const net::HttpRequest& req) const {
    json out = json::array();
    std::string self(req.header("Host"));
    if (self.empty()) self = cfg_.host + ":" + std::to_string(http_->port());
    json c;
    c["targets"] = json::array({self});
    c["labels"] = {{"kvfleet_role", "coordinator"}};
    out.push_back(c);
    for (const auto& [id, w] : registry_.workers()) {
      auto ep = net::parse_url(w.url);
      if (!ep.is_ok()) continue;
      json t;
      t["targets"] = json::array({ep->to_string()});
      t["labels"] = {{"kvfleet_role", w.role}, {"kvfleet_worker", id}};
      out.push_back(t);
    }
    return out;
  }

  json workers_json() const {
    json arr = json::array();
    for (const auto& [id, w] : registry_.workers()) {
      json j;
      j["worker_id"] = id;
      j["url"] = w.url;
      j["role"] = w.role;
      j["model"] = w.model;
      j["running"] = w.load.running;
      j["waiting"] = w.load.waiting;
      j["free_blocks"] = w.load.free_blocks;
      j["total_blocks"] = w.load.total_blocks;
      j["held_blocks"] = w.load.held_blocks;
      j["assigned"] = w.assigned;
      j["suspect"] = w.suspect;
      j["lease_left_seconds"] = w.lease_expiry - now_seconds();
      arr.push_back(j);
    }
    return arr;
  }

  void update_gauges() {
    std::int64_t waiting = 0, swapped = 0, used = 0, total = 0;
    for (const auto& [id, w] : registry_.workers()) {
      waiting += w.load.waiting;
      swapped += w.load.swapped;
      used += w.load.total_blocks - w.load.free_blocks;
      total += w.load.total_blocks;
    }
    metrics_.requests_running.Set(static_cast<double>(inflight_));
    metrics_.requests_waiting.Set(static_cast<double>(waiting));
    metrics_.requests_swapped.Set(static_cast<double>(swapped));
    metrics_.kv_usage_device.Set(total > 0 ? static_cast<double>(used) / static_cast<double>(total)
                                           : 0.0);
  }

  // A worker's load report (heartbeat body, or "load" in a registration); throws on wrong types.
  static WorkerLoad parse_load(const json& j) {
    WorkerLoad load;
    load.running = j.value("running", std::int64_t{0});
    load.waiting = j.value("waiting", std::int64_t{0});
    load.swapped = j.value("swapped", std::int64_t{0});
    load.free_blocks = j.value("free_blocks", std::int64_t{0});
    load.total_blocks = j.value("total_blocks", std::int64_t{0});
    load.host_free_blocks = j.value("host_free_blocks", std::int64_t{0});
    load.held_blocks = j.value("held_blocks", std::int64_t{0});
    if (j.contains("prefix_hashes") && j["prefix_hashes"].is_array()) {
      std::vector<std::uint64_t> hashes;
      hashes.reserve(j["prefix_hashes"].size());
      for (const json& h : j["prefix_hashes"]) hashes.push_back(h.get<std::uint64_t>());
      load.prefix_hashes = PrefixHashes(std::move(hashes));
    }
    return load;
  }

  Task<void> register_worker(const net::HttpRequest& req, net::ResponseWriter& w) {
    json j = json::parse(req.body, nullptr, false);
    WorkerInfo info;
    std::string error;
    try {
      if (j.is_discarded() || !j.is_object())
        throw std::runtime_error("the body is not a JSON object");
      info.id = j.at("worker_id").get<std::string>();
      info.url = j.at("url").get<std::string>();
      info.role = j.at("role").get<std::string>();
      info.model = j.at("model").get<std::string>();
      info.transfer = j.value("transfer", "");
      info.backend = j.value("backend", "cpu");
      if (!cfg_.backend.empty() && info.backend != cfg_.backend) {
        throw std::runtime_error("worker backend '" + info.backend +
                                 "' differs from this cluster's '" + cfg_.backend + "'");
      }
      info.max_model_len = j.value("max_model_len", std::int64_t{0});
      info.vocab_size = j.at("vocab_size").get<std::int64_t>();
      info.kv_blocks = j.at("kv_blocks").get<std::int64_t>();
      info.block_tokens = j.at("block_tokens").get<std::int64_t>();
      info.block_bytes = j.at("block_bytes").get<std::int64_t>();
      info.bos_token_id = j.value("bos_token_id", std::int64_t{-1});
      info.eos_token_id = j.value("eos_token_id", std::int64_t{-1});
      info.prefix_hash_salt = j.value("prefix_hash_salt", std::uint64_t{0});
      // Its load now, so routing sees a new worker's free blocks before its first heartbeat;
      // a registration without one is an empty worker.
      if (j.contains("load") && j["load"].is_object()) {
        info.load = parse_load(j["load"]);
      } else {
        info.load.free_blocks = info.load.total_blocks = info.kv_blocks;
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (error.empty()) {
      if (auto url = net::parse_url(info.url); !url.is_ok()) error = url.status().message();
    }
    if (error.empty()) {
      const Status st = registry_.add(info, now_seconds());
      if (!st.is_ok()) error = st.message();
    }
    if (!error.empty()) {
      co_await w.send_error(400, "bad registration: " + error);
      co_return;
    }
    ModelSpec spec;
    spec.name = info.model;
    spec.vocab_size = info.vocab_size;
    if (info.bos_token_id >= 0) spec.bos_token_id = info.bos_token_id;
    if (info.eos_token_id >= 0) spec.eos_token_id = info.eos_token_id;
    auto tok = ByteTokenizer::for_model(spec);
    if (tok.is_ok()) tokenizers_.insert_or_assign(info.model, *tok);
    KVFLEET_LOG(kInfo) << cfg_.name << ": worker " << info.id << " (" << info.role << ", "
                       << info.model << ") registered at " << info.url;
    json out;
    out["lease_seconds"] = registry_.lease_seconds();
    co_await w.send(200, json_text(out));
  }

  Task<void> heartbeat(const net::HttpRequest& req, net::ResponseWriter& w) {
    json j = json::parse(req.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("worker_id") ||
        !j["worker_id"].is_string()) {
      co_await w.send_error(400, "a heartbeat needs a worker_id");
      co_return;
    }
    WorkerLoad load;
    std::string bad;
    try {
      load = parse_load(j);
    } catch (const std::exception& e) {
      bad = std::string("bad heartbeat: ") + e.what();
    }
    if (!bad.empty()) {
      co_await w.send_error(400, bad);
      co_return;
    }
    if (!registry_.heartbeat(j["worker_id"].get<std::string>(), std::move(load), now_seconds())) {
      co_await w.send_error(404, "unknown worker: register first");
      co_return;
    }
    co_await w.send(200, "{}");
  }

  // --- completions --------------------------------------------------------------------------

  // Counts the error and sends it (a plain function: see net/http.h on GCC 12 coroutines).
  Task<void> reject(net::ResponseWriter& w, int status, std::string_view type, std::string message,
                    std::vector<net::Header> extra = {}) {
    metrics_.errors(type).Increment();
    return w.send_error(status, std::move(message), std::move(extra));
  }

  Task<void> completions(const net::HttpRequest& http, net::ResponseWriter& w, bool chat) {
    const double arrival = now_seconds();
    if (stopping_) {
      co_await reject(w, 503, "draining", "the server is shutting down", retry_after(1));
      co_return;
    }
    ApiError api;
    auto parsed = parse_completion_request(http.body, chat, api);
    if (!parsed.is_ok()) {
      co_await reject(w, api.status, "invalid_request", api.message);
      co_return;
    }
    CompletionRequest req = std::move(parsed).value();
    // The model's tokenizer (from its workers' registration); without one admission answers 404.
    auto tok_it = tokenizers_.find(req.model);
    std::vector<std::int32_t> prompt;
    AdmissionRequest ar;
    ar.model = req.model;
    ar.chat = chat;
    if (tok_it != tokenizers_.end()) {
      prompt = req.prompt_is_tokens ? req.prompt : tok_it->second.encode(req.prompt_text, true);
      ar.vocab_size = tok_it->second.vocab_size();
    }
    ar.prompt = prompt;
    ar.max_tokens = req.max_tokens;
    ar.min_tokens = req.min_tokens;
    const Admission admission = admit(registry_, router_, admission_, inflight_, ar);
    if (!admission.accepted) {
      std::vector<net::Header> extra;
      if (admission.retry_after_seconds > 0) extra = retry_after(admission.retry_after_seconds);
      co_await reject(w, admission.status, admission.error_type, admission.message,
                      std::move(extra));
      co_return;
    }
    const ByteTokenizer& tok = tok_it->second;
    const auto len = static_cast<std::int64_t>(prompt.size());
    const std::int64_t max_tokens = admission.max_tokens;
    req.min_tokens = admission.min_tokens;

    ++inflight_;
    struct Inflight {
      std::int64_t& n;
      ~Inflight() { --n; }
    } counted{inflight_};

    Job job;
    job.req = req;
    job.prompt = prompt;
    job.max_tokens = max_tokens;
    job.seed = req.seed ? *req.seed : seeds_();
    job.arrival = arrival;
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + request_id();
    const auto created = static_cast<std::int64_t>(std::time(nullptr));
    OutputText text(tok, req.stop);
    bool first_chunk = true;
    std::string full_text;

    job.on_token = [&](std::int32_t token) -> Task<bool> {
      const double t = now_seconds();
      if (job.first_token < 0) {
        job.first_token = t;
        metrics_.time_to_first_token.Observe(t - job.arrival);
      } else {
        metrics_.inter_token_latency.Observe(t - job.last_token);
      }
      job.last_token = t;
      std::string piece = text.append(token);
      if (req.stream) {
        if (!w.started() && !co_await w.start_stream(200, "text/event-stream")) {
          job.client_gone = true;
          co_return false;
        }
        std::vector<std::int32_t> ids(1, token);
        const json chunk = stream_chunk(req, id, created, piece, "", ids, first_chunk);
        first_chunk = false;
        if (!co_await w.write(sse(chunk))) {
          job.client_gone = true;
          co_return false;
        }
      } else {
        full_text += piece;
      }
      if (text.stopped()) {
        job.stop_matched = true;
        co_return false;
      }
      co_return true;
    };

    co_await execute(job);

    // Finish the response.
    const Usage usage{len, static_cast<std::int64_t>(job.generated.size())};
    if (job.stop_matched) job.finish = "stop";
    const bool failed = !job.error.empty();
    if (!failed) {
      metrics_.requests(job.finish).Increment();
      metrics_.prompt_tokens.Increment(static_cast<double>(len));
      metrics_.generation_tokens.Increment(static_cast<double>(job.generated.size()));
      metrics_.e2e_latency.Observe(now_seconds() - job.arrival);
    } else {
      metrics_.requests("error").Increment();
      metrics_.errors(job.error_type.empty() ? "worker_failure" : job.error_type).Increment();
      if (!job.generated.empty())
        metrics_.generation_tokens.Increment(static_cast<double>(job.generated.size()));
    }
    if (job.client_gone) {
      metrics_.errors("client_disconnect").Increment();
      co_return;
    }
    const std::string rest = failed ? std::string() : text.finish();
    if (req.stream) {
      if (!w.started()) {
        if (failed) {
          co_await send_job_error(w, job);
          co_return;
        }
        if (!co_await w.start_stream(200, "text/event-stream")) co_return;
      }
      if (failed) {
        json err =
            json::parse(net::error_body(job.error_status ? job.error_status : 500, job.error, ""));
        co_await w.write(sse(err));
      } else {
        const json last = stream_chunk(req, id, created, rest, job.finish, {}, first_chunk);
        co_await w.write(sse(last));
        if (req.include_usage) co_await w.write(sse(usage_chunk(req, id, created, usage)));
      }
      co_await w.write("data: [DONE]\n\n");
      co_await w.finish();
      co_return;
    }
    if (failed) {
      co_await send_job_error(w, job);
      co_return;
    }
    full_text += rest;
    co_await w.send(200, json_text(completion_response(req, id, created, full_text, job.finish,
                                                       job.generated, usage)));
  }

  Task<void> send_job_error(net::ResponseWriter& w, const Job& job) {
    std::vector<net::Header> extra;
    if (job.error_status == 503) extra = retry_after(2);
    return w.send_error(job.error_status ? job.error_status : 500, job.error, std::move(extra));
  }

  std::string request_id() {
    static const char* hex = "0123456789abcdef";
    std::uint64_t x = (next_id_++ * 0x9e3779b97f4a7c15ull) ^ static_cast<std::uint64_t>(started_);
    std::string s;
    for (int i = 0; i < 16; ++i, x >>= 4) s += hex[x & 15];
    return s;
  }

  // Runs the job to the end across worker failures.
  Task<void> execute(Job& job) {
    int attempts = 0;
    while (true) {
      const auto done = static_cast<std::int64_t>(job.generated.size());
      if (done >= job.max_tokens) {
        job.finish = "length";
        co_return;
      }
      if (attempts >= cfg_.max_attempts) {
        job.error = "the request failed on " + std::to_string(attempts) +
                    " workers; last error: " + job.last_error;
        job.error_status = 503;
        job.error_type = "worker_failure";
        co_return;
      }
      std::vector<std::int32_t> tokens = job.prompt;
      tokens.insert(tokens.end(), job.generated.begin(), job.generated.end());
      RouteRequest rr;
      rr.model = job.req.model;
      rr.tokens = &tokens;
      rr.max_new_tokens = job.max_tokens - done;
      rr.exclude = job.exclude;
      const Route rt = route(registry_, rr, router_);
      if (rt.kind == Route::Kind::kNone) {
        job.error = attempts == 0 ? rt.reason
                                  : rt.reason + " after a worker failure (" + job.last_error + ")";
        job.error_status = 503;
        job.error_type = attempts == 0 ? "no_worker" : "worker_failure";
        co_return;
      }
      ++attempts;
      if (attempts > 1) {
        KVFLEET_LOG(kWarning) << cfg_.name << ": re-running a request (" << done
                              << " tokens generated) after: " << job.last_error;
      }
      // The routed worker counts this request from now (routing, not its first token): a burst
      // of requests routed before any reaches its worker spreads over the pool.
      Assigned on_worker(registry_, rt.worker);
      RunEnd end;
      if (rt.kind == Route::Kind::kColocated) {
        std::string worker = rt.worker, full = "full";
        json none;
        end = co_await run_on(job, worker, full, none);
        if (end == RunEnd::kFinished) record_phases(job);
      } else {
        end = co_await run_disaggregated(job, rt);
      }
      if (end == RunEnd::kRetry) continue;
      if (end == RunEnd::kStopped && job.finish.empty()) job.finish = "stop";
      co_return;
    }
  }

  Task<RunEnd> run_disaggregated(Job& job, const Route& rt) {
    job.kv = json();
    std::string prefill = rt.prefill, decode = rt.worker, prefill_mode = "prefill",
                decode_mode = "decode";
    json none;
    RunEnd end;
    {
      Assigned on_prefill(registry_, prefill);
      end = co_await run_on(job, prefill, prefill_mode, none);
    }
    if (end != RunEnd::kFinished) co_return end;
    json prefill_finish = job.last_finish;
    json kv = job.kv;
    const auto done = static_cast<std::int64_t>(job.generated.size());
    if (job.finish == "stop" || done >= job.max_tokens || !kv.is_object()) {
      if (kv.is_object()) release_lease(kv);
      if (job.finish.empty()) job.finish = "length";
      record_phases(job);
      co_return RunEnd::kFinished;
    }
    job.kv_transfer_seconds = -1;
    end = co_await run_on(job, decode, decode_mode, kv);
    if (end == RunEnd::kRetry || end == RunEnd::kFatal) release_lease(kv);  // if the decode did not
    if (end == RunEnd::kFinished) {
      json decode_finish = job.last_finish;
      job.last_finish = prefill_finish;
      record_phases(job);
      record_decode_phases(job, decode_finish);
    }
    co_return end;
  }

  void record_phases(Job& job) {
    const json& t = job.last_finish.value("timings", json::object());
    if (!t.is_object()) return;
    metrics_.ttft_phase("queue").Observe(t.value("queue_seconds", 0.0));
    metrics_.ttft_phase("prefill").Observe(t.value("prefill_seconds", 0.0));
    metrics_.prefill_seconds.Observe(t.value("prefill_seconds", 0.0));
    metrics_.prefix_cache_hit_tokens.Increment(t.value("prefix_hit_tokens", 0.0));
  }

  void record_decode_phases(Job& job, const json& decode_finish) {
    const json& t = decode_finish.value("timings", json::object());
    if (job.kv_transfer_seconds >= 0) {
      metrics_.ttft_phase("kv_transfer").Observe(job.kv_transfer_seconds);
      metrics_.kv_transfer_seconds.Observe(job.kv_transfer_seconds);
    }
    if (t.is_object()) {
      metrics_.ttft_phase("decode_queue").Observe(t.value("queue_seconds", 0.0));
      metrics_.ttft_phase("first_decode_step").Observe(t.value("prefill_seconds", 0.0));
    }
  }

  void release_lease(const json& kv) {
    if (!kv.is_object() || !kv.contains("worker_url") || !kv.contains("lease")) return;
    auto to = net::parse_url(kv.value("worker_url", ""));
    if (!to.is_ok()) return;
    json body;
    body["lease"] = kv["lease"];
    asio::co_spawn(
        io_,
        [to = *to, b = json_text(body)]() -> Task<void> {
          net::ClientOptions o;
          o.timeout = net::Seconds(5);
          co_await net::http_call(to, "POST", "/internal/release", b, o);
        },
        asio::detached);
  }

  // One run of the job on one worker: streams its tokens into the job.
  // Arguments by value: see net/http.h on GCC 12 coroutines and temporaries.
  Task<RunEnd> run_on(Job& job, std::string worker_id, std::string mode, json kv) {
    WorkerInfo* w = registry_.find(worker_id);
    if (!w) {
      job.last_error = "worker " + worker_id + " left";
      co_return RunEnd::kRetry;
    }
    auto to = net::parse_url(w->url);
    if (!to.is_ok()) {
      job.exclude.insert(worker_id);
      job.last_error = to.status().message();
      co_return RunEnd::kRetry;
    }
    json body;
    std::vector<std::int32_t> tokens = job.prompt;
    tokens.insert(tokens.end(), job.generated.begin(), job.generated.end());
    body["tokens"] = tokens;
    body["prompt_len"] = job.prompt.size();
    body["mode"] = mode;
    json params;
    params["max_tokens"] = job.max_tokens;
    params["min_tokens"] = job.req.min_tokens;
    params["temperature"] = job.req.temperature;
    params["top_p"] = job.req.top_p;
    params["top_k"] = job.req.top_k;
    // The worker samples token k of the request from (seed, k): with the tokens generated so
    // far in `tokens`, a re-run draws what the lost run would have drawn.
    params["seed"] = job.seed;
    params["ignore_eos"] = job.req.ignore_eos;
    params["stop_token_ids"] = job.req.stop_token_ids;
    body["params"] = params;
    if (!kv.is_null()) body["kv"] = kv;

    bool finished = false, stopped = false;
    json error_body;
    job.last_finish = json();
    auto on_line = [&](std::string_view line) -> Task<bool> {
      if (line.empty()) co_return true;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        error_body = json();
        co_return true;
      }
      if (j.contains("token")) {
        job.generated.push_back(j["token"].get<std::int32_t>());
        if (!co_await job.on_token(job.generated.back())) {
          stopped = true;
          co_return false;
        }
      } else if (j.contains("kv_transfer")) {
        job.kv_transfer_seconds = j["kv_transfer"].value("seconds", 0.0);
      } else if (j.contains("finish")) {
        finished = true;
        job.last_finish = j;
        job.finish = j["finish"].get<std::string>();
        if (j.contains("kv")) job.kv = j["kv"];
      } else if (j.contains("error")) {
        error_body = j;
      }
      co_return true;
    };
    net::ClientOptions o;
    o.connect_timeout = net::Seconds(3);
    o.timeout = net::Seconds(300);
    auto status = co_await net::http_stream_lines(*to, "POST", "/internal/generate",
                                                  json_text(body), on_line, o);
    if (stopped) co_return RunEnd::kStopped;
    if (!status.is_ok()) {
      // The worker is unreachable or its stream broke: it is suspect until its next heartbeat.
      if (WorkerInfo* x = registry_.find(worker_id)) x->suspect = true;
      job.exclude.insert(worker_id);
      job.last_error = "worker " + worker_id + ": " + status.status().message();
      metrics_.errors("worker_failure").Increment();
      co_return RunEnd::kRetry;
    }
    if (*status != 200) {
      const std::string msg = error_body.is_object() && error_body.contains("error")
                                  ? error_body["error"].value("message", "")
                                  : "status " + std::to_string(*status);
      job.last_error = "worker " + worker_id + ": " + msg;
      if (*status == 400) {
        job.error = msg;
        job.error_status = 400;
        job.error_type = "invalid_request";
        co_return RunEnd::kFatal;
      }
      if (*status == 502 && kv.is_object()) {
        // The KV source (the prefill worker) failed, not this decode worker.
        metrics_.kv_transfer_failures.Increment();
        const std::string source = kv.value("agent", "");
        if (WorkerInfo* x = registry_.find(source)) x->suspect = true;
        job.exclude.insert(source);
        co_return RunEnd::kRetry;
      }
      job.exclude.insert(worker_id);
      co_return RunEnd::kRetry;
    }
    if (!finished) {
      job.exclude.insert(worker_id);
      job.last_error = "worker " + worker_id + " ended its stream without finishing";
      co_return RunEnd::kRetry;
    }
    if (job.finish == "abort" || job.finish == "error") {
      job.exclude.insert(worker_id);
      job.last_error = "worker " + worker_id + " " +
                       (job.finish == "abort" ? "aborted the request (stopping?)"
                                              : "failed: " + job.last_finish.value("error", ""));
      job.finish.clear();
      co_return RunEnd::kRetry;
    }
    co_return RunEnd::kFinished;
  }

  CoordinatorConfig cfg_;
  Registry registry_;
  RouterConfig router_;
  AdmissionConfig admission_;
  std::mt19937_64 seeds_{std::random_device{}()};  // for requests without a seed
  monitoring::Metrics metrics_;
  asio::io_context io_;
  std::shared_ptr<net::HttpServer> http_;
  std::string url_;
  std::map<std::string, ByteTokenizer> tokenizers_;
  std::int64_t inflight_ = 0;
  std::uint64_t next_id_ = 1;
  std::int64_t started_ = static_cast<std::int64_t>(std::time(nullptr));
  bool stopping_ = false;
};

}  // namespace

Result<std::unique_ptr<Coordinator>> Coordinator::create(const CoordinatorConfig& config) {
  KVFLEET_ASSIGN_OR_RETURN(ServeMode mode, parse_serve_mode(config.mode));
  if (!(config.lease_seconds > 0)) return invalid_argument("--lease-seconds must be > 0");
  if (config.max_inflight < 1) return invalid_argument("--max-inflight must be >= 1");
  if (config.max_attempts < 1) return invalid_argument("--max-attempts must be >= 1");
  auto s = std::make_unique<Server>(config, mode);
  KVFLEET_RETURN_IF_ERROR(s->start());
  return std::unique_ptr<Coordinator>(std::move(s));
}

}  // namespace kvfleet::coordinator
