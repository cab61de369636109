#pragma once
// Minimal leveled logging to stderr: one line per message, with time, level and thread name.
//
//   KVFLEET_LOG(kInfo) << "worker registered: " << id;
//
// The level threshold is set once at start-up (set_log_level) from a parsed flag, never read from
// the environment here. Thread names come from set_thread_name(), called at every thread entry.

#include <sstream>
#include <string>
#include <string_view>

namespace kvfleet {

enum class LogLevel { kDebug = 0, kInfo, kWarning, kError, kOff };

void set_log_level(LogLevel level);
LogLevel log_level();
// Parses "debug|info|warning|error|off".
bool parse_log_level(std::string_view text, LogLevel* out);

// Names the calling thread (kernel name truncated to 15 chars, full name kept for the log).
void set_thread_name(std::string_view name);
const std::string& thread_name();

namespace detail {
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  template <typename T>
  LogLine& operator<<(const T& v) {
    stream_ << v;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};
}  // namespace detail

}  // namespace kvfleet

#define KVFLEET_LOG(level)                                   \
  if (::kvfleet::LogLevel::level < ::kvfleet::log_level()) { \
  } else                                                     \
    ::kvfleet::detail::LogLine(::kvfleet::LogLevel::level, __FILE__, __LINE__)
