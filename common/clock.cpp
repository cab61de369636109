#include "common/clock.h"

#include <chrono>
#include <thread>

namespace kvfleet {
namespace {

class SteadyClock final : public Clock {
 public:
  double now() const override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void sleep_for(double seconds) override {
    if (seconds <= 0) return;
    // sleep_until on the steady clock: a spurious early wake-up sleeps again.
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(seconds));
    while (std::chrono::steady_clock::now() < until) std::this_thread::sleep_until(until);
  }
  bool is_virtual() const override { return false; }
};

}  // namespace

std::shared_ptr<Clock> steady_clock() {
  static const std::shared_ptr<Clock> clock = std::make_shared<SteadyClock>();
  return clock;
}

}  // namespace kvfleet
