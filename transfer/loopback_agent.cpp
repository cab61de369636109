// `loopback`: agents in one process; a transfer is a memcpy into the peer's registered memory,
// done when post() returns. For tests of everything above the transfer layer.
#include <cstring>
#include <map>

#include "transfer/agent_base.h"
#include "transfer/backends.h"

namespace kvfleet::transfer {
namespace {

class LoopbackAgent;

// Live loopback agents by name.
struct Directory {
  std::mutex mu;
  std::map<std::string, LoopbackAgent*> agents;
};
Directory& directory() {
  static Directory d;
  return d;
}

class LoopbackAgent final : public AgentBase {
 public:
  explicit LoopbackAgent(AgentConfig config) : AgentBase(std::move(config)) {}
  ~LoopbackAgent() override {
    std::lock_guard<std::mutex> lock(directory().mu);
    directory().agents.erase(name());
  }

  Status enroll() {
    std::lock_guard<std::mutex> lock(directory().mu);
    if (!directory().agents.emplace(name(), this).second) {
      return Status(StatusCode::kAlreadyExists, "a loopback agent named '" + name() + "' exists");
    }
    return Status::ok();
  }

  std::string_view backend() const override { return "loopback"; }
  Capabilities capabilities() const override { return Capabilities{}; }
  Result<std::string> address() override { return name(); }

  Status connect(const std::string& peer, const std::string& address) override {
    std::lock_guard<std::mutex> lock(directory().mu);
    if (directory().agents.count(address) == 0) {
      return Status(StatusCode::kUnavailable, "no loopback agent '" + address + "'");
    }
    std::lock_guard<std::mutex> plock(peers_mu_);
    peers_[peer] = address;
    return Status::ok();
  }
  Status disconnect(const std::string& peer) override {
    std::lock_guard<std::mutex> plock(peers_mu_);
    peers_.erase(peer);
    return Status::ok();
  }

  Result<Region> register_memory(void* addr, std::size_t length, MemoryKind kind) override {
    if (kind != MemoryKind::kHost) return unimplemented("loopback registers host memory only");
    return add_region(addr, length, kind);
  }
  Result<Region> allocate_memory(std::size_t length, MemoryKind kind) override {
    if (kind != MemoryKind::kHost) return unimplemented("loopback allocates host memory only");
    if (length == 0) return invalid_argument("allocate_memory: empty region");
    auto buffer = std::make_unique<std::byte[]>(length);
    KVFLEET_ASSIGN_OR_RETURN(Region r, add_region(buffer.get(), length, kind));
    std::lock_guard<std::mutex> lock(peers_mu_);
    owned_[r.id] = std::move(buffer);
    return r;
  }
  Status deregister(std::uint64_t region) override {
    KVFLEET_RETURN_IF_ERROR(remove_region(region));
    std::lock_guard<std::mutex> lock(peers_mu_);
    owned_.erase(region);
    return Status::ok();
  }
  Result<RemoteRegion> describe(std::uint64_t region) override {
    KVFLEET_ASSIGN_OR_RETURN(Region r, find_region(region));
    return RemoteRegion{name(),   instance(), r.id, reinterpret_cast<std::uint64_t>(r.addr),
                        r.length, "loopback"};
  }

  Result<TransferId> post(const TransferRequest& req) override {
    KVFLEET_ASSIGN_OR_RETURN(Region local, find_region(req.local_region));
    KVFLEET_RETURN_IF_ERROR(validate(req, local));
    std::string peer_name;
    {
      std::lock_guard<std::mutex> plock(peers_mu_);
      auto it = peers_.find(req.peer);
      if (it == peers_.end()) {
        return Status(StatusCode::kUnavailable, "peer '" + req.peer + "' is not connected");
      }
      peer_name = it->second;
    }
    std::lock_guard<std::mutex> dlock(directory().mu);
    auto pit = directory().agents.find(peer_name);
    if (pit == directory().agents.end()) {
      return Status(StatusCode::kUnavailable, "peer '" + req.peer + "' is gone");
    }
    LoopbackAgent* peer = pit->second;
    if (req.remote.instance != peer->instance() || !peer->find_region(req.remote.region).is_ok()) {
      return Status(StatusCode::kFailedPrecondition,
                    "stale descriptor: region " + std::to_string(req.remote.region) +
                        " is not registered by peer '" + req.peer + "'");
    }
    auto* remote = reinterpret_cast<std::byte*>(req.remote.addr);
    std::uint64_t bytes = 0;
    for (const Range& g : req.ranges) {
      if (req.op == Op::kWrite) {
        std::memcpy(remote + g.remote_offset, local.addr + g.local_offset, g.length);
      } else {
        std::memcpy(local.addr + g.local_offset, remote + g.remote_offset, g.length);
      }
      bytes += g.length;
    }
    const TransferId id = start_transfer(static_cast<std::int64_t>(req.ranges.size()), bytes);
    if (!req.notification.empty()) peer->push_notification({name(), req.notification});
    finish_transfer(id, Status::ok());
    return id;
  }

  Status cancel(TransferId) override { return Status::ok(); }  // transfers finish in post()

  Result<PeerTransport> peer_transport(const std::string& peer) const override {
    std::lock_guard<std::mutex> lock(peers_mu_);
    if (peers_.count(peer) == 0) return not_found("peer '" + peer + "' is not connected");
    return PeerTransport{"loopback", "memcpy"};
  }

 private:
  mutable std::mutex peers_mu_;
  std::map<std::string, std::string> peers_;
  std::map<std::uint64_t, std::unique_ptr<std::byte[]>> owned_;  // allocate_memory's buffers
};

}  // namespace

Result<std::unique_ptr<Agent>> make_loopback_agent(const AgentConfig& config) {
  auto agent = std::make_unique<LoopbackAgent>(config);
  KVFLEET_RETURN_IF_ERROR(agent->enroll());
  return std::unique_ptr<Agent>(std::move(agent));
}

}  // namespace kvfleet::transfer
