#pragma once
// Routing policy: where a request's prefill and decode run. Pure: a function of the registry,
// the request and the configuration.
//
//  - prefill pool (role prefill): most prompt blocks already in the worker's prefix cache, then
//    least load (waiting + running + in flight from this coordinator);
//  - decode pool (role decode): most free KV blocks net of what is in flight, then least running;
//  - colocated pool (role both): prefix overlap, then load, as for prefill;
//  - `auto`: with both pools present, a prompt whose uncached part is short (or mostly cached on
//    the chosen decode worker) is prefilled on that decode worker itself (conditional
//    disaggregation); otherwise it is disaggregated.
// Suspect workers and those in `exclude` are skipped.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "coordinator/registry.h"

namespace kvfleet::coordinator {

enum class ServeMode { kDisaggregated, kColocated, kAuto };
Result<ServeMode> parse_serve_mode(std::string_view s);
std::string_view serve_mode_name(ServeMode m);

struct RouterConfig {
  ServeMode mode = ServeMode::kAuto;
  std::int64_t auto_local_prefill_tokens = 256;  // auto: uncached prompt tokens up to this...
  double auto_cached_fraction = 0.5;             // ...or at least this fraction cached
};

struct Route {
  enum class Kind { kNone, kColocated, kDisaggregated } kind = Kind::kNone;
  std::string prefill;  // disaggregated: the prefill worker
  std::string worker;   // colocated: the worker; disaggregated: the decode worker
  std::int64_t cached_blocks = 0;  // prefix overlap on the worker that prefills
  std::string reason;   // for kNone: why; else how it was chosen
};

struct RouteRequest {
  std::string model;
  const std::vector<std::int32_t>* tokens = nullptr;  // the prompt (plus tokens generated so far)
  std::int64_t max_new_tokens = 0;
  std::set<std::string> exclude;
};

Route route(const Registry& registry, const RouteRequest& request, const RouterConfig& config);

// Whether any pool can serve `model` in this mode (readiness).
bool can_serve(const Registry& registry, const std::string& model, ServeMode mode);
bool can_serve_any(const Registry& registry, ServeMode mode);

}  // namespace kvfleet::coordinator
