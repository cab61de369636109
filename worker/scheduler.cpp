#include "worker/scheduler.h"

#include <algorithm>

#include "common/check.h"
#include "kvstore/prefix_hash.h"

namespace kvfleet::worker {
namespace {

// Inserts keeping the container sorted by admission order.
template <typename Container>
void insert_by_arrival(Container& c, Sequence* s) {
  auto it = std::upper_bound(c.begin(), c.end(), s, [](const Sequence* a, const Sequence* b) {
    return a->arrival < b->arrival;
  });
  c.insert(it, s);
}

template <typename Container>
bool erase_from(Container& c, Sequence* s) {
  auto it = std::find(c.begin(), c.end(), s);
  if (it == c.end()) return false;
  c.erase(it);
  return true;
}

}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config, const kernels::KvLayout& layout,
                     kvstore::BlockPool& device, kvstore::HostKvIndex* host)
    : config_(config), layout_(layout), device_(device), host_(host) {}

void Scheduler::add(Sequence* seq) {
  seq->state = Sequence::State::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::add_running(Sequence* seq) {
  seq->state = Sequence::State::kRunning;
  insert_by_arrival(running_, seq);
}

void Scheduler::remove(Sequence* seq) {
  erase_from(running_, seq) || erase_from(waiting_, seq) || erase_from(swapped_, seq);
  release_device(seq);
  if (!seq->host_blocks.empty()) {
    host_->release(seq->host_blocks);
    seq->host_blocks.clear();
  }
  seq->state = Sequence::State::kFinished;
}

void Scheduler::release_device(Sequence* seq) {
  for (kvstore::BlockId b : seq->blocks) device_.release(b);
  seq->blocks.clear();
  seq->published_blocks = 0;
}

bool Scheduler::allocate_blocks(Sequence* seq, std::int64_t tokens, std::int64_t keep_free) {
  const std::int64_t need =
      layout_.blocks_for_tokens(tokens) - static_cast<std::int64_t>(seq->blocks.size());
  if (need <= 0) return true;
  if (device_.num_available() - keep_free < need) return false;
  for (std::int64_t i = 0; i < need; ++i) seq->blocks.push_back(*device_.allocate());
  return true;
}

void Scheduler::extend_hashes(Sequence* seq) {
  const std::int64_t bt = layout_.block_tokens;
  const std::int64_t full = static_cast<std::int64_t>(seq->tokens.size()) / bt;
  while (static_cast<std::int64_t>(seq->hashes.size()) < full) {
    const std::int64_t i = static_cast<std::int64_t>(seq->hashes.size());
    const kvstore::BlockHash parent =
        i == 0 ? kvstore::root_hash(config_.hash_salt) : seq->hashes.back();
    seq->hashes.push_back(kvstore::chain_hash(
        parent,
        std::span(seq->tokens).subspan(static_cast<size_t>(i * bt), static_cast<size_t>(bt))));
  }
}

void Scheduler::publish_full_blocks(Sequence* seq) {
  if (!config_.prefix_caching) return;
  extend_hashes(seq);
  const std::int64_t full = std::min<std::int64_t>(seq->num_computed / layout_.block_tokens,
                                                   static_cast<std::int64_t>(seq->blocks.size()));
  for (std::int64_t i = seq->published_blocks; i < full; ++i) {
    device_.set_hash(seq->blocks[static_cast<size_t>(i)], seq->hashes[static_cast<size_t>(i)]);
  }
  seq->published_blocks = std::max(seq->published_blocks, full);
}

void Scheduler::match_prefix(Sequence* seq, StepPlan& plan) {
  extend_hashes(seq);
  const std::int64_t bt = layout_.block_tokens;
  // At least one token must be computed to produce the next token's logits.
  const std::int64_t max_blocks = (static_cast<std::int64_t>(seq->tokens.size()) - 1) / bt;
  std::int64_t i = 0;
  while (i < max_blocks) {
    auto b = device_.lookup(seq->hashes[static_cast<size_t>(i)]);
    if (!b) break;
    device_.retain(*b);
    seq->blocks.push_back(*b);
    ++i;
  }
  const std::int64_t device_hits = i;
  seq->published_blocks = device_hits;
  Restore restore{seq, {}, {}, false};
  while (host_ != nullptr && i < max_blocks) {
    auto h = host_->lookup_and_retain(seq->hashes[static_cast<size_t>(i)]);
    if (!h) break;
    auto d = device_.allocate();
    if (!d) {
      host_->release(std::span(&*h, 1));
      break;
    }
    restore.host_blocks.push_back(*h);
    restore.device_blocks.push_back(*d);
    seq->blocks.push_back(*d);
    ++i;
  }
  seq->num_computed = i * bt;
  seq->output.timings.prefix_hit_tokens += device_hits * bt;
  seq->output.timings.host_prefix_hit_tokens += (i - device_hits) * bt;
  if (!restore.host_blocks.empty()) plan.restores.push_back(std::move(restore));
}

void Scheduler::preempt(Sequence* victim, StepPlan& plan, std::int64_t& host_available) {
  const std::int64_t keep = layout_.blocks_for_tokens(victim->num_computed);
  if (host_ != nullptr && keep > 0 && host_available >= keep) {
    SwapOut out{victim, std::vector<kvstore::BlockId>(victim->blocks.begin(),
                                                      victim->blocks.begin() + keep)};
    release_device(victim);  // the engine copies them out before anything reuses them
    host_available -= keep;
    victim->state = Sequence::State::kSwapped;
    insert_by_arrival(swapped_, victim);
    plan.swap_outs.push_back(std::move(out));
    return;
  }
  release_device(victim);
  victim->num_computed = 0;
  victim->state = Sequence::State::kWaiting;
  insert_by_arrival(waiting_, victim);
  plan.recomputed.push_back(victim);
}

StepPlan Scheduler::schedule(std::int64_t host_available) {
  StepPlan plan;
  std::int64_t budget = config_.max_batch_tokens;
  bool preempted = false;

  // 1. Running sequences, oldest first; preempt the newest when blocks run out.
  size_t i = 0;
  while (i < running_.size() && budget > 0) {
    Sequence* s = running_[i];
    const std::int64_t n = std::min(s->remaining_to_compute(), budget);
    KVFLEET_CHECK(n > 0, "a running sequence has nothing to compute");
    bool scheduled = true;
    while (!allocate_blocks(s, s->num_computed + n)) {
      preempted = true;
      if (running_.size() > i + 1) {
        Sequence* victim = running_.back();
        running_.pop_back();
        preempt(victim, plan, host_available);
      } else {
        running_.erase(running_.begin() + static_cast<long>(i));
        preempt(s, plan, host_available);
        scheduled = false;
        break;
      }
    }
    if (!scheduled) continue;
    plan.chunks.push_back({s, n});
    budget -= n;
    ++i;
  }
  if (preempted) return plan;

  // 2. Swapped sequences resume, oldest first, when all their blocks fit.
  while (!swapped_.empty() && budget > 0 &&
         static_cast<std::int64_t>(running_.size()) < config_.max_running) {
    Sequence* s = swapped_.front();
    const std::int64_t n = std::min(s->remaining_to_compute(), budget);
    const std::int64_t need = layout_.blocks_for_tokens(s->num_computed + n);
    if (device_.num_available() < need) break;
    swapped_.erase(swapped_.begin());
    Restore restore{s, std::move(s->host_blocks), {}, true};
    s->host_blocks.clear();
    for (size_t b = 0; b < restore.host_blocks.size(); ++b) {
      s->blocks.push_back(*device_.allocate());
      restore.device_blocks.push_back(s->blocks.back());
    }
    KVFLEET_CHECK(allocate_blocks(s, s->num_computed + n));
    s->state = Sequence::State::kRunning;
    insert_by_arrival(running_, s);
    plan.restores.push_back(std::move(restore));
    plan.chunks.push_back({s, n});
    budget -= n;
  }
  if (!swapped_.empty()) return plan;  // resumed sequences go before new ones

  // 3. Waiting sequences, in order, while their first chunk fits.
  while (!waiting_.empty() && budget > 0 &&
         static_cast<std::int64_t>(running_.size()) < config_.max_running) {
    Sequence* s = waiting_.front();
    const size_t restores_before = plan.restores.size();
    const auto timings_before = s->output.timings;
    const bool matched = config_.prefix_caching && s->num_computed == 0 && s->blocks.empty();
    if (matched) match_prefix(s, plan);
    const std::int64_t n = std::min(s->remaining_to_compute(), budget);
    const std::int64_t keep_free = s->arrival_time >= headroom_from_ ? headroom_ : 0;
    if (!allocate_blocks(s, s->num_computed + n, keep_free)) {
      // Undo the prefix match: nothing of this sequence runs this step. (A sequence that
      // arrived with imported KV keeps its blocks.)
      if (matched) {
        if (plan.restores.size() > restores_before) {
          host_->release(plan.restores.back().host_blocks);
          plan.restores.pop_back();
        }
        release_device(s);
        s->num_computed = 0;
        s->output.timings = timings_before;
      }
      break;
    }
    waiting_.pop_front();
    s->state = Sequence::State::kRunning;
    insert_by_arrival(running_, s);
    plan.chunks.push_back({s, n});
    budget -= n;
  }
  return plan;
}

bool Scheduler::has_queued_before(double t) const {
  for (const Sequence* s : swapped_) {
    if (s->arrival_time < t) return true;
  }
  for (const Sequence* s : waiting_) {
    if (s->arrival_time < t) return true;
  }
  return false;
}

}  // namespace kvfleet::worker
