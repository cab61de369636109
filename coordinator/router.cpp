#include "coordinator/router.h"

#include <map>

#include "kvstore/prefix_hash.h"

namespace kvfleet::coordinator {
namespace {

bool usable(const WorkerInfo& w, const RouteRequest& r, std::string_view role) {
  if (w.role != role || w.model != r.model || w.suspect || r.exclude.count(w.id) != 0) return false;
  const auto len = static_cast<std::int64_t>(r.tokens->size());
  return w.max_model_len <= 0 || len + r.max_new_tokens <= w.max_model_len;
}

// Full prompt blocks already cached on `w` (walks the hash chain until the first miss).
std::int64_t overlap(
    const WorkerInfo& w, const std::vector<std::int32_t>& tokens,
    std::map<std::pair<std::uint64_t, std::int64_t>, std::vector<std::uint64_t>>& memo) {
  if (w.load.prefix_hashes.empty()) return 0;
  auto key = std::make_pair(w.prefix_hash_salt, w.block_tokens);
  auto it = memo.find(key);
  if (it == memo.end()) {
    it = memo.emplace(key, kvstore::full_block_hashes(w.prefix_hash_salt, tokens, w.block_tokens))
             .first;
  }
  std::int64_t n = 0;
  for (std::uint64_t h : it->second) {
    if (!w.load.prefix_hashes.contains(h)) break;
    ++n;
  }
  return n;
}

std::int64_t busy(const WorkerInfo& w) {
  return w.load.waiting + w.load.running + w.assigned;
}

// Best prefill-like worker: overlap first, then load, then id (deterministic).
const WorkerInfo* pick_prefill(
    const Registry& reg, const RouteRequest& r, std::string_view role, std::int64_t& best_overlap,
    std::map<std::pair<std::uint64_t, std::int64_t>, std::vector<std::uint64_t>>& memo) {
  const WorkerInfo* best = nullptr;
  best_overlap = -1;
  for (const auto& [id, w] : reg.workers()) {
    if (!usable(w, r, role)) continue;
    const std::int64_t o = overlap(w, *r.tokens, memo);
    if (!best || o > best_overlap || (o == best_overlap && busy(w) < busy(*best))) {
      best = &w;
      best_overlap = o;
    }
  }
  return best;
}

const WorkerInfo* pick_decode(const Registry& reg, const RouteRequest& r) {
  const WorkerInfo* best = nullptr;
  auto room = [&](const WorkerInfo& w) {
    const std::int64_t need =
        (static_cast<std::int64_t>(r.tokens->size()) + r.max_new_tokens + w.block_tokens - 1) /
        w.block_tokens;
    return w.load.free_blocks - w.assigned * need;
  };
  for (const auto& [id, w] : reg.workers()) {
    if (!usable(w, r, "decode")) continue;
    if (!best || room(w) > room(*best) ||
        (room(w) == room(*best) &&
         w.load.running + w.assigned < best->load.running + best->assigned)) {
      best = &w;
    }
  }
  return best;
}

}  // namespace

Result<ServeMode> parse_serve_mode(std::string_view s) {
  if (s == "disaggregated") return ServeMode::kDisaggregated;
  if (s == "colocated") return ServeMode::kColocated;
  if (s == "auto") return ServeMode::kAuto;
  return invalid_argument("--mode must be disaggregated, colocated or auto, not '" +
                          std::string(s) + "'");
}

std::string_view serve_mode_name(ServeMode m) {
  switch (m) {
    case ServeMode::kDisaggregated: return "disaggregated";
    case ServeMode::kColocated: return "colocated";
    case ServeMode::kAuto: return "auto";
  }
  return "?";
}

Route route(const Registry& reg, const RouteRequest& r, const RouterConfig& config) {
  Route out;
  std::map<std::pair<std::uint64_t, std::int64_t>, std::vector<std::uint64_t>> memo;
  const auto len = static_cast<std::int64_t>(r.tokens->size());
  std::int64_t ov = 0;

  auto colocated = [&]() -> bool {
    const WorkerInfo* w = pick_prefill(reg, r, "both", ov, memo);
    if (!w) return false;
    out.kind = Route::Kind::kColocated;
    out.worker = w->id;
    out.cached_blocks = ov;
    out.reason = "colocated";
    return true;
  };
  auto disaggregated = [&]() -> bool {
    const WorkerInfo* d = pick_decode(reg, r);
    if (!d) return false;
    if (config.mode == ServeMode::kAuto) {
      // Conditional disaggregation: prefill on the decode worker when that is cheap.
      const std::int64_t cached = overlap(*d, *r.tokens, memo) * d->block_tokens;
      const std::int64_t uncached = len - cached;
      if (uncached <= config.auto_local_prefill_tokens ||
          (len > 0 &&
           static_cast<double>(cached) / static_cast<double>(len) >= config.auto_cached_fraction)) {
        out.kind = Route::Kind::kColocated;
        out.worker = d->id;
        out.cached_blocks = cached / d->block_tokens;
        out.reason =
            "auto: prefill on the decode worker (" + std::to_string(uncached) + " uncached tokens)";
        return true;
      }
    }
    const WorkerInfo* p = pick_prefill(reg, r, "prefill", ov, memo);
    if (!p && config.mode == ServeMode::kAuto) {
      out.kind = Route::Kind::kColocated;  // no prefill pool: the decode worker does both
      out.worker = d->id;
      out.cached_blocks = overlap(*d, *r.tokens, memo);
      out.reason = "auto: no prefill worker, prefill on the decode worker";
      return true;
    }
    if (!p) return false;
    out.kind = Route::Kind::kDisaggregated;
    out.prefill = p->id;
    out.worker = d->id;
    out.cached_blocks = ov;
    out.reason = "disaggregated";
    return true;
  };

  switch (config.mode) {
    case ServeMode::kColocated:
      if (colocated()) return out;
      break;
    case ServeMode::kDisaggregated:
      if (disaggregated() || colocated()) return out;
      break;
    case ServeMode::kAuto:
      if (disaggregated() || colocated()) return out;
      break;
  }
  out = Route{};
  out.reason = "no " + std::string(config.mode == ServeMode::kColocated ? "colocated" : "usable") +
               " worker can serve model '" + r.model + "' with " + std::to_string(len) +
               " tokens + " + std::to_string(r.max_new_tokens) + " new";
  return out;
}

bool can_serve(const Registry& reg, const std::string& model, ServeMode mode) {
  bool both = false, prefill = false, decode = false;
  for (const auto& [id, w] : reg.workers()) {
    if (w.model != model || w.suspect) continue;
    both |= w.role == "both";
    prefill |= w.role == "prefill";
    decode |= w.role == "decode";
  }
  if (mode == ServeMode::kColocated) return both;
  return both || (decode && (prefill || mode == ServeMode::kAuto));
}

bool can_serve_any(const Registry& reg, ServeMode mode) {
  for (const std::string& m : reg.models()) {
    if (can_serve(reg, m, mode)) return true;
  }
  return false;
}

}  // namespace kvfleet::coordinator
