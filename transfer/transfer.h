#pragma once
// KV movement between agents (one per process and device), shaped like NIXL's backends:
// capability queries; register memory -> describe it for peers -> post a batch of ranges ->
// poll or wait (always with a timeout) -> release. Backends are chosen by name: `loopback`
// (in-process, for tests of everything above transfer), `ucx` (processes and hosts), `nccl`
// (GPUs; CUDA builds). No call blocks without a timeout.
//
// A write lands in the peer's registered memory. When the request carries a notification, the
// peer receives it only after every byte of the write is visible to it (the sender flushes
// first). Without one, a transfer is done when its operations completed locally: the local
// buffer may be reused, and the data is on its way (as NIXL and ucx_perftest count it).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvfleet::transfer {

enum class MemoryKind { kHost, kDevice };
enum class Op { kWrite, kRead };

struct Capabilities {
  bool host_memory = true;
  bool device_memory = false;
  bool write = true;
  bool read = true;
  bool notifications = true;
  bool cross_process = false;  // peers may live in other processes or hosts
  // Two-sided backends (nccl): a write posted on one agent moves data only together with a
  // read posted on the peer with the same ranges (the receive); one-sided ones need nothing.
  bool two_sided = false;
};

// A registered local region.
struct Region {
  std::uint64_t id = 0;
  std::byte* addr = nullptr;
  std::size_t length = 0;
  MemoryKind kind = MemoryKind::kHost;
};

// What a peer needs to address a registered region. Travels through the control plane as text.
struct RemoteRegion {
  std::string agent;           // the owning agent's name
  std::uint64_t instance = 0;  // the owning agent's instance (a restarted agent differs)
  std::uint64_t region = 0;    // region id within that instance
  std::uint64_t addr = 0;      // remote virtual address of byte 0
  std::uint64_t length = 0;
  std::string rkey;  // backend-specific remote key bytes

  std::string serialize() const;
  static Result<RemoteRegion> parse(std::string_view text);
};

// One contiguous piece: bytes [local_offset, +length) of the local region and
// [remote_offset, +length) of the remote one.
struct Range {
  std::uint64_t local_offset = 0;
  std::uint64_t remote_offset = 0;
  std::uint64_t length = 0;
};

// Merges neighbours that are contiguous on both sides, keeping order.
std::vector<Range> coalesce(const std::vector<Range>& ranges);
// Ranges for copying blocks src[i] (local) to dst[i] (remote) of `block_bytes` each, coalesced.
std::vector<Range> block_ranges(const std::vector<std::int32_t>& src,
                                const std::vector<std::int32_t>& dst, std::uint64_t block_bytes);

struct TransferRequest {
  std::string peer;
  Op op = Op::kWrite;
  std::uint64_t local_region = 0;
  RemoteRegion remote;
  std::vector<Range> ranges;
  std::string notification;  // writes only; delivered to the peer after the data; empty: none
  // The transfer fails with deadline_exceeded if not complete by then; 0: the agent's default.
  std::chrono::milliseconds timeout{0};
};

using TransferId = std::uint64_t;
enum class TransferState { kPending, kDone, kFailed, kCancelled };

struct TransferInfo {
  TransferState state = TransferState::kPending;
  Status error;                 // when failed
  std::int64_t operations = 0;  // backend operations posted (puts/gets), after coalescing
  std::uint64_t bytes = 0;
  // What carried it: the backend's class of transport to the peer ("shm", "tcp", "rdma",
  // "cuda_ipc" for ucx; "loopback"; "nccl").
  std::string transport;
};

struct Notification {
  std::string peer;
  std::string message;
};

struct AgentStats {
  std::int64_t transfers_posted = 0, transfers_done = 0, transfers_failed = 0;
  std::int64_t operations = 0;
  std::uint64_t bytes = 0;
  std::int64_t regions_registered = 0;  // currently
};

class Agent {
 public:
  virtual ~Agent() = default;
  virtual std::string_view backend() const = 0;
  virtual const std::string& name() const = 0;
  virtual Capabilities capabilities() const = 0;

  // This agent's connection blob, for peers' connect().
  virtual Result<std::string> address() = 0;
  virtual Status connect(const std::string& peer, const std::string& address) = 0;
  virtual Status disconnect(const std::string& peer) = 0;

  // Registration lasts until deregister() or the agent's destruction. Deregistering tells
  // connected peers, whose later posts to the region fail as stale.
  virtual Result<Region> register_memory(void* addr, std::size_t length, MemoryKind kind) = 0;
  // Memory allocated by the backend and registered, owned by the agent until deregister() or
  // its destruction. Prefer it for buffers that peers write: some transports then reach it
  // directly (UCX over shared memory maps it into the peer instead of copying through the
  // kernel).
  virtual Result<Region> allocate_memory(std::size_t length, MemoryKind kind) = 0;
  virtual Status deregister(std::uint64_t region) = 0;
  virtual Result<RemoteRegion> describe(std::uint64_t region) = 0;

  // Starts a transfer; errors in the request itself (unknown peer or region, ranges outside a
  // region, a bad remote key) are returned here.
  virtual Result<TransferId> post(const TransferRequest& request) = 0;
  virtual TransferInfo poll(TransferId id) = 0;
  // Waits until the transfer finishes: OK, its error, or deadline_exceeded (it stays pending).
  virtual Status wait(TransferId id, std::chrono::milliseconds timeout) = 0;
  virtual Status cancel(TransferId id) = 0;
  // Forgets a finished transfer (a pending one is cancelled first).
  virtual void release(TransferId id) = 0;

  virtual std::vector<Notification> take_notifications() = 0;
  virtual Result<Notification> wait_notification(std::chrono::milliseconds timeout) = 0;
  virtual AgentStats stats() const = 0;

  // The transports that carry transfers to a connected peer: `transport` is the class that
  // TransferInfo::transport reports, `detail` what the backend chose (for ucx, UCX's transport
  // names, e.g. "sysv,posix,cma"). not_found for a peer that is not connected.
  struct PeerTransport {
    std::string transport;
    std::string detail;
  };
  virtual Result<PeerTransport> peer_transport(const std::string& peer) const = 0;
};

struct AgentConfig {
  std::string name;
  std::chrono::milliseconds control_timeout{10000};   // for register, connect, describe...
  std::chrono::milliseconds transfer_timeout{30000};  // default deadline of every transfer
  int device = -1;  // device-memory backends (nccl): the CUDA device; -1: the caller's current
  // Network backends (ucx) listen only on the interface that has this address (a loopback
  // address: loopback only), plus RDMA devices when it is not loopback. Empty: every interface.
  // A user's own UCX_NET_DEVICES wins.
  std::string bind_host;
};

// Backends: "loopback", "ucx", and "nccl" in CUDA builds. Unknown names list the known ones.
Result<std::unique_ptr<Agent>> create_agent(std::string_view backend, const AgentConfig& config);
std::vector<std::string> agent_backends();

}  // namespace kvfleet::transfer
