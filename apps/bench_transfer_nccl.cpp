// `kvfleet bench transfer --backend nccl`: two processes, one GPU each. NCCL is two-sided, so
// the receiving process posts a matching receive for every send: before each pass the sender
// tells it the pass's plan (ranges, count, window) over the control channel, both post, and the
// receiver answers when its side finished (with a checksum of what arrived, when asked).
//
// A CUDA context does not survive fork(): the receiving process is forked before this process
// makes its first CUDA call, and each initialises CUDA on its own device.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>

#include "apps/bench_transfer_internal.h"
#include "common/framed_pipe.h"
#include "common/units.h"
#include "transfer/device.h"

namespace kvfleet::apps::bench_transfer {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using transfer::Op;
using transfer::Range;

constexpr auto kStartWait = 120s;     // CUDA + NCCL initialisation on the other side
constexpr auto kPassWait = 300s;      // one pass: at most 20000 transfers of the largest size
constexpr auto kTransferWait = 120s;  // one transfer
constexpr char kError[] = "error: ";

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// FNV-1a over the bytes the ranges name, in order, on the local (sender) or remote side.
std::uint64_t checksum(const std::vector<std::byte>& buf, const std::vector<Range>& ranges,
                       bool local_side) {
  std::uint64_t h = 1469598103934665603ull;
  for (const Range& g : ranges) {
    const std::byte* p = buf.data() + (local_side ? g.local_offset : g.remote_offset);
    for (std::uint64_t i = 0; i < g.length; ++i) {
      h = (h ^ static_cast<std::uint64_t>(p[i])) * 1099511628211ull;
    }
  }
  return h;
}

// Posts `count` copies of `req` with at most `window` in flight and waits for all. With
// `latencies`, records each transfer's post-to-completion time. On an error, cancels and
// releases what is still in flight.
Status run_transfers(transfer::Agent& agent, const transfer::TransferRequest& req,
                     std::int64_t count, std::int64_t window, std::vector<double>* latencies,
                     std::int64_t* operations) {
  std::deque<std::pair<transfer::TransferId, Clock::time_point>> inflight;
  Status status;
  auto retire = [&] {
    const auto [id, t0] = inflight.front();
    inflight.pop_front();
    status = agent.wait(id, kTransferWait);
    if (latencies != nullptr) latencies->push_back(since(t0));
    if (operations != nullptr) *operations = agent.poll(id).operations;
    agent.release(id);
  };
  for (std::int64_t i = 0; i < count && status.is_ok(); ++i) {
    if (static_cast<std::int64_t>(inflight.size()) >= window) retire();
    if (!status.is_ok()) break;
    auto id = agent.post(req);
    if (!id.is_ok()) {
      status = id.status();
      break;
    }
    inflight.emplace_back(*id, Clock::now());
  }
  while (!inflight.empty() && status.is_ok()) retire();
  for (const auto& [id, t0] : inflight) {
    (void)agent.cancel(id);  // the first error is the one to report
    agent.release(id);
  }
  return status;
}

json ranges_json(const std::vector<Range>& ranges) {
  json a = json::array();
  for (const Range& g : ranges) a.push_back({g.local_offset, g.remote_offset, g.length});
  return a;
}

// --- the receiving process -----------------------------------------------------------------

int receiver_main(int fd, NcclDevices devices, std::uint64_t region_bytes) {
  auto fail = [fd](const std::string& why) {
    send_frame(fd, kError + why);
    return 3;
  };
  const int present = transfer::device::count();
  if (present < 2) {
    return fail("--backend nccl needs two CUDA devices (NCCL does not put two ranks of one "
                "communicator on one GPU); this machine has " +
                std::to_string(present));
  }
  for (int d : {devices.send, devices.receive}) {
    if (d >= present) {
      return fail("--devices: CUDA device " + std::to_string(d) + " does not exist (" +
                  std::to_string(present) + " present)");
    }
  }
  transfer::AgentConfig config;
  config.name = "bench-receiver";
  config.device = devices.receive;
  auto agent = transfer::create_agent("nccl", config);
  if (!agent.is_ok()) return fail(agent.status().message());
  auto region = (*agent)->allocate_memory(region_bytes, transfer::MemoryKind::kDevice);
  if (!region.is_ok()) return fail(region.status().message());
  send_frame(fd, "ok");
  send_frame(fd, *(*agent)->address());
  send_frame(fd, (*agent)->describe(region->id)->serialize());
  const std::string sender_address = recv_frame(fd, kStartWait);
  const std::string sender_descriptor = recv_frame(fd, kStartWait);
  if (sender_address.empty() || sender_descriptor.empty()) return 4;
  if (Status st = (*agent)->connect("sender", sender_address); !st.is_ok()) {
    return fail(st.message());
  }
  auto remote = transfer::RemoteRegion::parse(sender_descriptor);
  if (!remote.is_ok()) return fail(remote.status().message());
  send_frame(fd, "connected");

  std::vector<std::byte> host;
  for (;;) {
    const std::string command = recv_frame(fd, kPassWait);
    if (command.empty() || command == "bye") return 0;
    // The receive mirrors the send: the same ranges in the same order, sides swapped.
    transfer::TransferRequest req{"sender", Op::kRead, region->id, *remote, {}, "", 0ms};
    std::int64_t count = 0, window = 0;
    bool with_checksum = false;
    try {
      const json plan = json::parse(command);
      for (const auto& g : plan.at("ranges")) {
        req.ranges.push_back({g.at(1).get<std::uint64_t>(), g.at(0).get<std::uint64_t>(),
                              g.at(2).get<std::uint64_t>()});
      }
      count = plan.at("count").get<std::int64_t>();
      window = plan.at("window").get<std::int64_t>();
      with_checksum = plan.at("checksum").get<bool>();
    } catch (const json::exception& e) {
      return fail(std::string("bad plan from the sender: ") + e.what());
    }
    const Status st = run_transfers(**agent, req, count, window, nullptr, nullptr);
    if (!st.is_ok()) {
      fail(st.message());
      continue;
    }
    if (!with_checksum) {
      send_frame(fd, "done");
      continue;
    }
    host.resize(region_bytes);
    if (Status c = transfer::device::copy_to_host(host.data(), region->addr, region_bytes);
        !c.is_ok()) {
      fail(c.message());
      continue;
    }
    send_frame(fd, "done " + std::to_string(checksum(host, req.ranges, true)));
  }
}

// The receiving process, seen from the sender: says bye and reaps it on every way out.
class Receiver {
 public:
  Receiver(int fd, pid_t pid) : fd_(fd), pid_(pid) {}
  ~Receiver() {
    send_frame(fd_, "bye");
    recv_frame(fd_, 10s);  // end of file once it exited (it closes its side)
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::close(fd_);
  }
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // The next message; an "error: " message or silence becomes a Status.
  Result<std::string> expect(std::chrono::seconds timeout, std::string_view waiting_for) {
    std::string m = recv_frame(fd_, timeout);
    if (m.rfind(kError, 0) == 0) {
      return Status(StatusCode::kUnavailable, m.substr(std::strlen(kError)));
    }
    if (m.empty()) {
      return Status(StatusCode::kUnavailable,
                    "the receiving process went away or did not answer (" +
                        std::string(waiting_for) + ")");
    }
    return m;
  }
  bool send(const std::string& m) { return send_frame(fd_, m); }

 private:
  int fd_;
  pid_t pid_;
};

struct DeviceBuffer {
  void* ptr = nullptr;
  DeviceBuffer() = default;
  explicit DeviceBuffer(void* p) : ptr(p) {}
  ~DeviceBuffer() { transfer::device::release(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

Status run_nccl(const BenchTransferOptions& o, NcclDevices devices,
                const std::vector<SizePlan>& plans, std::uint64_t region_bytes,
                std::vector<Row>& rows, std::ostream& err) {
  // Checks that need no CUDA call (this process must not touch CUDA before the fork).
  if (!transfer::device::built_with_cuda()) {
    return unimplemented("--backend nccl needs a kvfleet built with CUDA and NCCL; this one was "
                         "built without CUDA");
  }
  const auto backends = transfer::agent_backends();
  if (std::find(backends.begin(), backends.end(), "nccl") == backends.end()) {
    return unimplemented("--backend nccl needs a kvfleet built with NCCL; this one was not");
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return io_error("socketpair failed");
  }
  const pid_t child = fork();
  if (child < 0) return io_error("fork failed");
  if (child == 0) {
    ::close(sv[0]);
    _exit(receiver_main(sv[1], devices, region_bytes));
  }
  ::close(sv[1]);
  Receiver receiver(sv[0], child);
  KVFLEET_ASSIGN_OR_RETURN(std::string ready, receiver.expect(kStartWait, "starting"));
  if (ready != "ok") return internal_error("the receiving process said '" + ready + "'");
  KVFLEET_ASSIGN_OR_RETURN(std::string peer_address, receiver.expect(kStartWait, "address"));
  KVFLEET_ASSIGN_OR_RETURN(std::string peer_descriptor, receiver.expect(kStartWait, "region"));

  transfer::AgentConfig config;
  config.name = "bench-sender";
  config.device = devices.send;
  KVFLEET_ASSIGN_OR_RETURN(auto agent, transfer::create_agent("nccl", config));
  KVFLEET_ASSIGN_OR_RETURN(transfer::Region local,
                           agent->allocate_memory(region_bytes, transfer::MemoryKind::kDevice));
  receiver.send(*agent->address());
  receiver.send(agent->describe(local.id)->serialize());
  KVFLEET_RETURN_IF_ERROR(agent->connect("receiver", peer_address));  // both sides at once
  KVFLEET_RETURN_IF_ERROR(receiver.expect(kStartWait, "connecting").status());
  KVFLEET_ASSIGN_OR_RETURN(transfer::RemoteRegion remote,
                           transfer::RemoteRegion::parse(peer_descriptor));

  // Random bytes, so the receiver's checksum shows each size arrived intact.
  const std::uint64_t seed = std::random_device{}();
  err << "bench transfer: nccl, GPU " << devices.send << " -> GPU " << devices.receive
      << ", data seed " << seed << "\n";
  std::vector<std::byte> host(region_bytes);
  std::mt19937_64 rng(seed);
  for (auto& b : host) b = static_cast<std::byte>(rng());
  KVFLEET_RETURN_IF_ERROR(transfer::device::copy_to_device(local.addr, host.data(), region_bytes));

  for (const SizePlan& plan : plans) {
    err << "bench transfer: " << format_bytes(static_cast<double>(plan.size)) << " (nccl)\n"
        << std::flush;
    Row row;
    row.size = plan.size;
    row.blocks = plan.blocks;
    const transfer::TransferRequest req{"receiver", Op::kWrite, local.id, remote, plan.ranges,
                                        "", 0ms};
    // One pass: tell the receiver, run the sends, wait for its side; the sends' wall time.
    auto pass = [&](std::int64_t count, std::int64_t window, bool with_checksum,
                    std::vector<double>* latencies, double* seconds) -> Result<std::string> {
      const json command = {{"ranges", ranges_json(plan.ranges)},
                            {"count", count},
                            {"window", window},
                            {"checksum", with_checksum}};
      if (!receiver.send(command.dump())) {
        return Status(StatusCode::kUnavailable, "the receiving process went away");
      }
      const auto t0 = Clock::now();
      const Status st = run_transfers(*agent, req, count, window, latencies, &row.ops);
      if (seconds != nullptr) *seconds = since(t0);
      auto reply = receiver.expect(kPassWait, "a pass");
      if (!st.is_ok()) return st.with_context(format_bytes(static_cast<double>(plan.size)));
      return reply;
    };
    // 1. One transfer, checked end to end.
    KVFLEET_ASSIGN_OR_RETURN(std::string verdict, pass(1, 1, true, nullptr, nullptr));
    if (verdict != "done " + std::to_string(checksum(host, plan.ranges, true))) {
      return internal_error("nccl transfer of " + format_bytes(static_cast<double>(plan.size)) +
                            " arrived damaged (checksum mismatch, data seed " +
                            std::to_string(seed) + ")");
    }
    row.verified = true;
    // 2. Latency: one at a time, a few to size the pass, then the pass.
    std::vector<double> lat;
    KVFLEET_RETURN_IF_ERROR(pass(5, 1, false, &lat, nullptr).status());
    std::sort(lat.begin(), lat.end());
    KVFLEET_RETURN_IF_ERROR(
        pass(iterations_for(o.seconds, lat[lat.size() / 2], 5, 2000), 1, false, &lat, nullptr)
            .status());
    set_percentiles(lat, row);
    // 3. Bandwidth: `window` transfers in flight.
    const std::int64_t iterations = iterations_for(o.seconds, row.p50_us * 1e-6, 8, 20000);
    double seconds = 0;
    KVFLEET_RETURN_IF_ERROR(pass(iterations, o.window, false, nullptr, &seconds).status());
    row.gbps = static_cast<double>(plan.size) * static_cast<double>(iterations) / seconds / 1e9;
    rows.push_back(row);
  }

  // Baselines after the transfers, so enabling peer access here cannot change NCCL's paths:
  // cudaMemcpy on the sending GPU, and from it to the receiving GPU.
  std::uint64_t max_size = 0;
  for (const SizePlan& p : plans) max_size = std::max(max_size, p.size);
  KVFLEET_ASSIGN_OR_RETURN(void* same, transfer::device::allocate(devices.send, max_size));
  DeviceBuffer same_buffer(same);
  KVFLEET_ASSIGN_OR_RETURN(void* peer, transfer::device::allocate(devices.receive, max_size));
  DeviceBuffer peer_buffer(peer);
  for (Row& row : rows) {
    const std::int64_t copies =
        std::clamp<std::int64_t>(static_cast<std::int64_t>(8e9 / static_cast<double>(row.size)),
                                 8, 20000);
    KVFLEET_ASSIGN_OR_RETURN(
        transfer::device::CopyRate d2d,
        transfer::device::copy_rate(devices.send, same, devices.send, local.addr, row.size, copies));
    KVFLEET_ASSIGN_OR_RETURN(transfer::device::CopyRate p2p,
                             transfer::device::copy_rate(devices.receive, peer, devices.send,
                                                         local.addr, row.size, copies));
    row.cuda_d2d_gbps = d2d.gbps;
    row.cuda_peer_gbps = p2p.gbps;
    row.peer_access = p2p.peer_access;
  }
  return Status::ok();
}

}  // namespace kvfleet::apps::bench_transfer
