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
//   calibration: {...}             # optional: fitted kernel efficiencies, see Calibration
//
// Dense (non-sparse) tensor-core peaks; a dtype missing from `flops` has no native rate.
// Unknown keys are errors (a misspelt optional key would otherwise be silently ignored).

#include <cstdint>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace kvfleet::perfmodel {

// One point of the GEMM efficiency table: the fraction of the compute dtype's peak FLOP/s that
// the linear layers reach when one step runs `tokens` tokens through them.
struct GemmEfficiency {
  std::int64_t tokens = 1;
  double efficiency = 1.0;
};

// One point of the KV read table: decode attention reads KV at this fraction of hbm_bandwidth
// when one step's decode tokens read `bytes` of KV in all (the footprint: beyond what the TLB
// covers, reads slow down).
struct KvReadEfficiency {
  double bytes = 0;
  double efficiency = 1.0;
};

// Where a calibration came from, so that a profile can be judged (and redone) later.
struct CalibrationProvenance {
  std::string cpu;              // the processor's model name (/proc/cpuinfo) or the device's
  std::int64_t threads = 0;     // BLAS threads the kernels ran with (0: not recorded)
  std::string date;             // when it was measured, ISO 8601 UTC
  std::string kvfleet_version;  // the kvfleet that measured it
  std::string command;          // the command line that measured it
  std::string model;            // the model whose kernel shapes were measured
};

// Kernel efficiencies fitted on a real machine (`kvfleet bench engine --profile`). With them the
// step model stops taking one roofline over a whole step and sums the step's kernel classes, each
// at its own measured rate (docs/PERFMODEL.md, "Calibrated step model"). Every factor has a
// neutral default, so a hand-written section may give only some.
struct Calibration {
  double step_overhead = 0;            // seconds per engine step, whatever it runs
  double token_overhead = 0;           // seconds per token of a step (norms, RoPE, activations)
  double attention_call_overhead = 0;  // seconds per decode sequence and layer of attention
  double weight_read_efficiency = 1;   // weights stream at hbm_bandwidth * this
  double kv_read_efficiency = 1;       // decode attention reads KV at hbm_bandwidth * this
  double prefill_attention_efficiency = 1;  // prefill attention FLOPs run at peak * this
  double swap_efficiency = 1;  // host <-> device KV copies run at pcie_bandwidth * this
  // By tokens per step, strictly increasing; empty means 1 everywhere.
  std::vector<GemmEfficiency> gemm_efficiency;
  // By a step's decode KV footprint, strictly increasing; empty: kv_read_efficiency everywhere.
  std::vector<KvReadEfficiency> kv_read_by_footprint;
  CalibrationProvenance provenance;

  // The table interpolated linearly in log(tokens) between its points and clamped beyond its
  // ends (1 when the table is empty). tokens >= 1.
  double gemm_efficiency_at(double tokens) const;
  // kv_read_by_footprint interpolated linearly in log(bytes), clamped beyond its ends;
  // kv_read_efficiency when the table is empty.
  double kv_read_efficiency_at(double bytes) const;
};

struct HardwareSpec {
  std::string name;
  double hbm_bytes = 0;
  double hbm_bandwidth = 0;
  std::map<DType, double> flops;  // dense peak per compute dtype
  double pcie_bandwidth = 0;
  double nvlink_bandwidth = 0;
  double host_memory_bytes = 0;
  std::optional<Calibration> calibration;  // set: the step model uses the calibrated form

  // The peak for a compute dtype, or nullopt when the hardware has no native rate for it.
  std::optional<double> flops_for(DType t) const;
};

// Reads the keys documented above. `where` labels errors.
Result<HardwareSpec> parse_hardware(const nlohmann::json& object, const std::string& where);
// The spec as the keys parse_hardware() reads (numbers in base units), calibration included, so
// that parse_hardware(hardware_to_json(hw)) gives hw back.
nlohmann::json hardware_to_json(const HardwareSpec& hw);
// The same as a commented YAML file (what `kvfleet bench engine --profile` writes); numbers keep
// every digit, so load_hardware() of the file gives hw back.
std::string hardware_to_yaml(const HardwareSpec& hw);
// A built-in name or a path to a JSON/YAML file; unknown names list the built-in ones.
Result<HardwareSpec> load_hardware(std::string_view name_or_path);
std::vector<std::string> builtin_hardware_names();

}  // namespace kvfleet::perfmodel
