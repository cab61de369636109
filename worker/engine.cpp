#include "worker/engine.h"

#include <algorithm>
#include <cmath>

#include "common/log.h"
#include "kvstore/prefix_hash.h"
#include "worker/sampler.h"

namespace kvfleet::worker {
namespace {

constexpr auto kIdleWait = std::chrono::milliseconds(100);  // re-checks stop while idle
constexpr double kPrefixSummarySeconds = 0.25;
constexpr std::size_t kPrefixSummaryLimit = 8192;

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::uint64_t layout_salt(const ModelSpec& spec, const kernels::KvLayout& layout) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : spec.name) h = (h ^ c) * 1099511628211ull;
  h = (h ^ static_cast<std::uint64_t>(layout.block_tokens)) * 1099511628211ull;
  h = (h ^ static_cast<std::uint64_t>(layout.dtype)) * 1099511628211ull;
  return h;
}

}  // namespace

std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "?";
}

Result<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config,
                                               std::unique_ptr<EngineBackend> backend) {
  if (!backend) return invalid_argument("engine: no backend");
  if (config.scheduler.max_batch_tokens < 1 || config.scheduler.max_running < 1) {
    return invalid_argument("engine: max batch tokens and max running sequences must be >= 1");
  }
  std::unique_ptr<kvstore::HostKvStore> host;
  if (config.host_kv_bytes > 0) {
    kvstore::HostKvStoreConfig hc;
    hc.capacity_bytes = config.host_kv_bytes;
    hc.block_bytes = backend->kv_layout().block_bytes();
    KVFLEET_ASSIGN_OR_RETURN(host, kvstore::HostKvStore::create(hc));
  }
  return std::unique_ptr<Engine>(new Engine(config, std::move(backend), std::move(host)));
}

Engine::Engine(const EngineConfig& config, std::unique_ptr<EngineBackend> backend,
               std::unique_ptr<kvstore::HostKvStore> host)
    : config_(config),
      clock_(config.clock ? config.clock : steady_seconds),
      backend_(std::move(backend)),
      host_(std::move(host)),
      device_(backend_->num_blocks()),
      scheduler_(
          [&] {
            SchedulerConfig s = config.scheduler;
            s.hash_salt = layout_salt(backend_->spec(), backend_->kv_layout());
            return s;
          }(),
          backend_->kv_layout(), device_, host_.get()) {
  max_model_len_ =
      config.max_model_len > 0 ? config.max_model_len : backend_->spec().max_position_embeddings;
  if (max_model_len_ <= 0) max_model_len_ = std::int64_t{1} << 30;
  published_.device_blocks_total = device_.capacity();
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
    auto seq = make_sequence(std::move(requests[i]));
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

Result<std::unique_ptr<Sequence>> Engine::make_sequence(Request request) {
  const ModelSpec& spec = backend_->spec();
  const auto& prompt = request.prompt;
  const SamplingParams& p = request.params;
  if (prompt.empty()) return invalid_argument("prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= spec.vocab_size) {
      return invalid_argument("prompt token " + std::to_string(prompt[i]) + " at position " +
                              std::to_string(i) + " is outside the vocabulary [0, " +
                              std::to_string(spec.vocab_size) + ")");
    }
  }
  if (p.max_tokens < 1) return invalid_argument("max_tokens must be at least 1");
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return invalid_argument("min_tokens must be in [0, max_tokens]");
  }
  if (!(p.temperature >= 0 && std::isfinite(p.temperature))) {
    return invalid_argument("temperature must be a finite number >= 0");
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) return invalid_argument("top_p must be in (0, 1]");
  if (p.top_k < 0) return invalid_argument("top_k must be >= 0");
  if (p.sample_offset < 0) return invalid_argument("sample_offset must be >= 0");
  const KvImport* import = request.kv_import ? &*request.kv_import : nullptr;
  const auto len = import ? import->prompt_len : static_cast<std::int64_t>(prompt.size());
  if (import) {
    const auto total = static_cast<std::int64_t>(prompt.size());
    if (import->prompt_len < 1 || import->prompt_len > total) {
      return invalid_argument("an imported request's prompt length must be in [1, tokens]");
    }
    if (import->computed_tokens < 1 || import->computed_tokens >= total) {
      return invalid_argument("an imported request must leave at least one token to compute");
    }
    if (total - import->prompt_len >= p.max_tokens) {
      return invalid_argument("an imported request has already generated max_tokens");
    }
    if (request.hold_kv) return invalid_argument("an imported request cannot hold its KV");
  }
  if (len >= max_model_len_) {
    return out_of_range("prompt of " + std::to_string(len) +
                        " tokens does not fit the model's context of " +
                        std::to_string(max_model_len_) + " tokens");
  }
  if (len + p.max_tokens > max_model_len_) {
    return out_of_range("prompt (" + std::to_string(len) + " tokens) + max_tokens (" +
                        std::to_string(p.max_tokens) + ") exceeds the model's context of " +
                        std::to_string(max_model_len_) + " tokens");
  }
  const std::int64_t blocks = backend_->kv_layout().blocks_for_tokens(len + p.max_tokens);
  if (blocks > backend_->num_blocks()) {
    return out_of_range("the request needs " + std::to_string(blocks) +
                        " KV blocks for its prompt and max_tokens; the engine has " +
                        std::to_string(backend_->num_blocks()));
  }

  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_.fetch_add(1);
  seq->tokens = prompt;
  seq->prompt_len = len;
  seq->hold_kv = request.hold_kv;
  if (import) {
    seq->import_reservation = import->reservation;
    seq->num_computed = import->computed_tokens;
    seq->output.tokens.assign(prompt.begin() + len, prompt.end());
  }
  seq->params = p;
  seq->sample_seed = p.seed ? *p.seed : unseeded_base_ ^ (0x9e3779b97f4a7c15ull * seq->id);
  seq->on_token = std::move(request.on_token);
  seq->on_finish = std::move(request.on_finish);
  seq->output.id = seq->id;
  seq->output.timings.prompt_tokens = len;
  seq->arrival_time = now();
  return seq;
}

void Engine::reserve(std::int64_t tokens, std::function<void(Result<Reservation>)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      reserves_.push_back({tokens, std::move(done)});
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
  finished_unsettled_ +=
      static_cast<std::int64_t>(reserves.size() + unreserves.size() + unholds.size());
  for (RequestId id : unholds) {
    auto it = held_.find(id);
    if (it == held_.end()) continue;
    for (kvstore::BlockId b : it->second) device_.release(b);
    held_.erase(it);
  }
  for (std::uint64_t id : unreserves) {
    auto it = reserved_.find(id);
    if (it == reserved_.end()) continue;
    for (kvstore::BlockId b : it->second) device_.release(b);
    reserved_.erase(it);
  }
  for (PendingReserve& r : reserves) {
    const std::int64_t need = backend_->kv_layout().blocks_for_tokens(r.tokens);
    if (r.tokens < 1 || device_.num_available() < need) {
      r.done(Status(StatusCode::kResourceExhausted,
                    "the engine has " + std::to_string(device_.num_available()) +
                        " free KV blocks; the import needs " + std::to_string(need)));
      continue;
    }
    Reservation res{next_reservation_++, {}};
    for (std::int64_t i = 0; i < need; ++i) res.blocks.push_back(*device_.allocate());
    reserved_[res.id] = res.blocks;
    r.done(std::move(res));
  }
  for (auto& seq : arrived) {
    seq->arrival = next_arrival_++;
    Sequence* raw = seq.get();
    if (raw->import_reservation != 0) {
      auto it = reserved_.find(raw->import_reservation);
      const std::int64_t need = backend_->kv_layout().blocks_for_tokens(raw->num_computed);
      if (it == reserved_.end() || static_cast<std::int64_t>(it->second.size()) < need) {
        sequences_.emplace(raw->id, std::move(seq));
        finish(raw, FinishReason::kError, "unknown or too small KV reservation");
        continue;
      }
      raw->blocks = std::move(it->second);
      reserved_.erase(it);
      sequences_.emplace(raw->id, std::move(seq));
      scheduler_.add_running(raw);
      continue;
    }
    sequences_.emplace(raw->id, std::move(seq));
    scheduler_.add(raw);
  }
  for (RequestId id : cancels) {
    auto it = sequences_.find(id);
    if (it != sequences_.end()) finish(it->second.get(), FinishReason::kAbort);
  }
}

void Engine::loop() {
  set_thread_name(config_.name);
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, kIdleWait, [&] {
        return stopping_ || !inbox_.empty() || !cancels_.empty() || !reserves_.empty() ||
               !unreserves_.empty() || !unholds_.empty() || !scheduler_.idle();
      });
      if (stopping_) break;
    }
    drain_inbox();
    if (scheduler_.idle()) {
      settle(0);
      continue;
    }
    double step_seconds = 0;
    try {
      step_seconds = step();
    } catch (const std::exception& e) {
      KVFLEET_LOG(kError) << "engine step failed: " << e.what();
      std::vector<Sequence*> all;
      for (auto& [id, s] : sequences_) all.push_back(s.get());
      for (Sequence* s : all) finish(s, FinishReason::kError, e.what());
    }
    settle(step_seconds);
  }
  drain_inbox();
  std::vector<Sequence*> all;
  for (auto& [id, s] : sequences_) all.push_back(s.get());
  for (Sequence* s : all) finish(s, FinishReason::kAbort, "the engine stopped");
  settle(0);
}

double Engine::step() {
  std::int64_t host_available = 0;
  if (host_) {
    const auto hs = host_->stats();
    host_available = hs.free_blocks + hs.cached_blocks;
  }
  StepPlan plan = scheduler_.schedule(host_available);
  const double start = now();
  const std::int64_t bt = backend_->kv_layout().block_tokens;
  const auto block_bytes = static_cast<std::int64_t>(backend_->kv_layout().block_bytes());

  // 1. Context switch out: copy preempted sequences' blocks to the host store.
  for (SwapOut& out : plan.swap_outs) {
    Sequence* s = out.seq;
    const double t0 = now();
    auto ids = backend_->swap_out(out.device_blocks, *host_);
    if (!ids.is_ok()) {
      // The host store filled up after planning: fall back to recomputation.
      KVFLEET_LOG(kWarning) << "swap-out of request " << s->id << " failed ("
                            << ids.status().message() << "); it will be recomputed";
      scheduler_.remove(s);
      s->num_computed = 0;
      scheduler_.add(s);
      ++s->output.timings.recompute_preemptions;
      ++totals_.recompute_preemptions_total;
      continue;
    }
    s->host_blocks = std::move(ids).value();
    const std::int64_t full =
        std::min<std::int64_t>({s->num_computed / bt, static_cast<std::int64_t>(s->hashes.size()),
                                static_cast<std::int64_t>(s->host_blocks.size())});
    if (config_.scheduler.prefix_caching) {
      for (std::int64_t i = 0; i < full; ++i) {
        host_->publish(s->host_blocks[static_cast<size_t>(i)], s->hashes[static_cast<size_t>(i)]);
      }
    }
    auto& t = s->output.timings;
    ++t.swap_out_count;
    t.swap_out_seconds += now() - t0;
    t.swap_out_bytes += static_cast<std::int64_t>(out.device_blocks.size()) * block_bytes;
    ++totals_.swap_outs_total;
  }
  for (Sequence* s : plan.recomputed) {
    ++s->output.timings.recompute_preemptions;
    ++totals_.recompute_preemptions_total;
  }

  // 2. Context switch in, and host prefix hits: copy host blocks back to device blocks.
  std::vector<Sequence*> failed;
  for (Restore& r : plan.restores) {
    const double t0 = now();
    Status st = backend_->swap_in(r.host_blocks, r.device_blocks, *host_);
    host_->release(r.host_blocks);
    if (!st.is_ok()) {
      failed.push_back(r.seq);
      continue;
    }
    if (r.resume) {
      auto& t = r.seq->output.timings;
      ++t.swap_in_count;
      t.swap_in_seconds += now() - t0;
      t.swap_in_bytes += static_cast<std::int64_t>(r.device_blocks.size()) * block_bytes;
      ++totals_.swap_ins_total;
    }
  }

  // 3. The forward pass over every scheduled chunk.
  std::vector<SeqChunk> chunks;
  std::vector<ScheduledChunk> ran;
  for (const ScheduledChunk& c : plan.chunks) {
    Sequence* s = c.seq;
    if (std::find(failed.begin(), failed.end(), s) != failed.end()) continue;
    if (s->first_scheduled_time < 0) {
      s->first_scheduled_time = start;
      s->output.timings.queue_seconds = start - s->arrival_time;
    }
    const bool completes =
        s->num_computed + c.num_tokens == static_cast<std::int64_t>(s->tokens.size());
    chunks.push_back({std::span(s->tokens).subspan(static_cast<size_t>(s->num_computed),
                                                   static_cast<size_t>(c.num_tokens)),
                      s->num_computed, s->blocks,
                      completes ? LogitsWanted::kLast : LogitsWanted::kNone});
    ran.push_back(c);
  }
  logits_.clear();
  const double f0 = now();
  if (!chunks.empty()) backend_->forward(chunks, logits_);
  const double f1 = now();
  const double step_seconds = f1 - f0;

  // 4. Advance, publish full blocks, sample, finish.
  if (config_.on_step && !chunks.empty()) {
    StepReport report;
    report.forward_seconds = step_seconds;
    for (const ScheduledChunk& c : ran) {
      const bool decode = c.seq->num_computed >= c.seq->prompt_len && c.num_tokens == 1;
      if (decode) {
        ++report.decode_sequences;
      } else {
        report.prefill_tokens += c.num_tokens;
      }
    }
    config_.on_step(report);
  }
  const std::int64_t vocab = backend_->spec().vocab_size;
  std::int64_t row = 0;
  for (size_t i = 0; i < ran.size(); ++i) {
    Sequence* s = ran[i].seq;
    const std::int64_t before = s->num_computed;
    totals_.prompt_tokens_total +=
        std::max<std::int64_t>(0, std::min(s->prompt_len, before + ran[i].num_tokens) - before);
    s->num_computed += ran[i].num_tokens;
    scheduler_.publish_full_blocks(s);
    if (chunks[i].logits == LogitsWanted::kLast) {
      sample_and_append(s, logits_.data() + row * vocab, f1, step_seconds);
      ++row;
    }
  }
  for (Sequence* s : failed)
    finish(s, FinishReason::kError, "restoring KV from host memory failed");
  ++totals_.steps;
  return step_seconds;
}

void Engine::sample_and_append(Sequence* s, const float* logits, double t, double step_seconds) {
  const std::int64_t index = s->params.sample_offset +
                             static_cast<std::int64_t>(s->output.tokens.size());
  const std::int32_t token = sample_token(logits, backend_->spec().vocab_size, s->params,
                                          sample_uniform(s->sample_seed, index));
  s->tokens.push_back(token);
  s->output.tokens.push_back(token);
  ++totals_.generated_tokens_total;
  auto& timings = s->output.timings;
  if (s->last_token_time < 0) {
    timings.time_to_first_token = t - s->arrival_time;
    timings.prefill_seconds = t - s->first_scheduled_time;
  } else {
    timings.inter_token_seconds.push_back(t - s->last_token_time);
    timings.decode_step_seconds.push_back(step_seconds);
  }
  s->last_token_time = t;
  if (s->on_token) s->on_token(s->id, token);

  const SamplingParams& p = s->params;
  const std::int64_t generated = s->generated();
  const bool eos = token == static_cast<std::int32_t>(backend_->spec().eos_token_id.value_or(-1));
  const bool stop_id =
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  if (generated >= p.min_tokens && ((eos && !p.ignore_eos) || stop_id)) {
    finish(s, FinishReason::kStop);
  } else if (generated >= p.max_tokens ||
             static_cast<std::int64_t>(s->tokens.size()) >= max_model_len_) {
    finish(s, FinishReason::kLength);
  }
}

void Engine::offload(Sequence* s) {
  if (!host_ || !config_.offload_finished || !config_.scheduler.prefix_caching) return;
  const std::int64_t bt = backend_->kv_layout().block_tokens;
  const std::int64_t full =
      std::min<std::int64_t>({s->num_computed / bt, static_cast<std::int64_t>(s->hashes.size()),
                              static_cast<std::int64_t>(s->blocks.size())});
  std::vector<kvstore::BlockId> device;
  std::vector<kvstore::BlockHash> hashes;
  for (std::int64_t i = 0; i < full; ++i) {
    if (host_->contains(s->hashes[static_cast<size_t>(i)])) continue;
    device.push_back(s->blocks[static_cast<size_t>(i)]);
    hashes.push_back(s->hashes[static_cast<size_t>(i)]);
  }
  if (device.empty()) return;
  auto ids = backend_->swap_out(device, *host_);
  if (!ids.is_ok()) return;  // a full host store just does not cache this prefix
  for (size_t i = 0; i < ids->size(); ++i) host_->publish((*ids)[i], hashes[i]);
  host_->release(*ids);
}

void Engine::finish(Sequence* s, FinishReason reason, std::string error) {
  const bool normal = reason == FinishReason::kStop || reason == FinishReason::kLength;
  if (normal) offload(s);
  if (normal && s->hold_kv && s->num_computed > 0) {
    const std::int64_t keep = std::min<std::int64_t>(
        backend_->kv_layout().blocks_for_tokens(s->num_computed),
        static_cast<std::int64_t>(s->blocks.size()));
    auto& held = held_[s->id];
    for (std::int64_t i = 0; i < keep; ++i) {
      device_.retain(s->blocks[static_cast<size_t>(i)]);
      held.push_back(s->blocks[static_cast<size_t>(i)]);
    }
    s->output.held_blocks = held;
    s->output.held_tokens = s->num_computed;
  }
  scheduler_.remove(s);
  s->output.finish = reason;
  s->output.error = std::move(error);
  s->output.timings.generated_tokens = s->generated();
  totals_.prefix_hit_tokens_total +=
      s->output.timings.prefix_hit_tokens + s->output.timings.host_prefix_hit_tokens;
  ++totals_.finished_total;
  if (s->on_finish) s->on_finish(s->output);
  sequences_.erase(s->id);
  ++finished_unsettled_;
}

void Engine::settle(double step_seconds) {
  publish_stats(step_seconds);
  if (finished_unsettled_ == 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_ -= finished_unsettled_;
  }
  finished_unsettled_ = 0;
  idle_cv_.notify_all();
}

void Engine::publish_stats(double step_seconds) {
  EngineStats s = totals_;
  s.running = scheduler_.num_running();
  s.waiting = scheduler_.num_waiting();
  s.swapped = scheduler_.num_swapped();
  s.device_blocks_total = device_.capacity();
  s.device_blocks_used = device_.num_used();
  s.device_blocks_cached = device_.num_cached();
  if (host_) s.host = host_->stats();
  s.last_step_seconds = step_seconds;
  s.prefix_hash_salt = layout_salt(backend_->spec(), backend_->kv_layout());
  for (const auto& [id, blocks] : held_) s.held_blocks += static_cast<std::int64_t>(blocks.size());
  for (const auto& [id, blocks] : reserved_) {
    s.reserved_blocks += static_cast<std::int64_t>(blocks.size());
  }
  std::vector<kvstore::BlockHash> summary;
  const double t = now();
  const bool refresh = config_.scheduler.prefix_caching &&
                       (last_summary_time_ < 0 || t - last_summary_time_ >= kPrefixSummarySeconds);
  if (refresh) {
    summary = device_.indexed_hashes(kPrefixSummaryLimit);
    last_summary_time_ = t;
  }
  std::lock_guard<std::mutex> lock(mu_);
  published_ = s;
  if (refresh) prefix_summary_ = std::move(summary);
}

}  // namespace kvfleet::worker
