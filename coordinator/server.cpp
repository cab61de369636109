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

#include "common/internal_api.h"
#include "common/log.h"
#include "common/model_spec.h"
#include "common/tokenizer.h"
#include "coordinator/admission.h"
#include "coordinator/model_text.h"
#include "coordinator/openai.h"
#include "coordinator/registry.h"
#include "coordinator/router.h"
#include "monitoring/metrics.h"
#include "net/auth.h"
#include "net/http.h"

namespace kvfleet::coordinator {
namespace {

using net::Task;
using nlohmann::json;
namespace asio = boost::asio;
namespace api = internal_api;

// The seed of choice `index` > 0 of a request with n > 1 (choice 0 uses the request's seed).
std::uint64_t choice_seed(std::uint64_t seed, std::int64_t index) {
  std::uint64_t z = seed ^ (0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(index));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

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
  std::vector<TokenLogprobs> logprobs;  // one per generated token, when asked for
  // Set by the sink: false when the client is gone or a stop string matched.
  std::function<Task<bool>(std::int32_t)> on_token;
  // True once the client has gone (checked at each line a worker sends, keep-alives included,
  // so within half a second): the runs stop and the workers cancel.
  std::function<bool()> client_left;
  bool stop_matched = false;
  bool client_gone = false;
  std::string finish;  // stop | length | abort | error
  int error_status = 0;
  std::string error, error_type;
  double arrival = 0, first_token = -1, last_token = -1;
  // From the last worker run.
  std::optional<api::FinishLine> last_finish;
  std::optional<api::KvHandoff> kv;  // a prefill's KV hand-off
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
    net::ServerConfig ic = sc;
    ic.host = cfg_.internal_host;
    ic.port = cfg_.internal_port;
    ic.body_limit = 1 << 20;  // registrations and heartbeats; a prefix summary is the largest
    ic.name = cfg_.name + " internal";
    KVFLEET_ASSIGN_OR_RETURN(
        internal_,
        net::HttpServer::start(
            io_, ic, [this](const net::HttpRequest& r, net::ResponseWriter& w) -> Task<void> {
              co_await handle_internal(r, w);
            }));
    internal_url_ = "http://" + cfg_.internal_host + ":" + std::to_string(internal_->port());
    if (!secret()) {
      KVFLEET_LOG(kWarning) << cfg_.name
                            << ": no cluster secret: internal routes accept unsigned calls from "
                               "this host (listener on loopback)";
    }
    return Status();
  }

  std::uint16_t port() const override { return http_->port(); }
  std::string url() const override { return url_; }
  std::string internal_url() const override { return internal_url_; }

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
    internal_->stop();
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
        // Its runs in flight are re-run elsewhere now, not after their progress deadline.
        if (auto it = runs_.find(id); it != runs_.end()) {
          for (const auto& weak : it->second) {
            if (auto c = weak.lock()) c->cancel();
          }
          runs_.erase(it);
        }
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
      for (const std::string& m : registry_.models()) data.push_back(model_json(m));
      json j;
      j["object"] = "list";
      j["data"] = data;
      co_await w.send(200, json_text(j));
    } else if (p.rfind("/v1/models/", 0) == 0) {
      const std::string model = p.substr(std::string_view("/v1/models/").size());
      const auto models = registry_.models();
      if (std::find(models.begin(), models.end(), model) == models.end()) {
        co_await w.send_error(404, "The model '" + model + "' does not exist.");
        co_return;
      }
      co_await w.send(200, json_text(model_json(model)));
    } else if (p.rfind("/internal/", 0) == 0) {
      co_await w.send_error(404,
                            "internal routes are served on the coordinator's internal "
                            "listener (--internal-host/--internal-port), not here");
    } else {
      co_await w.send_error(404, "no route for " + req.method + " " + p);
    }
  }

  json model_json(const std::string& m) const {
    json e;
    e["id"] = m;
    e["object"] = "model";
    e["created"] = started_;
    e["owned_by"] = "kvfleet";
    e["root"] = m;
    e["parent"] = nullptr;
    e["max_model_len"] = registry_.max_model_len(m);
    return e;
  }

  const ClusterSecret* secret() const { return cfg_.secret ? &*cfg_.secret : nullptr; }

  // The internal listener. Calls that change the registry are signed with the cluster secret;
  // the read-only lists are not (Prometheus cannot sign), which is why the listener itself is
  // on loopback or a cluster network.
  Task<void> handle_internal(const net::HttpRequest& req, net::ResponseWriter& w) {
    const std::string& p = req.path;
    const bool mutating =
        p == "/internal/register" || p == "/internal/heartbeat" || p == "/internal/deregister";
    if (mutating) {
      if (req.method != "POST") {
        co_await w.send_error(405, "use POST for " + p);
        co_return;
      }
      const Status auth = net::verify_request(secret(), req);
      if (!auth.is_ok()) {
        metrics_.errors("unauthenticated").Increment();
        KVFLEET_LOG(kWarning) << cfg_.name << ": refused " << p << " from " << req.peer << ": "
                              << auth.message();
        co_await w.send_error(401, auth.message());
        co_return;
      }
    }
    if (p == "/internal/register") {
      co_await register_worker(req, w);
    } else if (p == "/internal/heartbeat") {
      co_await heartbeat(req, w);
    } else if (p == "/internal/deregister") {
      auto d = api::decode_text<api::Deregistration>(req.body, "deregistration",
                                                     api::decode_Deregistration);
      if (!d.is_ok()) {
        co_await w.send_error(400, d.status().message());
        co_return;
      }
      api::DeregistrationReply out;
      out.removed = registry_.remove(d->worker_id);
      if (out.removed) {
        KVFLEET_LOG(kInfo) << cfg_.name << ": worker " << d->worker_id << " deregistered";
      }
      co_await w.send(200, api::encode(out));
    } else if (p == "/internal/prometheus-targets") {
      co_await w.send(200, json_text(prometheus_targets()));
    } else if (p == "/internal/workers") {
      co_await w.send(200, json_text(workers_json()));
    } else if (p == "/health") {
      co_await w.send(stopping_ ? 503 : 200,
                      stopping_ ? R"({"status":"draining"})" : R"({"status":"ok"})");
    } else {
      co_await w.send_error(404, "no route for " + req.method + " " + p);
    }
  }

  // Prometheus HTTP service discovery: this coordinator and every registered worker.
  json prometheus_targets() const {
    json out = json::array();
    // The coordinator's metrics are on its public port.
    const std::string self = cfg_.host + ":" + std::to_string(http_->port());
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
    struct Sums {
      std::int64_t waiting = 0, swapped = 0, used = 0, total = 0;
    };
    std::map<std::string, Sums> by_model;
    for (const auto& [id, w] : registry_.workers()) {
      Sums& x = by_model[w.model];
      x.waiting += w.load.waiting;
      x.swapped += w.load.swapped;
      x.used += w.load.total_blocks - w.load.free_blocks;
      x.total += w.load.total_blocks;
    }
    for (const auto& [model, m] : model_metrics_) by_model.try_emplace(model);
    for (const auto& [model, x] : by_model) {
      monitoring::Metrics& m = metrics_for(model);
      const auto running = inflight_by_model_.find(model);
      m.requests_running.Set(
          running == inflight_by_model_.end() ? 0.0 : static_cast<double>(running->second));
      m.requests_waiting.Set(static_cast<double>(x.waiting));
      m.requests_swapped.Set(static_cast<double>(x.swapped));
      m.kv_usage_device.Set(x.total > 0 ? static_cast<double>(x.used) / static_cast<double>(x.total)
                                        : 0.0);
    }
  }

  // The metrics of one served model (its `model` label), in the process's one registry.
  // `metrics_` (model "") counts only what names no served model: unparseable requests,
  // unknown models, registrations and leases.
  monitoring::Metrics& metrics_for(const std::string& model) {
    auto it = model_metrics_.find(model);
    if (it == model_metrics_.end()) {
      it =
          model_metrics_
              .emplace(model,
                       std::make_unique<monitoring::Metrics>(
                           monitoring::ProcessLabels{"coordinator", cfg_.name, model, cfg_.backend},
                           metrics_.registry()))
              .first;
    }
    return *it->second;
  }

  static WorkerLoad to_load(const api::WorkerLoad& m) {
    WorkerLoad load;
    load.running = m.running;
    load.waiting = m.waiting;
    load.swapped = m.swapped;
    load.free_blocks = m.free_blocks;
    load.total_blocks = m.total_blocks;
    load.host_free_blocks = m.host_free_blocks;
    load.held_blocks = m.held_blocks;
    if (!m.prefix_hashes.empty()) load.prefix_hashes = PrefixHashes(m.prefix_hashes);
    load.step_seconds = m.step_seconds;
    return load;
  }

  Task<void> register_worker(const net::HttpRequest& req, net::ResponseWriter& w) {
    auto reg =
        api::decode_text<api::Registration>(req.body, "bad registration", api::decode_Registration);
    int status = 400;
    std::string error;
    WorkerInfo info;
    if (!reg.is_ok()) {
      error = reg.status().message();
    } else {
      info.id = reg->worker_id;
      info.url = reg->url;
      info.role = reg->role;
      info.model = reg->model;
      info.transfer = reg->transfer;
      info.backend = reg->backend.empty() ? "cpu" : reg->backend;
      info.max_model_len = reg->max_model_len;
      info.vocab_size = reg->vocab_size;
      info.kv_blocks = reg->kv_blocks;
      info.block_tokens = reg->block_tokens;
      info.block_bytes = reg->block_bytes;
      info.bos_token_id = reg->bos_token_id.value_or(-1);
      info.eos_token_id = reg->eos_token_id.value_or(-1);
      info.prefix_hash_salt = reg->prefix_hash_salt;
      // Its load now, so routing sees a new worker's free blocks before its first heartbeat;
      // a registration without one is an empty worker.
      if (reg->load) {
        info.load = to_load(*reg->load);
      } else {
        info.load.free_blocks = info.load.total_blocks = info.kv_blocks;
      }
      if (!cfg_.backend.empty() && info.backend != cfg_.backend) {
        error = "bad registration: worker backend '" + info.backend +
                "' differs from this cluster's '" + cfg_.backend + "'";
      }
      if (error.empty()) {
        // A folder model needs the same tokenizer files here as on the worker.
        auto folder = folders_.find(info.model);
        if (folder != folders_.end() && reg->tokenizer_id != folder->second->tokenizer_id) {
          error = "bad registration: the worker's tokenizer for model '" + info.model + "' (" +
                  (reg->tokenizer_id.empty() ? std::string("the byte tokenizer")
                                             : "id " + reg->tokenizer_id) +
                  ") differs from the coordinator's folder '" + folder->second->dir.string() +
                  "' (id " + folder->second->tokenizer_id + ")";
          status = 409;
        } else if (folder == folders_.end() && !reg->tokenizer_id.empty()) {
          error = "bad registration: model '" + info.model +
                  "' is served from a Hugging Face folder, but the coordinator has no tokenizer "
                  "for it: start it with --model " +
                  info.model + "=DIR";
          status = 409;
        }
      }
    }
    if (error.empty()) {
      if (auto url = net::parse_url(info.url); !url.is_ok())
        error = "bad registration: " + url.status().message();
    }
    if (error.empty()) {
      Status st = registry_.check_model_agreement(info, now_seconds());
      if (st.is_ok()) st = registry_.add(info, now_seconds());
      if (!st.is_ok()) {
        error = "bad registration: " + st.message();
        if (st.code() == StatusCode::kAlreadyExists || st.code() == StatusCode::kFailedPrecondition)
          status = 409;
      }
    }
    if (!error.empty()) {
      if (status == 409) {
        KVFLEET_LOG(kWarning) << cfg_.name << ": refused the registration of " << info.id
                              << " from " << req.peer << ": " << error;
        metrics_.errors("registration_conflict").Increment();
      }
      co_await w.send_error(status, error);
      co_return;
    }
    if (auto folder = folders_.find(info.model); folder != folders_.end()) {
      tokenizers_.insert_or_assign(info.model, ModelText(folder->second, info.vocab_size));
    } else {
      ModelSpec spec;
      spec.name = info.model;
      spec.vocab_size = info.vocab_size;
      if (info.bos_token_id >= 0) spec.bos_token_id = info.bos_token_id;
      if (info.eos_token_id >= 0) spec.eos_token_id = info.eos_token_id;
      auto tok = ByteTokenizer::for_model(spec);
      if (tok.is_ok()) tokenizers_.insert_or_assign(info.model, ModelText(*tok));
    }
    metrics_for(info.model);  // its series exist (at 0) from its first worker on
    KVFLEET_LOG(kInfo) << cfg_.name << ": worker " << info.id << " (" << info.role << ", "
                       << info.model << ") registered at " << info.url;
    api::RegistrationReply out;
    out.lease_seconds = registry_.lease_seconds();
    co_await w.send(200, api::encode(out));
  }

  Task<void> heartbeat(const net::HttpRequest& req, net::ResponseWriter& w) {
    auto hb = api::decode_text<api::Heartbeat>(req.body, "bad heartbeat", api::decode_Heartbeat);
    if (!hb.is_ok()) {
      co_await w.send_error(400, hb.status().message());
      co_return;
    }
    if (!registry_.heartbeat(hb->worker_id, to_load(hb->load), now_seconds())) {
      co_await w.send_error(404, "unknown worker: register first");
      co_return;
    }
    co_await w.send(200, "{}");
  }

  // --- completions --------------------------------------------------------------------------

  // Counts the error and sends it (a plain function: see net/http.h on GCC 12 coroutines):
  // under the request's model when it is served, else under the coordinator's own series.
  Task<void> reject(net::ResponseWriter& w, int status, std::string_view type, std::string message,
                    std::vector<net::Header> extra = {}, const std::string& model = "") {
    auto served = model_metrics_.find(model);
    (served != model_metrics_.end() ? *served->second : metrics_).errors(type).Increment();
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
      // The error names the parameter in `param` too, as OpenAI's do.
      metrics_.errors("invalid_request").Increment();
      co_await send_param_error(w, api.status, api.message, api.param);
      co_return;
    }
    CompletionRequest req = std::move(parsed).value();
    // The model's tokenizer (from its workers' registration); without one admission answers 404.
    auto tok_it = tokenizers_.find(req.model);
    std::vector<std::int32_t> prompt;
    AdmissionRequest ar;
    ar.model = req.model;
    ar.chat = chat;
    std::string bad_prompt;
    if (tok_it != tokenizers_.end()) {
      Result<std::vector<std::int32_t>> ids = req.prompt;
      if (!req.prompt_is_tokens && chat) {
        // Parsed again in order: the template may print the messages (key order matters).
        ids = tok_it->second.encode_chat(
            nlohmann::ordered_json::parse(http.body, nullptr, false)["messages"], req.prompt_text);
      } else if (!req.prompt_is_tokens) {
        ids = tok_it->second.encode_prompt(req.prompt_text);
      }
      if (ids.is_ok()) {
        prompt = std::move(ids).value();
      } else {
        bad_prompt = ids.status().message();
      }
      ar.vocab_size = tok_it->second.vocab_size();
      if (!req.ignore_eos) {
        // generation_config.json's other EOS ids stop generation too (vLLM's stop_token_ids).
        for (std::int32_t id : tok_it->second.extra_eos_ids()) req.stop_token_ids.push_back(id);
      }
    }
    if (!bad_prompt.empty()) {
      metrics_.errors("invalid_request").Increment();
      co_await send_param_error(w, 400, bad_prompt, chat ? "messages" : "prompt");
      co_return;
    }
    ar.prompt = prompt;
    ar.max_tokens = req.max_tokens;
    ar.min_tokens = req.min_tokens;
    const Admission admission = admit(registry_, router_, admission_, inflight_, ar);
    if (!admission.accepted) {
      std::vector<net::Header> extra;
      if (admission.retry_after_seconds > 0) extra = retry_after(admission.retry_after_seconds);
      co_await reject(w, admission.status, admission.error_type, admission.message,
                      std::move(extra), req.model);
      co_return;
    }
    const ModelText& tok = tok_it->second;
    for (const auto& [token, bias] : req.logit_bias) {
      if (token >= ar.vocab_size) {
        metrics_for(req.model).errors("invalid_request").Increment();
        co_await send_param_error(w, 400,
                                  "'logit_bias' names token " + std::to_string(token) +
                                      ", outside the model's vocabulary of " +
                                      std::to_string(ar.vocab_size) + " tokens",
                                  "logit_bias");
        co_return;
      }
    }
    const auto len = static_cast<std::int64_t>(prompt.size());
    const std::int64_t max_tokens = admission.max_tokens;
    req.min_tokens = admission.min_tokens;

    ++inflight_;
    struct Inflight {
      std::int64_t& n;
      std::int64_t& of_model;
      ~Inflight() {
        --n;
        --of_model;
      }
    } counted{inflight_, ++inflight_by_model_[req.model]};
    monitoring::Metrics& metrics = metrics_for(req.model);

    const ResponseHead head{(chat ? "chatcmpl-" : "cmpl-") + request_id(),
                            static_cast<std::int64_t>(std::time(nullptr)),
                            system_fingerprint(req.model, cfg_.backend)};
    const TokenBytesFn token_bytes = tok.token_bytes();
    const std::uint64_t base_seed = req.seed ? *req.seed : seeds_();
    // Completions' echo: the prompt's text before each choice's text.
    std::string echo;
    if (req.echo) {
      Utf8Decoder clean;
      echo = req.prompt_is_tokens ? clean.feed(tok.decode(prompt)) : req.prompt_text;
      echo += clean.flush();  // after feed: the order of operands of + is unspecified
    }
    std::vector<Choice> choices;
    std::vector<json> choice_logprobs;
    std::int64_t generated_total = 0;
    bool failed = false, gone = false;
    int error_status = 0;
    std::string error, error_type;

    // n > 1: the choices run one after another with the same prompt, so every choice after the
    // first finds the prompt's full KV blocks in the worker's prefix cache (routing prefers the
    // worker that holds them) and computes only the last, partial block again. Choice i > 0
    // samples with a seed derived from (seed, i), so choices differ and a seed reproduces all.
    for (std::int64_t index = 0; index < req.n && !failed && !gone; ++index) {
      Job job;
      job.req = req;
      job.prompt = prompt;
      job.max_tokens = max_tokens;
      job.seed = index == 0 ? base_seed : choice_seed(base_seed, index);
      job.arrival = arrival;
      OutputText text(tok.decoder(), req.stop);  // a decoder of its own per choice
      bool first_chunk = true;
      std::string full_text = echo;
      auto offset = static_cast<std::int64_t>(echo.size());  // text_offset of the next token

      job.client_left = [&w] { return w.client_closed(); };
      job.on_token = [&](std::int32_t token) -> Task<bool> {
        const double t = now_seconds();
        if (job.first_token < 0) {
          job.first_token = t;
          if (index == 0) metrics.time_to_first_token.Observe(t - job.arrival);
        } else {
          metrics.inter_token_latency.Observe(t - job.last_token);
        }
        job.last_token = t;
        std::string piece = text.append(token);
        if (req.stream) {
          if (!w.started() && !co_await w.start_stream(200, "text/event-stream")) {
            job.client_gone = true;
            co_return false;
          }
          json lp = nullptr;
          if (req.logprobs && !job.logprobs.empty()) {
            lp = logprobs_json(req, {job.logprobs.back()}, token_bytes, offset);
            if (!req.chat)
              offset += static_cast<std::int64_t>(lp["tokens"][0].get<std::string>().size());
          }
          std::vector<std::int32_t> ids(1, token);
          if (first_chunk) piece = echo + piece;
          const json chunk = stream_chunk(req, head, index, piece, "", ids, first_chunk, lp);
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

      generated_total += static_cast<std::int64_t>(job.generated.size());
      if (job.stop_matched) job.finish = "stop";
      // A client that went away ended the request: `abort`, as vLLM counts it.
      if (job.client_gone) job.finish = "abort";
      if (!job.error.empty()) {
        failed = true;
        error_status = job.error_status;
        error = job.error;
        error_type = job.error_type;
        break;
      }
      metrics.requests(job.finish).Increment();
      metrics.request_generation_tokens.Observe(static_cast<double>(job.generated.size()));
      if (job.client_gone) {
        gone = true;
        break;
      }
      const std::string rest = text.finish();
      if (req.stream) {
        if (!w.started() && !co_await w.start_stream(200, "text/event-stream")) {
          gone = true;
          break;
        }
        const std::string last_text = first_chunk ? echo + rest : rest;
        co_await w.write(
            sse(stream_chunk(req, head, index, last_text, job.finish, {}, first_chunk)));
      } else {
        Choice c;
        c.text = full_text + rest;
        c.finish_reason = job.finish;
        c.tokens = job.generated;
        choice_logprobs.push_back(
            logprobs_json(req, job.logprobs, token_bytes, static_cast<std::int64_t>(echo.size())));
        choices.push_back(std::move(c));
      }
    }

    // Finish the response. The prompt counts once: its choices share it.
    const Usage usage{len, generated_total};
    if (!failed) {
      metrics.prompt_tokens.Increment(static_cast<double>(len));
      metrics.request_prompt_tokens.Observe(static_cast<double>(len));
      metrics.generation_tokens.Increment(static_cast<double>(generated_total));
      metrics.e2e_latency.Observe(now_seconds() - arrival);
    } else {
      metrics.requests("error").Increment();
      metrics.errors(error_type.empty() ? "worker_failure" : error_type).Increment();
      if (generated_total > 0)
        metrics.generation_tokens.Increment(static_cast<double>(generated_total));
    }
    if (gone) {
      metrics.errors("client_disconnect").Increment();
      co_return;
    }
    if (req.stream) {
      if (!w.started()) {
        if (failed) {
          co_await send_error_status(w, error_status, error);
          co_return;
        }
        if (!co_await w.start_stream(200, "text/event-stream")) co_return;
      }
      if (failed) {
        json err = json::parse(net::error_body(error_status ? error_status : 500, error, ""));
        co_await w.write(sse(err));
      } else if (req.include_usage) {
        co_await w.write(sse(usage_chunk(req, head, usage)));
      }
      co_await w.write("data: [DONE]\n\n");
      co_await w.finish();
      co_return;
    }
    if (failed) {
      co_await send_error_status(w, error_status, error);
      co_return;
    }
    co_await w.send(200,
                    json_text(completion_response(req, head, choices, choice_logprobs, usage)));
  }

  // An error whose `param` names the parameter, as OpenAI's do (net's error bodies have null).
  Task<void> send_param_error(net::ResponseWriter& w, int status, const std::string& message,
                              const std::string& param) {
    json body = json::parse(net::error_body(status, message, ""));
    if (!param.empty()) body["error"]["param"] = param;
    return w.send(status, json_text(body));
  }

  Task<void> send_error_status(net::ResponseWriter& w, int status, const std::string& error) {
    std::vector<net::Header> extra;
    if (status == 503) extra = retry_after(2);
    return w.send_error(status ? status : 500, error, std::move(extra));
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
        std::optional<api::KvHandoff> none;
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
    job.kv.reset();
    std::string prefill = rt.prefill, decode = rt.worker, prefill_mode = "prefill",
                decode_mode = "decode";
    std::optional<api::KvHandoff> none;
    RunEnd end;
    {
      Assigned on_prefill(registry_, prefill);
      end = co_await run_on(job, prefill, prefill_mode, none);
    }
    if (end != RunEnd::kFinished && end != RunEnd::kStopped) co_return end;
    std::optional<api::FinishLine> prefill_finish = job.last_finish;
    std::optional<api::KvHandoff> kv = job.kv;
    const auto done = static_cast<std::int64_t>(job.generated.size());
    if (end == RunEnd::kStopped) {
      // The client left (or a stop string matched) at the first token: free the prefill's KV.
      if (kv) release_lease(*kv);
      co_return end;
    }
    if (job.finish == "stop" || done >= job.max_tokens || !kv) {
      if (kv) release_lease(*kv);
      if (job.finish.empty()) job.finish = "length";
      record_phases(job);
      co_return RunEnd::kFinished;
    }
    job.kv_transfer_seconds = -1;
    end = co_await run_on(job, decode, decode_mode, kv);
    if (end == RunEnd::kRetry || end == RunEnd::kFatal)
      release_lease(*kv);  // if the decode did not
    if (end == RunEnd::kFinished) {
      std::optional<api::FinishLine> decode_finish = job.last_finish;
      job.last_finish = prefill_finish;
      record_phases(job);
      record_decode_phases(job, decode_finish);
    }
    co_return end;
  }

  void record_phases(Job& job) {
    if (!job.last_finish) return;
    monitoring::Metrics& m = metrics_for(job.req.model);
    const api::RunTimings& t = job.last_finish->timings;
    m.ttft_phase("queue").Observe(t.queue_seconds);
    m.ttft_phase("prefill").Observe(t.prefill_seconds);
    m.prefill_seconds.Observe(t.prefill_seconds);
    m.prefix_cache_hit_tokens.Increment(static_cast<double>(t.prefix_hit_tokens));
    m.prefix_cache_query_tokens.Increment(static_cast<double>(t.prompt_tokens));
    m.preemptions.Increment(static_cast<double>(t.swap_out_count + t.recompute_preemptions));
  }

  void record_decode_phases(Job& job, const std::optional<api::FinishLine>& decode_finish) {
    monitoring::Metrics& m = metrics_for(job.req.model);
    if (job.kv_transfer_seconds >= 0) {
      m.ttft_phase("kv_transfer").Observe(job.kv_transfer_seconds);
      m.kv_transfer_seconds.Observe(job.kv_transfer_seconds);
    }
    if (decode_finish) {
      const api::RunTimings& t = decode_finish->timings;
      m.ttft_phase("decode_queue").Observe(t.queue_seconds);
      m.ttft_phase("first_decode_step").Observe(t.prefill_seconds);
      m.preemptions.Increment(static_cast<double>(t.swap_out_count + t.recompute_preemptions));
    }
  }

  void release_lease(const api::KvHandoff& kv) {
    if (kv.lease.empty()) return;
    auto to = net::parse_url(kv.worker_url);
    if (!to.is_ok()) return;
    api::Release body;
    body.lease = kv.lease;
    asio::co_spawn(
        io_,
        [this, to = *to, b = api::encode(body)]() -> Task<void> {
          net::ClientOptions o;
          o.timeout = net::Seconds(5);
          co_await net::signed_call(secret(), to, "POST", "/internal/release", b, o);
        },
        asio::detached);
  }

  // One run of the job on one worker: streams its tokens into the job.
  // Arguments by value: see net/http.h on GCC 12 coroutines and temporaries.
  Task<RunEnd> run_on(Job& job, std::string worker_id, std::string mode,
                      std::optional<api::KvHandoff> kv) {
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
    api::GenerateRequest body;
    body.tokens = job.prompt;
    body.tokens.insert(body.tokens.end(), job.generated.begin(), job.generated.end());
    body.prompt_len = static_cast<std::int64_t>(job.prompt.size());
    body.mode = mode;
    api::SamplingParams& params = body.params;
    params.max_tokens = job.max_tokens;
    params.min_tokens = job.req.min_tokens;
    params.temperature = job.req.temperature;
    params.top_p = job.req.top_p;
    params.top_k = job.req.top_k;
    // The worker samples token k of the request from (seed, k): with the tokens generated so
    // far in `tokens`, a re-run draws what the lost run would have drawn.
    params.seed = job.seed;
    params.ignore_eos = job.req.ignore_eos;
    params.stop_token_ids = job.req.stop_token_ids;
    params.presence_penalty = job.req.presence_penalty;
    params.frequency_penalty = job.req.frequency_penalty;
    params.repetition_penalty = job.req.repetition_penalty;
    params.logit_bias = job.req.logit_bias;
    params.logprobs = job.req.logprobs;
    body.kv = kv;

    bool finished = false, stopped = false;
    std::string error_message;
    int error_code = 0;  // of an error line after the stream began
    job.last_finish.reset();
    const bool prefill = mode == "prefill";
    // The client left: stop reading (the worker cancels at its next write, within 0.5 s).
    auto client_left = [&] {
      if (!job.client_gone && job.client_left && job.client_left()) job.client_gone = true;
      return job.client_gone;
    };
    auto on_line = [&](std::string_view line) -> Task<bool> {
      if (line.empty()) co_return true;
      auto parsed = api::parse_object(line, "worker stream line");
      if (!parsed.is_ok()) {
        error_message = parsed.status().message();
        co_return true;
      }
      const json& j = *parsed;
      if (stopped) {
        // A prefill being stopped reads on to its finish (whose KV hand-off the caller then
        // releases) or to its next keep-alive (it is still running: closing cancels it). A
        // finish already on its way when the client left is not lost in the closed socket.
        if (j.contains("finish")) {
          if (auto f = api::decode_FinishLine(j); f.is_ok() && f->kv) job.kv = f->kv;
          co_return false;
        }
        co_return !j.contains("alive");
      }
      if (j.contains("alive")) {
        if (client_left()) {
          stopped = true;
          co_return prefill;
        }
        co_return true;
      }
      if (j.contains("token")) {
        auto t = api::decode_TokenLine(j);
        if (!t.is_ok()) {
          error_message = "bad token line: " + t.status().message();
          co_return false;
        }
        if (job.req.logprobs) {
          if (!t->logprob) {
            error_message = "the worker sent a token without the logprobs asked for";
            co_return false;
          }
          TokenLogprobs lp;
          lp.token = t->token;
          lp.logprob = *t->logprob;
          for (const api::TopLogprob& x : t->top) lp.top.emplace_back(x.token, x.logprob);
          job.logprobs.push_back(std::move(lp));
        }
        job.generated.push_back(t->token);
        if (!co_await job.on_token(job.generated.back()) || client_left()) {
          stopped = true;
          co_return prefill;  // a prefill reads on to its finish line
        }
      } else if (j.contains("kv_transfer")) {
        if (auto t = api::decode_KvTransferLine(j); t.is_ok()) job.kv_transfer_seconds = t->seconds;
      } else if (j.contains("finish")) {
        auto f = api::decode_FinishLine(j);
        if (!f.is_ok()) {
          error_message = "bad finish line: " + f.status().message();
          co_return false;
        }
        finished = true;
        job.finish = f->finish;
        if (f->kv) job.kv = f->kv;
        job.last_finish = std::move(f).value();
      } else if (j.contains("error") && j["error"].is_object()) {
        error_message = j["error"].value("message", "");
        const json& code = j["error"].value("code", json());
        if (code.is_number_integer()) error_code = code.get<int>();
      }
      co_return true;
    };
    net::ClientOptions o;
    o.connect_timeout = net::Seconds(3);
    // Workers send a line at least every 0.5 s: silence this long is a frozen worker.
    o.timeout = net::Seconds(std::max(cfg_.progress_timeout_seconds, 4 * w->load.step_seconds));
    // ...and a worker whose lease runs out has its runs cancelled at once (expire_loop).
    o.canceller = std::make_shared<net::CallCanceller>();
    {
      auto& runs = runs_[worker_id];
      std::erase_if(runs, [](const auto& weak) { return weak.expired(); });
      runs.push_back(o.canceller);
    }
    auto status = co_await net::signed_stream_lines(secret(), *to, "POST", "/internal/generate",
                                                    api::encode(body), on_line, o);
    if (stopped) co_return RunEnd::kStopped;
    // An error after the stream began carries the status the answer would have had.
    if (status.is_ok() && *status == 200 && error_code != 0 && !finished) status = error_code;
    if (!status.is_ok()) {
      // The worker is unreachable or its stream broke: it is suspect until its next heartbeat.
      if (WorkerInfo* x = registry_.find(worker_id)) x->suspect = true;
      job.exclude.insert(worker_id);
      job.last_error = "worker " + worker_id + ": " + status.status().message();
      metrics_for(job.req.model).errors("worker_failure").Increment();
      co_return RunEnd::kRetry;
    }
    if (*status != 200) {
      const std::string msg =
          !error_message.empty() ? error_message : "status " + std::to_string(*status);
      job.last_error = "worker " + worker_id + ": " + msg;
      if (*status == 400) {
        job.error = msg;
        job.error_status = 400;
        job.error_type = "invalid_request";
        co_return RunEnd::kFatal;
      }
      if (*status == 502 && kv) {
        // The KV source (the prefill worker) failed, not this decode worker.
        metrics_for(job.req.model).kv_transfer_failures.Increment();
        const std::string source = kv->agent;
        if (WorkerInfo* x = registry_.find(source)) x->suspect = true;
        job.exclude.insert(source);
        co_return RunEnd::kRetry;
      }
      job.exclude.insert(worker_id);
      co_return RunEnd::kRetry;
    }
    if (!finished) {
      job.exclude.insert(worker_id);
      job.last_error = "worker " + worker_id + " ended its stream without finishing" +
                       (error_message.empty() ? "" : " (" + error_message + ")");
      co_return RunEnd::kRetry;
    }
    if (job.finish == "abort" || job.finish == "error") {
      job.exclude.insert(worker_id);
      job.last_error = "worker " + worker_id + " " +
                       (job.finish == "abort" ? "aborted the request (stopping?)"
                                              : "failed: " + job.last_finish->error);
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
  std::shared_ptr<net::HttpServer> http_, internal_;
  std::string url_, internal_url_;
  std::map<std::string, ModelText> tokenizers_;

 public:
  // Hugging Face folders by served name, loaded by create() before start().
  std::map<std::string, std::shared_ptr<const hfmodel::ModelFolder>> folders_;

 private:
  // Runs in flight by worker id, to cancel when the worker's lease expires.
  std::map<std::string, std::vector<std::weak_ptr<net::CallCanceller>>> runs_;
  std::int64_t inflight_ = 0;
  std::map<std::string, std::int64_t> inflight_by_model_;
  std::map<std::string, std::unique_ptr<monitoring::Metrics>> model_metrics_;
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
  if (!(config.progress_timeout_seconds >= 1)) {
    return invalid_argument(
        "--progress-timeout must be >= 1 s (workers send a keep-alive every "
        "0.5 s)");
  }
  if (!config.secret && !is_loopback_host(config.internal_host)) {
    return invalid_argument("--internal-host " + config.internal_host +
                            " is not loopback: a cluster secret is required (--cluster-secret-file "
                            "or KVFLEET_CLUSTER_SECRET_FILE), or anyone who reaches it can "
                            "register workers");
  }
  auto s = std::make_unique<Server>(config, mode);
  for (const auto& [name, dir] : config.model_folders) {
    hfmodel::LoadFolderOptions fo;
    fo.weights = false;  // the workers load those
    auto folder = hfmodel::load_model_folder(dir, fo);
    if (!folder.is_ok()) return folder.status().with_context("--model " + name);
    s->folders_[name] = std::make_shared<const hfmodel::ModelFolder>(std::move(folder).value());
  }
  KVFLEET_RETURN_IF_ERROR(s->start());
  return std::unique_ptr<Coordinator>(std::move(s));
}

}  // namespace kvfleet::coordinator
