// `nccl`: KV between GPUs with NCCL point-to-point. Two-sided: a write posted by the sender is
// a grouped ncclSend of its coalesced device ranges on the agent's own stream, matched by a read
// (grouped ncclRecv of the same ranges) posted by the receiver. Each pair of agents shares a
// two-rank communicator, set up from the lower-named agent's ncclUniqueId (passed in address()
// through the control plane) without blocking, and reused for every later transfer. A named
// completion thread polls CUDA events, fails transfers past their deadline and aborts the
// communicator of a peer that stopped answering.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/hex.h"
#include "common/log.h"
#include "transfer/agent_base.h"
#include "transfer/backends.h"

namespace kvfleet::transfer {
namespace {

Status nccl_error(std::string_view what, ncclResult_t r) {
  return Status(StatusCode::kUnavailable, std::string(what) + ": " + ncclGetErrorString(r));
}
Status cuda_error(std::string_view what, cudaError_t e) {
  return Status(StatusCode::kUnavailable, std::string(what) + ": " + cudaGetErrorString(e));
}

class NcclAgent final : public AgentBase {
 public:
  explicit NcclAgent(AgentConfig config) : AgentBase(std::move(config)) {}
  ~NcclAgent() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_.notify_one();
    if (poller_.joinable()) poller_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, p] : peers_) {
      if (p.comm != nullptr) ncclCommAbort(p.comm);
    }
    for (auto& [id, t] : inflight_) cudaEventDestroy(t.done);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  Status start() {
    int devices = 0;
    cudaError_t e = cudaGetDeviceCount(&devices);
    if (e != cudaSuccess || devices == 0) {
      return Status(StatusCode::kUnavailable, "nccl backend: no CUDA device");
    }
    if (config_.device >= devices) {
      return invalid_argument("nccl backend: CUDA device " + std::to_string(config_.device) +
                              " does not exist (" + std::to_string(devices) + " present)");
    }
    if (config_.device >= 0) {
      e = cudaSetDevice(config_.device);
      if (e != cudaSuccess) return cuda_error("cudaSetDevice", e);
    }
    e = cudaGetDevice(&device_);
    if (e != cudaSuccess) return cuda_error("cudaGetDevice", e);
    e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (e != cudaSuccess) return cuda_error("cudaStreamCreate", e);
    const ncclResult_t r = ncclGetUniqueId(&unique_id_);
    if (r != ncclSuccess) return nccl_error("ncclGetUniqueId", r);
    poller_ = std::thread([this] { poll_loop(); });
    return Status::ok();
  }

  std::string_view backend() const override { return "nccl"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.host_memory = false;
    c.device_memory = true;
    c.notifications = false;
    c.cross_process = true;
    c.two_sided = true;
    return c;
  }

  Result<std::string> address() override {
    nlohmann::json j = {
        {"name", name()},
        {"instance", instance()},
        {"unique_id", to_hex(std::string_view(unique_id_.internal, sizeof unique_id_))}};
    return j.dump();
  }

  // Both agents call connect() with each other's address; the lower name is rank 0 and its id
  // names the communicator. Initialisation runs non-blocking, bounded by the control timeout.
  Status connect(const std::string& peer, const std::string& address) override {
    nlohmann::json j = nlohmann::json::parse(address, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string() ||
        !j.contains("unique_id") || !j["unique_id"].is_string() || !j.contains("instance")) {
      return invalid_argument("connect to '" + peer + "': not an nccl agent address");
    }
    const std::string peer_agent = j["name"].get<std::string>();
    if (peer_agent == name()) return invalid_argument("an nccl agent cannot connect to itself");
    ncclUniqueId id = unique_id_;
    const int rank = name() < peer_agent ? 0 : 1;
    if (rank == 1) {
      auto bytes = from_hex(j["unique_id"].get<std::string>());
      if (!bytes.is_ok() || bytes->size() != sizeof id) {
        return invalid_argument("connect to '" + peer + "': bad nccl unique id");
      }
      std::memcpy(&id, bytes->data(), sizeof id);
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    ncclResult_t r = ncclCommInitRankConfig(&comm, 2, id, rank, &config);
    const auto deadline = std::chrono::steady_clock::now() + config_.control_timeout;
    while (r == ncclInProgress ||
           (r == ncclSuccess && comm != nullptr && async_state(comm) == ncclInProgress)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ncclCommAbort(comm);
        return Status(StatusCode::kDeadlineExceeded,
                      "nccl communicator with '" + peer + "' did not form in time");
      }
      std::this_thread::yield();
      r = async_state(comm);
    }
    if (r != ncclSuccess) return nccl_error("ncclCommInitRankConfig with '" + peer + "'", r);
    std::lock_guard<std::mutex> lock(mu_);
    Peer& p = peers_[peer];
    if (p.comm != nullptr) ncclCommAbort(p.comm);
    p.comm = comm;
    p.rank = 1 - rank;
    p.instance = j["instance"].get<std::uint64_t>();
    p.failed = Status::ok();
    return Status::ok();
  }

  Result<PeerTransport> peer_transport(const std::string& peer) const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (peers_.count(peer) == 0) return not_found("peer '" + peer + "' is not connected");
    return PeerTransport{"nccl", "nccl"};
  }

  Status disconnect(const std::string& peer) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) return not_found("peer '" + peer + "' is not connected");
    if (it->second.comm != nullptr) ncclCommDestroy(it->second.comm);
    peers_.erase(it);
    return Status::ok();
  }

  Result<Region> register_memory(void* addr, std::size_t length, MemoryKind kind) override {
    if (kind != MemoryKind::kDevice) return unimplemented("nccl moves device memory only");
    return add_region(addr, length, kind);
  }
  Result<Region> allocate_memory(std::size_t length, MemoryKind kind) override {
    if (kind != MemoryKind::kDevice) return unimplemented("nccl moves device memory only");
    void* p = nullptr;
    cudaSetDevice(device_);  // the agent's device, whichever thread asks
    const cudaError_t e = cudaMalloc(&p, length);
    if (e != cudaSuccess) return cuda_error("cudaMalloc", e);
    auto r = add_region(p, length, kind);
    if (!r.is_ok()) {
      cudaFree(p);
      return r;
    }
    std::lock_guard<std::mutex> lock(mu_);
    owned_.insert(r->id);
    return r;
  }
  Status deregister(std::uint64_t region) override {
    KVFLEET_ASSIGN_OR_RETURN(Region r, find_region(region));
    KVFLEET_RETURN_IF_ERROR(remove_region(region));
    std::lock_guard<std::mutex> lock(mu_);
    if (owned_.erase(region) != 0) cudaFree(r.addr);
    return Status::ok();
  }
  Result<RemoteRegion> describe(std::uint64_t region) override {
    KVFLEET_ASSIGN_OR_RETURN(Region r, find_region(region));
    return RemoteRegion{name(),   instance(), r.id, reinterpret_cast<std::uint64_t>(r.addr),
                        r.length, {}};
  }

  Result<TransferId> post(const TransferRequest& req) override {
    KVFLEET_ASSIGN_OR_RETURN(Region local, find_region(req.local_region));
    KVFLEET_RETURN_IF_ERROR(validate(req, local));
    if (!req.notification.empty()) return unimplemented("nccl transfers carry no notification");
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(req.peer);
    if (it == peers_.end()) {
      return Status(StatusCode::kUnavailable, "peer '" + req.peer + "' is not connected");
    }
    Peer& peer = it->second;
    if (!peer.failed.is_ok()) return peer.failed;
    if (req.remote.instance != peer.instance) {
      return Status(StatusCode::kFailedPrecondition,
                    "stale descriptor: region " + std::to_string(req.remote.region) +
                        " belongs to an earlier instance of peer '" + req.peer + "'");
    }
    cudaSetDevice(device_);
    ncclResult_t r = ncclGroupStart();
    std::uint64_t bytes = 0;
    for (const Range& g : req.ranges) {
      if (r != ncclSuccess) break;
      r = req.op == Op::kWrite ? ncclSend(local.addr + g.local_offset, g.length, ncclUint8,
                                          peer.rank, peer.comm, stream_)
                               : ncclRecv(local.addr + g.local_offset, g.length, ncclUint8,
                                          peer.rank, peer.comm, stream_);
      bytes += g.length;
    }
    const ncclResult_t end = ncclGroupEnd();
    if (r == ncclSuccess) r = end;
    if (r != ncclSuccess && r != ncclInProgress)
      return nccl_error("posting to '" + req.peer + "'", r);
    Inflight t;
    t.peer = req.peer;
    t.deadline = std::chrono::steady_clock::now() +
                 (req.timeout.count() > 0 ? req.timeout : config_.transfer_timeout);
    cudaError_t e = cudaEventCreateWithFlags(&t.done, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventRecord(t.done, stream_);
    if (e != cudaSuccess) return cuda_error("cudaEventRecord", e);
    const TransferId id = start_transfer(static_cast<std::int64_t>(req.ranges.size()), bytes);
    inflight_[id] = t;
    work_.notify_one();
    return id;
  }

  Status cancel(TransferId id) override {
    // NCCL operations cannot be withdrawn once enqueued: cancelling aborts the peer's
    // communicator, which fails its in-flight work; connect() again to reuse the peer.
    std::lock_guard<std::mutex> lock(mu_);
    auto it = inflight_.find(id);
    if (it == inflight_.end()) return Status::ok();
    fail_peer_locked(it->second.peer, Status(StatusCode::kCancelled, "transfer cancelled"));
    return Status::ok();
  }

 private:
  struct Peer {
    ncclComm_t comm = nullptr;
    int rank = 0;
    std::uint64_t instance = 0;
    Status failed;
  };
  struct Inflight {
    std::string peer;
    cudaEvent_t done = nullptr;
    std::chrono::steady_clock::time_point deadline;
  };

  static ncclResult_t async_state(ncclComm_t comm) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    return r != ncclSuccess ? r : state;
  }

  void fail_peer_locked(const std::string& peer, const Status& why) {
    auto p = peers_.find(peer);
    if (p != peers_.end() && p->second.comm != nullptr) {
      ncclCommAbort(p->second.comm);
      p->second.comm = nullptr;
      p->second.failed = why;
    }
    for (auto it = inflight_.begin(); it != inflight_.end();) {
      if (it->second.peer == peer) {
        finish_transfer(it->first, why);
        cudaEventDestroy(it->second.done);
        it = inflight_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Polls while transfers are in flight (yielding between rounds: NCCL transfers finish in
  // microseconds, and a sleep would add its granularity to every latency); sleeps on a
  // condition variable when there are none, waking every 10 ms to look at communicator errors.
  void poll_loop() {
    set_thread_name("nccl-progress");
    cudaSetDevice(device_);
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (inflight_.empty()) {
        work_.wait_for(lock, std::chrono::milliseconds(10));
      }
      const auto now = std::chrono::steady_clock::now();
      std::vector<std::string> late;
      for (auto it = inflight_.begin(); it != inflight_.end();) {
        const cudaError_t q = cudaEventQuery(it->second.done);
        if (q != cudaErrorNotReady) {
          finish_transfer(it->first, q == cudaSuccess ? Status::ok() : cuda_error("transfer", q));
          cudaEventDestroy(it->second.done);
          it = inflight_.erase(it);
          continue;
        }
        if (now > it->second.deadline) late.push_back(it->second.peer);
        ++it;
      }
      for (auto& [name_, p] : peers_) {
        if (p.comm == nullptr) continue;
        const ncclResult_t state = async_state(p.comm);
        if (state != ncclSuccess && state != ncclInProgress) late.push_back(name_);
      }
      for (const auto& peer : late) {
        fail_peer_locked(peer, Status(StatusCode::kDeadlineExceeded,
                                      "peer '" + peer + "' did not complete a transfer in time"));
      }
      if (!inflight_.empty()) {
        lock.unlock();
        std::this_thread::yield();
        lock.lock();
      }
    }
  }

  mutable std::mutex mu_;
  std::condition_variable work_;  // post() -> the poller
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  ncclUniqueId unique_id_{};
  std::map<std::string, Peer> peers_;
  std::map<TransferId, Inflight> inflight_;
  std::set<std::uint64_t> owned_;  // regions from allocate_memory (freed with them)
  std::atomic<bool> stop_{false};
  std::thread poller_;
};

}  // namespace

Result<std::unique_ptr<Agent>> make_nccl_agent(const AgentConfig& config) {
  auto agent = std::make_unique<NcclAgent>(config);
  KVFLEET_RETURN_IF_ERROR(agent->start());
  return std::unique_ptr<Agent>(std::move(agent));
}

bool nccl_available() {
  return true;
}

}  // namespace kvfleet::transfer
