#pragma once
// LinkSpec: a link that moves KV between devices or hosts (prefill -> decode hand-offs, TP
// all-reduces across nodes), as a simulator prices a transfer: a fixed latency plus bytes over a
// bandwidth. Built-in presets, or a JSON/YAML file:
//
//   name: my-fabric
//   bandwidth: 45GB/s    # achievable, one direction
//   latency: 5us         # per transfer (a number is seconds)
//
// Preset figures are typical achievable rates, not the links' raw signalling rates.

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvfleet::perfmodel {

struct LinkSpec {
  std::string name;
  double bandwidth = 0;  // bytes/s, one direction, > 0
  double latency = 0;    // seconds per transfer, >= 0

  // One transfer of `bytes`: latency + bytes / bandwidth.
  double transfer_seconds(double bytes) const { return latency + bytes / bandwidth; }
};

// Reads the keys documented above; `where` labels errors. Unknown keys are errors.
Result<LinkSpec> parse_link(const nlohmann::json& object, const std::string& where);
// A preset name or a path to a JSON/YAML file; unknown names list the presets.
Result<LinkSpec> load_link(std::string_view name_or_path);
std::vector<std::string> builtin_link_names();

}  // namespace kvfleet::perfmodel
