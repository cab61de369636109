#pragma once
// How every subcommand ends: OK -> 0; otherwise "kvfleet CMD: error: MESSAGE" on `err` and exit
// code 2 for bad input or usage, 1 for internal errors (bugs).

#include <ostream>
#include <string_view>

#include "common/status.h"

namespace kvfleet::apps {

inline int finish_command(std::string_view command, const Status& status, std::ostream& err) {
  if (status.is_ok()) return 0;
  err << "kvfleet " << command << ": error: " << status.message() << "\n";
  return status.code() == StatusCode::kInternal ? 1 : 2;
}

}  // namespace kvfleet::apps
