#pragma once
// What every backend shares: the table of transfers and their waits, the notification queue,
// statistics, region bookkeeping and request validation. Thread-safe.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>

#include "transfer/transfer.h"

namespace kvfleet::transfer {

class AgentBase : public Agent {
 public:
  explicit AgentBase(AgentConfig config);

  const std::string& name() const override { return config_.name; }
  TransferInfo poll(TransferId id) override;
  Status wait(TransferId id, std::chrono::milliseconds timeout) override;
  void release(TransferId id) override;
  std::vector<Notification> take_notifications() override;
  Result<Notification> wait_notification(std::chrono::milliseconds timeout) override;
  AgentStats stats() const override;

  std::uint64_t instance() const { return instance_; }

 protected:
  // A new pending transfer.
  TransferId start_transfer(std::int64_t operations, std::uint64_t bytes,
                            std::string transport = {});
  // Finishes a transfer (first call wins): OK -> done, cancelled -> cancelled, else failed.
  void finish_transfer(TransferId id, const Status& status);
  bool is_pending(TransferId id) const;
  void push_notification(Notification n);

  // Local regions.
  Result<Region> add_region(void* addr, std::size_t length, MemoryKind kind);
  Result<Region> find_region(std::uint64_t id) const;
  Status remove_region(std::uint64_t id);
  // Checks the request's ranges against both regions and the op against notifications.
  static Status validate(const TransferRequest& r, const Region& local);

  AgentConfig config_;
  const std::uint64_t instance_;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Bumped by every finish_transfer(): wait() spins on it briefly before blocking, so a
  // transfer that completes within microseconds costs neither side a futex sleep and wake-up.
  std::atomic<std::uint64_t> finished_count_{0};
  std::map<TransferId, TransferInfo> transfers_;
  TransferId next_transfer_ = 1;
  std::deque<Notification> notifications_;
  std::map<std::uint64_t, Region> regions_;
  std::uint64_t next_region_ = 1;
  AgentStats stats_;
};

}  // namespace kvfleet::transfer
