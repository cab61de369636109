#pragma once
// KVFLEET_CHECK: invariants that hold unless the program has a bug. Always on, in every build.
// Never use it on user or network input: that gets a Status with a clear message instead.

#include <string_view>

namespace kvfleet::detail {
[[noreturn]] void check_failed(const char* expr, const char* file, int line, std::string_view msg);
}  // namespace kvfleet::detail

#define KVFLEET_CHECK(cond, ...)                                                    \
  do {                                                                              \
    if (!(cond)) [[unlikely]] {                                                     \
      ::kvfleet::detail::check_failed(#cond, __FILE__, __LINE__,                    \
                                      ::std::string_view{__VA_OPT__(__VA_ARGS__)}); \
    }                                                                               \
  } while (0)
