#include "worker/fault_injection.h"

#include <charconv>
#include <cmath>

namespace kvfleet::worker {

Result<FaultInjection> FaultInjection::parse(std::string_view spec, std::uint64_t seed) {
  FaultInjection f;
  f.rng_.seed(seed);
  while (!spec.empty()) {
    const auto comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) {
      return invalid_argument(
          "--inject-faults: '" + std::string(item) +
          "' is not NAME=PROBABILITY (known: corrupt-kv, corrupt-spill, drop-notice)");
    }
    const std::string_view name = item.substr(0, eq), value = item.substr(eq + 1);
    double p = -1;
    const auto r = std::from_chars(value.data(), value.data() + value.size(), p);
    if (r.ec != std::errc() || r.ptr != value.data() + value.size() || !std::isfinite(p) || p < 0 ||
        p > 1) {
      return invalid_argument("--inject-faults: " + std::string(name) + "='" + std::string(value) +
                              "' is not a probability in [0, 1]");
    }
    if (name == "corrupt-kv") {
      f.corrupt_kv_ = p;
    } else if (name == "corrupt-spill") {
      f.corrupt_spill_ = p;
    } else if (name == "drop-notice") {
      f.drop_notice_ = p;
    } else {
      return invalid_argument("--inject-faults: unknown fault '" + std::string(name) +
                              "' (known: corrupt-kv, corrupt-spill, drop-notice)");
    }
  }
  return f;
}

bool FaultInjection::draw(double p) {
  if (p <= 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return std::uniform_real_distribution<double>(0, 1)(rng_) < p;
}

std::uint64_t FaultInjection::pick(std::uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  return n == 0 ? 0 : rng_() % n;
}

std::string FaultInjection::describe() const {
  return "corrupt-kv=" + std::to_string(corrupt_kv_) +
         ",corrupt-spill=" + std::to_string(corrupt_spill_) +
         ",drop-notice=" + std::to_string(drop_notice_);
}

}  // namespace kvfleet::worker
