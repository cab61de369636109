#include "apps/local_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <thread>

namespace kvfleet::apps {

pid_t spawn(const std::vector<std::string>& args, bool quiet_stdout) {
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Die with the parent. If it died before prctl took effect, the child was already
    // reparented and no signal will come: leave now.
    if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != parent) ::_exit(1);
    if (quiet_stdout) ::dup2(2, 1);
    // Ctrl-C and a terminal's hang-up reach the whole group; the parent stops children in order.
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    // The parent may take signals synchronously (StopSignals); the mask survives exec.
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    std::perror("kvfleet: exec");
    ::_exit(127);
  }
  return pid;
}

// A free TCP port on `host` (bound then released).
Result<std::uint16_t> free_port(const std::string& host) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    ::close(fd);
    return invalid_argument("--host must be an IPv4 address, not '" + host + "'");
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return Status(StatusCode::kUnavailable, "cannot bind " + host + ": " + std::strerror(errno));
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return static_cast<std::uint16_t>(ntohs(a.sin_port));
}

Result<std::string> write_secret_file(const ClusterSecret& secret) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/kvfleet-secret-XXXXXX";
  if (!::mkdtemp(dir.data())) {
    return io_error("cannot create a folder for the cluster secret: " +
                    std::string(std::strerror(errno)));
  }
  const std::string path = dir + "/cluster-secret";
  KVFLEET_RETURN_IF_ERROR(secret.write_file(path));
  return path;
}

void remove_secret_file(const std::string& path) {
  if (path.empty()) return;
  ::unlink(path.c_str());
  ::rmdir(path.substr(0, path.rfind('/')).c_str());
}

std::vector<std::string> LocalClusterPlan::serve_args(const std::string& host) const {
  return {"--host",
          host,
          "--port",
          std::to_string(port),
          "--internal-host",
          host,
          "--internal-port",
          std::to_string(internal_port),
          "--cluster-secret-file",
          secret_file};
}

std::vector<std::string> LocalClusterPlan::worker_args() const {
  return {"--coordinator", internal_url, "--cluster-secret-file", secret_file};
}

Result<std::unique_ptr<LocalClusterPlan>> plan_local_cluster(const std::string& host,
                                                             std::uint16_t port) {
  auto plan = std::make_unique<LocalClusterPlan>();
  if (port == 0) {
    KVFLEET_ASSIGN_OR_RETURN(port, free_port(host));
  }
  plan->port = port;
  KVFLEET_ASSIGN_OR_RETURN(plan->internal_port, free_port(host));
  if (plan->internal_port == port) {
    KVFLEET_ASSIGN_OR_RETURN(plan->internal_port, free_port(host));
  }
  plan->url = "http://" + host + ":" + std::to_string(plan->port);
  plan->internal_url = "http://" + host + ":" + std::to_string(plan->internal_port);
  plan->secret = ClusterSecret::generate();
  KVFLEET_ASSIGN_OR_RETURN(plan->secret_file, write_secret_file(*plan->secret));
  return plan;
}

Status check_port_free(const std::string& host, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    return invalid_argument("--host must be an IPv4 address, not '" + host + "'");
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return Status(StatusCode::kUnavailable, std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  const int e = errno;
  ::close(fd);
  if (bound) return Status();
  const std::string where = "port " + std::to_string(port) + " on " + host;
  if (e == EADDRINUSE) {
    return Status(StatusCode::kFailedPrecondition,
                  where +
                      " is already in use (another server listens there); choose another "
                      "--port, or --port 0 for any free one");
  }
  return Status(StatusCode::kFailedPrecondition, "cannot bind " + where + ": " + std::strerror(e));
}

void stop_all(std::vector<pid_t>& pids, std::ostream& err) {
  // Workers first (they deregister and drain), then the coordinator (last in the list first).
  for (auto it = pids.rbegin(); it != pids.rend(); ++it) {
    if (*it > 0) ::kill(*it, SIGTERM);
  }
  for (int i = 0; i < 300; ++i) {
    bool any = false;
    for (pid_t& p : pids) {
      if (p <= 0) continue;
      if (::waitpid(p, nullptr, WNOHANG) == p) {
        p = -1;
      } else {
        any = true;
      }
    }
    if (!any) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (pid_t& p : pids) {
    if (p > 0) {
      err << "kvfleet up: process " << p << " did not stop; killing it\n";
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
}

namespace {

constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};
volatile std::sig_atomic_t g_stop = 0;   // a stop request taken by the handler
volatile std::sig_atomic_t g_child = 0;  // a SIGCHLD taken by the handler

// Runs only where the signal reached a thread that does not block it.
void on_signal(int sig) {
  if (sig == SIGCHLD) {
    g_child = 1;
  } else {
    g_stop = sig;
  }
}

}  // namespace

StopSignals::StopSignals() {
  g_stop = 0;
  g_child = 0;
  ::sigemptyset(&set_);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 4; ++i) {
    ::sigaddset(&set_, kStopSignals[i]);
    ::sigaction(kStopSignals[i], &sa, &old_[i]);
  }
  ::pthread_sigmask(SIG_BLOCK, &set_, &old_mask_);
}

StopSignals::~StopSignals() {
  ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  for (int i = 0; i < 4; ++i) ::sigaction(kStopSignals[i], &old_[i], nullptr);
}

int StopSignals::stop_requested() const {
  return g_stop;
}

int StopSignals::wait(std::chrono::milliseconds timeout) {
  if (g_stop != 0) return g_stop;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1000) * 1000000L;
  siginfo_t info{};
  const int sig = ::sigtimedwait(&set_, &info, &ts);
  if (sig == SIGCHLD) return SIGCHLD;
  if (sig > 0) {
    g_stop = sig;
    return sig;
  }
  if (g_stop != 0) return g_stop;
  if (g_child != 0) {
    g_child = 0;
    return SIGCHLD;
  }
  return 0;
}

}  // namespace kvfleet::apps
