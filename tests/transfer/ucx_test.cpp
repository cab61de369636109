// UCX between two processes on this machine, over shared memory and over TCP (loopback):
// bytes arrive intact (checksums), in both directions, contiguous and scattered, many in flight;
// a killed peer fails pending work within the timeout; bad and stale descriptors are errors.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <span>

#include "common/framed_pipe.h"
#include "tests/test_util.h"
#include "transfer/transfer.h"

namespace kvfleet::transfer {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Length-prefixed messages over a socketpair: the tests' control plane.
bool send_msg(int fd, const std::string& m) {
  return send_frame(fd, m);
}
std::string recv_msg(int fd, std::chrono::milliseconds timeout = 20s) {
  std::string m = recv_frame(fd, timeout);
  return m.empty() ? "<eof>" : m;
}

std::uint64_t fnv(const std::byte* p, size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint64_t>(p[i])) * 1099511628211ull;
  return h;
}

// A forked child with a control socket. The child runs `body` and exits with its return value.
struct Child {
  pid_t pid = -1;
  int fd = -1;
  static Child spawn(const std::function<int(int fd)>& body) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    Child c;
    c.pid = fork();
    if (c.pid == 0) {
      ::close(sv[0]);
      const int rc = body(sv[1]);
      std::fflush(nullptr);
      _exit(rc);
    }
    ::close(sv[1]);
    c.fd = sv[0];
    return c;
  }
  int wait_exit() {
    int status = 0;
    waitpid(pid, &status, 0);
    ::close(fd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

constexpr size_t kBlock = 64 * 1024;
constexpr size_t kBlocks = 64;  // 4 MiB regions

// The receiving side: registers a zeroed region, publishes it, connects back, then answers
// "sum" requests with the region's checksum and writes its own pattern into the parent's region
// on "write-back"; exits on "bye".
int receiver(int fd) {
  auto agent = create_agent("ucx", {"receiver"});
  if (!agent.is_ok()) {
    std::fprintf(stderr, "receiver: %s\n", agent.status().to_string().c_str());
    return 10;
  }
  // Agent-owned memory: it outlives anything still arriving while the agent shuts down.
  auto region = (*agent)->allocate_memory(kBlock * kBlocks, MemoryKind::kHost);
  if (!region.is_ok()) {
    std::fprintf(stderr, "receiver: %s\n", region.status().to_string().c_str());
    return 11;
  }
  std::span<std::byte> buf(region->addr, region->length);
  std::fill(buf.begin(), buf.end(), std::byte{0});
  send_msg(fd, *(*agent)->address());
  send_msg(fd, (*agent)->describe(region->id)->serialize());
  const std::string parent_address = recv_msg(fd);
  if (!(*agent)->connect("sender", parent_address).is_ok()) return 12;
  while (true) {
    const std::string cmd = recv_msg(fd, 60s);
    if (cmd == "sum") {
      send_msg(fd, std::to_string(fnv(buf.data(), buf.size())));
    } else if (cmd == "notes") {
      std::string all;
      for (int i = 0; i < 1000; ++i) {
        auto n = (*agent)->wait_notification(5s);
        if (!n.is_ok()) break;
        all += n->message + ";";
        if (n->message == "last") break;
      }
      send_msg(fd, all);
    } else if (cmd.rfind("write-back ", 0) == 0) {
      auto remote = RemoteRegion::parse(cmd.substr(11));
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<std::byte>(i * 7 + 3);
      auto id = (*agent)->post(
          {"sender", Op::kWrite, region->id, *remote, {{0, 0, buf.size()}}, "written back"});
      send_msg(fd, id.is_ok() && (*agent)->wait(*id, 10s).is_ok() ? "ok" : "failed");
    } else if (cmd == "deregister") {
      send_msg(fd, (*agent)->deregister(region->id).is_ok() ? "ok" : "failed");
    } else {
      return cmd == "bye" ? 0 : 13;
    }
  }
}

class UcxTwoProcess : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    // The library's own knob, as users set it; "default" leaves it unset, as most users do.
    if (std::string(GetParam()) != "default") setenv("UCX_TLS", GetParam(), 1);
    seed_ = test::test_seed();
    rng_.seed(seed_);
    child_ = Child::spawn(receiver);
    AgentConfig config;
    config.name = "sender";
    config.transfer_timeout = std::chrono::milliseconds(3000);
    auto a = create_agent("ucx", config);
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    agent_ = std::move(a).value();
    src_.resize(kBlock * kBlocks);
    for (auto& b : src_) b = static_cast<std::byte>(rng_());
    auto r = agent_->register_memory(src_.data(), src_.size(), MemoryKind::kHost);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    local_ = *r;
    const std::string child_address = recv_msg(child_.fd);
    auto remote = RemoteRegion::parse(recv_msg(child_.fd));
    ASSERT_TRUE(remote.is_ok()) << remote.status().to_string();
    remote_ = *remote;
    const Status connected = agent_->connect("receiver", child_address);
    ASSERT_TRUE(connected.is_ok()) << connected.to_string();
    send_msg(child_.fd, *agent_->address());
  }
  void TearDown() override {
    if (child_.pid > 0) {
      send_msg(child_.fd, "bye");
      child_exit_ = child_.wait_exit();
    }
    agent_.reset();
    unsetenv("UCX_TLS");
  }
  std::uint64_t remote_sum() {
    send_msg(child_.fd, "sum");
    return std::stoull(recv_msg(child_.fd));
  }

  std::uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  Child child_;
  int child_exit_ = -1;
  std::unique_ptr<Agent> agent_;
  std::vector<std::byte> src_;
  Region local_;
  RemoteRegion remote_;
};

TEST_P(UcxTwoProcess, ContiguousAndScatteredWritesArriveIntact) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + ", UCX_TLS=" + GetParam());
  // What the receiver's region must hold after the writes below.
  std::vector<std::byte> expect(src_.size(), std::byte{0});
  // 1. One contiguous 4 MiB write.
  auto id =
      agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, 0, src_.size()}}, "first"});
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  ASSERT_TRUE(agent_->wait(*id, 10s).is_ok());
  EXPECT_EQ(agent_->poll(*id).operations, 1);
  // What carried it: the peer is on this machine, so with UCX's defaults the shared-memory
  // transports (no TCP loopback), and what UCX_TLS asks for otherwise.
  const std::string want = std::string(GetParam()) == "tcp" ? "tcp" : "shm";
  EXPECT_EQ(agent_->poll(*id).transport, want);
  auto pt = agent_->peer_transport("receiver");
  ASSERT_TRUE(pt.is_ok()) << pt.status().to_string();
  EXPECT_EQ(pt->transport, want) << pt->detail;
  EXPECT_FALSE(pt->detail.empty());
  EXPECT_FALSE(agent_->peer_transport("nobody").is_ok());
  std::memcpy(expect.data(), src_.data(), src_.size());
  // 2. Many scattered block writes in flight at once, then a final notification.
  std::vector<std::int32_t> dst(kBlocks);
  std::iota(dst.begin(), dst.end(), 0);
  std::shuffle(dst.begin(), dst.end(), rng_);
  std::vector<TransferId> ids;
  for (size_t i = 0; i < kBlocks; i += 4) {
    std::vector<std::int32_t> s = {static_cast<std::int32_t>((i + 1) % kBlocks),
                                   static_cast<std::int32_t>((i + 2) % kBlocks)};
    std::vector<std::int32_t> d = {dst[i], dst[i + 1]};
    auto t = agent_->post({"receiver", Op::kWrite, local_.id, remote_, block_ranges(s, d, kBlock),
                           i + 4 >= kBlocks ? "last" : "n" + std::to_string(i)});
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    ids.push_back(*t);
    for (size_t k = 0; k < 2; ++k) {
      std::memcpy(expect.data() + static_cast<size_t>(d[k]) * kBlock,
                  src_.data() + static_cast<size_t>(s[k]) * kBlock, kBlock);
    }
  }
  for (TransferId t : ids) ASSERT_TRUE(agent_->wait(t, 10s).is_ok());
  send_msg(child_.fd, "notes");
  const std::string notes = recv_msg(child_.fd);
  EXPECT_NE(notes.find("first;"), std::string::npos) << notes;
  EXPECT_NE(notes.find("last;"), std::string::npos) << notes;
  EXPECT_EQ(remote_sum(), fnv(expect.data(), expect.size()));
  // 3. Reads bring the remote bytes back.
  std::vector<std::byte> back(src_.size());
  auto rb = *agent_->register_memory(back.data(), back.size(), MemoryKind::kHost);
  auto r = agent_->post({"receiver", Op::kRead, rb.id, remote_, {{0, 0, back.size()}}, ""});
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(agent_->wait(*r, 10s).is_ok());
  EXPECT_EQ(fnv(back.data(), back.size()), fnv(expect.data(), expect.size()));
}

TEST_P(UcxTwoProcess, TheOtherDirectionToo) {
  std::vector<std::byte> inbox(kBlock * kBlocks, std::byte{0});
  auto rin = *agent_->register_memory(inbox.data(), inbox.size(), MemoryKind::kHost);
  send_msg(child_.fd, "write-back " + agent_->describe(rin.id)->serialize());
  ASSERT_EQ(recv_msg(child_.fd), "ok");
  auto note = agent_->wait_notification(10s);
  ASSERT_TRUE(note.is_ok());
  EXPECT_EQ(note->message, "written back");
  for (size_t i = 0; i < inbox.size(); i += 4093) {
    ASSERT_EQ(inbox[i], static_cast<std::byte>(i * 7 + 3)) << i;
  }
}

TEST_P(UcxTwoProcess, BadAndStaleDescriptorsAreErrors) {
  RemoteRegion old = remote_;
  old.instance ^= 0x5555;
  auto s = agent_->post({"receiver", Op::kWrite, local_.id, old, {{0, 0, 64}}, ""});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("earlier instance"), std::string::npos)
      << s.status().message();
  auto range =
      agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, src_.size() - 8, 64}}, ""});
  ASSERT_FALSE(range.is_ok());
  EXPECT_EQ(range.status().code(), StatusCode::kOutOfRange);
  auto unknown = agent_->post({"nobody", Op::kWrite, local_.id, remote_, {{0, 0, 64}}, ""});
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnavailable);
  // The receiver deregisters: its revocation reaches us, after which posts fail as stale.
  send_msg(child_.fd, "deregister");
  ASSERT_EQ(recv_msg(child_.fd), "ok");
  Status last;
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    auto id = agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, 0, 64}}, ""});
    if (!id.is_ok()) {
      last = id.status();
      break;
    }
    (void)agent_->wait(*id, 1s);  // lands in memory the receiver still owns (not yet freed)
    agent_->release(*id);
  }
  ASSERT_FALSE(last.is_ok()) << "the revocation never arrived";
  EXPECT_EQ(last.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(last.message().find("deregistered region"), std::string::npos) << last.message();
}

TEST_P(UcxTwoProcess, KilledPeerFailsPendingWorkWithinTheTimeout) {
  SCOPED_TRACE(std::string("UCX_TLS=") + GetParam());
  // A first write completes (the peer's key is in use, as in a running system), then many
  // transfers are in flight when the receiver is killed.
  auto warm = agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, 0, 4096}}, "warm"});
  ASSERT_TRUE(warm.is_ok());
  ASSERT_TRUE(agent_->wait(*warm, 10s).is_ok());
  std::vector<TransferId> ids;
  for (int i = 0; i < 64; ++i) {
    auto id =
        agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, 0, src_.size()}}, "x"});
    ASSERT_TRUE(id.is_ok());
    ids.push_back(*id);
  }
  ::kill(child_.pid, SIGKILL);
  const int code = child_.wait_exit();
  child_.pid = -1;
  EXPECT_EQ(code, 128 + SIGKILL);
  // Every transfer ends by its 3 s deadline at the latest: failed, or done if it had landed
  // before the kill. With TCP the peer's failure is detected; over shared memory it cannot be,
  // and the deadline decides.
  const auto start = Clock::now();
  for (TransferId id : ids) {
    const Status st = agent_->wait(id, 10s);
    EXPECT_NE(agent_->poll(id).state, TransferState::kPending) << st.to_string();
    agent_->release(id);
  }
  EXPECT_LT(Clock::now() - start, 8s) << "pending work must end by its deadline";
  // Work posted after the kill fails too, and nothing waited past its timeout.
  Status after;
  for (int i = 0; i < 50 && after.is_ok(); ++i) {
    auto id =
        agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, 0, src_.size()}}, "x"});
    if (!id.is_ok()) {
      after = id.status();
      break;
    }
    after = agent_->wait(*id, 5s);
    agent_->release(*id);
  }
  // TCP reports the failure (unavailable); over shared memory the dead peer's mapped memory
  // still takes writes, and the transfer deadline is what ends them.
  EXPECT_FALSE(after.is_ok()) << "a dead peer must not accept work";
  EXPECT_TRUE(after.code() == StatusCode::kUnavailable ||
              after.code() == StatusCode::kDeadlineExceeded)
      << after.to_string();
  // Memory stays registered while owned, and is released on request.
  EXPECT_EQ(agent_->stats().regions_registered, 1);
  EXPECT_TRUE(agent_->deregister(local_.id).is_ok());
  EXPECT_EQ(agent_->stats().regions_registered, 0);
}

TEST_P(UcxTwoProcess, CancelledTransfersFreeTheirResources) {
  std::vector<TransferId> ids;
  for (int i = 0; i < 8; ++i) {
    auto id = agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, 0, src_.size()}}, ""});
    ASSERT_TRUE(id.is_ok());
    ids.push_back(*id);
  }
  for (TransferId id : ids) ASSERT_TRUE(agent_->cancel(id).is_ok());
  for (TransferId id : ids) {
    const Status st = agent_->wait(id, 10s);
    EXPECT_TRUE(st.is_ok() || st.code() == StatusCode::kCancelled) << st.to_string();
    agent_->release(id);
  }
  // The agent still works afterwards.
  auto id = agent_->post({"receiver", Op::kWrite, local_.id, remote_, {{0, 0, 4096}}, ""});
  ASSERT_TRUE(id.is_ok());
  EXPECT_TRUE(agent_->wait(*id, 10s).is_ok());
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxTwoProcess, ::testing::Values("default", "shm", "tcp"),
                         [](const auto& p) { return std::string(p.param); });

}  // namespace
}  // namespace kvfleet::transfer
