#include "transfer/agent_base.h"

namespace kvfleet::transfer {

AgentBase::AgentBase(AgentConfig config)
    : config_(std::move(config)),
      instance_(std::random_device{}() * 0x100000001ull ^ std::random_device{}()) {}

TransferId AgentBase::start_transfer(std::int64_t operations, std::uint64_t bytes,
                                     std::string transport) {
  std::lock_guard<std::mutex> lock(mu_);
  const TransferId id = next_transfer_++;
  TransferInfo info;
  info.operations = operations;
  info.bytes = bytes;
  info.transport = transport.empty() ? std::string(backend()) : std::move(transport);
  transfers_[id] = info;
  ++stats_.transfers_posted;
  stats_.operations += operations;
  return id;
}

void AgentBase::finish_transfer(TransferId id, const Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = transfers_.find(id);
    if (it == transfers_.end() || it->second.state != TransferState::kPending) return;
    if (status.is_ok()) {
      it->second.state = TransferState::kDone;
      ++stats_.transfers_done;
      stats_.bytes += it->second.bytes;
    } else {
      it->second.state = status.code() == StatusCode::kCancelled ? TransferState::kCancelled
                                                                 : TransferState::kFailed;
      it->second.error = status;
      ++stats_.transfers_failed;
    }
  }
  finished_count_.fetch_add(1, std::memory_order_release);
  cv_.notify_all();
}

bool AgentBase::is_pending(TransferId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = transfers_.find(id);
  return it != transfers_.end() && it->second.state == TransferState::kPending;
}

TransferInfo AgentBase::poll(TransferId id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = transfers_.find(id);
  if (it == transfers_.end()) {
    TransferInfo gone;
    gone.state = TransferState::kFailed;
    gone.error = not_found("unknown transfer " + std::to_string(id));
    return gone;
  }
  return it->second;
}

Status AgentBase::wait(TransferId id, std::chrono::milliseconds timeout) {
  // Spin for up to kSpin first: transfers often finish within tens of microseconds, less than a
  // sleep and wake-up costs on both threads. Only a completion (of any transfer) re-checks.
  constexpr auto kSpin = std::chrono::microseconds(50);
  const auto spin_until = std::chrono::steady_clock::now() + kSpin;
  std::uint64_t seen = finished_count_.load(std::memory_order_acquire);
  if (is_pending(id)) {
    while (std::chrono::steady_clock::now() < spin_until) {
      const std::uint64_t now_count = finished_count_.load(std::memory_order_acquire);
      if (now_count != seen) {
        seen = now_count;
        if (!is_pending(id)) break;
      }
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return not_found("unknown transfer " + std::to_string(id));
  const bool finished = cv_.wait_for(
      lock, timeout, [&] { return transfers_.at(id).state != TransferState::kPending; });
  if (!finished) {
    return Status(StatusCode::kDeadlineExceeded, "transfer " + std::to_string(id) +
                                                     " did not finish within " +
                                                     std::to_string(timeout.count()) + " ms");
  }
  const TransferInfo& info = transfers_.at(id);
  return info.state == TransferState::kDone ? Status::ok() : info.error;
}

void AgentBase::release(TransferId id) {
  if (is_pending(id)) (void)cancel(id);
  std::lock_guard<std::mutex> lock(mu_);
  transfers_.erase(id);
}

void AgentBase::push_notification(Notification n) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    notifications_.push_back(std::move(n));
  }
  cv_.notify_all();
}

std::vector<Notification> AgentBase::take_notifications() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Notification> out(notifications_.begin(), notifications_.end());
  notifications_.clear();
  return out;
}

Result<Notification> AgentBase::wait_notification(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !notifications_.empty(); })) {
    return Status(StatusCode::kDeadlineExceeded,
                  "no notification within " + std::to_string(timeout.count()) + " ms");
  }
  Notification n = std::move(notifications_.front());
  notifications_.pop_front();
  return n;
}

AgentStats AgentBase::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  AgentStats s = stats_;
  s.regions_registered = static_cast<std::int64_t>(regions_.size());
  return s;
}

Result<Region> AgentBase::add_region(void* addr, std::size_t length, MemoryKind kind) {
  if (addr == nullptr || length == 0) {
    return invalid_argument("register_memory: empty region");
  }
  std::lock_guard<std::mutex> lock(mu_);
  Region r{next_region_++, static_cast<std::byte*>(addr), length, kind};
  regions_[r.id] = r;
  return r;
}

Result<Region> AgentBase::find_region(std::uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = regions_.find(id);
  if (it == regions_.end()) return not_found("no registered local region " + std::to_string(id));
  return it->second;
}

Status AgentBase::remove_region(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (regions_.erase(id) == 0) return not_found("no registered local region " + std::to_string(id));
  return Status::ok();
}

Status AgentBase::validate(const TransferRequest& r, const Region& local) {
  if (r.ranges.empty()) return invalid_argument("transfer has no ranges");
  if (r.op == Op::kRead && !r.notification.empty()) {
    return invalid_argument("notifications travel with writes only");
  }
  for (const Range& g : r.ranges) {
    if (g.length == 0) return invalid_argument("transfer range of length 0");
    if (g.local_offset > local.length || g.length > local.length - g.local_offset) {
      return out_of_range("range [" + std::to_string(g.local_offset) + ", +" +
                          std::to_string(g.length) + ") is outside local region " +
                          std::to_string(local.id) + " of " + std::to_string(local.length) +
                          " bytes");
    }
    if (g.remote_offset > r.remote.length || g.length > r.remote.length - g.remote_offset) {
      return out_of_range("range [" + std::to_string(g.remote_offset) + ", +" +
                          std::to_string(g.length) + ") is outside remote region " +
                          std::to_string(r.remote.region) + " of " +
                          std::to_string(r.remote.length) + " bytes");
    }
  }
  return Status::ok();
}

}  // namespace kvfleet::transfer
