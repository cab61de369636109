#include "worker/server.h"

#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/checksum.h"
#include "common/dtype.h"
#include "common/internal_api.h"
#include "common/log.h"
#include "common/model_spec.h"
#include "hfmodel/model_folder.h"
#include "monitoring/metrics.h"
#include "net/auth.h"
#include "net/http.h"
#include "transfer/transfer.h"
#include "worker/backend.h"
#include "worker/engine.h"
#include "worker/fault_injection.h"

namespace kvfleet::worker {
namespace {

using net::Task;
using nlohmann::json;
namespace asio = boost::asio;
namespace api = internal_api;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

SamplingParams to_params(const api::SamplingParams& m) {
  SamplingParams p;
  p.max_tokens = m.max_tokens;
  p.min_tokens = m.min_tokens;
  p.temperature = m.temperature;
  p.top_p = m.top_p;
  p.top_k = m.top_k;
  if (m.seed) p.seed = *m.seed;
  p.ignore_eos = m.ignore_eos;
  p.stop_token_ids = m.stop_token_ids;
  p.presence_penalty = m.presence_penalty;
  p.frequency_penalty = m.frequency_penalty;
  p.repetition_penalty = m.repetition_penalty;
  p.logit_bias = m.logit_bias;
  p.logprobs = m.logprobs;
  return p;
}

api::RunTimings to_timings(const RequestTimings& t) {
  api::RunTimings j;
  j.queue_seconds = t.queue_seconds;
  j.prefill_seconds = t.prefill_seconds;
  j.time_to_first_token = t.time_to_first_token;
  for (double x : t.inter_token_seconds) j.inter_token_seconds_sum += x;
  j.prompt_tokens = t.prompt_tokens;
  j.generated_tokens = t.generated_tokens;
  j.prefix_hit_tokens = t.prefix_hit_tokens + t.host_prefix_hit_tokens;
  j.swap_out_count = t.swap_out_count;
  j.swap_in_count = t.swap_in_count;
  j.swap_out_seconds = t.swap_out_seconds;
  j.swap_in_seconds = t.swap_in_seconds;
  j.recompute_preemptions = t.recompute_preemptions;
  return j;
}

struct Event {
  bool finished = false;
  std::int32_t token = 0;
  std::optional<TokenLogprobs> logprobs;
  RequestOutput output;
};

using KvSource = api::KvHandoff;

struct ImportResult {
  double seconds = 0;
  std::uint64_t bytes = 0;
  std::int64_t operations = 0;
  std::string transport;  // what carried it (transfer::TransferInfo::transport)
  int pulls = 1;          // 2 when the first pull's checksums did not match
};

class Server final : public WorkerServer {
 public:
  // `agent` is null for a backend whose KV has no bytes (sim): its hand-offs are modelled.
  Server(const WorkerConfig& config, ModelSpec spec, std::unique_ptr<Engine> engine,
         std::unique_ptr<transfer::Agent> agent, transfer::Region region, std::string id,
         FaultInjection faults)
      : cfg_(config),
        faults_(std::move(faults)),
        spec_(std::move(spec)),
        engine_(std::move(engine)),
        agent_(std::move(agent)),
        region_(region),
        id_(std::move(id)),
        backend_name_(engine_->backend().name()),
        metrics_(monitoring::ProcessLabels{config.role, id_, spec_.name, backend_name_}) {}

  ~Server() override {
    pool_.join();
    engine_->stop();
  }

  Status start() {
    net::ServerConfig sc;
    sc.host = cfg_.host;
    sc.port = cfg_.port;
    sc.name = "worker " + id_;
    sc.read_timeout = net::Seconds(60);
    sc.write_timeout = net::Seconds(60);
    KVFLEET_ASSIGN_OR_RETURN(
        http_,
        net::HttpServer::start(
            io_, sc, [this](const net::HttpRequest& r, net::ResponseWriter& w) -> Task<void> {
              co_await handle(r, w);
            }));
    const std::string host = cfg_.advertise_host.empty() ? cfg_.host : cfg_.advertise_host;
    url_ = "http://" + host + ":" + std::to_string(http_->port());
    if (agent_) {
      KVFLEET_ASSIGN_OR_RETURN(auto desc, agent_->describe(region_.id));
      region_desc_ = desc.serialize();
      KVFLEET_ASSIGN_OR_RETURN(agent_address_, agent_->address());
    }
    return Status();
  }

  std::uint16_t port() const override { return http_->port(); }
  std::string url() const override { return url_; }
  const std::string& id() const override { return id_; }

  void run() override {
    asio::signal_set signals(io_, SIGINT, SIGTERM);
    signals.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (!ec) {
        KVFLEET_LOG(kInfo) << "worker " << id_ << ": signal " << sig << ", draining";
        begin_stop();
      }
    });
    if (!cfg_.coordinator.empty()) {
      asio::co_spawn(io_, heartbeat_loop(), asio::detached);
    }
    if (!secret()) {
      KVFLEET_LOG(kWarning) << "worker " << id_
                            << ": no cluster secret: internal calls go unsigned and unsigned "
                               "calls are served (listener on loopback)";
    }
    KVFLEET_LOG(kInfo) << "worker " << id_ << " (" << cfg_.role << ", "
                       << engine_->backend().describe() << ") serving at " << url_;
    io_.run();
  }

  void stop() override {
    asio::post(io_, [this] { begin_stop(); });
  }

 private:
  const ClusterSecret* secret() const { return cfg_.secret ? &*cfg_.secret : nullptr; }

  void begin_stop() {
    if (stopping_.exchange(true)) return;
    http_->stop();
    asio::co_spawn(io_, drain(), asio::detached);
  }

  Task<void> drain() {
    if (!cfg_.coordinator.empty() && registered_) {
      api::Deregistration d;
      d.worker_id = id_;
      auto coord = net::parse_url(cfg_.coordinator);
      if (coord.is_ok()) {
        net::ClientOptions o;
        o.timeout = net::Seconds(2);
        co_await net::signed_call(secret(), *coord, "POST", "/internal/deregister", api::encode(d),
                                  o);
      }
    }
    const auto ms = static_cast<std::int64_t>(cfg_.drain_seconds * 1000);
    auto wait = [this, ms] { return engine_->wait_idle(std::chrono::milliseconds(ms)); };
    co_await net::run_blocking(pool_, std::move(wait));
    // Let streams write their last lines before the loop stops.
    for (int i = 0; i < 100 && active_streams_ > 0; ++i)
      co_await net::sleep_for(net::Seconds(0.02));
    io_.stop();
  }

  // --- coordinator registration --------------------------------------------------------------

  api::Registration registration() const {
    const auto& layout = engine_->backend().kv_layout();
    api::Registration j;
    j.worker_id = id_;
    j.url = url_;
    j.role = cfg_.role;
    j.model = spec_.name;
    j.max_model_len = engine_->max_model_len();
    j.vocab_size = spec_.vocab_size;
    j.bos_token_id = spec_.bos_token_id;
    j.eos_token_id = spec_.eos_token_id;
    j.kv_blocks = engine_->backend().num_blocks();
    j.block_tokens = layout.block_tokens;
    j.block_bytes = static_cast<std::int64_t>(layout.block_bytes());
    j.transfer = agent_ ? std::string(agent_->backend()) : std::string("modelled");
    j.backend = backend_name_;
    j.backend_detail = engine_->backend().describe();
    j.prefix_hash_salt = engine_->prefix_hash_salt();
    j.tokenizer_id = tokenizer_id_;
    j.pid = static_cast<std::int64_t>(::getpid());
    j.load = load();  // routing sees this worker's room before its first heartbeat
    return j;
  }

  api::WorkerLoad load() const {
    const EngineStats s = engine_->stats();
    api::WorkerLoad j;
    j.running = s.running;
    j.waiting = s.waiting;
    j.swapped = s.swapped;
    j.free_blocks = s.device_blocks_total - s.device_blocks_used;
    j.total_blocks = s.device_blocks_total;
    j.host_free_blocks = s.host.free_blocks + s.host.cached_blocks;
    j.held_blocks = s.held_blocks;
    j.prefix_hashes = engine_->prefix_summary();
    j.step_seconds = slowest_step_.exchange(0.0);
    return j;
  }

  Task<void> heartbeat_loop() {
    auto coord = net::parse_url(cfg_.coordinator);
    if (!coord.is_ok()) {
      KVFLEET_LOG(kError) << "worker " << id_ << ": " << coord.status().message();
      co_return;
    }
    net::ClientOptions o;
    o.connect_timeout = net::Seconds(2);
    o.timeout = net::Seconds(5);
    bool warned = false;
    while (!stopping_) {
      if (!registered_) {
        auto r = co_await net::signed_call(secret(), *coord, "POST", "/internal/register",
                                           api::encode(registration()), o);
        if (r.is_ok() && r->status == 200) {
          registered_ = true;
          warned = false;
          KVFLEET_LOG(kInfo) << "worker " << id_ << ": registered with " << cfg_.coordinator;
        } else if (!warned) {
          warned = true;
          KVFLEET_LOG(kWarning) << "worker " << id_ << ": cannot register with " << cfg_.coordinator
                                << ": " << (r.is_ok() ? r->body : r.status().message())
                                << " (retrying)";
        }
      } else {
        api::Heartbeat hb;
        hb.worker_id = id_;
        hb.load = load();
        auto r = co_await net::signed_call(secret(), *coord, "POST", "/internal/heartbeat",
                                           api::encode(hb), o);
        if (r.is_ok() && r->status == 404) registered_ = false;  // the coordinator forgot us
      }
      if (stopping_) break;
      co_await net::sleep_for(net::Seconds(registered_ ? cfg_.heartbeat_seconds : 0.2));
    }
  }

  // --- HTTP ---------------------------------------------------------------------------------

  Task<void> handle(const net::HttpRequest& req, net::ResponseWriter& w) {
    if (req.path == "/health") {
      json j;
      j["status"] = stopping_ ? "draining" : "ok";
      j["worker_id"] = id_;
      j["role"] = cfg_.role;
      co_await w.send(stopping_ ? 503 : 200, dump(j));
    } else if (req.path == "/metrics") {
      update_gauges();
      co_await w.send(200, metrics_.serialize(), "text/plain; version=0.0.4; charset=utf-8");
    } else if (req.path == "/info") {
      // What the worker registers with, plus the transfer peers it pulled KV from and what
      // carries their bytes.
      nlohmann::json info = nlohmann::json::parse(api::encode(registration()));
      info["kv_peers"] = kv_peers();
      co_await w.send(200, info.dump());
    } else if (req.path == "/internal/generate" || req.path == "/internal/release") {
      if (req.method != "POST") {
        co_await w.send_error(405, "use POST for " + req.path);
        co_return;
      }
      const Status auth = net::verify_request(secret(), req);
      if (!auth.is_ok()) {
        metrics_.errors("unauthenticated").Increment();
        KVFLEET_LOG(kWarning) << "worker " << id_ << ": refused " << req.path << " from "
                              << req.peer << ": " << auth.message();
        co_await w.send_error(401, auth.message());
        co_return;
      }
      if (req.path == "/internal/generate") {
        co_await generate(req, w);
        co_return;
      }
      auto rel = api::decode_text<api::Release>(req.body, "release", api::decode_Release);
      if (!rel.is_ok()) {
        co_await w.send_error(400, rel.status().message() + " (expected {\"lease\": \"...\"})");
        co_return;
      }
      api::ReleaseReply out;
      out.released = release_lease(rel->lease);
      co_await w.send(200, api::encode(out));
    } else {
      co_await w.send_error(404, "no route for " + req.method + " " + req.path);
    }
  }

  void update_gauges() {
    const EngineStats s = engine_->stats();
    metrics_.requests_running.Set(static_cast<double>(s.running));
    metrics_.requests_waiting.Set(static_cast<double>(s.waiting));
    metrics_.requests_swapped.Set(static_cast<double>(s.swapped));
    metrics_.kv_usage_device.Set(
        s.device_blocks_total > 0 ? double(s.device_blocks_used) / s.device_blocks_total : 0.0);
    const auto host_total = s.host.capacity_blocks;
    metrics_.kv_usage_host.Set(host_total > 0 ? double(s.host.used_blocks) / double(host_total)
                                              : 0.0);
    // Host blocks whose checksum failed on restore (the engine recomputed their sequences).
    const std::int64_t seen = restore_failures_seen_.exchange(s.host.corrupt_blocks_total);
    if (s.host.corrupt_blocks_total > seen) {
      metrics_.kv_integrity_failures("restore").Increment(
          static_cast<double>(s.host.corrupt_blocks_total - seen));
    }
  }

  bool release_lease(const std::string& lease) {
    auto it = leases_.find(lease);
    if (it == leases_.end()) return false;
    engine_->release_held(it->second.request);
    it->second.timer->cancel();
    leases_.erase(it);
    return true;
  }

  std::string add_lease(RequestId request) {
    // Unguessable: whoever knows a lease id can free the KV it holds.
    std::string lease = random_hex(16);
    auto timer = std::make_shared<asio::steady_timer>(io_);
    timer->expires_after(
        std::chrono::milliseconds(static_cast<std::int64_t>(cfg_.kv_lease_seconds * 1000)));
    timer->async_wait([this, lease](const boost::system::error_code& ec) {
      if (ec) return;
      if (leases_.count(lease) != 0) {
        KVFLEET_LOG(kWarning) << "worker " << id_ << ": KV lease " << lease
                              << " expired unreleased; freeing its blocks";
        metrics_.errors("kv_lease_expired").Increment();
        release_lease(lease);
      }
    });
    leases_[lease] = Lease{request, timer};
    return lease;
  }

  // While a request has nothing else to send, its stream carries a keep-alive this often: the
  // coordinator takes a silent stream for a frozen worker, and a write is how this side learns
  // that the coordinator (or its client) went away.
  static constexpr double kAliveSeconds = 0.5;

  // The next value of `box`, writing keep-alives meanwhile; nullopt after `max_seconds`, or when
  // the reader went away (then *gone is set).
  template <typename T>
  Task<std::optional<T>> pop_alive(std::shared_ptr<net::Mailbox<T>> box, net::ResponseWriter* w,
                                   double max_seconds, bool* gone) {
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(max_seconds));
    while (true) {
      const double left =
          std::chrono::duration<double>(end - std::chrono::steady_clock::now()).count();
      if (left <= 0) co_return std::nullopt;
      auto v = co_await box->pop(net::Seconds(std::min(kAliveSeconds, left)));
      if (v) co_return v;
      if (!co_await w->write(api::encode(api::AliveLine{}) + "\n")) {
        *gone = true;
        co_return std::nullopt;
      }
    }
  }

  // A request whose reader went away: abort it, and free KV it may already hold for a hand-off.
  void abandon(RequestId id) {
    metrics_.errors("abandoned").Increment();
    engine_->cancel(id);
    engine_->release_held(id);  // after the cancel: frees a prefill that had already finished
  }

  // The reader left while a reservation for an import was pending (or the import ran): when it
  // resolves, give the blocks back and free the prefill worker's copy.
  Task<void> settle_reservation(std::shared_ptr<net::Mailbox<Result<Reservation>>> box,
                                KvSource src) {
    auto got = co_await box->pop(net::Seconds(cfg_.kv_import_wait_seconds + 5));
    if (got && got->is_ok()) engine_->cancel_reservation((*got)->id);
    co_await release_remote(std::move(src));
  }
  Task<void> settle_import(std::shared_ptr<net::Mailbox<Result<ImportResult>>> box,
                           std::uint64_t reservation, KvSource src) {
    co_await box->pop(net::Seconds(3600));  // the import writes into the reserved blocks
    engine_->cancel_reservation(reservation);
    co_await release_remote(std::move(src));
  }

  // Failures after the stream began: an error line with the status the answer would have had.
  Task<void> fail_stream(net::ResponseWriter& w, int status, std::string message) {
    co_await w.write(net::error_body(status, message, "") + "\n");
    co_await w.finish();
  }

  Task<void> generate(const net::HttpRequest& req, net::ResponseWriter& w) {
    if (stopping_) {
      co_await w.send_error(503, "worker " + id_ + " is draining");
      co_return;
    }
    auto decoded =
        api::decode_text<api::GenerateRequest>(req.body, "generate", api::decode_GenerateRequest);
    if (!decoded.is_ok()) {
      co_await w.send_error(400, decoded.status().message());
      co_return;
    }
    api::GenerateRequest& body = *decoded;
    std::string mode = body.mode;
    std::vector<std::int32_t> tokens = body.tokens;
    const std::int64_t prompt_len =
        body.prompt_len.value_or(static_cast<std::int64_t>(tokens.size()));
    SamplingParams params = to_params(body.params);
    if (mode != "full" && mode != "prefill" && mode != "decode") {
      co_await w.send_error(400, "mode must be full, prefill or decode");
      co_return;
    }
    // Decode workers also run whole requests (conditional disaggregation prefills short
    // prompts where they decode); prefill workers only prefill.
    if ((cfg_.role == "prefill" && mode != "prefill") ||
        (cfg_.role == "decode" && mode == "prefill")) {
      co_await w.send_error(400, "worker " + id_ + " has role " + cfg_.role + " and does not run " +
                                     mode + " requests");
      co_return;
    }
    const EngineStats s = engine_->stats();
    if (s.running + s.waiting >= cfg_.max_queued) {
      metrics_.errors("overloaded").Increment();
      co_await w.send_error(429, "worker " + id_ + " is at capacity");
      co_return;
    }

    Request request;
    request.params = params;
    const std::int64_t already = static_cast<std::int64_t>(tokens.size()) - prompt_len;
    if (prompt_len < 1 || already < 0) {
      co_await w.send_error(400, "prompt_len must be in [1, len(tokens)]");
      co_return;
    }
    if (already >= params.max_tokens) {
      co_await w.send_error(400, "the request already has max_tokens generated tokens");
      co_return;
    }
    // What the engine would refuse, refused before the stream begins (a plain HTTP 400).
    if (Status st = check_prompt_tokens(tokens, spec_.vocab_size); !st.is_ok()) {
      co_await w.send_error(400, st.message());
      co_return;
    }
    request.prompt = tokens;
    std::optional<KvSource> src;
    if (mode == "decode") {
      auto checked = parse_kv_source(body.kv);
      if (!checked.is_ok()) {
        co_await w.send_error(400, checked.status().message());
        co_return;
      }
      src = std::move(checked).value();
    }
    ++active_streams_;
    struct Active {
      std::atomic<int>& n;
      ~Active() { --n; }
    } active{active_streams_};
    // From here the answer is a stream with keep-alives: waiting for room or for KV is progress
    // the coordinator can see, and a coordinator that left is noticed within kAliveSeconds.
    if (!co_await w.start_stream(200, "application/x-ndjson")) co_return;
    bool gone = false;
    ImportResult imported;
    std::optional<Reservation> reservation;
    if (src) {
      auto box =
          std::make_shared<net::Mailbox<Result<Reservation>>>(co_await asio::this_coro::executor);
      // No room now: wait for some (older imports first), rather than recompute the prompt here
      // in the middle of this worker's decode batch; recompute only after the wait.
      engine_->reserve(
          src->tokens, [box](Result<Reservation> r) { box->push(std::move(r)); },
          cfg_.kv_import_wait_seconds);
      auto got = co_await pop_alive(box, &w, cfg_.kv_import_wait_seconds + 5, &gone);
      if (gone) {
        asio::co_spawn(io_, settle_reservation(box, *src), asio::detached);
        co_return;
      }
      if (!got || !got->is_ok()) {
        // No room for the imported KV now: run the request whole here instead (the scheduler
        // then preempts or swaps as it must), and free the prefill worker's copy.
        KVFLEET_LOG(kInfo) << "worker " << id_ << ": no room to import KV ("
                           << (got ? got->status().message() : std::string("timed out"))
                           << "); recomputing the prompt locally";
        metrics_.errors("kv_import_recomputed").Increment();
        asio::co_spawn(io_, release_remote(*src), asio::detached);
        mode = "full";
      } else {
        reservation = std::move(*got).value();
      }
    }
    if (reservation) {
      auto box =
          std::make_shared<net::Mailbox<Result<ImportResult>>>(co_await asio::this_coro::executor);
      if (src->modelled) {
        asio::co_spawn(io_, modelled_import(*src, box), asio::detached);
      } else {
        asio::post(pool_, [this, box, source = *src, res = *reservation] {
          box->push(import_kv(source, res));
        });
      }
      auto result = co_await pop_alive(box, &w, 24 * 3600, &gone);
      if (gone || !result) {
        asio::co_spawn(io_, settle_import(box, reservation->id, *src), asio::detached);
        co_return;
      }
      if (!result->is_ok() && result->status().code() == StatusCode::kDataLoss) {
        // The KV arrived but failed its checksums twice: never let it reach a sequence; run the
        // request whole here instead, and free the prefill worker's copy.
        engine_->cancel_reservation(reservation->id);
        KVFLEET_LOG(kWarning) << "worker " << id_ << ": " << result->status().message()
                              << "; recomputing the prompt locally";
        metrics_.errors("kv_import_recomputed").Increment();
        asio::co_spawn(io_, release_remote(*src), asio::detached);
        mode = "full";
        reservation.reset();
      } else if (!result->is_ok()) {
        engine_->cancel_reservation(reservation->id);
        metrics_.kv_transfer_failures.Increment();
        metrics_.errors("kv_transfer").Increment();
        KVFLEET_LOG(kWarning) << "worker " << id_
                              << ": KV import failed: " << result->status().message();
        // 502: the KV source failed, not this worker.
        co_await fail_stream(
            w, 502, "KV transfer from " + src->agent + " failed: " + result->status().message());
        co_return;
      }
      if (reservation) {
        imported = **result;
        metrics_.kv_transfer_seconds.Observe(imported.seconds);
        metrics_.kv_transfer_bytes(imported.transport)
            .Increment(static_cast<double>(imported.bytes));
        metrics_.ttft_phase("kv_transfer").Observe(imported.seconds);
        request.kv_import = KvImport{reservation->id, prompt_len, src->tokens};
        asio::co_spawn(io_, release_remote(*src), asio::detached);
      }
    }

    // Without imported KV the engine sees prompt + tokens generated before (a re-run after a
    // failure) as its prompt, so those count towards max_tokens and min_tokens here.
    if (!request.kv_import) {
      request.params.sample_offset = already;  // sampled re-runs draw what the lost run would
      request.params.max_tokens -= already;
      request.params.min_tokens = std::max<std::int64_t>(0, request.params.min_tokens - already);
      if (mode == "prefill") {
        request.hold_kv = true;
        request.params.max_tokens = 1;
        request.params.min_tokens = std::min<std::int64_t>(request.params.min_tokens, 1);
      }
    }
    auto box = std::make_shared<net::Mailbox<Event>>(co_await asio::this_coro::executor);
    // Both callbacks run on the engine thread, the logprobs just before their token.
    auto pending = std::make_shared<std::optional<TokenLogprobs>>();
    if (request.params.logprobs) {
      request.on_logprobs = [pending](RequestId, const TokenLogprobs& lp) { *pending = lp; };
    }
    request.on_token = [box, pending](RequestId, std::int32_t t) {
      Event e;
      e.token = t;
      e.logprobs = std::move(*pending);
      pending->reset();
      box->push(std::move(e));
    };
    const std::string m = mode;
    const std::int64_t before = request.kv_import ? already : 0;  // old tokens in out.tokens
    request.on_finish = [this, box, m, before](const RequestOutput& out) {
      record_finish(out, m, before);
      Event e;
      e.finished = true;
      e.output = out;
      box->push(std::move(e));
    };
    auto id = engine_->submit(std::move(request));
    if (!id.is_ok()) {
      if (reservation) engine_->cancel_reservation(reservation->id);
      metrics_.errors("invalid_request").Increment();
      co_await fail_stream(w, id.status().code() == StatusCode::kFailedPrecondition ? 503 : 400,
                           id.status().message());
      co_return;
    }
    if (mode == "decode") {
      api::KvTransferLine t;
      t.seconds = imported.seconds;
      t.bytes = imported.bytes;
      t.operations = imported.operations;
      if (!co_await w.write(api::encode(t) + "\n")) {
        abandon(*id);
        co_return;
      }
    }
    while (true) {
      auto ev = co_await pop_alive(box, &w, 24 * 3600, &gone);
      if (gone) {
        abandon(*id);  // the coordinator went away: free the sequence
        co_return;
      }
      if (!ev) continue;
      if (!ev->finished) {
        api::TokenLine t;
        t.token = ev->token;
        if (ev->logprobs) {
          t.logprob = ev->logprobs->chosen.logprob;
          for (const TokenLogprob& x : ev->logprobs->top) t.top.push_back({x.token, x.logprob});
        }
        if (!co_await w.write(api::encode(t) + "\n")) {
          abandon(*id);
          co_return;
        }
        continue;
      }
      const RequestOutput& out = ev->output;
      api::FinishLine fin;
      fin.finish = std::string(finish_reason_name(out.finish));
      fin.error = out.error;
      fin.timings = to_timings(out.timings);
      fin.worker_id = id_;
      if (!out.held_blocks.empty()) {
        api::KvHandoff kv;
        if (agent_) {
          kv.agent = agent_->name();
          kv.address = agent_address_;
          kv.region = region_desc_;
        } else {
          kv.agent = id_;
          kv.modelled = true;  // no bytes: the decode worker models the hand-off's time
        }
        kv.blocks = out.held_blocks;
        kv.block_bytes = engine_->backend().kv_layout().block_bytes();
        kv.tokens = out.held_tokens;
        kv.lease = add_lease(out.id);
        kv.worker_url = url_;
        kv.checksums = block_checksums(kv.blocks, kv.block_bytes);
        if (!kv.checksums.empty() && faults_.draw_corrupt_kv()) {
          // Injected: one block's checksum no longer matches its bytes.
          kv.checksums[faults_.pick(kv.checksums.size())] ^= 1ull << faults_.pick(64);
          metrics_.errors("injected_fault").Increment();
        }
        if (secret()) kv.sign(*secret());
        fin.kv = std::move(kv);
        if (faults_.draw_drop_notice()) {
          // Injected: the notice is lost. Silence until the reader gives up (its progress
          // deadline); the lease's own timer frees the KV nobody took.
          metrics_.errors("injected_fault").Increment();
          KVFLEET_LOG(kWarning) << "worker " << id_ << ": fault injected: the hand-off notice of "
                                << "request " << out.id << " is dropped";
          while (!w.client_closed() && !stopping_) co_await net::sleep_for(net::Seconds(0.05));
          co_return;
        }
      }
      // A reader that already left never takes the hand-off: free it now, not at lease expiry.
      if (fin.kv && w.client_closed()) {
        release_lease(fin.kv->lease);
        co_return;
      }
      if (!co_await w.write(api::encode(fin) + "\n") && fin.kv) release_lease(fin.kv->lease);
      co_await w.finish();
      co_return;
    }
  }

  std::vector<net::Header> retry_after() const {
    std::vector<net::Header> h;
    h.push_back(net::Header{std::string("Retry-After"), std::string("1")});
    return h;
  }

  // Checks a decode request's hand-off before anything reads from it: signed by a worker of
  // this cluster, of this worker's kind (modelled or real), the same block size, and blocks
  // that cover the tokens and lie inside the described region.
  Result<KvSource> parse_kv_source(const std::optional<api::KvHandoff>& kv) const {
    if (!kv) return invalid_argument("decode requests need a 'kv' object");
    const KvSource& s = *kv;
    if (s.modelled != !agent_) {
      return invalid_argument(
          std::string("kv: ") +
          (agent_ ? "modelled KV (a sim worker's) cannot be imported into real memory"
                  : "this worker's backend models KV: it cannot import real bytes"));
    }
    if (!s.modelled && (s.agent.empty() || s.address.empty() || s.region.empty())) {
      return invalid_argument("kv: agent, address and region are required");
    }
    const auto& layout = engine_->backend().kv_layout();
    if (s.block_bytes != layout.block_bytes()) {
      return invalid_argument("kv: block size " + std::to_string(s.block_bytes) +
                              " differs from this worker's " +
                              std::to_string(layout.block_bytes()) +
                              " (same model, block size and KV dtype are required)");
    }
    if (s.tokens < 1 ||
        layout.blocks_for_tokens(s.tokens) > static_cast<std::int64_t>(s.blocks.size())) {
      return invalid_argument("kv: the blocks do not cover the tokens");
    }
    if (Status st = s.verify(secret()); !st.is_ok()) {
      return invalid_argument("kv: " + st.message());
    }
    if (!s.modelled) {
      auto remote = transfer::RemoteRegion::parse(s.region);
      if (!remote.is_ok()) return remote.status().with_context("kv");
      for (std::int32_t b : s.blocks) {
        const auto end = (static_cast<std::uint64_t>(b) + 1) * s.block_bytes;
        if (end > remote->length) {
          return invalid_argument("kv: block " + std::to_string(b) +
                                  " lies outside the described region (" +
                                  std::to_string(remote->length) + " bytes)");
        }
      }
    }
    return s;
  }

  // The checksums of blocks of this worker's KV pool, in order; empty when the KV is not in host
  // memory (a sim backend's has no bytes; a GPU's would need a device kernel).
  std::vector<std::uint64_t> block_checksums(const std::vector<std::int32_t>& blocks,
                                             std::uint64_t block_bytes) const {
    std::vector<std::uint64_t> out;
    if (!agent_ || region_.kind != transfer::MemoryKind::kHost || region_.addr == nullptr) {
      return out;
    }
    out.reserve(blocks.size());
    for (std::int32_t b : blocks) {
      out.push_back(
          checksum64(region_.addr + static_cast<std::uint64_t>(b) * block_bytes, block_bytes));
    }
    return out;
  }

  // On the blocking pool: connects to the prefill worker's agent when new and reads its blocks,
  // then checks every block against the hand-off's checksums. A mismatch pulls once more; a
  // second one is data_loss (the caller recomputes the prompt), and each counts as an integrity
  // failure. The blocks join a sequence only after they verified.
  Result<ImportResult> import_kv(const KvSource& src, const Reservation& res) {
    const auto t0 = std::chrono::steady_clock::now();
    ImportResult r;
    for (int pull = 1;; ++pull) {
      KVFLEET_RETURN_IF_ERROR(pull_kv(src, res, r));
      r.pulls = pull;
      if (src.checksums.empty()) break;  // a sender without host KV: nothing to verify against
      if (faults_.draw_corrupt_kv()) {
        // Injected: a byte of the received KV flipped, as a bad link would.
        const std::int32_t b = res.blocks[faults_.pick(res.blocks.size())];
        region_.addr[static_cast<std::uint64_t>(b) * src.block_bytes +
                     faults_.pick(src.block_bytes)] ^= std::byte{0x40};
        metrics_.errors("injected_fault").Increment();
      }
      const std::vector<std::uint64_t> got = block_checksums(res.blocks, src.block_bytes);
      std::size_t bad = 0;
      while (bad < got.size() && got[bad] == src.checksums[bad]) ++bad;
      if (bad == got.size()) break;
      metrics_.kv_integrity_failures("transfer").Increment();
      KVFLEET_LOG(kWarning) << "worker " << id_ << ": KV from " << src.agent << " failed its check"
                            << " (block " << src.blocks[bad] << ", pull " << pull << " of 2)";
      if (pull == 2) {
        return Status(StatusCode::kDataLoss, "KV from " + src.agent +
                                                 " failed its checksum twice (block " +
                                                 std::to_string(src.blocks[bad]) + ")");
      }
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  // One read of the hand-off's blocks into the reserved ones.
  Status pull_kv(const KvSource& src, const Reservation& res, ImportResult& r) {
    {
      std::lock_guard<std::mutex> lock(peers_mu_);
      auto it = peers_.find(src.agent);
      if (it == peers_.end() || it->second != src.address) {
        if (it != peers_.end()) (void)agent_->disconnect(src.agent);
        KVFLEET_RETURN_IF_ERROR(agent_->connect(src.agent, src.address));
        peers_[src.agent] = src.address;
      }
    }
    KVFLEET_ASSIGN_OR_RETURN(transfer::RemoteRegion remote,
                             transfer::RemoteRegion::parse(src.region));
    const size_t n = res.blocks.size();
    std::vector<std::int32_t> remote_blocks(src.blocks.begin(),
                                            src.blocks.begin() + static_cast<long>(n));
    transfer::TransferRequest tr;
    tr.peer = src.agent;
    tr.op = transfer::Op::kRead;
    tr.local_region = region_.id;
    tr.remote = remote;
    tr.ranges = transfer::block_ranges(res.blocks, remote_blocks, src.block_bytes);
    auto posted = agent_->post(tr);
    if (!posted.is_ok()) {
      forget_peer(src.agent);
      return posted.status();
    }
    const Status st = agent_->wait(*posted, std::chrono::seconds(30));
    const transfer::TransferInfo info = agent_->poll(*posted);
    agent_->release(*posted);
    if (!st.is_ok()) {
      forget_peer(src.agent);
      return st;
    }
    r.bytes += info.bytes;
    r.operations += info.operations;
    r.transport = info.transport;
    return Status::ok();
  }

  // A sim worker's hand-off: no bytes move; it lasts what the backend models for the bytes over
  // its link, in wall time (scaled).
  Task<void> modelled_import(KvSource src,
                             std::shared_ptr<net::Mailbox<Result<ImportResult>>> box) {
    const auto& layout = engine_->backend().kv_layout();
    const std::uint64_t bytes =
        static_cast<std::uint64_t>(layout.blocks_for_tokens(src.tokens)) * layout.block_bytes();
    const std::optional<double> modelled = engine_->backend().handoff_seconds(bytes);
    const auto t0 = std::chrono::steady_clock::now();
    if (modelled && *modelled > 0) {
      co_await net::sleep_for(net::Seconds(*modelled * engine_->backend().time_scale()));
    }
    ImportResult r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.bytes = bytes;
    r.operations = 1;
    r.transport = "modelled";
    box->push(r);
  }

  nlohmann::json kv_peers() {
    nlohmann::json out = nlohmann::json::array();
    std::lock_guard<std::mutex> lock(peers_mu_);
    for (const auto& [name, address] : peers_) {
      nlohmann::json p = {{"agent", name}};
      if (auto t = agent_->peer_transport(name); t.is_ok()) {
        p["transport"] = t->transport;
        p["detail"] = t->detail;
      }
      out.push_back(std::move(p));
    }
    return out;
  }

  void forget_peer(const std::string& agent) {
    std::lock_guard<std::mutex> lock(peers_mu_);
    if (peers_.erase(agent) != 0 && agent_) (void)agent_->disconnect(agent);
  }

  Task<void> release_remote(KvSource src) {
    auto to = net::parse_url(src.worker_url);
    if (!to.is_ok() || src.lease.empty()) co_return;
    api::Release rel;
    rel.lease = src.lease;
    net::ClientOptions o;
    o.timeout = net::Seconds(5);
    auto r =
        co_await net::signed_call(secret(), *to, "POST", "/internal/release", api::encode(rel), o);
    if (!r.is_ok()) {
      KVFLEET_LOG(kWarning) << "worker " << id_ << ": releasing lease " << src.lease
                            << " failed: " << r.status().message() << " (its lease timer frees it)";
    }
  }

  // On the engine thread.
  void record_finish(const RequestOutput& out, const std::string& mode, std::int64_t before) {
    const RequestTimings& t = out.timings;
    metrics_.requests(finish_reason_name(out.finish)).Increment();
    if (out.finish == FinishReason::kError) metrics_.errors("engine").Increment();
    const auto generated = static_cast<std::int64_t>(out.tokens.size()) - before;
    if (generated > 0) metrics_.generation_tokens.Increment(static_cast<double>(generated));
    if (mode != "decode") {
      metrics_.prompt_tokens.Increment(static_cast<double>(t.prompt_tokens));
      metrics_.prefix_cache_hit_tokens.Increment(
          static_cast<double>(t.prefix_hit_tokens + t.host_prefix_hit_tokens));
      metrics_.prefix_cache_query_tokens.Increment(static_cast<double>(t.prompt_tokens));
      if (!out.tokens.empty()) {
        metrics_.time_to_first_token.Observe(t.time_to_first_token);
        metrics_.prefill_seconds.Observe(t.prefill_seconds);
        metrics_.ttft_phase("queue").Observe(t.queue_seconds);
        metrics_.ttft_phase("prefill").Observe(t.prefill_seconds);
      }
    } else if (t.time_to_first_token > 0) {
      metrics_.ttft_phase("decode_queue").Observe(t.queue_seconds);
      metrics_.ttft_phase("first_decode_step").Observe(t.prefill_seconds);
    }
    double e2e = t.time_to_first_token;
    for (double x : t.inter_token_seconds) {
      metrics_.inter_token_latency.Observe(x);
      e2e += x;
    }
    if (mode != "prefill") metrics_.e2e_latency.Observe(e2e);
    metrics_.preemptions.Increment(static_cast<double>(t.swap_out_count + t.recompute_preemptions));
    // Per request as this worker ran it: a prefill's prompt, a decode's tokens.
    if (mode != "decode")
      metrics_.request_prompt_tokens.Observe(static_cast<double>(t.prompt_tokens));
    if (mode != "prefill")
      metrics_.request_generation_tokens.Observe(
          static_cast<double>(std::max<std::int64_t>(generated, 0)));
    for (std::int64_t i = 0; i < t.swap_out_count; ++i) {
      metrics_.swap_out_seconds.Observe(t.swap_out_seconds / static_cast<double>(t.swap_out_count));
    }
    for (std::int64_t i = 0; i < t.swap_in_count; ++i) {
      metrics_.swap_in_seconds.Observe(t.swap_in_seconds / static_cast<double>(t.swap_in_count));
    }
    metrics_.swap_out_bytes.Increment(static_cast<double>(t.swap_out_bytes));
    metrics_.swap_in_bytes.Increment(static_cast<double>(t.swap_in_bytes));
  }

 public:
  void on_step(const StepReport& r) {
    if (r.decode_sequences > 0) metrics_.decode_step.Observe(r.forward_seconds);
    double seen = slowest_step_.load();
    while (r.forward_seconds > seen &&
           !slowest_step_.compare_exchange_weak(seen, r.forward_seconds)) {
    }
  }

 private:
  struct Lease {
    RequestId request = 0;
    std::shared_ptr<asio::steady_timer> timer;
  };

  WorkerConfig cfg_;
  FaultInjection faults_;
  std::atomic<std::int64_t> restore_failures_seen_{0};
  ModelSpec spec_;

 public:
  std::string tokenizer_id_;  // set by create() before start(); registered with the model

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<transfer::Agent> agent_;
  transfer::Region region_;
  std::string id_;
  std::string backend_name_;
  monitoring::Metrics metrics_;
  asio::io_context io_;
  asio::thread_pool pool_{4};
  std::shared_ptr<net::HttpServer> http_;
  std::string url_, region_desc_, agent_address_;
  std::map<std::string, Lease> leases_;  // io thread
  std::mutex peers_mu_;
  std::map<std::string, std::string> peers_;  // connected agents -> their address
  std::atomic<bool> stopping_{false};
  std::atomic<int> active_streams_{0};
  mutable std::atomic<double> slowest_step_{0.0};  // since the last load report
  bool registered_ = false;
};

}  // namespace

Result<std::unique_ptr<WorkerServer>> WorkerServer::create(const WorkerConfig& config) {
  if (config.role != "prefill" && config.role != "decode" && config.role != "both") {
    return invalid_argument("--role must be prefill, decode or both, not '" + config.role + "'");
  }
  if (config.kv_blocks < 0)
    return invalid_argument("--kv-blocks must be >= 0 (0: the backend's default)");
  if (config.block_tokens < 1 || config.block_tokens > 4096) {
    return invalid_argument("--block-tokens must be in [1, 4096]");
  }
  if (!config.coordinator.empty()) {
    KVFLEET_RETURN_IF_ERROR(
        net::parse_url(config.coordinator).status().with_context("--coordinator"));
  }
  if (!(config.heartbeat_seconds > 0) || !(config.kv_lease_seconds > 0)) {
    return invalid_argument("heartbeat and lease times must be > 0");
  }
  if (!(config.kv_import_wait_seconds >= 0) || config.kv_import_wait_seconds > 3600) {
    return invalid_argument("--kv-import-wait-seconds must be in [0, 3600]");
  }
  if (!config.secret && !is_loopback_host(config.host)) {
    return invalid_argument("--host " + config.host +
                            " is not loopback: a cluster secret is required (--cluster-secret-file "
                            "or KVFLEET_CLUSTER_SECRET_FILE), or anyone who reaches this worker "
                            "can run requests on it and read its KV");
  }
  const std::uint64_t fault_seed =
      (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  KVFLEET_ASSIGN_OR_RETURN(FaultInjection faults,
                           FaultInjection::parse(config.inject_faults, fault_seed));
  ModelSpec spec;
  std::string weights = config.weights, tokenizer_id;
  // (A sim worker only needs a config: a folder without tokenizer.json is read as one.)
  std::error_code fs_error;
  if (hfmodel::is_model_folder(config.model) &&
      (config.backend != "sim" ||
       std::filesystem::exists(std::filesystem::path(config.model) / "tokenizer.json", fs_error))) {
    // A Hugging Face folder: its weights (unless --weights says otherwise) and tokenizer ids.
    hfmodel::LoadFolderOptions fo;
    fo.weights = config.weights.empty() && config.backend != "sim";
    KVFLEET_ASSIGN_OR_RETURN(hfmodel::ModelFolder folder,
                             hfmodel::load_model_folder(config.model, fo));
    spec = folder.spec;
    tokenizer_id = folder.tokenizer_id;
    if (fo.weights) weights = config.model;
  } else {
    KVFLEET_ASSIGN_OR_RETURN(spec, load_model_spec(config.model));
  }
  BackendOptions bo;
  bo.spec = spec;
  bo.weights_path = weights;
  bo.seed = config.seed;
  bo.num_blocks = config.kv_blocks;
  bo.block_tokens = config.block_tokens;
  if (!config.kv_dtype.empty()) {
    auto dtype = parse_dtype(config.kv_dtype);
    if (!dtype.is_ok()) return dtype.status().with_context("--kv-dtype");
    bo.kv_dtype = *dtype;
  }
  bo.threads = config.threads;
  bo.hardware = config.hardware;
  bo.tp = config.tp;
  bo.link = config.link;
  bo.time_scale = config.time_scale;
  KVFLEET_ASSIGN_OR_RETURN(auto backend, create_backend(config.backend, bo));
  const KvMemory kv = backend->kv_memory();

  // The id names the transfer agent too, so it must be unique in the cluster.
  std::string id = config.id;
  if (id.empty()) {
    id = config.role + "-" + (config.advertise_host.empty() ? config.host : config.advertise_host) +
         "-" + std::to_string(::getpid());
  }
  // The transfer agent registers the backend's KV pool as the backend describes it; a backend
  // without KV bytes (sim) has no agent and models its hand-offs.
  std::unique_ptr<transfer::Agent> agent;
  transfer::Region region;
  if (kv.kind != KvMemory::Kind::kNone) {
    transfer::AgentConfig ac;
    ac.name = id;
    // UCX listens where the worker is reached, not on every interface.
    ac.bind_host = config.advertise_host.empty() ? config.host : config.advertise_host;
    if (kv.kind == KvMemory::Kind::kDevice) ac.device = kv.device;
    KVFLEET_ASSIGN_OR_RETURN(agent, transfer::create_agent(config.transfer, ac));
    const auto kind = kv.kind == KvMemory::Kind::kDevice ? transfer::MemoryKind::kDevice
                                                         : transfer::MemoryKind::kHost;
    if (kind == transfer::MemoryKind::kDevice && !agent->capabilities().device_memory) {
      return invalid_argument("transfer backend '" + config.transfer +
                              "' cannot move device memory (backend '" + config.backend +
                              "' keeps its KV on a GPU)");
    }
    KVFLEET_ASSIGN_OR_RETURN(region, agent->register_memory(kv.base, kv.bytes, kind));
  }

  EngineConfig ec;
  ec.scheduler.max_batch_tokens = config.max_batch_tokens;
  ec.scheduler.max_running = config.max_running;
  ec.host_kv_bytes = config.host_kv_bytes;
  ec.max_model_len = config.max_model_len;
  ec.name = "engine";
  ec.faults = faults;  // corrupt-spill happens in the engine
  auto raw_slot = std::make_shared<Server*>(nullptr);
  ec.on_step = [raw_slot](const StepReport& r) {
    if (*raw_slot) (*raw_slot)->on_step(r);
  };
  KVFLEET_ASSIGN_OR_RETURN(auto engine, Engine::create(ec, std::move(backend)));
  if (faults.any()) {
    KVFLEET_LOG(kWarning) << "worker " << id
                          << ": injecting faults on purpose: " << faults.describe() << " (seed "
                          << fault_seed << ")";
  }
  auto server = std::make_unique<Server>(config, spec, std::move(engine), std::move(agent), region,
                                         id, std::move(faults));
  *raw_slot = server.get();
  server->tokenizer_id_ = tokenizer_id;
  KVFLEET_RETURN_IF_ERROR(server->start());
  return std::unique_ptr<WorkerServer>(std::move(server));
}

}  // namespace kvfleet::worker
