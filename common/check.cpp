#include "common/check.h"

#include <cstdio>
#include <cstdlib>

namespace kvfleet::detail {

void check_failed(const char* expr, const char* file, int line, std::string_view msg) {
  std::fprintf(stderr, "kvfleet: internal check failed at %s:%d: %s%s%.*s\n", file, line, expr,
               msg.empty() ? "" : ": ", static_cast<int>(msg.size()), msg.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace kvfleet::detail
