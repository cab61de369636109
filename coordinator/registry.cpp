#include "coordinator/registry.h"

#include <algorithm>
#include <set>

namespace kvfleet::coordinator {

PrefixHashes::PrefixHashes(const std::vector<std::uint64_t>& hashes) {
  auto t = std::make_shared<Table>();
  std::size_t capacity = 16;
  while (capacity < 2 * hashes.size()) capacity *= 2;  // load factor <= 1/2
  t->slots.assign(capacity, 0);
  const std::size_t mask = capacity - 1;
  for (std::uint64_t h : hashes) {
    if (h == 0) {
      t->count += t->has_zero ? 0 : 1;
      t->has_zero = true;
      continue;
    }
    std::size_t i = static_cast<std::size_t>(h) & mask;
    while (t->slots[i] != 0 && t->slots[i] != h) i = (i + 1) & mask;
    if (t->slots[i] == 0) {
      t->slots[i] = h;
      ++t->count;
    }
  }
  table_ = std::move(t);
}

bool PrefixHashes::contains(std::uint64_t hash) const {
  if (!table_) return false;
  if (hash == 0) return table_->has_zero;
  const std::size_t mask = table_->slots.size() - 1;
  for (std::size_t i = static_cast<std::size_t>(hash) & mask;; i = (i + 1) & mask) {
    if (table_->slots[i] == hash) return true;
    if (table_->slots[i] == 0) return false;
  }
}

void PrefixHashes::insert(std::uint64_t hash) {
  std::vector<std::uint64_t> all;
  if (table_) {
    for (std::uint64_t h : table_->slots) {
      if (h != 0) all.push_back(h);
    }
    if (table_->has_zero) all.push_back(0);
  }
  all.push_back(hash);
  *this = PrefixHashes(all);
}

Status Registry::add(WorkerInfo info, double now) {
  if (info.id.empty()) return invalid_argument("worker_id is empty");
  if (info.role != "prefill" && info.role != "decode" && info.role != "both") {
    return invalid_argument("role must be prefill, decode or both, not '" + info.role + "'");
  }
  if (info.model.empty() || info.url.empty()) return invalid_argument("model and url are required");
  if (info.block_tokens < 1 || info.kv_blocks < 1 || info.block_bytes < 1) {
    return invalid_argument("kv_blocks, block_tokens and block_bytes must be >= 1");
  }
  // A live worker's id is its own: another address claiming it is refused (a restarted worker
  // takes its id back once the old lease ran out, or at once from the same address).
  if (auto it = workers_.find(info.id);
      it != workers_.end() && it->second.url != info.url && it->second.lease_expiry > now) {
    return Status(StatusCode::kAlreadyExists,
                  "worker id '" + info.id + "' belongs to a live worker at " + it->second.url);
  }
  info.lease_expiry = now + lease_seconds_;
  info.registered_at = now;
  info.assigned = 0;
  info.suspect = false;
  workers_[info.id] = std::move(info);
  return Status();
}

Status Registry::check_model_agreement(const WorkerInfo& info, double now) const {
  // Workers of one model agree on its tokenizer and context: a registration that would change
  // them for the requests of every user is refused while other workers of the model serve.
  for (const auto& [id, w] : workers_) {
    if (id == info.id || w.model != info.model || w.lease_expiry <= now) continue;
    std::string diff;
    auto check = [&](const char* what, std::int64_t have, std::int64_t got) {
      if (have != got && diff.empty()) {
        diff = std::string(what) + " " + std::to_string(got) + " where its workers have " +
               std::to_string(have);
      }
    };
    check("vocab_size", w.vocab_size, info.vocab_size);
    check("bos_token_id", w.bos_token_id, info.bos_token_id);
    check("eos_token_id", w.eos_token_id, info.eos_token_id);
    check("max_model_len", w.max_model_len, info.max_model_len);
    if (!diff.empty()) {
      return Status(StatusCode::kFailedPrecondition, "model '" + info.model +
                                                         "' is served by worker " + id +
                                                         "; this registration has " + diff);
    }
  }
  return Status();
}

bool Registry::heartbeat(const std::string& id, WorkerLoad load, double now) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return false;
  it->second.load = std::move(load);
  it->second.lease_expiry = now + lease_seconds_;
  it->second.suspect = false;
  return true;
}

bool Registry::remove(const std::string& id) {
  return workers_.erase(id) != 0;
}

std::vector<std::string> Registry::expire(double now) {
  std::vector<std::string> gone;
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second.lease_expiry <= now) {
      gone.push_back(it->first);
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

WorkerInfo* Registry::find(const std::string& id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::models() const {
  std::set<std::string> m;
  for (const auto& [id, w] : workers_) m.insert(w.model);
  return {m.begin(), m.end()};
}

std::int64_t Registry::max_model_len(const std::string& model) const {
  std::int64_t m = 0;
  for (const auto& [id, w] : workers_) {
    if (w.model == model && w.max_model_len > 0)
      m = m == 0 ? w.max_model_len : std::min(m, w.max_model_len);
  }
  return m;
}

void Registry::assign(const std::string& id) {
  if (WorkerInfo* w = find(id)) ++w->assigned;
}

void Registry::unassign(const std::string& id) {
  if (WorkerInfo* w = find(id); w && w->assigned > 0) --w->assigned;
}

}  // namespace kvfleet::coordinator
