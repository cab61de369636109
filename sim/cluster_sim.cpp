#include "sim/cluster_sim.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <queue>
#include <set>

#include "bench/workload.h"
#include "common/clock.h"
#include "coordinator/admission.h"
#include "coordinator/registry.h"
#include "coordinator/router.h"
#include "worker/backend.h"
#include "worker/engine_core.h"

namespace kvfleet::sim {
namespace {

using coordinator::Registry;
using coordinator::Route;
using coordinator::WorkerInfo;
using coordinator::WorkerLoad;
using worker::EngineCore;
using worker::EngineStats;
using worker::FinishReason;
using worker::Request;
using worker::RequestOutput;
using worker::Reservation;
using worker::Sequence;

constexpr std::size_t kPrefixSummaryLimit = 8192;  // as the worker process reports

struct Event {
  double t;
  std::uint64_t order;
  std::function<void()> fn;
};
struct Later {
  bool operator()(const Event& a, const Event& b) const {
    return a.t > b.t || (a.t == b.t && a.order > b.order);
  }
};

// What a worker's engine inbox holds between two step boundaries (as worker::Engine's).
struct InboxItem {
  enum class Kind { kUnhold, kUnreserve, kReserve, kSequence };
  explicit InboxItem(Kind k) : kind(k) {}
  Kind kind;
  worker::RequestId id = 0;
  std::uint64_t reservation = 0;
  std::int64_t tokens = 0;
  std::function<void(Result<Reservation>)> reserved;
  std::unique_ptr<Sequence> seq;
};

struct Worker {
  std::string id, role;
  std::shared_ptr<VirtualClock> clock;
  std::unique_ptr<EngineCore> core;
  std::vector<InboxItem> inbox;
  bool scheduled = false;  // a step boundary is pending
  // Statistics as the engine publishes them at step boundaries: `current` from `current_at` on,
  // `previous` before (a heartbeat between two boundaries reads the earlier one).
  EngineStats current, previous;
  double current_at = 0;
  WorkerReport report;
  // The last prefix summary and the device pool's index version it was built at.
  coordinator::PrefixHashes summary;
  std::uint64_t summary_version = ~std::uint64_t{0};
};

struct Job {
  std::size_t index = 0;
  std::vector<std::int32_t> prompt;
  std::int64_t max_tokens = 0, min_tokens = 0;
  std::uint64_t seed = 0;
  double start = 0;  // the client sent it
  double last_token = -1;
  std::vector<std::int32_t> generated;
  std::vector<double> itls;
  double ttft = -1;
  bool finished = false;
  // Phases, as the coordinator records them.
  double queue = -1, prefill = -1, kv_transfer = -1, decode_queue = -1, first_decode_step = -1;
};

class Simulation {
 public:
  Simulation(const ClusterConfig& c, const WorkloadConfig& w, const std::vector<SimRequest>& reqs,
             const ProgressFn& progress)
      : cfg_(c), wl_(w), requests_(reqs), progress_(progress), registry_(1e18) {}

  Status setup() {
    if (cfg_.prefill < 0 || cfg_.decode < 0 || cfg_.colocated < 0) {
      return invalid_argument("worker counts must be >= 0");
    }
    if (cfg_.prefill + cfg_.decode + cfg_.colocated == 0) {
      return invalid_argument(
          "the cluster needs workers: --prefill P --decode D, or --colocated C");
    }
    if (cfg_.colocated > 0 && cfg_.prefill + cfg_.decode > 0) {
      return invalid_argument("give either --colocated or --prefill/--decode, not both");
    }
    if (cfg_.colocated == 0 && cfg_.decode == 0) {
      return invalid_argument("a disaggregated cluster needs at least one decode worker");
    }
    if (!(cfg_.heartbeat_seconds > 0) || !(cfg_.rpc_seconds >= 0)) {
      return invalid_argument("heartbeat seconds must be > 0 and rpc seconds >= 0");
    }
    if (cfg_.max_inflight < 1) return invalid_argument("max in-flight requests must be >= 1");
    std::string mode = cfg_.mode;
    if (mode.empty())
      mode = cfg_.colocated > 0 ? "colocated" : (cfg_.prefill > 0 ? "disaggregated" : "auto");
    KVFLEET_ASSIGN_OR_RETURN(router_.mode, coordinator::parse_serve_mode(mode));
    router_.auto_local_prefill_tokens = cfg_.auto_local_prefill_tokens;
    admission_.max_inflight = cfg_.max_inflight;
    KVFLEET_ASSIGN_OR_RETURN(spec_, load_model_spec(cfg_.model));

    auto add = [&](const std::string& role, int count) -> Status {
      for (int i = 0; i < count; ++i) {
        auto w = std::make_unique<Worker>();
        w->id = role + "-" + std::to_string(i);
        w->role = role;
        w->clock = std::make_shared<VirtualClock>(0.0);
        worker::BackendOptions bo;
        bo.spec = spec_;
        bo.seed = cfg_.seed;
        bo.num_blocks = cfg_.kv_blocks;
        bo.block_tokens = cfg_.block_tokens;
        bo.kv_dtype = cfg_.kv_dtype;
        bo.clock = w->clock;
        bo.hardware = cfg_.hardware;
        bo.tp = cfg_.tp;
        bo.link = cfg_.link;
        KVFLEET_ASSIGN_OR_RETURN(auto backend, worker::create_backend("sim", bo));
        worker::EngineConfig ec;
        ec.scheduler.max_batch_tokens = cfg_.max_batch_tokens;
        ec.scheduler.max_running = cfg_.max_running;
        ec.host_kv_bytes = cfg_.host_kv_bytes;
        ec.name = w->id;
        ec.clock = w->clock;
        KVFLEET_ASSIGN_OR_RETURN(w->core, EngineCore::create(ec, std::move(backend)));
        w->current = w->previous = w->core->stats();
        w->report.id = w->id;
        w->report.role = role;
        w->report.kv_blocks = w->core->backend().num_blocks();
        if (backend_detail_.empty()) backend_detail_ = w->core->backend().describe();
        // Registration, as the worker process sends it (with its load).
        WorkerInfo info;
        info.id = w->id;
        info.url = "sim://" + w->id;
        info.role = role;
        info.model = spec_.name;
        info.transfer = "modelled";
        info.backend = "sim";
        info.max_model_len = w->core->max_model_len();
        info.vocab_size = spec_.vocab_size;
        info.kv_blocks = w->core->backend().num_blocks();
        info.block_tokens = w->core->backend().kv_layout().block_tokens;
        info.block_bytes = static_cast<std::int64_t>(w->core->backend().kv_layout().block_bytes());
        info.prefix_hash_salt = w->core->prefix_hash_salt();
        info.load = load_of(*w, 0);
        KVFLEET_RETURN_IF_ERROR(registry_.add(info, 0));
        index_[w->id] = workers_.size();
        workers_.push_back(std::move(w));
      }
      return Status::ok();
    };
    KVFLEET_RETURN_IF_ERROR(add("prefill", cfg_.prefill));
    KVFLEET_RETURN_IF_ERROR(add("decode", cfg_.decode));
    KVFLEET_RETURN_IF_ERROR(add("both", cfg_.colocated));
    return Status::ok();
  }

  Result<SimResult> run() {
    const auto wall0 = std::chrono::steady_clock::now();
    if (requests_.empty()) return invalid_argument("the workload is empty");
    // Chains: a session's turns in order, one after the other; other requests alone (as
    // `bench serve`).
    std::map<std::int64_t, std::vector<std::size_t>> sessions;
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      if (requests_[i].session >= 0) {
        sessions[requests_[i].session].push_back(i);
      } else {
        chains_.push_back({i});
      }
    }
    for (auto& [id, idx] : sessions) {
      std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
        return requests_[a].turn < requests_[b].turn;
      });
      chains_.push_back(idx);
    }
    std::sort(chains_.begin(), chains_.end(),
              [](const auto& a, const auto& b) { return a.front() < b.front(); });
    const std::vector<double> arrivals =
        bench::arrival_times(chains_.size(), wl_.rate, wl_.burstiness, wl_.seed);
    results_.resize(requests_.size());
    jobs_.resize(requests_.size());
    chain_pos_.assign(chains_.size(), 0);
    for (std::size_t c = 0; c < chains_.size(); ++c) {
      at(arrivals[c], [this, c] { chain_ready(c); });
    }
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      const double phase = cfg_.heartbeat_seconds * static_cast<double>(i + 1) /
                           static_cast<double>(workers_.size() + 1);
      at(phase, [this, i] { heartbeat(i); });
    }
    // Events at one instant are bounded (arrivals, messages and one boundary per worker each):
    // far more means something reschedules itself without time passing, a livelock that must
    // fail the run rather than hang it.
    const std::int64_t same_instant_limit =
        1'000'000 + 100 * static_cast<std::int64_t>(requests_.size() + workers_.size());
    std::int64_t same_instant = 0;
    double last_t = -1;
    while (!events_.empty()) {
      Event e = std::move(const_cast<Event&>(events_.top()));
      events_.pop();
      same_instant = e.t == last_t ? same_instant + 1 : 0;
      last_t = e.t;
      if (same_instant > same_instant_limit) {
        return Status(StatusCode::kInternal,
                      "the simulation stopped advancing at t = " + std::to_string(e.t) + " s (" +
                          std::to_string(same_instant) + " events at that instant)");
      }
      now_ = e.t;
      ++processed_;
      e.fn();
    }
    if (done_ != static_cast<std::int64_t>(requests_.size())) {
      return Status(StatusCode::kInternal,
                    "simulation ended with " +
                        std::to_string(requests_.size() - static_cast<std::size_t>(done_)) +
                        " requests unfinished");
    }
    SimResult out;
    out.run.requests = std::move(results_);
    out.run.duration = end_time_;
    out.run.rate = wl_.rate;
    auto mean = [](const std::vector<double>& v) {
      double s = 0;
      for (double x : v) s += x;
      return v.empty() ? std::nan("") : s / static_cast<double>(v.size());
    };
    for (const char* phase :
         {"queue", "prefill", "kv_transfer", "decode_queue", "first_decode_step"}) {
      out.phase_means.emplace_back(phase, mean(phases_[phase]));
    }
    for (auto& w : workers_) {
      const EngineStats s = w->core->stats();
      WorkerReport r = w->report;
      r.utilisation = end_time_ > 0 ? r.busy_seconds / end_time_ : 0;
      r.steps = s.steps;
      r.prompt_tokens = s.prompt_tokens_total;
      r.generated_tokens = s.generated_tokens_total;
      r.swap_outs = s.swap_outs_total;
      r.swap_ins = s.swap_ins_total;
      r.recompute_preemptions = s.recompute_preemptions_total;
      r.prefix_hit_tokens = s.prefix_hit_tokens_total;
      out.swaps_out += s.swap_outs_total;
      out.swaps_in += s.swap_ins_total;
      out.recompute_preemptions += s.recompute_preemptions_total;
      out.workers.push_back(r);
    }
    out.concurrency = std::move(samples_);
    out.handoffs = handoffs_;
    out.handoff_recomputes = handoff_recomputes_;
    out.handoff_waits = handoff_waits_;
    out.handoff_reserve_seconds = handoff_reserve_seconds_;
    out.local_prefills = local_prefills_;
    out.events = processed_;
    out.backend_detail = backend_detail_;
    out.kv_blocks_per_worker =
        workers_.empty() ? 0 : workers_.front()->core->backend().num_blocks();
    out.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    return out;
  }

 private:
  void at(double t, std::function<void()> fn) {
    events_.push(Event{t, next_order_++, std::move(fn)});
  }

  // --- workers ---------------------------------------------------------------------------------

  WorkerLoad load_of(Worker& w, double t) const {
    const EngineStats& s = t >= w.current_at ? w.current : w.previous;
    WorkerLoad load;
    load.running = s.running;
    load.waiting = s.waiting;
    load.swapped = s.swapped;
    load.free_blocks = s.device_blocks_total - s.device_blocks_used;
    load.total_blocks = s.device_blocks_total;
    load.host_free_blocks = s.host.free_blocks + s.host.cached_blocks;
    load.held_blocks = s.held_blocks;
    // Routing reads decode workers' prefix caches only in auto mode (conditional
    // disaggregation); elsewhere their summary would be built for nobody.
    if (router_.mode != coordinator::ServeMode::kDisaggregated || w.role != "decode") {
      const std::uint64_t version = w.core->device_pool().index_version();
      if (version != w.summary_version) {  // unchanged: the same summary, not rebuilt
        w.summary = coordinator::PrefixHashes(w.core->prefix_summary(kPrefixSummaryLimit));
        w.summary_version = version;
      }
      load.prefix_hashes = w.summary;
    }
    return load;
  }

  void heartbeat(std::size_t i) {
    Worker& w = *workers_[i];
    registry_.heartbeat(w.id, load_of(w, now_), now_);
    if (i == 0) sample();
    // Heartbeats go on while requests are unfinished and anything else is pending (if only
    // heartbeats were left, nothing could ever finish them: the run ends and reports it).
    if (done_ < static_cast<std::int64_t>(requests_.size()) && events_.size() >= workers_.size()) {
      at(now_ + cfg_.heartbeat_seconds, [this, i] { heartbeat(i); });
    }
  }

  void sample() {
    ConcurrencySample s;
    s.t = now_;
    std::int64_t used = 0, total = 0;
    for (const auto& w : workers_) {
      const EngineStats& st = now_ >= w->current_at ? w->current : w->previous;
      s.running += st.running;
      s.waiting += st.waiting;
      s.swapped += st.swapped;
      used += st.device_blocks_used;
      total += st.device_blocks_total;
    }
    s.inflight = inflight_;
    s.kv_usage = total > 0 ? static_cast<double>(used) / static_cast<double>(total) : 0;
    samples_.push_back(s);
  }

  // The worker's engine loop wakes at `t` (at once when idle; a busy one drains at its next
  // step boundary, which is already scheduled).
  void wake(Worker& w, double t) {
    if (w.scheduled) return;
    w.scheduled = true;
    at(t, [this, &w] { boundary(w); });
  }

  // A step boundary: drain the inbox (in worker::Engine's order), then run one step if there is
  // work, and come back when it ends.
  void boundary(Worker& w) {
    w.clock->advance_to(now_);
    std::vector<InboxItem> items;
    items.swap(w.inbox);
    for (auto& it : items) {
      if (it.kind == InboxItem::Kind::kUnhold) w.core->release_held(it.id);
    }
    for (auto& it : items) {
      if (it.kind == InboxItem::Kind::kUnreserve) w.core->cancel_reservation(it.reservation);
    }
    for (auto& it : items) {
      if (it.kind == InboxItem::Kind::kReserve) {
        auto answered = std::make_shared<bool>(false);
        w.core->reserve(it.tokens, now_ + cfg_.import_wait_seconds,
                        [answered, done = std::move(it.reserved)](Result<Reservation> r) {
                          *answered = true;
                          done(std::move(r));
                        });
        if (!*answered) ++handoff_waits_;
      }
    }
    for (auto& it : items) {
      if (it.kind == InboxItem::Kind::kSequence) w.core->add(std::move(it.seq));
    }
    w.core->service_reservations();
    if (!w.core->has_work()) {
      w.scheduled = false;
      publish(w, now_);
      // Imports waiting for blocks on an idle engine give up at their deadline.
      if (auto d = w.core->next_reservation_deadline()) wake(w, *d);
      return;
    }
    const worker::StepReport r = w.core->step();
    if (r.stalled) {
      // Nothing could run until something arrives (a lease released, a reservation resolved):
      // idle until then, as worker::Engine does, rather than step again at the same instant.
      ++w.report.stalls;
      w.scheduled = false;
      publish(w, now_);
      if (auto d = w.core->next_reservation_deadline()) wake(w, *d);
      return;
    }
    w.report.busy_seconds += r.seconds;
    const EngineStats s = w.core->stats();
    w.report.max_running = std::max(w.report.max_running, s.running);
    w.report.max_waiting = std::max(w.report.max_waiting, s.waiting);
    const double end = w.clock->now();
    publish(w, end);
    at(end, [this, &w] { boundary(w); });
  }

  void publish(Worker& w, double t) {
    if (t > w.current_at) w.previous = w.current;
    w.current = w.core->stats();
    w.current_at = t;
  }

  void post(Worker& w, InboxItem item, double t) {
    w.inbox.push_back(std::move(item));
    wake(w, t);
  }

  Worker& worker(const std::string& id) { return *workers_[index_.at(id)]; }

  // --- the client ------------------------------------------------------------------------------

  void chain_ready(std::size_t c) {
    if (wl_.max_concurrency > 0 && active_ >= wl_.max_concurrency) {
      waiting_chains_.push_back(c);
      return;
    }
    ++active_;
    send(chains_[c][chain_pos_[c]], c);
  }

  void send(std::size_t i, std::size_t chain) {
    Job& job = jobs_[i];
    job.index = i;
    job.start = now_;
    const SimRequest& r = requests_[i];
    job.prompt = r.prompt;
    job.seed = cfg_.seed * 1000003 + i;
    job_chain_[i] = chain;
    at(now_ + cfg_.rpc_seconds, [this, i] { admit(i); });
  }

  void complete(std::size_t i, bool ok, std::string error) {
    Job& job = jobs_[i];
    job.finished = true;
    bench::RequestResult& r = results_[i];
    r.success = ok;
    r.error = std::move(error);
    r.prompt_tokens = static_cast<std::int64_t>(requests_[i].prompt.size());
    r.start = job.start;
    if (ok) {
      r.output_tokens = static_cast<std::int64_t>(job.generated.size());
      r.ttft = job.ttft;
      r.e2e = job.last_token - job.start;
      r.itls = job.itls;
    }
    ++done_;
    end_time_ = std::max(end_time_, now_);
    if (progress_ && (done_ % 100 == 0 || done_ == static_cast<std::int64_t>(requests_.size()))) {
      progress_(done_, static_cast<std::int64_t>(requests_.size()));
    }
    // The chain goes on, or frees its concurrency slot.
    const std::size_t c = job_chain_[i];
    if (++chain_pos_[c] < chains_[c].size()) {
      send(chains_[c][chain_pos_[c]], c);
      return;
    }
    --active_;
    if (!waiting_chains_.empty()) {
      const std::size_t next = waiting_chains_.front();
      waiting_chains_.pop_front();
      chain_ready(next);
    }
  }

  // A token reaches the client one message after the step that made it.
  void deliver_token(Job& job, std::int32_t token, double t) {
    const double client = t + cfg_.rpc_seconds;
    job.generated.push_back(token);
    if (job.ttft < 0) {
      job.ttft = client - job.start;
    } else {
      job.itls.push_back(client - job.last_token);
    }
    job.last_token = client;
  }

  // --- the coordinator -------------------------------------------------------------------------

  void admit(std::size_t i) {
    Job& job = jobs_[i];
    const SimRequest& r = requests_[i];
    coordinator::AdmissionRequest ar;
    ar.model = spec_.name;
    ar.prompt = job.prompt;
    ar.vocab_size = spec_.vocab_size;
    ar.max_tokens = r.output_len;
    const coordinator::Admission a =
        coordinator::admit(registry_, router_, admission_, inflight_, ar);
    if (!a.accepted) {
      complete(i, false, std::to_string(a.status) + " " + a.message);
      return;
    }
    job.max_tokens = a.max_tokens;
    job.min_tokens = a.min_tokens;
    ++inflight_;
    route_and_run(i);
  }

  void fail(std::size_t i, const std::string& why) {
    --inflight_;
    complete(i, false, why);
  }

  void route_and_run(std::size_t i) {
    Job& job = jobs_[i];
    std::vector<std::int32_t> tokens = job.prompt;
    coordinator::RouteRequest rr;
    rr.model = spec_.name;
    rr.tokens = &tokens;
    rr.max_new_tokens = job.max_tokens;
    const Route rt = coordinator::route(registry_, rr, router_);
    if (rt.kind == Route::Kind::kNone) {
      fail(i, "503 " + rt.reason);
      return;
    }
    registry_.assign(rt.worker);  // until the request ends there
    if (rt.kind == Route::Kind::kColocated) {
      if (worker(rt.worker).role == "decode") ++local_prefills_;
      run_full(i, rt.worker, /*already=*/0);
      return;
    }
    registry_.assign(rt.prefill);  // while it prefills
    run_prefill(i, rt.prefill, rt.worker);
  }

  Request make_request(Job& job, std::int64_t already) {
    Request req;
    req.prompt = job.prompt;
    req.prompt.insert(req.prompt.end(), job.generated.begin(), job.generated.end());
    req.params.max_tokens = job.max_tokens - already;
    req.params.min_tokens = std::max<std::int64_t>(0, job.min_tokens - already);
    req.params.seed = job.seed;
    req.params.sample_offset = already;
    req.params.ignore_eos = true;
    return req;
  }

  // Submits a request to a worker's engine one message from now; false (and the job failed) if
  // the engine refuses it.
  bool submit(std::size_t i, Worker& w, Request req, double t) {
    auto seq = w.core->make_sequence(std::move(req));
    if (!seq.is_ok()) {
      registry_.unassign(w.id);
      fail(i, "400 " + seq.status().message());
      return false;
    }
    (*seq)->arrival_time = t;  // the engine stamps arrival when the worker receives it
    InboxItem item(InboxItem::Kind::kSequence);
    item.seq = std::move(seq).value();
    post(w, std::move(item), t);
    return true;
  }

  void run_full(std::size_t i, const std::string& worker_id, std::int64_t already) {
    Worker& w = worker(worker_id);
    Request req = make_request(jobs_[i], already);
    attach_final_run(i, w, req, "queue", "prefill");
    submit(i, w, std::move(req), now_ + cfg_.rpc_seconds);
  }

  void run_prefill(std::size_t i, const std::string& prefill_id, const std::string& decode_id) {
    Job& job = jobs_[i];
    Worker& p = worker(prefill_id);
    Request req = make_request(job, 0);
    req.hold_kv = true;
    req.params.max_tokens = 1;
    req.params.min_tokens = std::min<std::int64_t>(req.params.min_tokens, 1);
    req.on_token = [this, i, &p](worker::RequestId, std::int32_t t) {
      deliver_token(jobs_[i], t, p.clock->now());
    };
    req.on_finish = [this, i, prefill_id, decode_id](const RequestOutput& out) {
      const double t = worker(prefill_id).clock->now() + cfg_.rpc_seconds;
      const FinishReason reason = out.finish;
      const worker::RequestId rid = out.id;
      const std::int64_t held = out.held_tokens;
      const double queue = out.timings.queue_seconds, prefill = out.timings.prefill_seconds;
      at(t, [this, i, prefill_id, decode_id, reason, rid, held, queue, prefill] {
        registry_.unassign(prefill_id);
        Job& pjob = jobs_[i];
        if (reason != FinishReason::kStop && reason != FinishReason::kLength) {
          registry_.unassign(decode_id);
          fail(i, "the prefill engine ended the request: " +
                      std::string(worker::finish_reason_name(reason)));
          return;
        }
        phases_["queue"].push_back(queue);
        phases_["prefill"].push_back(prefill);
        const auto done = static_cast<std::int64_t>(pjob.generated.size());
        if (done >= pjob.max_tokens || held <= 0) {
          release_lease(prefill_id, rid);
          registry_.unassign(decode_id);
          --inflight_;
          complete(i, true, "");
          return;
        }
        run_decode(i, prefill_id, rid, held, decode_id);
      });
    };
    submit(i, p, std::move(req), now_ + cfg_.rpc_seconds);
  }

  void release_lease(const std::string& prefill_id, worker::RequestId rid) {
    Worker& p = worker(prefill_id);
    const double t = now_ + cfg_.rpc_seconds;
    at(t, [this, &p, rid, t] {
      InboxItem it(InboxItem::Kind::kUnhold);
      it.id = rid;
      post(p, std::move(it), t);
    });
  }

  // The decode worker receives the request one message after the coordinator, reserves blocks
  // at its next step boundary, pulls the KV over the link, releases the prefill's lease and
  // submits the sequence with its KV (worker/server.cpp's decode path).
  void run_decode(std::size_t i, const std::string& prefill_id, worker::RequestId rid,
                  std::int64_t held_tokens, const std::string& decode_id) {
    Worker& d = worker(decode_id);
    const double arrive = now_ + cfg_.rpc_seconds;
    at(arrive, [this, i, prefill_id, rid, held_tokens, decode_id, &d, arrive] {
      InboxItem item(InboxItem::Kind::kReserve);
      item.tokens = held_tokens;
      item.reserved = [this, i, prefill_id, rid, held_tokens, decode_id,
                       arrive](Result<Reservation> res) {
        Worker& dw = worker(decode_id);
        const double t = dw.clock->now();
        handoff_reserve_seconds_ += t - arrive;
        if (!res.is_ok()) {
          // No room for the KV now: recompute the prompt here, free the prefill's copy.
          ++handoff_recomputes_;
          release_lease(prefill_id, rid);
          const std::int64_t already = static_cast<std::int64_t>(jobs_[i].generated.size());
          at(t, [this, i, decode_id, already] { run_decode_full(i, decode_id, already); });
          return;
        }
        const auto& layout = dw.core->backend().kv_layout();
        const std::uint64_t bytes =
            static_cast<std::uint64_t>(layout.blocks_for_tokens(held_tokens)) *
            layout.block_bytes();
        const double h = dw.core->backend().handoff_seconds(bytes).value_or(0.0);
        const Reservation r = *res;
        at(t + h, [this, i, prefill_id, rid, held_tokens, decode_id, r, h] {
          ++handoffs_;
          release_lease(prefill_id, rid);
          jobs_[i].kv_transfer = h;
          phases_["kv_transfer"].push_back(h);
          import(i, decode_id, r, held_tokens);
        });
      };
      post(d, std::move(item), arrive);
    });
  }

  void run_decode_full(std::size_t i, const std::string& decode_id, std::int64_t already) {
    Worker& w = worker(decode_id);
    Request req = make_request(jobs_[i], already);
    attach_final_run(i, w, req, "decode_queue", "first_decode_step");
    submit(i, w, std::move(req), now_);
  }

  void import(std::size_t i, const std::string& decode_id, const Reservation& res,
              std::int64_t held_tokens) {
    Worker& w = worker(decode_id);
    Job& job = jobs_[i];
    Request req;
    req.prompt = job.prompt;
    req.prompt.insert(req.prompt.end(), job.generated.begin(), job.generated.end());
    req.params.max_tokens = job.max_tokens;
    req.params.min_tokens = job.min_tokens;
    req.params.seed = job.seed;
    req.params.ignore_eos = true;
    req.kv_import =
        worker::KvImport{res.id, static_cast<std::int64_t>(job.prompt.size()), held_tokens};
    attach_final_run(i, w, req, "decode_queue", "first_decode_step");
    auto seq = w.core->make_sequence(std::move(req));
    if (!seq.is_ok()) {
      InboxItem un(InboxItem::Kind::kUnreserve);
      un.reservation = res.id;
      post(w, std::move(un), now_);
      registry_.unassign(decode_id);
      fail(i, "400 " + seq.status().message());
      return;
    }
    (*seq)->arrival_time = now_;
    InboxItem item(InboxItem::Kind::kSequence);
    item.seq = std::move(seq).value();
    post(w, std::move(item), now_);
  }

  // The run that ends the request on worker `w`: its tokens reach the client; its finish
  // reaches the coordinator one message later, which records the run's two TTFT phases (as the
  // coordinator does: queue and prefill for a whole run, decode_queue and first_decode_step for
  // a decode run) and completes the request.
  void attach_final_run(std::size_t i, Worker& w, Request& req, const char* queue_phase,
                        const char* compute_phase) {
    req.on_token = [this, i, &w](worker::RequestId, std::int32_t t) {
      deliver_token(jobs_[i], t, w.clock->now());
    };
    const std::string id = w.id;
    req.on_finish = [this, i, id, queue_phase, compute_phase](const RequestOutput& out) {
      const double t = worker(id).clock->now() + cfg_.rpc_seconds;
      const FinishReason reason = out.finish;
      const double queue = out.timings.queue_seconds, compute = out.timings.prefill_seconds;
      at(t, [this, i, id, reason, queue, compute, queue_phase, compute_phase] {
        registry_.unassign(id);
        if (reason != FinishReason::kStop && reason != FinishReason::kLength) {
          fail(i,
               "the engine ended the request: " + std::string(worker::finish_reason_name(reason)));
          return;
        }
        phases_[queue_phase].push_back(queue);
        phases_[compute_phase].push_back(compute);
        --inflight_;
        complete(i, true, "");
      });
    };
  }

  ClusterConfig cfg_;
  WorkloadConfig wl_;
  const std::vector<SimRequest>& requests_;
  ProgressFn progress_;
  ModelSpec spec_;
  Registry registry_;
  coordinator::RouterConfig router_;
  coordinator::AdmissionConfig admission_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<std::string, std::size_t> index_;
  std::priority_queue<Event, std::vector<Event>, Later> events_;
  std::uint64_t next_order_ = 0;
  double now_ = 0;
  std::int64_t processed_ = 0;
  std::vector<std::vector<std::size_t>> chains_;
  std::vector<std::size_t> chain_pos_;
  std::map<std::size_t, std::size_t> job_chain_;
  std::deque<std::size_t> waiting_chains_;
  std::int64_t active_ = 0;
  std::vector<Job> jobs_;
  std::vector<bench::RequestResult> results_;
  std::int64_t inflight_ = 0, done_ = 0;
  double end_time_ = 0;
  std::map<std::string, std::vector<double>> phases_;
  std::vector<ConcurrencySample> samples_;
  std::int64_t handoffs_ = 0, handoff_recomputes_ = 0, local_prefills_ = 0, handoff_waits_ = 0;
  double handoff_reserve_seconds_ = 0;
  std::string backend_detail_;
};

}  // namespace

Result<SimResult> simulate(const ClusterConfig& cluster, const WorkloadConfig& workload,
                           const std::vector<SimRequest>& requests, const ProgressFn& progress) {
  Simulation s(cluster, workload, requests, progress);
  KVFLEET_RETURN_IF_ERROR(s.setup());
  return s.run();
}

}  // namespace kvfleet::sim
