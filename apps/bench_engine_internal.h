#pragma once
// Shared by `kvfleet bench engine`'s rows (bench_engine_command.cpp) and its hardware profile
// and check (bench_engine_profile.cpp).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvfleet::apps {

struct BenchEngineOptions;

namespace engine_bench {

// What times a run: wall time, or the calling thread's CPU time. The latter leaves out the time
// other processes hold the core (a shared or busy machine) and equals wall time for
// single-threaded work on an idle one; it cannot time work spread over several threads.
enum class TimeBase { kWall, kThreadCpu };

// Which run stands for a figure: the median, or the fastest (on a machine whose other cores
// are busy, memory bandwidth comes and goes; the fastest run is the least disturbed one).
enum class Statistic { kMedian, kMinimum };

struct Sampling {
  std::int64_t repeats = 5;
  TimeBase base = TimeBase::kWall;
  Statistic statistic = Statistic::kMedian;
};

// Times `repeats` runs of fn after one warm-up run and returns the chosen statistic. Work that
// takes seconds keeps its first run as a sample (one-off costs are noise at that length) and is
// run at most three times in all.
double time_seconds(const Sampling& sampling, const std::function<void()>& fn);

// Several timed jobs run interleaved: each round runs every job once, so that a disturbance
// that comes and goes (other processes' memory traffic, another build on the machine) spreads
// over all figures instead of skewing the few measured while it lasted. Each job is warmed up
// once and then timed as time_seconds() would (long jobs at most three times, the first run
// counting).
class InterleavedTimer {
 public:
  explicit InterleavedTimer(Sampling sampling) : sampling_(sampling) {}
  // Returns the job's index for seconds(). A primed job runs once untimed right before each
  // timed run (jobs under a second; longer ones amortise it): it is timed in the state an engine
  // repeating that step is in, its own data in the caches and TLBs rather than the previous
  // job's (a step over a small KV after one over gigabytes otherwise pays for the page walks and
  // cache misses the other left behind).
  std::size_t add(std::string name, std::function<void()> fn, bool primed = false);
  // Runs every job; `progress` hears each round and each job's first (warm-up) run.
  void run(const std::function<void(const std::string&)>& progress);
  double seconds(std::size_t job) const;
  // The job's timed runs in the order they ran: run k of two jobs ran in the same round, so
  // their difference is taken in one state of the machine.
  const std::vector<double>& samples(std::size_t job) const { return jobs_[job].samples; }
  const std::string& name(std::size_t job) const { return jobs_[job].name; }
  std::size_t size() const { return jobs_.size(); }

 private:
  struct Job {
    std::string name;
    std::function<void()> fn;
    std::vector<double> samples;
    std::int64_t runs = 0;  // timed runs wanted
    bool primed = false;
  };
  Sampling sampling_;
  std::vector<Job> jobs_;
};

// Median wall time of `repeats` runs of fn, after one warm-up run.
double median_seconds(std::int64_t repeats, const std::function<void()>& fn);

// A pure read pass over n floats (one core streaming memory); returns their sum.
float read_sum(const float* p, std::size_t n);

// Memory baselines of one core over `bytes`: memcpy (bytes copied per second) and a read pass.
struct MemoryRates {
  double memcpy = 0;
  double read = 0;
};
Result<MemoryRates> measure_memory(std::size_t bytes, const Sampling& sampling);

}  // namespace engine_bench

// `--profile FILE`: measures this machine's kernels and writes a hardware spec with a
// calibration section. `--check-profile FILE`: the validation grid, predicted vs measured.
Status write_engine_profile(const BenchEngineOptions& o, std::ostream& out, std::ostream& err);
Status check_engine_profile(const BenchEngineOptions& o, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
