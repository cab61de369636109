#pragma once
// Clocks for the engine and the backends: the steady clock of a real process, or a virtual clock
// that a discrete-event simulation advances. One interface, so the production engine runs
// unchanged in real time (cpu, cuda, sim in real time) and in virtual time (`kvfleet simulate`).
//
// Contract: now() never decreases. sleep_for(s) returns once now() has advanced by at least s:
// the steady clock sleeps the calling thread; a virtual clock just moves its time forward (it is
// owned by one thread, the simulation's, and is not thread-safe).

#include <memory>

namespace kvfleet {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual double now() const = 0;              // seconds, from an arbitrary origin
  virtual void sleep_for(double seconds) = 0;  // <= 0: returns at once
  virtual bool is_virtual() const = 0;
};

// The process's steady clock (shared; thread-safe).
std::shared_ptr<Clock> steady_clock();

class VirtualClock final : public Clock {
 public:
  explicit VirtualClock(double start = 0) : now_(start) {}
  double now() const override { return now_; }
  void sleep_for(double seconds) override {
    if (seconds > 0) now_ += seconds;
  }
  bool is_virtual() const override { return true; }
  // Moves time to t (never backwards: an earlier t is ignored).
  void advance_to(double t) {
    if (t > now_) now_ = t;
  }

 private:
  double now_;
};

}  // namespace kvfleet
