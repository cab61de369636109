#include "perfmodel/hardware.h"

#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/config_file.h"

namespace kvfleet::perfmodel {
namespace {

using nlohmann::json;

struct BuiltinHardware {
  std::string_view name;
  std::string_view spec;  // the same YAML/JSON keys a user file has
};

// Vendor datasheet figures (dense, no sparsity). PCIe figures are achievable pinned-memory copy
// rates per direction, not the link's raw rate: Gen4 x16 ~25 GB/s of 32, Gen5 x16 ~50 GB/s of 64.
// Host memory is the system DDR of the usual 8-GPU server divided by 8.
constexpr std::array kBuiltinHardware = {
    BuiltinHardware{"a100-80g", R"({
      "hbm_bytes": "80GiB", "hbm_bandwidth": "2039GB/s",
      "flops": {"fp32": "19.5T", "tf32": "156T", "fp16": "312T", "bf16": "312T", "int8": "624T",
                "int4": "1248T"},
      "pcie_bandwidth": "25GB/s", "nvlink_bandwidth": "300GB/s", "host_memory_bytes": "256GiB"})"},
    BuiltinHardware{"a100-40g", R"({
      "hbm_bytes": "40GiB", "hbm_bandwidth": "1555GB/s",
      "flops": {"fp32": "19.5T", "tf32": "156T", "fp16": "312T", "bf16": "312T", "int8": "624T",
                "int4": "1248T"},
      "pcie_bandwidth": "25GB/s", "nvlink_bandwidth": "300GB/s", "host_memory_bytes": "128GiB"})"},
    BuiltinHardware{"h100-80g", R"({
      "hbm_bytes": "80GiB", "hbm_bandwidth": "3350GB/s",
      "flops": {"fp32": "67T", "tf32": "495T", "fp16": "989T", "bf16": "989T", "fp8": "1979T",
                "int8": "1979T"},
      "pcie_bandwidth": "50GB/s", "nvlink_bandwidth": "450GB/s", "host_memory_bytes": "256GiB"})"},
    BuiltinHardware{"h100-pcie", R"({
      "hbm_bytes": "80GiB", "hbm_bandwidth": "2000GB/s",
      "flops": {"fp32": "51T", "tf32": "378T", "fp16": "756T", "bf16": "756T", "fp8": "1513T",
                "int8": "1513T"},
      "pcie_bandwidth": "50GB/s", "nvlink_bandwidth": "0", "host_memory_bytes": "128GiB"})"},
    BuiltinHardware{"h200", R"({
      "hbm_bytes": "141GB", "hbm_bandwidth": "4800GB/s",
      "flops": {"fp32": "67T", "tf32": "495T", "fp16": "989T", "bf16": "989T", "fp8": "1979T",
                "int8": "1979T"},
      "pcie_bandwidth": "50GB/s", "nvlink_bandwidth": "450GB/s", "host_memory_bytes": "256GiB"})"},
    BuiltinHardware{"b200", R"({
      "hbm_bytes": "180GB", "hbm_bandwidth": "7700GB/s",
      "flops": {"tf32": "1100T", "fp16": "2250T", "bf16": "2250T", "fp8": "4500T",
                "int8": "4500T", "fp32": "75T"},
      "pcie_bandwidth": "50GB/s", "nvlink_bandwidth": "900GB/s", "host_memory_bytes": "512GiB"})"},
    BuiltinHardware{"l40s", R"({
      "hbm_bytes": "48GB", "hbm_bandwidth": "864GB/s",
      "flops": {"fp32": "91.6T", "tf32": "183T", "fp16": "362T", "bf16": "362T", "fp8": "733T",
                "int8": "733T"},
      "pcie_bandwidth": "25GB/s", "nvlink_bandwidth": "0", "host_memory_bytes": "128GiB"})"},
    BuiltinHardware{"mi300x", R"({
      "hbm_bytes": "192GB", "hbm_bandwidth": "5300GB/s",
      "flops": {"fp32": "163T", "tf32": "654T", "fp16": "1307T", "bf16": "1307T", "fp8": "2615T",
                "int8": "2615T"},
      "pcie_bandwidth": "50GB/s", "nvlink_bandwidth": "64GB/s", "host_memory_bytes": "256GiB"})"},
};

Status require_positive(const std::string& where, std::string_view field, double v) {
  if (v > 0) return Status::ok();
  return invalid_argument(where + ": field '" + std::string(field) + "' must be positive");
}

}  // namespace

std::optional<double> HardwareSpec::flops_for(DType t) const {
  auto it = flops.find(t);
  if (it == flops.end() || it->second <= 0) return std::nullopt;
  return it->second;
}

Result<HardwareSpec> parse_hardware(const json& object, const std::string& where) {
  if (!object.is_object()) return invalid_argument(where + ": expected an object of fields");
  FieldReader f(object, where);
  HardwareSpec hw;
  KVFLEET_ASSIGN_OR_RETURN(hw.name, f.string_or("name", where));
  KVFLEET_ASSIGN_OR_RETURN(hw.hbm_bytes, f.quantity("hbm_bytes", Quantity::kBytes));
  KVFLEET_ASSIGN_OR_RETURN(hw.hbm_bandwidth,
                           f.quantity("hbm_bandwidth", Quantity::kBytesPerSecond));
  KVFLEET_ASSIGN_OR_RETURN(hw.pcie_bandwidth,
                           f.quantity("pcie_bandwidth", Quantity::kBytesPerSecond));
  KVFLEET_ASSIGN_OR_RETURN(auto nvlink,
                           f.optional_quantity("nvlink_bandwidth", Quantity::kBytesPerSecond));
  hw.nvlink_bandwidth = nvlink.value_or(0.0);
  KVFLEET_ASSIGN_OR_RETURN(auto host, f.optional_quantity("host_memory_bytes", Quantity::kBytes));
  hw.host_memory_bytes = host.value_or(0.0);
  KVFLEET_RETURN_IF_ERROR(require_positive(where, "hbm_bytes", hw.hbm_bytes));
  KVFLEET_RETURN_IF_ERROR(require_positive(where, "hbm_bandwidth", hw.hbm_bandwidth));
  KVFLEET_RETURN_IF_ERROR(require_positive(where, "pcie_bandwidth", hw.pcie_bandwidth));

  if (!f.has("flops")) return invalid_argument(where + ": required field 'flops' is missing");
  const json& flops = object.at("flops");
  if (!flops.is_object() || flops.empty()) {
    return invalid_argument(where + ": field 'flops' must map dtypes to FLOP/s, e.g. {bf16: 312T}");
  }
  FieldReader ff(flops, where + " flops");
  for (const auto& [key, value] : flops.items()) {
    auto dt = parse_dtype(key);
    if (!dt.is_ok()) return dt.status().with_context(where + ": field 'flops'");
    KVFLEET_ASSIGN_OR_RETURN(double rate, ff.quantity(key, Quantity::kFlopsPerSecond));
    KVFLEET_RETURN_IF_ERROR(require_positive(where, "flops." + key, rate));
    hw.flops[*dt] = rate;
  }
  return hw;
}

std::vector<std::string> builtin_hardware_names() {
  std::vector<std::string> names;
  for (const auto& h : kBuiltinHardware) names.emplace_back(h.name);
  return names;
}

Result<HardwareSpec> load_hardware(std::string_view name_or_path) {
  for (const auto& h : kBuiltinHardware) {
    if (h.name == name_or_path) {
      json spec = json::parse(h.spec);
      spec["name"] = h.name;
      return parse_hardware(spec, std::string(h.name));
    }
  }
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::path(name_or_path), ec)) {
    std::string known;
    for (const auto& n : builtin_hardware_names()) known += (known.empty() ? "" : ", ") + n;
    return not_found("unknown hardware '" + std::string(name_or_path) +
                     "': not a built-in name and no such file (built-in hardware: " + known + ")");
  }
  const std::string path(name_or_path);
  KVFLEET_ASSIGN_OR_RETURN(json spec, load_config_file(path));
  if (spec.is_object() && !spec.contains("name")) spec["name"] = path;
  return parse_hardware(spec, "hardware file '" + path + "'");
}

}  // namespace kvfleet::perfmodel
