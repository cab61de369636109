#include "worker/engine_core.h"

#include <algorithm>
#include <cmath>

#include "common/log.h"
#include "kvstore/prefix_hash.h"
#include "worker/sampler.h"

namespace kvfleet::worker {
namespace {

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

Result<std::unique_ptr<EngineCore>> EngineCore::create(const EngineConfig& config,
                                                       std::unique_ptr<EngineBackend> backend) {
  if (!backend) return invalid_argument("engine: no backend");
  if (config.scheduler.max_batch_tokens < 1 || config.scheduler.max_running < 1) {
    return invalid_argument("engine: max batch tokens and max running sequences must be >= 1");
  }
  if (backend->num_blocks() < 1) return invalid_argument("engine: the backend has no KV blocks");
  std::unique_ptr<kvstore::HostKvIndex> host;
  if (config.host_kv_bytes > 0) {
    const std::size_t bb = backend->kv_layout().block_bytes();
    const std::size_t blocks = config.host_kv_bytes / bb;
    if (blocks > static_cast<std::size_t>(INT32_MAX)) {
      return invalid_argument("host KV store: too many blocks");
    }
    kvstore::HostKvIndexConfig hc;
    hc.capacity_blocks = static_cast<std::int32_t>(blocks);
    hc.block_bytes = bb;
    KVFLEET_ASSIGN_OR_RETURN(host, kvstore::HostKvIndex::create(hc));
    KVFLEET_RETURN_IF_ERROR(backend->allocate_host_kv(hc.capacity_blocks));
  }
  return std::unique_ptr<EngineCore>(new EngineCore(config, std::move(backend), std::move(host)));
}

EngineCore::EngineCore(const EngineConfig& config, std::unique_ptr<EngineBackend> backend,
                       std::unique_ptr<kvstore::HostKvIndex> host)
    : config_(config),
      clock_(config.clock ? config.clock : steady_clock()),
      backend_(std::move(backend)),
      host_(std::move(host)),
      device_(backend_->num_blocks()),
      salt_(layout_salt(backend_->spec(), backend_->kv_layout())),
      scheduler_(
          [&] {
            SchedulerConfig s = config.scheduler;
            s.hash_salt = salt_;
            return s;
          }(),
          backend_->kv_layout(), device_, host_.get()) {
  max_model_len_ =
      config.max_model_len > 0 ? config.max_model_len : backend_->spec().max_position_embeddings;
  if (max_model_len_ <= 0) max_model_len_ = std::int64_t{1} << 30;
  const KvMemory host_memory = host_ ? backend_->host_kv_memory() : KvMemory{};
  checksums_ = config.host_kv_checksums && host_memory.kind == KvMemory::Kind::kHost &&
               host_memory.base != nullptr;
}

Result<std::int64_t> EngineCore::spill_copy(std::span<const kvstore::BlockId> device,
                                            std::span<const kvstore::BlockId> host) {
  if (!checksums_) return backend_->copy_blocks(CopyDirection::kDeviceToHost, device, host);
  sums_.resize(host.size());
  KVFLEET_ASSIGN_OR_RETURN(
      std::int64_t runs,
      backend_->copy_blocks_checksummed(CopyDirection::kDeviceToHost, device, host, sums_));
  for (size_t i = 0; i < host.size(); ++i) host_->set_checksum(host[i], sums_[i]);
  if (!host.empty() && config_.faults.draw_corrupt_spill()) {
    const KvMemory mem = backend_->host_kv_memory();
    const kvstore::BlockId b = host[config_.faults.pick(host.size())];
    mem.base[static_cast<std::size_t>(b) * mem.block_stride +
             config_.faults.pick(backend_->kv_layout().block_bytes())] ^= std::byte{0x20};
    KVFLEET_LOG(kWarning) << config_.name << ": fault injected: host KV block " << b
                          << " damaged after its spill";
  }
  return runs;
}

Status EngineCore::restore_copy(const Restore& r) {
  if (!checksums_) {
    auto runs = backend_->copy_blocks(CopyDirection::kHostToDevice, r.device_blocks, r.host_blocks);
    if (!runs.is_ok()) return runs.status();
    host_->record_restore(static_cast<std::int64_t>(r.host_blocks.size()), *runs);
    return Status::ok();
  }
  sums_.resize(r.host_blocks.size());
  auto runs = backend_->copy_blocks_checksummed(CopyDirection::kHostToDevice, r.device_blocks,
                                                r.host_blocks, sums_);
  if (!runs.is_ok()) return runs.status();
  host_->record_restore(static_cast<std::int64_t>(r.host_blocks.size()), *runs);
  return kvstore::verify_host_checksums(*host_, r.host_blocks, sums_);
}

void EngineCore::recompute(Sequence* s) {
  scheduler_.remove(s);
  s->num_computed = 0;
  scheduler_.add(s);
  ++s->output.timings.recompute_preemptions;
  ++totals_.recompute_preemptions_total;
}

Status check_prompt_tokens(const std::vector<std::int32_t>& prompt, std::int64_t vocab_size) {
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= vocab_size) {
      return invalid_argument("prompt token " + std::to_string(prompt[i]) + " at position " +
                              std::to_string(i) + " is outside the vocabulary [0, " +
                              std::to_string(vocab_size) + ")");
    }
  }
  return Status();
}

Result<std::unique_ptr<Sequence>> EngineCore::make_sequence(Request request) const {
  const ModelSpec& spec = backend_->spec();
  const auto& prompt = request.prompt;
  const SamplingParams& p = request.params;
  if (prompt.empty()) return invalid_argument("prompt is empty");
  KVFLEET_RETURN_IF_ERROR(check_prompt_tokens(prompt, spec.vocab_size));
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
  if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) {
    return invalid_argument("presence_penalty must be in [-2, 2]");
  }
  if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) {
    return invalid_argument("frequency_penalty must be in [-2, 2]");
  }
  if (!(p.repetition_penalty > 0 && std::isfinite(p.repetition_penalty))) {
    return invalid_argument("repetition_penalty must be a finite number > 0");
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= spec.vocab_size) {
      return invalid_argument("logit_bias: token " + std::to_string(token) +
                              " is outside the vocabulary [0, " + std::to_string(spec.vocab_size) +
                              ")");
    }
    if (!(bias >= -100 && bias <= 100))
      return invalid_argument("logit_bias values must be in [-100, 100]");
  }
  if (p.logprobs) {
    if (*p.logprobs < 0 || *p.logprobs > 20) return invalid_argument("logprobs must be in [0, 20]");
    if (!backend_->capabilities().computes) {
      return invalid_argument("logprobs: the " + std::string(backend_->name()) +
                              " backend models tokens without logits, so it has no logprobs");
    }
  }
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
  if (p.max_tokens > max_model_len_ - len) {
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
  seq->on_logprobs = std::move(request.on_logprobs);
  seq->on_finish = std::move(request.on_finish);
  seq->output.id = seq->id;
  seq->output.timings.prompt_tokens = len;
  seq->arrival_time = clock_->now();
  return seq;
}

void EngineCore::add(std::unique_ptr<Sequence> seq) {
  seq->arrival = next_arrival_++;
  Sequence* raw = seq.get();
  sequences_.emplace(raw->id, std::move(seq));
  if (raw->import_reservation != 0) {
    auto it = reserved_.find(raw->import_reservation);
    const std::int64_t need = backend_->kv_layout().blocks_for_tokens(raw->num_computed);
    if (it == reserved_.end() || static_cast<std::int64_t>(it->second.size()) < need) {
      finish(raw, FinishReason::kError, "unknown or too small KV reservation");
      return;
    }
    raw->blocks = std::move(it->second);
    reserved_.erase(it);
    scheduler_.add_running(raw);
    return;
  }
  scheduler_.add(raw);
}

void EngineCore::cancel(RequestId id) {
  auto it = sequences_.find(id);
  if (it != sequences_.end()) finish(it->second.get(), FinishReason::kAbort);
}

Reservation EngineCore::grant(std::int64_t blocks) {
  Reservation res{next_reservation_++, {}};
  for (std::int64_t i = 0; i < blocks; ++i) res.blocks.push_back(*device_.allocate());
  reserved_[res.id] = res.blocks;
  return res;
}

void EngineCore::reserve(std::int64_t tokens, double deadline,
                         std::function<void(Result<Reservation>)> done,
                         std::optional<double> asked_at) {
  if (tokens < 1) {
    done(invalid_argument("a reservation needs at least one token"));
    return;
  }
  const std::int64_t need = backend_->kv_layout().blocks_for_tokens(tokens);
  if (need > device_.capacity()) {
    done(Status(StatusCode::kResourceExhausted, "the import needs " + std::to_string(need) +
                                                    " KV blocks; the engine has " +
                                                    std::to_string(device_.capacity())));
    return;
  }
  // First come, first served: a newer reservation passes neither an older waiting one nor a
  // sequence queued before it (a preempted one, a request not yet admitted).
  const double now = clock_->now();
  const double asked = asked_at.value_or(now);
  if (waiting_reservations_.empty() && !scheduler_.has_queued_before(asked) &&
      device_.num_available() >= need) {
    done(grant(need));
    return;
  }
  if (deadline <= now) {
    done(Status(StatusCode::kResourceExhausted,
                "the engine has " + std::to_string(device_.num_available()) +
                    " free KV blocks; the import needs " + std::to_string(need)));
    return;
  }
  waiting_reservations_.push_back({need, deadline, asked, std::move(done)});
  update_headroom();
}

void EngineCore::service_reservations() {
  const double now = clock_->now();
  while (!waiting_reservations_.empty()) {
    WaitingReservation& w = waiting_reservations_.front();
    if (!scheduler_.has_queued_before(w.asked) && device_.num_available() >= w.blocks) {
      auto done = std::move(w.done);
      const std::int64_t blocks = w.blocks;
      waiting_reservations_.pop_front();
      done(grant(blocks));
      continue;
    }
    break;
  }
  for (auto it = waiting_reservations_.begin(); it != waiting_reservations_.end();) {
    if (it->deadline > now) {
      ++it;
      continue;
    }
    auto done = std::move(it->done);
    const std::int64_t blocks = it->blocks;
    it = waiting_reservations_.erase(it);
    done(Status(StatusCode::kResourceExhausted,
                "no " + std::to_string(blocks) +
                    " free KV blocks for the import before its deadline (" +
                    std::to_string(device_.num_available()) + " free)"));
  }
  update_headroom();
}

std::optional<double> EngineCore::next_reservation_deadline() const {
  std::optional<double> d;
  for (const auto& w : waiting_reservations_) d = d ? std::min(*d, w.deadline) : w.deadline;
  return d;
}

void EngineCore::update_headroom() {
  std::int64_t blocks = 0;
  for (const auto& w : waiting_reservations_) blocks += w.blocks;
  scheduler_.set_admission_headroom(
      blocks, waiting_reservations_.empty() ? 0 : waiting_reservations_.front().asked);
}

void EngineCore::cancel_reservation(std::uint64_t id) {
  auto it = reserved_.find(id);
  if (it == reserved_.end()) return;
  for (kvstore::BlockId b : it->second) device_.release(b);
  reserved_.erase(it);
}

void EngineCore::release_held(RequestId id) {
  auto it = held_.find(id);
  if (it == held_.end()) return;
  for (kvstore::BlockId b : it->second) device_.release(b);
  held_.erase(it);
}

void EngineCore::finish_all(FinishReason reason, const std::string& why) {
  while (!waiting_reservations_.empty()) {
    auto done = std::move(waiting_reservations_.front().done);
    waiting_reservations_.pop_front();
    done(Status(StatusCode::kFailedPrecondition, why));
  }
  update_headroom();
  std::vector<Sequence*> all;
  for (auto& [id, s] : sequences_) all.push_back(s.get());
  for (Sequence* s : all) finish(s, reason, why);
}

std::int64_t EngineCore::take_finished() {
  const std::int64_t n = finished_;
  finished_ = 0;
  return n;
}

void EngineCore::swap_out(SwapOut& out, StepReport& report) {
  Sequence* s = out.seq;
  const std::int64_t bt = backend_->kv_layout().block_tokens;
  const auto block_bytes = static_cast<std::int64_t>(backend_->kv_layout().block_bytes());
  const double t0 = clock_->now();
  auto ids = host_->allocate(out.device_blocks.size());
  Status st = ids.status();
  if (ids.is_ok()) {
    auto runs = spill_copy(out.device_blocks, *ids);
    if (runs.is_ok()) {
      host_->record_spill(static_cast<std::int64_t>(ids->size()), *runs);
    } else {
      st = runs.status();
      host_->release(*ids);
    }
  }
  if (!st.is_ok()) {
    // The host store filled up after planning, or the copy failed: recompute instead.
    KVFLEET_LOG(kWarning) << config_.name << ": swap-out of request " << s->id << " failed ("
                          << st.message() << "); it will be recomputed";
    recompute(s);
    return;
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
  t.swap_out_seconds += clock_->now() - t0;
  t.swap_out_bytes += static_cast<std::int64_t>(out.device_blocks.size()) * block_bytes;
  ++totals_.swap_outs_total;
  ++report.swap_outs;
}

StepReport EngineCore::step() {
  service_reservations();  // imports waiting for blocks go before new admissions
  StepReport report;
  std::int64_t host_available = 0;
  if (host_) {
    const auto hs = host_->stats();
    host_available = hs.free_blocks + hs.cached_blocks;
  }
  StepPlan plan = scheduler_.schedule(host_available);
  const double start = clock_->now();
  report.start = start;
  if (plan.empty() && plan.recomputed.empty()) {
    report.stalled = true;
    return report;
  }
  const auto block_bytes = static_cast<std::int64_t>(backend_->kv_layout().block_bytes());

  // 1. Context switch out: copy preempted sequences' blocks to the host store.
  for (SwapOut& out : plan.swap_outs) swap_out(out, report);
  for (Sequence* s : plan.recomputed) {
    ++s->output.timings.recompute_preemptions;
    ++totals_.recompute_preemptions_total;
  }

  // 2. Context switch in, and host prefix hits: copy host blocks back to device blocks.
  std::vector<Sequence*> failed, corrupt;
  for (Restore& r : plan.restores) {
    const double t0 = clock_->now();
    Status st = host_->check_held(r.host_blocks);
    if (st.is_ok()) st = restore_copy(r);
    // Copies are ordered before any later copy into these host blocks (backend.h): releasing
    // them now cannot let a later spill overwrite them before this restore read them.
    host_->release(r.host_blocks);
    if (st.code() == StatusCode::kDataLoss) {
      // Host memory that does not hold what was spilled never reaches a client: the bad blocks
      // are out of the index (and freed), the sequence is computed again from its tokens.
      KVFLEET_LOG(kWarning) << config_.name << ": restoring KV of request " << r.seq->id << ": "
                            << st.message() << "; it will be recomputed";
      corrupt.push_back(r.seq);
      continue;
    }
    if (!st.is_ok()) {
      KVFLEET_LOG(kWarning) << config_.name << ": restoring KV of request " << r.seq->id
                            << " failed: " << st.message();
      failed.push_back(r.seq);
      continue;
    }
    if (r.resume) {
      auto& t = r.seq->output.timings;
      ++t.swap_in_count;
      t.swap_in_seconds += clock_->now() - t0;
      t.swap_in_bytes += static_cast<std::int64_t>(r.device_blocks.size()) * block_bytes;
      ++totals_.swap_ins_total;
      ++report.swap_ins;
    }
  }

  // 3. The backend's step over every scheduled chunk.
  batch_.clear();
  std::vector<ScheduledChunk> ran;
  for (const ScheduledChunk& c : plan.chunks) {
    Sequence* s = c.seq;
    if (std::find(failed.begin(), failed.end(), s) != failed.end() ||
        std::find(corrupt.begin(), corrupt.end(), s) != corrupt.end()) {
      continue;
    }
    if (s->first_scheduled_time < 0) {
      s->first_scheduled_time = start;
      s->output.timings.queue_seconds = start - s->arrival_time;
    }
    const bool completes =
        s->num_computed + c.num_tokens == static_cast<std::int64_t>(s->tokens.size());
    StepSequence ss;
    ss.chunk = {std::span(s->tokens).subspan(static_cast<size_t>(s->num_computed),
                                             static_cast<size_t>(c.num_tokens)),
                s->num_computed, s->blocks, completes ? LogitsWanted::kLast : LogitsWanted::kNone};
    ss.sampling = &s->params;
    ss.sample_seed = s->sample_seed;
    ss.sample_index = s->params.sample_offset + static_cast<std::int64_t>(s->output.tokens.size());
    batch_.push_back(ss);
    ran.push_back(c);
  }
  Status stepped;
  const double f0 = clock_->now();
  if (!batch_.empty()) stepped = backend_->step(batch_, output_);
  const double f1 = clock_->now();
  report.forward_seconds = f1 - f0;
  last_step_seconds_ = report.forward_seconds;

  if (!stepped.is_ok()) {
    // A failed step fails the requests in it, never the engine: their KV may be half written,
    // and finishing them frees their blocks.
    KVFLEET_LOG(kError) << config_.name << ": step failed: " << stepped.message();
    ++totals_.failed_steps_total;
    for (const ScheduledChunk& c : ran) {
      if (sequences_.count(c.seq->id) != 0) {
        finish(c.seq, FinishReason::kError, "engine step failed: " + stepped.message());
        ++report.failed;
      }
    }
    ran.clear();
  }

  // 4. Advance, publish full blocks, sample, finish.
  for (const ScheduledChunk& c : ran) {
    const bool decode = c.seq->num_computed >= c.seq->prompt_len && c.num_tokens == 1;
    if (decode) {
      ++report.decode_sequences;
    } else {
      report.prefill_tokens += c.num_tokens;
    }
  }
  const std::int64_t vocab = backend_->spec().vocab_size;
  const bool logits = output_.kind == StepOutput::Kind::kLogits;
  std::int64_t row = 0;
  for (size_t i = 0; i < ran.size(); ++i) {
    Sequence* s = ran[i].seq;
    const std::int64_t before = s->num_computed;
    totals_.prompt_tokens_total +=
        std::max<std::int64_t>(0, std::min(s->prompt_len, before + ran[i].num_tokens) - before);
    s->num_computed += ran[i].num_tokens;
    scheduler_.publish_full_blocks(s);
    if (batch_[i].chunk.logits != LogitsWanted::kLast) continue;
    std::int32_t token = 0;
    if (logits) {
      KVFLEET_CHECK(static_cast<std::int64_t>(output_.logits.size()) >= (row + 1) * vocab,
                    "the backend returned too few logits rows");
      const float* raw = output_.logits.data() + row * vocab;
      const float* use = raw;
      if (needs_processing(s->params)) {
        processed_.assign(raw, raw + vocab);
        process_logits(processed_.data(), vocab, s->params, s->tokens, s->prompt_len);
        use = processed_.data();
      }
      token = sample_token(use, vocab, s->params,
                           sample_uniform(s->sample_seed, batch_[i].sample_index));
      if (s->params.logprobs && s->on_logprobs) {
        s->on_logprobs(s->id, compute_logprobs(raw, vocab, token, *s->params.logprobs));
      }
    } else {
      KVFLEET_CHECK(static_cast<std::int64_t>(output_.tokens.size()) > row,
                    "the backend returned too few tokens");
      token = output_.tokens[static_cast<size_t>(row)];
    }
    ++row;
    append_token(s, token, f1, report.forward_seconds);
  }
  for (Sequence* s : failed) {
    if (sequences_.count(s->id) != 0) {
      finish(s, FinishReason::kError, "restoring KV from host memory failed");
    }
  }
  for (Sequence* s : corrupt) {
    if (sequences_.count(s->id) != 0) recompute(s);
  }
  ++totals_.steps;
  report.seconds = clock_->now() - start;
  if (config_.on_step && !batch_.empty()) config_.on_step(report);
  return report;
}

void EngineCore::append_token(Sequence* s, std::int32_t token, double t, double step_seconds) {
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

void EngineCore::offload(Sequence* s) {
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
  auto ids = host_->allocate(device.size());
  if (!ids.is_ok()) return;  // a full host store just does not cache this prefix
  auto runs = spill_copy(device, *ids);
  if (runs.is_ok()) {
    host_->record_spill(static_cast<std::int64_t>(ids->size()), *runs);
    for (size_t i = 0; i < ids->size(); ++i) host_->publish((*ids)[i], hashes[i]);
  }
  host_->release(*ids);
}

void EngineCore::finish(Sequence* s, FinishReason reason, std::string error) {
  const bool normal = reason == FinishReason::kStop || reason == FinishReason::kLength;
  if (normal) offload(s);
  if (normal && s->hold_kv && s->num_computed > 0) {
    const std::int64_t keep =
        std::min<std::int64_t>(backend_->kv_layout().blocks_for_tokens(s->num_computed),
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
  // Keep the sequence alive through its callback, then forget it.
  auto node = sequences_.extract(s->id);
  if (s->on_finish) s->on_finish(s->output);
  ++finished_;
}

EngineStats EngineCore::stats() const {
  EngineStats s = totals_;
  s.running = scheduler_.num_running();
  s.waiting = scheduler_.num_waiting();
  s.swapped = scheduler_.num_swapped();
  s.device_blocks_total = device_.capacity();
  s.device_blocks_used = device_.num_used();
  s.device_blocks_cached = device_.num_cached();
  if (host_) s.host = host_->stats();
  s.last_step_seconds = last_step_seconds_;
  s.prefix_hash_salt = salt_;
  for (const auto& [id, blocks] : held_) s.held_blocks += static_cast<std::int64_t>(blocks.size());
  for (const auto& [id, blocks] : reserved_) {
    s.reserved_blocks += static_cast<std::int64_t>(blocks.size());
  }
  s.waiting_reservations = static_cast<std::int64_t>(waiting_reservations_.size());
  return s;
}

std::vector<kvstore::BlockHash> EngineCore::prefix_summary(std::size_t limit) const {
  if (!config_.scheduler.prefix_caching) return {};
  return device_.indexed_hashes(limit);
}

}  // namespace kvfleet::worker
