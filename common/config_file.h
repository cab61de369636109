#pragma once
// Structured configuration files (JSON or YAML) and typed access to their fields.
//
// Every file format kvfleet reads (model config.json, hardware specs, cluster files, subcommand
// configs) is loaded into one nlohmann::json tree, so YAML and JSON give the same keys, and read
// through FieldReader, so a missing or mistyped field always yields an error that names the field.

#include <cstdint>
#include <initializer_list>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "common/units.h"

namespace kvfleet {

// Loads a .json, .yaml or .yml file (by extension; other extensions are tried as JSON, then
// YAML). Errors name the file and, where the parser reports one, the line.
Result<nlohmann::json> load_config_file(const std::string& path);

// Parses text as YAML (a superset of JSON) into a JSON tree. Scalars become integers, floats,
// booleans or null when they read as such, strings otherwise.
Result<nlohmann::json> parse_yaml_text(std::string_view text);

// Typed, error-reporting access to the members of one JSON object. `where` names the object in
// messages ("config.json", "hardware 'a100-80g'").
class FieldReader {
 public:
  FieldReader(const nlohmann::json& object, std::string where);

  bool has(std::string_view key) const;  // present and not null
  // An error naming the first key of the object that is not in `known` (and listing them), so a
  // misspelt optional field is reported instead of silently ignored.
  Status only_keys(std::initializer_list<std::string_view> known) const;

  // Required fields: an error when missing or of the wrong type.
  Result<std::int64_t> integer(std::string_view key) const;
  Result<double> number(std::string_view key) const;
  Result<std::string> string(std::string_view key) const;
  // Optional fields: `fallback` when missing or null, an error when present with the wrong type.
  Result<std::int64_t> integer_or(std::string_view key, std::int64_t fallback) const;
  Result<double> number_or(std::string_view key, double fallback) const;
  Result<bool> boolean_or(std::string_view key, bool fallback) const;
  Result<std::string> string_or(std::string_view key, std::string fallback) const;
  // A number in base units or a string with a unit ("80GiB"), see common/units.h.
  Result<double> quantity(std::string_view key, Quantity kind) const;
  Result<std::optional<double>> optional_quantity(std::string_view key, Quantity kind) const;

  const std::string& where() const { return where_; }

 private:
  Status missing(std::string_view key) const;
  Status wrong_type(std::string_view key, std::string_view expected) const;

  const nlohmann::json& object_;
  std::string where_;
};

}  // namespace kvfleet
