#include "perfmodel/link.h"

#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/config_file.h"
#include "common/units.h"

namespace kvfleet::perfmodel {
namespace {

using nlohmann::json;

struct BuiltinLink {
  std::string_view name;
  std::string_view bandwidth;
  std::string_view latency;
};

// Achievable one-direction rates and small-message latencies as commonly measured (nccl-tests,
// ib_write_bw/ib_write_lat, iperf), not raw signalling rates.
constexpr std::array kBuiltinLinks = {
    // A100 NVLink 3: 12 links x 25 GB/s per direction.
    BuiltinLink{"nvlink", "300GB/s", "3us"},
    // H100 NVLink 4: 18 links x 25 GB/s per direction.
    BuiltinLink{"nvlink4", "450GB/s", "3us"},
    // One NDR 400 Gb/s port (50 GB/s raw), ~45 GB/s with RDMA.
    BuiltinLink{"infiniband", "45GB/s", "5us"},
    // RDMA over 100 Gb/s Ethernet (12.5 GB/s raw).
    BuiltinLink{"roce", "11GB/s", "8us"},
    // TCP over 100 Gb/s Ethernet: kernel copies and one stream's limits.
    BuiltinLink{"ethernet-100g", "9GB/s", "30us"},
    // PCIe 4.0 x16 host <-> device copies (pinned), as the hardware specs' pcie_bandwidth.
    BuiltinLink{"pcie", "25GB/s", "10us"},
    // TCP over 10 Gb/s Ethernet.
    BuiltinLink{"tcp", "1.1GB/s", "50us"},
};

}  // namespace

Result<LinkSpec> parse_link(const json& object, const std::string& where) {
  if (!object.is_object()) return invalid_argument(where + ": expected an object of fields");
  FieldReader f(object, where);
  KVFLEET_RETURN_IF_ERROR(f.only_keys({"name", "bandwidth", "latency"}));
  LinkSpec link;
  KVFLEET_ASSIGN_OR_RETURN(link.name, f.string_or("name", where));
  KVFLEET_ASSIGN_OR_RETURN(link.bandwidth, f.quantity("bandwidth", Quantity::kBytesPerSecond));
  if (!(link.bandwidth > 0)) {
    return invalid_argument(where + ": field 'bandwidth' must be positive");
  }
  KVFLEET_ASSIGN_OR_RETURN(link.latency, f.quantity("latency", Quantity::kSeconds));
  return link;
}

std::vector<std::string> builtin_link_names() {
  std::vector<std::string> names;
  for (const auto& l : kBuiltinLinks) names.emplace_back(l.name);
  return names;
}

Result<LinkSpec> load_link(std::string_view name_or_path) {
  for (const auto& l : kBuiltinLinks) {
    if (l.name == name_or_path) {
      const json spec = {{"name", l.name}, {"bandwidth", l.bandwidth}, {"latency", l.latency}};
      return parse_link(spec, "link '" + std::string(l.name) + "'");
    }
  }
  std::error_code ec;
  if (name_or_path.empty() || !std::filesystem::exists(std::filesystem::path(name_or_path), ec)) {
    std::string known;
    for (const auto& n : builtin_link_names()) known += (known.empty() ? "" : ", ") + n;
    return not_found("unknown link '" + std::string(name_or_path) +
                     "': not a preset and no such file (presets: " + known + ")");
  }
  const std::string path(name_or_path);
  KVFLEET_ASSIGN_OR_RETURN(json spec, load_config_file(path));
  if (spec.is_object() && !spec.contains("name")) spec["name"] = path;
  return parse_link(spec, "link file '" + path + "'");
}

}  // namespace kvfleet::perfmodel
