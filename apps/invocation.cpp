#include "apps/invocation.h"

namespace kvfleet::apps {
namespace {

std::string& stored() {
  static std::string s = "kvfleet";
  return s;
}

std::string quoted(const std::string& a) {
  if (!a.empty() && a.find_first_of(" \t\n'\"\\$`*?&;|<>()[]{}!#~") == std::string::npos) return a;
  std::string q = "'";
  for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

void set_invocation(const std::vector<std::string>& argv) {
  std::string s = "kvfleet";
  for (size_t i = 1; i < argv.size(); ++i) s += " " + quoted(argv[i]);
  stored() = s;
}

const std::string& invocation() {
  return stored();
}

}  // namespace kvfleet::apps
