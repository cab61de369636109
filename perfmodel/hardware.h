#pragma once
// HardwareSpec: one accelerator as the analytical model sees it. All figures are per device and
// in base units (bytes, bytes/s, FLOP/s). Built-in names, or a JSON/YAML file with the same keys:
//
//   name: my-gpu
//   hbm_bytes: 80GiB               # device memory
//   hbm_bandwidth: 2039GB/s        # device memory bandwidth
//   flops: {bf16: 312T, fp16: 312T, fp8: 624T, int8: 624T, tf32: 156T, fp32: 19.5T}
//   pcie_bandwidth: 25GB/s         # host <-> device, one direction, achievable
//   nvlink_bandwidth: 300GB/s      # device <-> device, one direction (0: none)
//   host_memory_bytes: 256GiB      # host DDR available to this device for swapped KV
//
// Dense (non-sparse) tensor-core peaks; a dtype missing from `flops` has no native rate.

#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace kvfleet::perfmodel {

struct HardwareSpec {
  std::string name;
  double hbm_bytes = 0;
  double hbm_bandwidth = 0;
  std::map<DType, double> flops;  // dense peak per compute dtype
  double pcie_bandwidth = 0;
  double nvlink_bandwidth = 0;
  double host_memory_bytes = 0;

  // The peak for a compute dtype, or nullopt when the hardware has no native rate for it.
  std::optional<double> flops_for(DType t) const;
};

// Reads the keys documented above. `where` labels errors.
Result<HardwareSpec> parse_hardware(const nlohmann::json& object, const std::string& where);
// A built-in name or a path to a JSON/YAML file; unknown names list the built-in ones.
Result<HardwareSpec> load_hardware(std::string_view name_or_path);
std::vector<std::string> builtin_hardware_names();

}  // namespace kvfleet::perfmodel
