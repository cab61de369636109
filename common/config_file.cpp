#include "common/config_file.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace kvfleet {
namespace {

using nlohmann::json;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

json yaml_scalar_to_json(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  // Quoted scalars ("80", '1e9') carry the tag "!" and stay strings.
  if (node.Tag() == "!") return text;
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  std::int64_t i = 0;
  if (YAML::convert<std::int64_t>::decode(node, i) &&
      text.find_first_of(".eE") == std::string::npos) {
    return i;
  }
  double d = 0;
  if (YAML::convert<double>::decode(node, d) && std::isfinite(d)) return d;
  return text;
}

json yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Scalar: return yaml_scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      json arr = json::array();
      for (const auto& item : node) arr.push_back(yaml_to_json(item));
      return arr;
    }
    case YAML::NodeType::Map: {
      json obj = json::object();
      for (const auto& kv : node) obj[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return obj;
    }
  }
  return nullptr;
}

std::string type_name(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

}  // namespace

Result<json> parse_yaml_text(std::string_view text) {
  try {
    return yaml_to_json(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    return invalid_argument(std::string("invalid YAML: ") + e.what());
  }
}

Result<json> load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open '" + path + "'");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return io_error("cannot read '" + path + "'");
  const std::string text = buf.str();

  const bool yaml = ends_with(path, ".yaml") || ends_with(path, ".yml");
  if (!yaml) {
    json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
    if (!parsed.is_discarded()) return parsed;
    if (ends_with(path, ".json")) {
      try {
        [[maybe_unused]] json ignored = json::parse(text);
      } catch (const json::parse_error& e) {
        return invalid_argument("'" + path + "' is not valid JSON: " + e.what());
      }
    }
  }
  auto parsed = parse_yaml_text(text);
  if (!parsed.is_ok()) return parsed.status().with_context("'" + path + "'");
  return parsed;
}

FieldReader::FieldReader(const json& object, std::string where)
    : object_(object), where_(std::move(where)) {}

bool FieldReader::has(std::string_view key) const {
  if (!object_.is_object()) return false;
  auto it = object_.find(key);
  return it != object_.end() && !it->is_null();
}

Status FieldReader::only_keys(std::initializer_list<std::string_view> known) const {
  if (!object_.is_object()) return Status::ok();
  for (const auto& [key, value] : object_.items()) {
    bool found = false;
    for (auto k : known) found = found || k == key;
    if (found) continue;
    std::string list;
    for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    return invalid_argument(where_ + ": unknown field '" + key + "' (known: " + list + ")");
  }
  return Status::ok();
}

Status FieldReader::missing(std::string_view key) const {
  return invalid_argument(where_ + ": required field '" + std::string(key) + "' is missing");
}

Status FieldReader::wrong_type(std::string_view key, std::string_view expected) const {
  return invalid_argument(where_ + ": field '" + std::string(key) + "' must be " +
                          std::string(expected) + ", got " + type_name(object_.at(key)) + " " +
                          object_.at(key).dump());
}

Result<std::int64_t> FieldReader::integer(std::string_view key) const {
  if (!has(key)) return missing(key);
  const json& v = object_.at(key);
  if (v.is_number_integer()) return v.get<std::int64_t>();
  // 4096.0 is an integer written as a float; 4096.5 is not.
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) {
      return static_cast<std::int64_t>(d);
    }
  }
  return wrong_type(key, "an integer");
}

Result<double> FieldReader::number(std::string_view key) const {
  if (!has(key)) return missing(key);
  const json& v = object_.at(key);
  if (v.is_number()) return v.get<double>();
  return wrong_type(key, "a number");
}

Result<std::string> FieldReader::string(std::string_view key) const {
  if (!has(key)) return missing(key);
  const json& v = object_.at(key);
  if (v.is_string()) return v.get<std::string>();
  return wrong_type(key, "a string");
}

Result<std::int64_t> FieldReader::integer_or(std::string_view key, std::int64_t fallback) const {
  return has(key) ? integer(key) : Result<std::int64_t>(fallback);
}

Result<double> FieldReader::number_or(std::string_view key, double fallback) const {
  return has(key) ? number(key) : Result<double>(fallback);
}

Result<bool> FieldReader::boolean_or(std::string_view key, bool fallback) const {
  if (!has(key)) return fallback;
  const json& v = object_.at(key);
  if (v.is_boolean()) return v.get<bool>();
  return wrong_type(key, "true or false");
}

Result<std::string> FieldReader::string_or(std::string_view key, std::string fallback) const {
  return has(key) ? string(key) : Result<std::string>(std::move(fallback));
}

Result<double> FieldReader::quantity(std::string_view key, Quantity kind) const {
  if (!has(key)) return missing(key);
  const json& v = object_.at(key);
  if (v.is_number()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < 0) {
      return invalid_argument(where_ + ": field '" + std::string(key) +
                              "' must be finite and non-negative, got " + v.dump());
    }
    return d;
  }
  if (v.is_string()) {
    auto parsed = parse_quantity(v.get<std::string>(), kind);
    if (!parsed.is_ok()) {
      return parsed.status().with_context(where_ + ": field '" + std::string(key) + "'");
    }
    return parsed;
  }
  return wrong_type(key, "a number or a string with a unit");
}

Result<std::optional<double>> FieldReader::optional_quantity(std::string_view key,
                                                             Quantity kind) const {
  if (!has(key)) return std::optional<double>();
  KVFLEET_ASSIGN_OR_RETURN(double v, quantity(key, kind));
  return std::optional<double>(v);
}

}  // namespace kvfleet
