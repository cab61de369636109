#include "apps/config_args.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/config_file.h"
#include "common/units.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;

Result<std::string> scalar_text(const json& v, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number_float()) return format_number(v.get<double>(), 17);
  if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
  return invalid_argument(where + " must be a scalar, got " + v.dump());
}

Result<std::string> list_text(const json& v, const std::string& where) {
  if (!v.is_array()) return scalar_text(v, where);
  std::string out;
  for (const auto& item : v) {
    KVFLEET_ASSIGN_OR_RETURN(std::string s, scalar_text(item, where));
    out += (out.empty() ? "" : ",") + s;
  }
  return out;
}

}  // namespace

Result<std::vector<std::string>> config_file_to_args(
    const std::string& path, const std::function<bool(const std::string&)>& is_known_flag) {
  KVFLEET_ASSIGN_OR_RETURN(json doc, load_config_file(path));
  if (!doc.is_object()) {
    return invalid_argument("config file '" + path + "' must be a map of flag names to values");
  }
  std::vector<std::string> args;
  for (const auto& [key, value] : doc.items()) {
    std::string flag = "--" + key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    const std::string where = "config file '" + path + "': key '" + key + "'";
    if (!is_known_flag(flag)) {
      return invalid_argument("config file '" + path + "': unknown key '" + key + "'");
    }
    if (value.is_null()) continue;
    if (value.is_boolean()) {
      if (value.get<bool>()) args.push_back(flag);
      continue;
    }
    std::string text;
    if (value.is_object()) {  // {k: v, ...} -> "k=v,..."; a list value only as the sole key
      for (const auto& [k, v] : value.items()) {
        if (v.is_array() && value.size() > 1) {
          return invalid_argument(where + ": a list is allowed only when it is the only entry");
        }
        KVFLEET_ASSIGN_OR_RETURN(std::string item, list_text(v, where));
        text += (text.empty() ? "" : ",") + k + "=" + item;
      }
    } else {
      KVFLEET_ASSIGN_OR_RETURN(text, list_text(value, where));
    }
    if (text.empty()) return invalid_argument(where + " is empty");
    args.push_back(flag);
    args.push_back(text);
  }
  return args;
}

}  // namespace kvfleet::apps
