#pragma once
// Child processes of the kvfleet binary for commands that start a cluster on this machine
// (`kvfleet up`, `kvfleet bench overhead`, `kvfleet bench compare`).

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/cluster_secret.h"
#include "common/status.h"

namespace kvfleet::apps {

// Runs this binary with `args` (args[0] is the program name) in a child process; with
// `quiet_stdout` its stdout goes to stderr (keeping the parent's stdout for results).
// The child starts with no blocked signals, ignores SIGINT and SIGHUP (they reach a whole
// terminal's process group; the parent stops its children in order), and gets SIGTERM when the
// parent dies, however it dies (even SIGKILL), so no child outlives the command that started it.
pid_t spawn(const std::vector<std::string>& args, bool quiet_stdout = false);
// A free TCP port on `host` (bound, then released).
Result<std::uint16_t> free_port(const std::string& host);
// Writes `secret` to a new file (mode 0600) in a new private folder under $TMPDIR (or /tmp);
// its path. remove_secret_file() deletes both.
Result<std::string> write_secret_file(const ClusterSecret& secret);
void remove_secret_file(const std::string& path);

// What the processes of a cluster on this machine share: the coordinator's public and internal
// addresses and a fresh cluster secret in a private file (deleted with this object).
struct LocalClusterPlan {
  std::uint16_t port = 0, internal_port = 0;
  std::string url, internal_url;
  std::optional<ClusterSecret> secret;
  std::string secret_file;
  LocalClusterPlan() = default;
  LocalClusterPlan(const LocalClusterPlan&) = delete;
  LocalClusterPlan& operator=(const LocalClusterPlan&) = delete;
  ~LocalClusterPlan() { remove_secret_file(secret_file); }
  // `serve` flags for this plan (after "serve"): --host, --port, internal listener, secret.
  std::vector<std::string> serve_args(const std::string& host) const;
  // `worker` flags: --coordinator (internal URL) and the secret.
  std::vector<std::string> worker_args() const;
};
// Picks free ports on `host` (`port` 0: any) and writes the secret.
Result<std::unique_ptr<LocalClusterPlan>> plan_local_cluster(const std::string& host,
                                                             std::uint16_t port);

// OK when a server could listen on `host`:`port` now (a bind test, as the servers bind: with
// SO_REUSEADDR); FailedPrecondition naming the port when something else holds it.
Status check_port_free(const std::string& host, std::uint16_t port);
// SIGTERM to every live pid (last first), waits up to 15 s, then SIGKILL. Sets pids to -1.
void stop_all(std::vector<pid_t>& pids, std::ostream& err);

// SIGINT, SIGTERM and SIGHUP (each a request to stop) and SIGCHLD (a child exited), taken
// synchronously while this object lives: they are blocked and given a handler of ours, so
// neither a library's handler (UCX installs one for SIGHUP) nor an ignored disposition swallows
// them. Construct it before starting any thread or child; spawn() unblocks them in children.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // Waits up to `timeout` for one of the signals. Returns SIGCHLD when a child exited, the
  // signal number of a stop request (which stays recorded: stop_requested() answers it), or 0.
  int wait(std::chrono::milliseconds timeout);
  // The stop request received so far (SIGINT, SIGTERM or SIGHUP), or 0.
  int stop_requested() const;

 private:
  sigset_t set_{}, old_mask_{};
  struct sigaction old_[4]{};
};

}  // namespace kvfleet::apps
