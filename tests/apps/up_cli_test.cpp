// `kvfleet up` owns its processes: a busy port is refused before anything starts, SIGHUP stops
// the cluster like SIGTERM, and no child outlives `up`, even when `up` is killed with SIGKILL.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "tests/apps/cli_test_util.h"
#include "tests/cluster/cluster_util.h"

namespace kvfleet {
namespace {

using Clock = std::chrono::steady_clock;

// Pids of live (not zombie) processes whose parent is `parent`.
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') out.push_back(pid);
  }
  ::closedir(d);
  return out;
}

// Whether `pid` still runs (a zombie does not: it waits only for its new parent to reap it).
bool running(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] != 'Z';
}

// Waits until none of `pids` runs; those still running at the deadline.
std::vector<pid_t> still_running_after(const std::vector<pid_t>& pids, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  std::vector<pid_t> left = pids;
  while (true) {
    std::vector<pid_t> now;
    for (pid_t p : left) {
      if (running(p)) now.push_back(p);
    }
    left = now;
    if (left.empty() || Clock::now() > deadline) return left;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Processes anywhere on this machine whose command line contains `needle`.
int processes_mentioning(const std::string& needle) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0 || pid == ::getpid() || !running(pid)) continue;
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (char& c : cmd) c = c == '\0' ? ' ' : c;
    if (cmd.find(needle) != std::string::npos) ++n;
  }
  if (d) ::closedir(d);
  return n;
}

bool port_free(std::uint16_t port) {
  return !test::listening(port);
}

std::uint16_t port_of(const std::string& url) {
  return static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
}

TEST(UpCli, ABusyPortIsRefusedBeforeAnythingStartsOrIsPrinted) {
  // Another listener holds the port (it might answer /health for a cluster that never started).
  auto busy = std::make_unique<test::LoopbackListener>();
  ASSERT_TRUE(busy->ok());
  const std::string port = std::to_string(busy->port());
  const auto r = test::kvfleet("up --colocated 1 --model tiny --port " + port);
  busy.reset();
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_THAT(r.err, ::testing::HasSubstr("port " + port + " on 127.0.0.1 is already in use"));
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(processes_mentioning("--coordinator http://127.0.0.1:" + port), 0);
}

// `up` on a one-worker cluster, its stdout and stderr in files; killed on destruction.
class RunningUp {
 public:
  RunningUp() {
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* out = std::fopen(out_path().c_str(), "w");
      FILE* err = std::fopen((dir_.path() + "/err").c_str(), "w");
      if (!out || !err) ::_exit(127);
      ::dup2(fileno(out), 1);
      ::dup2(fileno(err), 2);
      ::execl(KVFLEET_BINARY, KVFLEET_BINARY, "up", "--colocated", "1", "--model", "tiny", "--port",
              "0", "--kv-blocks", "64", "--host-kv-bytes", "0", nullptr);
      ::_exit(127);
    }
    // Its children share its stdout: the cluster is up at `up`'s own line.
    const std::string marker = "ready at ";
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline && exit_code_ == kRunning) {
      const std::string out = slurp(out_path());
      const auto at = out.find(marker);
      if (at != std::string::npos && out.find('\n', at) != std::string::npos) {
        url = out.substr(at + marker.size(), out.find('\n', at) - at - marker.size());
        children = children_of(pid_);
        return;
      }
      poll_exit();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~RunningUp() {
    if (exit_code_ == kRunning) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  // Its exit code once it exits within `limit` (-1 for a signal), else kRunning.
  int wait(std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    while (poll_exit() == kRunning && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return exit_code_;
  }
  pid_t pid() const { return pid_; }
  std::string logs() const {
    return "stdout:\n" + slurp(out_path()) + "stderr:\n" + slurp(dir_.path() + "/err");
  }

  static constexpr int kRunning = -1000;
  std::string url;
  std::vector<pid_t> children;

 private:
  static std::string slurp(const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::string out_path() const { return dir_.path() + "/out"; }
  int poll_exit() {
    int status = 0;
    if (exit_code_ == kRunning && ::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    return exit_code_;
  }

  test::TempDir dir_;
  pid_t pid_ = -1;
  int exit_code_ = kRunning;
};

TEST(UpCli, SighupStopsTheClusterLikeSigterm) {
  RunningUp c;
  ASSERT_FALSE(c.url.empty()) << c.logs();
  ASSERT_EQ(c.children.size(), 2u) << "coordinator and one worker";
  EXPECT_EQ(test::http(c.url, "GET", "/health").status, 200);
  ::kill(c.pid(), SIGHUP);
  EXPECT_EQ(c.wait(std::chrono::seconds(40)), 0) << c.logs();
  EXPECT_THAT(c.logs(), ::testing::HasSubstr("SIGHUP: stopping"));
  EXPECT_EQ(still_running_after(c.children, std::chrono::seconds(5)), std::vector<pid_t>{});
  EXPECT_TRUE(port_free(port_of(c.url)));
}

TEST(UpCli, ChildrenDieWhenUpIsKilled) {
  RunningUp c;
  ASSERT_FALSE(c.url.empty()) << c.logs();
  ASSERT_EQ(c.children.size(), 2u) << "coordinator and one worker";
  ::kill(c.pid(), SIGKILL);  // no handler runs: the children must notice on their own
  EXPECT_EQ(c.wait(std::chrono::seconds(10)), -1);
  EXPECT_EQ(still_running_after(c.children, std::chrono::seconds(40)), std::vector<pid_t>{});
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!port_free(port_of(c.url)) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(port_free(port_of(c.url)));
}

}  // namespace
}  // namespace kvfleet
