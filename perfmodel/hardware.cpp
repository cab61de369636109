#include "perfmodel/hardware.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/config_file.h"
#include "common/units.h"

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

// An efficiency: a positive finite fraction of a peak (it may exceed 1 when a kernel beats the
// rate measured as the peak).
Result<double> efficiency_field(const FieldReader& f, std::string_view key) {
  KVFLEET_ASSIGN_OR_RETURN(double v, f.number_or(key, 1.0));
  if (!(std::isfinite(v) && v > 0)) {
    return invalid_argument(f.where() + ": field '" + std::string(key) +
                            "' must be a positive fraction of the peak, got " + format_number(v));
  }
  return v;
}

Result<double> seconds_field(const FieldReader& f, std::string_view key) {
  KVFLEET_ASSIGN_OR_RETURN(auto v, f.optional_quantity(key, Quantity::kSeconds));
  return v.value_or(0.0);
}

Result<CalibrationProvenance> parse_provenance(const json& object, const std::string& where) {
  if (!object.is_object()) return invalid_argument(where + ": expected an object of fields");
  FieldReader f(object, where);
  KVFLEET_RETURN_IF_ERROR(
      f.only_keys({"cpu", "threads", "date", "kvfleet_version", "command", "model"}));
  CalibrationProvenance p;
  KVFLEET_ASSIGN_OR_RETURN(p.cpu, f.string_or("cpu", ""));
  KVFLEET_ASSIGN_OR_RETURN(p.threads, f.integer_or("threads", 0));
  if (p.threads < 0) {
    return invalid_argument(where + ": field 'threads' must be non-negative, got " +
                            std::to_string(p.threads));
  }
  KVFLEET_ASSIGN_OR_RETURN(p.date, f.string_or("date", ""));
  KVFLEET_ASSIGN_OR_RETURN(p.kvfleet_version, f.string_or("kvfleet_version", ""));
  KVFLEET_ASSIGN_OR_RETURN(p.command, f.string_or("command", ""));
  KVFLEET_ASSIGN_OR_RETURN(p.model, f.string_or("model", ""));
  return p;
}

Result<std::vector<GemmEfficiency>> parse_gemm_table(const json& list, const std::string& where) {
  if (!list.is_array()) {
    return invalid_argument(where + " must be a list of {tokens, efficiency}, got " + list.dump());
  }
  std::vector<GemmEfficiency> table;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!list[i].is_object()) return invalid_argument(at + ": expected {tokens, efficiency}");
    FieldReader f(list[i], at);
    KVFLEET_RETURN_IF_ERROR(f.only_keys({"tokens", "efficiency"}));
    GemmEfficiency point;
    KVFLEET_ASSIGN_OR_RETURN(point.tokens, f.integer("tokens"));
    if (point.tokens < 1) {
      return invalid_argument(at + ": field 'tokens' must be >= 1, got " +
                              std::to_string(point.tokens));
    }
    if (!f.has("efficiency"))
      return invalid_argument(at + ": required field 'efficiency' is missing");
    KVFLEET_ASSIGN_OR_RETURN(point.efficiency, efficiency_field(f, "efficiency"));
    if (!table.empty() && point.tokens <= table.back().tokens) {
      return invalid_argument(at + ": field 'tokens' must increase along the table (" +
                              std::to_string(point.tokens) + " after " +
                              std::to_string(table.back().tokens) + ")");
    }
    table.push_back(point);
  }
  return table;
}

Result<std::vector<KvReadEfficiency>> parse_kv_read_table(const json& list,
                                                          const std::string& where) {
  if (!list.is_array()) {
    return invalid_argument(where + " must be a list of {bytes, efficiency}, got " + list.dump());
  }
  std::vector<KvReadEfficiency> table;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!list[i].is_object()) return invalid_argument(at + ": expected {bytes, efficiency}");
    FieldReader f(list[i], at);
    KVFLEET_RETURN_IF_ERROR(f.only_keys({"bytes", "efficiency"}));
    KvReadEfficiency point;
    KVFLEET_ASSIGN_OR_RETURN(point.bytes, f.quantity("bytes", Quantity::kBytes));
    if (!(point.bytes > 0)) return invalid_argument(at + ": field 'bytes' must be positive");
    if (!f.has("efficiency"))
      return invalid_argument(at + ": required field 'efficiency' is missing");
    KVFLEET_ASSIGN_OR_RETURN(point.efficiency, efficiency_field(f, "efficiency"));
    if (!table.empty() && point.bytes <= table.back().bytes) {
      return invalid_argument(at + ": field 'bytes' must increase along the table");
    }
    table.push_back(point);
  }
  return table;
}

Result<Calibration> parse_calibration(const json& object, const std::string& where) {
  if (!object.is_object()) return invalid_argument(where + ": expected an object of fields");
  FieldReader f(object, where);
  KVFLEET_RETURN_IF_ERROR(f.only_keys(
      {"step_overhead", "token_overhead", "attention_call_overhead", "weight_read_efficiency",
       "kv_read_efficiency", "prefill_attention_efficiency", "swap_efficiency", "gemm_efficiency",
       "kv_read_efficiency_by_footprint", "provenance"}));
  Calibration c;
  KVFLEET_ASSIGN_OR_RETURN(c.step_overhead, seconds_field(f, "step_overhead"));
  KVFLEET_ASSIGN_OR_RETURN(c.token_overhead, seconds_field(f, "token_overhead"));
  KVFLEET_ASSIGN_OR_RETURN(c.attention_call_overhead, seconds_field(f, "attention_call_overhead"));
  KVFLEET_ASSIGN_OR_RETURN(c.weight_read_efficiency, efficiency_field(f, "weight_read_efficiency"));
  KVFLEET_ASSIGN_OR_RETURN(c.kv_read_efficiency, efficiency_field(f, "kv_read_efficiency"));
  KVFLEET_ASSIGN_OR_RETURN(c.prefill_attention_efficiency,
                           efficiency_field(f, "prefill_attention_efficiency"));
  KVFLEET_ASSIGN_OR_RETURN(c.swap_efficiency, efficiency_field(f, "swap_efficiency"));
  if (f.has("gemm_efficiency")) {
    KVFLEET_ASSIGN_OR_RETURN(
        c.gemm_efficiency,
        parse_gemm_table(object.at("gemm_efficiency"), where + ": field 'gemm_efficiency'"));
  }
  if (f.has("kv_read_efficiency_by_footprint")) {
    KVFLEET_ASSIGN_OR_RETURN(
        c.kv_read_by_footprint,
        parse_kv_read_table(object.at("kv_read_efficiency_by_footprint"),
                            where + ": field 'kv_read_efficiency_by_footprint'"));
  }
  if (f.has("provenance")) {
    KVFLEET_ASSIGN_OR_RETURN(c.provenance,
                             parse_provenance(object.at("provenance"), where + " provenance"));
  }
  return c;
}

}  // namespace

double Calibration::gemm_efficiency_at(double tokens) const {
  if (gemm_efficiency.empty()) return 1.0;
  if (tokens <= static_cast<double>(gemm_efficiency.front().tokens)) {
    return gemm_efficiency.front().efficiency;
  }
  if (tokens >= static_cast<double>(gemm_efficiency.back().tokens)) {
    return gemm_efficiency.back().efficiency;
  }
  // The first point above `tokens` (the table is short: a linear scan is the fast way).
  size_t hi = 1;
  while (static_cast<double>(gemm_efficiency[hi].tokens) < tokens) ++hi;
  const GemmEfficiency& a = gemm_efficiency[hi - 1];
  const GemmEfficiency& b = gemm_efficiency[hi];
  const double x = std::log(tokens / static_cast<double>(a.tokens)) /
                   std::log(static_cast<double>(b.tokens) / static_cast<double>(a.tokens));
  return a.efficiency + x * (b.efficiency - a.efficiency);
}

double Calibration::kv_read_efficiency_at(double bytes) const {
  const auto& t = kv_read_by_footprint;
  if (t.empty()) return kv_read_efficiency;
  if (bytes <= t.front().bytes) return t.front().efficiency;
  if (bytes >= t.back().bytes) return t.back().efficiency;
  size_t hi = 1;
  while (t[hi].bytes < bytes) ++hi;
  const double x = std::log(bytes / t[hi - 1].bytes) / std::log(t[hi].bytes / t[hi - 1].bytes);
  return t[hi - 1].efficiency + x * (t[hi].efficiency - t[hi - 1].efficiency);
}

std::optional<double> HardwareSpec::flops_for(DType t) const {
  auto it = flops.find(t);
  if (it == flops.end() || it->second <= 0) return std::nullopt;
  return it->second;
}

Result<HardwareSpec> parse_hardware(const json& object, const std::string& where) {
  if (!object.is_object()) return invalid_argument(where + ": expected an object of fields");
  FieldReader f(object, where);
  KVFLEET_RETURN_IF_ERROR(
      f.only_keys({"name", "hbm_bytes", "hbm_bandwidth", "flops", "pcie_bandwidth",
                   "nvlink_bandwidth", "host_memory_bytes", "calibration"}));
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
  if (f.has("calibration")) {
    KVFLEET_ASSIGN_OR_RETURN(hw.calibration,
                             parse_calibration(object.at("calibration"), where + " calibration"));
  }
  return hw;
}

json hardware_to_json(const HardwareSpec& hw) {
  json j;
  j["name"] = hw.name;
  j["hbm_bytes"] = hw.hbm_bytes;
  j["hbm_bandwidth"] = hw.hbm_bandwidth;
  json flops = json::object();
  for (const auto& [t, rate] : hw.flops) flops[std::string(dtype_name(t))] = rate;
  j["flops"] = flops;
  j["pcie_bandwidth"] = hw.pcie_bandwidth;
  j["nvlink_bandwidth"] = hw.nvlink_bandwidth;
  j["host_memory_bytes"] = hw.host_memory_bytes;
  if (hw.calibration) {
    const Calibration& c = *hw.calibration;
    json table = json::array();
    for (const auto& p : c.gemm_efficiency) {
      table.push_back({{"tokens", p.tokens}, {"efficiency", p.efficiency}});
    }
    json kv_table = json::array();
    for (const auto& p : c.kv_read_by_footprint) {
      kv_table.push_back({{"bytes", p.bytes}, {"efficiency", p.efficiency}});
    }
    const CalibrationProvenance& p = c.provenance;
    j["calibration"] = {{"step_overhead", c.step_overhead},
                        {"token_overhead", c.token_overhead},
                        {"attention_call_overhead", c.attention_call_overhead},
                        {"weight_read_efficiency", c.weight_read_efficiency},
                        {"kv_read_efficiency", c.kv_read_efficiency},
                        {"prefill_attention_efficiency", c.prefill_attention_efficiency},
                        {"swap_efficiency", c.swap_efficiency},
                        {"gemm_efficiency", table},
                        {"kv_read_efficiency_by_footprint", kv_table},
                        {"provenance",
                         {{"cpu", p.cpu},
                          {"threads", p.threads},
                          {"date", p.date},
                          {"kvfleet_version", p.kvfleet_version},
                          {"command", p.command},
                          {"model", p.model}}}};
  }
  return j;
}

namespace {

// Shortest text that reads back as the same double, always with a '.', 'e' or "inf" so YAML
// reads a float.
std::string yaml_number(double v) {
  std::string text = json(v).dump();
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

// A double-quoted scalar: JSON's escapes are valid in YAML's double-quoted style.
std::string yaml_string(const std::string& s) {
  return json(s).dump();
}

}  // namespace

std::string hardware_to_yaml(const HardwareSpec& hw) {
  std::string out;
  auto line = [&](const std::string& indent, const std::string& key, const std::string& value,
                  const std::string& comment) {
    out += indent + key + ": " + value;
    if (!comment.empty()) out += "  # " + comment;
    out += "\n";
  };
  line("", "name", yaml_string(hw.name), "");
  line("", "hbm_bytes", yaml_number(hw.hbm_bytes), format_bytes(hw.hbm_bytes));
  line("", "hbm_bandwidth", yaml_number(hw.hbm_bandwidth), format_rate_bytes(hw.hbm_bandwidth));
  out += "flops:  # dense peak per compute dtype\n";
  for (const auto& [t, rate] : hw.flops) {
    line("  ", std::string(dtype_name(t)), yaml_number(rate), format_flops(rate));
  }
  line("", "pcie_bandwidth", yaml_number(hw.pcie_bandwidth), format_rate_bytes(hw.pcie_bandwidth));
  line("", "nvlink_bandwidth", yaml_number(hw.nvlink_bandwidth),
       format_rate_bytes(hw.nvlink_bandwidth));
  line("", "host_memory_bytes", yaml_number(hw.host_memory_bytes),
       format_bytes(hw.host_memory_bytes));
  if (!hw.calibration) return out;
  const Calibration& c = *hw.calibration;
  out += "calibration:  # fitted kernel efficiencies (docs/PERFMODEL.md, calibrated step model)\n";
  line("  ", "step_overhead", yaml_number(c.step_overhead),
       format_seconds(c.step_overhead) + " per engine step");
  line("  ", "token_overhead", yaml_number(c.token_overhead),
       format_seconds(c.token_overhead) + " per token of a step");
  line("  ", "attention_call_overhead", yaml_number(c.attention_call_overhead),
       format_seconds(c.attention_call_overhead) + " per decode sequence and layer");
  line("  ", "weight_read_efficiency", yaml_number(c.weight_read_efficiency),
       "of hbm_bandwidth, streaming weights");
  line("  ", "kv_read_efficiency", yaml_number(c.kv_read_efficiency),
       "of hbm_bandwidth, decode attention over the KV");
  line("  ", "prefill_attention_efficiency", yaml_number(c.prefill_attention_efficiency),
       "of peak FLOP/s, prefill attention");
  line("  ", "swap_efficiency", yaml_number(c.swap_efficiency), "of pcie_bandwidth, KV swaps");
  out += "  gemm_efficiency:  # fraction of peak FLOP/s of the linear layers, by tokens per step\n";
  for (const auto& p : c.gemm_efficiency) {
    out += "    - {tokens: " + std::to_string(p.tokens) +
           ", efficiency: " + yaml_number(p.efficiency) + "}\n";
  }
  if (!c.kv_read_by_footprint.empty()) {
    out += "  kv_read_efficiency_by_footprint:  # of hbm_bandwidth, by a step's decode KV bytes\n";
    for (const auto& k : c.kv_read_by_footprint) {
      out += "    - {bytes: " + yaml_number(k.bytes) +
             ", efficiency: " + yaml_number(k.efficiency) + "}  # " + format_bytes(k.bytes) + "\n";
    }
  }
  const CalibrationProvenance& p = c.provenance;
  out += "  provenance:\n";
  line("    ", "cpu", yaml_string(p.cpu), "");
  line("    ", "threads", std::to_string(p.threads), "");
  line("    ", "date", yaml_string(p.date), "");
  line("    ", "kvfleet_version", yaml_string(p.kvfleet_version), "");
  line("    ", "command", yaml_string(p.command), "");
  line("    ", "model", yaml_string(p.model), "");
  return out;
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
