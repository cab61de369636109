#pragma once
// Faults a worker injects on purpose (`--inject-faults`), off by default: for tests, and for
// users who want to watch the defences work. Each fault has a probability per event:
//
//   corrupt-kv=P  On a worker that hands KV off (prefill), a fraction P of hand-offs advertise a
//                 checksum that does not match one block's bytes: for the reader, the same as KV
//                 damaged after the checksum was taken, which a second pull cannot repair (it
//                 recomputes). On a worker that pulls KV (decode), a fraction P of pulls get a
//                 byte of the received KV flipped after the pull, as a bad link or DMA would; a
//                 second pull repairs it.
//   corrupt-spill=P A fraction P of spills to the host KV store (preemptions that swap out,
//                 finished prompts offloaded for reuse) get a byte of one spilled block flipped
//                 after its checksum was taken, as failing host memory would. The restore that
//                 reads it finds the checksum wrong and the sequence is recomputed instead.
//   drop-notice=P On a worker that hands KV off (prefill), a fraction P of the notices that a
//                 hand-off is ready (the finish line with the KV descriptor) are lost: the
//                 worker sends nothing more on that stream, not even keep-alives, as a lost
//                 message or a hung peer would look. The coordinator's progress deadline runs the
//                 request again; the KV nobody takes is freed when its lease expires.
//
// Spec: comma-separated NAME=P with P in [0, 1], e.g. "corrupt-kv=0.3,corrupt-spill=0.5".
// Thread-safe.

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvfleet::worker {

class FaultInjection {
 public:
  FaultInjection() = default;
  // Empty spec: no faults.
  static Result<FaultInjection> parse(std::string_view spec, std::uint64_t seed);

  bool any() const { return corrupt_kv_ > 0 || corrupt_spill_ > 0 || drop_notice_ > 0; }
  double corrupt_kv() const { return corrupt_kv_; }
  double corrupt_spill() const { return corrupt_spill_; }
  // One draw for one event: true with the fault's probability.
  bool draw_corrupt_kv() { return draw(corrupt_kv_); }
  bool draw_corrupt_spill() { return draw(corrupt_spill_); }
  bool draw_drop_notice() { return draw(drop_notice_); }
  // A uniform number in [0, n), for choosing what to damage.
  std::uint64_t pick(std::uint64_t n);
  std::string describe() const;

  FaultInjection(const FaultInjection& o)
      : corrupt_kv_(o.corrupt_kv_),
        corrupt_spill_(o.corrupt_spill_),
        drop_notice_(o.drop_notice_),
        rng_(o.rng_) {}
  FaultInjection& operator=(const FaultInjection& o) {
    corrupt_kv_ = o.corrupt_kv_;
    corrupt_spill_ = o.corrupt_spill_;
    drop_notice_ = o.drop_notice_;
    rng_ = o.rng_;
    return *this;
  }

 private:
  bool draw(double p);

  double corrupt_kv_ = 0;
  double corrupt_spill_ = 0;
  double drop_notice_ = 0;
  std::mutex mu_;
  std::mt19937_64 rng_;
};

}  // namespace kvfleet::worker
