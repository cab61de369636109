#pragma once
// Real daemons (sshd, munged, slurmctld, slurmd) started by a test in the foreground, each with
// its own configuration under the test's folder, and always stopped when the test ends.

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace kvfleet::test {

using Clock = std::chrono::steady_clock;

// Polls `done` until it holds or `limit` passes; whether it held.
inline bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Whether `pid` runs (a zombie does not: it only waits for a parent to reap it).
inline bool pid_running(long pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

// Running processes whose command line contains `needle` (never this test process).
inline std::vector<long> pids_mentioning(const std::string& needle) {
  std::vector<long> out;
  DIR* d = ::opendir("/proc");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    const long pid = std::atol(e->d_name);
    if (pid <= 0 || pid == ::getpid() || !pid_running(pid)) continue;
    std::string cmd = slurp("/proc/" + std::to_string(pid) + "/cmdline");
    for (char& c : cmd) c = c == '\0' ? ' ' : c;
    if (cmd.find(needle) != std::string::npos) out.push_back(pid);
  }
  if (d) ::closedir(d);
  return out;
}

// One daemon in the foreground, its stdout and stderr in `log`. SIGTERM on destruction (or
// stop()), SIGKILL after 10 s; always reaped.
class Daemon {
 public:
  Daemon(const std::vector<std::string>& argv, std::string log) : log_(std::move(log)) {
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* f = std::fopen(log_.c_str(), "w");
      if (f) {
        ::dup2(fileno(f), 1);
        ::dup2(fileno(f), 2);
      }
      ::setsid();  // a terminal's signals are not the daemon's
      std::vector<char*> a;
      for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      ::execv(a[0], a.data());
      std::perror("exec");
      ::_exit(127);
    }
  }
  ~Daemon() { stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  bool running() {
    if (pid_ <= 0) return false;
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) pid_ = -1;
    return pid_ > 0;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    if (!wait_until([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; },
                    std::chrono::seconds(10))) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
  std::string log() const { return slurp(log_); }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

inline bool have_program(const std::string& path) {
  return ::access(path.c_str(), X_OK) == 0;
}

}  // namespace kvfleet::test
