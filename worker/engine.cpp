#include "worker/engine.h"

#include "common/log.h"

namespace kvfleet::worker {
namespace {

constexpr auto kIdleWait = std::chrono::milliseconds(100);  // re-checks stop while idle

}  // namespace

Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config,
                                               std::unique_ptr<EngineBackend> backend) {
  KVFLEET_ASSIGN_OR_RETURN(auto core, EngineCore::create(config, std::move(backend)));
  return std::unique_ptr<Engine>(new Engine(config, std::move(core)));
}

Engine::Engine(const EngineConfig& config, std::unique_ptr<EngineCore> core)
    : config_(config), core_(std::move(core)) {
  published_ = core_->stats();
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  stop();
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<RequestId> Engine::submit(Request request) {
  std::vector<Request> one;
  one.push_back(std::move(request));
  KVFLEET_ASSIGN_OR_RETURN(std::vector<RequestId> ids, submit_batch(std::move(one)));
  return ids.front();
}

Result<std::vector<RequestId>> Engine::submit_batch(std::vector<Request> requests) {
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<RequestId> ids;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto seq = core_->make_sequence(std::move(requests[i]));
    if (!seq.is_ok()) {
      return requests.size() == 1 ? seq.status()
                                  : seq.status().with_context("request " + std::to_string(i));
    }
    ids.push_back((*seq)->id);
    seqs.push_back(std::move(seq).value());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status(StatusCode::kFailedPrecondition, "the engine is stopping");
    for (auto& s : seqs) inbox_.push_back(std::move(s));
    in_flight_ += static_cast<std::int64_t>(seqs.size());
  }
  cv_.notify_all();
  return ids;
}

void Engine::reserve(std::int64_t tokens, std::function<void(Result<Reservation>)> done,
                     double wait_seconds) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      reserves_.push_back({tokens, wait_seconds, core_->now(), std::move(done)});
      ++in_flight_;  // until settled, so wait_idle() sees its effect in stats()
      done = nullptr;
    }
  }
  if (done) {
    done(Status(StatusCode::kFailedPrecondition, "the engine is stopping"));
    return;
  }
  cv_.notify_all();
}

void Engine::cancel_reservation(std::uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    unreserves_.push_back(id);
    ++in_flight_;
  }
  cv_.notify_all();
}

void Engine::release_held(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    unholds_.push_back(id);
    ++in_flight_;
  }
  cv_.notify_all();
}

std::vector<kvstore::BlockHash> Engine::prefix_summary() const {
  std::lock_guard<std::mutex> lock(mu_);
  return prefix_summary_;
}

void Engine::cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  cv_.notify_all();
}

bool Engine::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return published_;
}

void Engine::drain_inbox() {
  std::vector<std::unique_ptr<Sequence>> arrived;
  std::vector<RequestId> cancels, unholds;
  std::vector<PendingReserve> reserves;
  std::vector<std::uint64_t> unreserves;
  {
    std::lock_guard<std::mutex> lock(mu_);
    arrived.swap(inbox_);
    cancels.swap(cancels_);
    reserves.swap(reserves_);
    unreserves.swap(unreserves_);
    unholds.swap(unholds_);
  }
  settled_controls_ +=
      static_cast<std::int64_t>(reserves.size() + unreserves.size() + unholds.size());
  for (RequestId id : unholds) core_->release_held(id);
  for (std::uint64_t id : unreserves) core_->cancel_reservation(id);
  for (PendingReserve& r : reserves) {
    core_->reserve(r.tokens, r.asked + r.wait_seconds, std::move(r.done), r.asked);
  }
  core_->service_reservations();
  for (auto& seq : arrived) core_->add(std::move(seq));
  for (RequestId id : cancels) core_->cancel(id);
}

void Engine::loop() {
  set_thread_name(config_.name);
  bool stalled = false;  // the last step could run nothing: wait for news, not for work
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, kIdleWait, [&] {
        return stopping_ || !inbox_.empty() || !cancels_.empty() || !reserves_.empty() ||
               !unreserves_.empty() || !unholds_.empty() || (!stalled && core_->has_work());
      });
      if (stopping_) break;
    }
    // drain_inbox() also serves imports waiting for blocks: an idle engine re-checks their
    // deadlines at least every kIdleWait.
    drain_inbox();
    stalled = false;
    if (core_->has_work()) {
      try {
        stalled = core_->step().stalled;
      } catch (const std::exception& e) {
        // Backend errors come back as a Status and fail only their step; an exception here is
        // a bug or exhaustion inside the engine itself: fail what is in flight, keep serving.
        KVFLEET_LOG(kError) << config_.name << ": engine step failed: " << e.what();
        core_->finish_all(FinishReason::kError, e.what());
      }
    }
    settle();
  }
  drain_inbox();
  core_->finish_all(FinishReason::kAbort, "the engine stopped");
  settle();
}

void Engine::settle() {
  const EngineStats s = core_->stats();
  std::vector<kvstore::BlockHash> summary;
  const double t = core_->now();
  const bool refresh = last_summary_time_ < 0 || t - last_summary_time_ >= kPrefixSummarySeconds;
  if (refresh) {
    summary = core_->prefix_summary(kPrefixSummaryLimit);
    last_summary_time_ = t;
  }
  const std::int64_t settled = core_->take_finished() + settled_controls_;
  settled_controls_ = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    published_ = s;
    if (refresh) prefix_summary_ = std::move(summary);
    in_flight_ -= settled;
  }
  if (settled > 0) idle_cv_.notify_all();
}

}  // namespace kvfleet::worker
