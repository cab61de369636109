#pragma once
// Child processes of the kvfleet binary for commands that start a cluster on this machine
// (`kvfleet up`, `kvfleet bench overhead`).

#include <sys/types.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvfleet::apps {

// Runs this binary with `args` (args[0] is the program name) in a child process; with
// `quiet_stdout` its stdout goes to stderr (keeping the parent's stdout for results).
pid_t spawn(const std::vector<std::string>& args, bool quiet_stdout = false);
// A free TCP port on `host` (bound, then released).
Result<std::uint16_t> free_port(const std::string& host);
// SIGTERM to every live pid (last first), waits up to 15 s, then SIGKILL. Sets pids to -1.
void stop_all(std::vector<pid_t>& pids, std::ostream& err);

}  // namespace kvfleet::apps
