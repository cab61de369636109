// `ucx`: UCP context and worker driven by one named progress thread, which makes every UCP call.
// Other threads hand it commands (queue + eventfd) and wait for the answer with a timeout.
//
// A write posts one ucp_put_nbx per coalesced range, then flushes the endpoint (remote
// completion of every put), then sends the notification as an active message: the receiver
// sees the notification only after the data. Peers are connected with peer error handling, so a
// peer that goes away fails every pending operation on it. Deregistering a region tells
// connected peers (an active message); their later posts to it fail as stale, as do posts with
// a descriptor from an earlier instance of the peer.
#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
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

constexpr unsigned kNotifyAm = 1;  // header: sender name; data: message
constexpr unsigned kRevokeAm = 2;  // header: sender name; data: region id (8 bytes)

Status ucs_error(std::string_view what, ucs_status_t s) {
  return Status(s == UCS_ERR_CANCELED ? StatusCode::kCancelled : StatusCode::kUnavailable,
                std::string(what) + ": " + ucs_status_string(s));
}

std::string host_name() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

// Which machine and process-id namespace this process runs in: the kernel's boot id and the
// pid namespace's inode. Two agents with the same identity share a kernel (shared memory can
// reach) and can check each other's process by pid; a host name alone cannot tell two
// containers apart.
std::string machine_identity() {
  std::string boot;
  if (std::FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, f)) boot = buf;
    std::fclose(f);
  }
  while (!boot.empty() && (boot.back() == '\n' || boot.back() == ' ')) boot.pop_back();
  struct stat ns {};
  if (boot.empty() || ::stat("/proc/self/ns/pid", &ns) != 0) return "";
  return boot + "/" + std::to_string(static_cast<unsigned long long>(ns.st_ino));
}

// The transports of an endpoint's lanes, from UCX's own description of the endpoint (UCX 1.13
// has no query for them): lines "lane[N]:  I:TL/DEVICE ..." -> the distinct TL names, in lane
// order, e.g. "sysv,posix,cma" or "tcp".
std::string endpoint_transports(ucp_ep_h ep) {
  char* text = nullptr;
  size_t size = 0;
  std::FILE* f = ::open_memstream(&text, &size);
  if (!f) return "";
  ucp_ep_print_info(ep, f);
  std::fclose(f);
  const std::string info = text ? std::string(text, size) : std::string();
  std::free(text);
  std::vector<std::string> names;
  for (std::size_t at = info.find("lane["); at != std::string::npos;
       at = info.find("lane[", at + 1)) {
    const std::size_t colon = info.find(':', info.find(']', at));
    if (colon == std::string::npos) break;
    std::size_t b = info.find_first_not_of(' ', colon + 1);
    if (b == std::string::npos) break;
    b = info.find(':', b);  // past the resource index "3:"
    const std::size_t slash = info.find('/', b);
    if (b == std::string::npos || slash == std::string::npos) break;
    std::string tl = info.substr(b + 1, slash - b - 1);
    if (std::find(names.begin(), names.end(), tl) == names.end()) names.push_back(tl);
  }
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

// The class of a transport list, for metric labels: "shm" (any of UCX's shared-memory
// transports), "cuda_ipc", "rdma" (InfiniBand/RoCE verbs), "tcp", else "other".
std::string transport_class(const std::string& transports) {
  auto has = [&](std::string_view tl) {
    std::size_t at = 0;
    while (at <= transports.size()) {
      std::size_t end = transports.find(',', at);
      if (end == std::string::npos) end = transports.size();
      if (std::string_view(transports).substr(at, end - at).substr(0, tl.size()) == tl) {
        return true;
      }
      at = end + 1;
    }
    return false;
  };
  if (has("cuda_ipc")) return "cuda_ipc";
  if (has("posix") || has("sysv") || has("cma") || has("knem") || has("xpmem")) return "shm";
  if (has("rc") || has("dc") || has("ud")) return "rdma";
  if (has("tcp")) return "tcp";
  return "other";
}

// The UCX network devices for an agent reached at `host`: the interface holding that address,
// and (off loopback) every RDMA port, so that nothing listens on other interfaces. Empty when the
// address is on no interface of this host (UCX's default then applies).
std::string net_devices_for(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || !res) return "";
  const in_addr want = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  ::freeaddrinfo(res);
  const bool loopback = (ntohl(want.s_addr) >> 24) == 127;
  std::string devices;
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) != 0) return "";
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    const in_addr a = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr;
    // 127.0.0.2 and friends live on lo too, which holds 127.0.0.1/8.
    const bool match = a.s_addr == want.s_addr || (loopback && (i->ifa_flags & IFF_LOOPBACK));
    if (match && devices.find(i->ifa_name) == std::string::npos) {
      devices += (devices.empty() ? "" : ",") + std::string(i->ifa_name);
    }
  }
  ::freeifaddrs(ifs);
  if (devices.empty() || loopback) return devices;
  // RDMA ports ("mlx5_0:1"): not IP listeners, and the reason to use UCX across hosts.
  if (DIR* d = ::opendir("/sys/class/infiniband")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      const std::string dev = e->d_name;
      if (DIR* p = ::opendir(("/sys/class/infiniband/" + dev + "/ports").c_str())) {
        while (dirent* q = ::readdir(p)) {
          if (q->d_name[0] != '.') devices += "," + dev + ":" + q->d_name;
        }
        ::closedir(p);
      }
    }
    ::closedir(d);
  }
  return devices;
}

class UcxAgent;

// user_data of every UCP request: which transfer, and what kind of operation.
struct OpContext {
  UcxAgent* agent;
  TransferId id;
  enum Kind { kData, kFlush, kNotify } kind;
};

class UcxAgent final : public AgentBase {
 public:
  explicit UcxAgent(AgentConfig config) : AgentBase(std::move(config)) {}
  ~UcxAgent() override { shutdown(); }

  Status start() {
    ucp_config_t* cfg = nullptr;
    ucs_status_t s = ucp_config_read(nullptr, nullptr, &cfg);  // honours UCX_* as users set it
    if (s != UCS_OK) return ucs_error("ucp_config_read", s);
    if (!config_.bind_host.empty() && !std::getenv("UCX_NET_DEVICES")) {
      const std::string devices = net_devices_for(config_.bind_host);
      if (devices.empty()) {
        KVFLEET_LOG(kWarning) << "ucx agent " << name() << ": no interface of this host has "
                              << config_.bind_host << "; UCX listens on every interface";
      } else if (ucp_config_modify(cfg, "NET_DEVICES", devices.c_str()) != UCS_OK) {
        KVFLEET_LOG(kWarning) << "ucx agent " << name() << ": cannot restrict UCX to " << devices;
      }
    }
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    s = ucp_init(&params, cfg, &context_);
    ucp_config_release(cfg);
    if (s != UCS_OK) return ucs_error("ucp_init", s);
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches the worker
    s = ucp_worker_create(context_, &wp, &worker_);
    if (s != UCS_OK) return ucs_error("ucp_worker_create", s);
    if (ucp_worker_get_efd(worker_, &worker_fd_) != UCS_OK) worker_fd_ = -1;
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) return io_error("eventfd failed");
    for (auto [id, cb] : {std::pair{kNotifyAm, &UcxAgent::on_notify_am},
                          std::pair{kRevokeAm, &UcxAgent::on_revoke_am}}) {
      ucp_am_handler_param_t hp{};
      hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
      hp.id = id;
      hp.cb = cb;
      hp.arg = this;
      hp.flags = UCP_AM_FLAG_WHOLE_MSG;
      s = ucp_worker_set_am_recv_handler(worker_, &hp);
      if (s != UCS_OK) return ucs_error("ucp_worker_set_am_recv_handler", s);
    }
    ucp_address_t* addr = nullptr;
    size_t addr_len = 0;
    s = ucp_worker_get_address(worker_, &addr, &addr_len);
    if (s != UCS_OK) return ucs_error("ucp_worker_get_address", s);
    worker_address_ = to_hex(
        std::string_view(static_cast<const char*>(static_cast<const void*>(addr)), addr_len));
    ucp_worker_release_address(worker_, addr);
    progress_ = std::thread([this] { progress_loop(); });
    return Status::ok();
  }

  std::string_view backend() const override { return "ucx"; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.cross_process = true;
    return c;
  }

  Result<std::string> address() override {
    nlohmann::json j = {{"name", name()},
                        {"instance", instance()},
                        {"worker", worker_address_},
                        {"host", host_name()},
                        {"machine", machine_identity()},
                        {"pid", static_cast<std::int64_t>(::getpid())}};
    return j.dump();
  }

  Status connect(const std::string& peer, const std::string& address) override {
    nlohmann::json j = nlohmann::json::parse(address, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("worker") || !j["worker"].is_string() ||
        !j.contains("instance") || !j["instance"].is_number_unsigned()) {
      return invalid_argument("connect to '" + peer + "': not a ucx agent address");
    }
    auto worker_bytes = from_hex(j["worker"].get<std::string>());
    if (!worker_bytes.is_ok())
      return worker_bytes.status().with_context("connect to '" + peer + "'");
    const std::string worker = std::move(worker_bytes).value();
    const std::uint64_t peer_instance = j["instance"].get<std::uint64_t>();
    // A peer on this machine (same kernel and pid namespace) can be checked for liveness by its
    // process id. Such peers connect without UCX's peer error handling: UCX 1.13's shared-memory
    // transports cannot give it, so asking for it would send every same-host hand-off over TCP
    // loopback at a fraction of the memory's speed. The pid check (every ~100 ms) and the
    // transfer deadlines take its place.
    pid_t peer_pid = 0;
    const std::string me = machine_identity();
    if (!me.empty() && j.contains("machine") && j["machine"] == me && j.contains("pid") &&
        j["pid"].is_number_integer()) {
      peer_pid = static_cast<pid_t>(j["pid"].get<std::int64_t>());
    }
    return run([&]() -> Status {
      if (peers_.count(peer) != 0) close_peer(peer);
      auto p = std::make_unique<Peer>();
      p->agent = this;
      p->name = peer;
      p->instance = peer_instance;
      p->pid = peer_pid;
      ucp_ep_params_t ep{};
      ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
      ep.address = reinterpret_cast<const ucp_address_t*>(worker.data());
      ucs_status_t s = UCS_ERR_UNREACHABLE;
      if (peer_pid <= 0) {
        ep.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        ep.err_handler.cb = &UcxAgent::on_ep_error;
        ep.err_handler.arg = p.get();
        s = ucp_ep_create(worker_, &ep, &p->ep);
        ep.field_mask &= ~static_cast<std::uint64_t>(UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                                                     UCP_EP_PARAM_FIELD_ERR_HANDLER);
      }
      if (s == UCS_ERR_UNREACHABLE) {
        // A same-machine peer, or transports that cannot report a remote peer's failure:
        // transfers to a peer that died end at the pid check (same machine) or their deadline.
        s = ucp_ep_create(worker_, &ep, &p->ep);
        if (s == UCS_OK) {
          p->detects_failure = false;
          if (peer_pid <= 0) {
            KVFLEET_LOG(kInfo) << "transfer agent " << name() << ": the transports to '" << peer
                               << "' cannot detect its failure; waits rely on their timeouts";
          }
        }
      }
      if (s == UCS_OK) p->transport = endpoint_transports(p->ep);
      if (s != UCS_OK) return ucs_error("connect to '" + peer + "'", s);
      const std::string transport = p->transport;
      peers_[peer] = std::move(p);
      set_peer_state(peer, peer_instance, Status::ok(), transport);
      return Status::ok();
    });
  }

  Status disconnect(const std::string& peer) override {
    return run([&]() -> Status {
      if (peers_.count(peer) == 0) return not_found("peer '" + peer + "' is not connected");
      close_peer(peer);
      return Status::ok();
    });
  }

  Result<Region> register_memory(void* addr, std::size_t length, MemoryKind kind) override {
    if (kind != MemoryKind::kHost) {
      return unimplemented("this ucx build registers host memory only");
    }
    KVFLEET_ASSIGN_OR_RETURN(Region r, add_region(addr, length, kind));
    Status st = run([&]() -> Status {
      ucp_mem_map_params_t mp{};
      mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
      mp.address = addr;
      mp.length = length;
      Mem m;
      ucs_status_t s = ucp_mem_map(context_, &mp, &m.handle);
      if (s != UCS_OK) return ucs_error("ucp_mem_map", s);
      void* rkey = nullptr;
      size_t rkey_len = 0;
      s = ucp_rkey_pack(context_, m.handle, &rkey, &rkey_len);
      if (s != UCS_OK) {
        ucp_mem_unmap(context_, m.handle);
        return ucs_error("ucp_rkey_pack", s);
      }
      m.rkey.assign(static_cast<const char*>(rkey), rkey_len);
      ucp_rkey_buffer_release(rkey);
      mems_[r.id] = std::move(m);
      return Status::ok();
    });
    if (!st.is_ok()) {
      (void)remove_region(r.id);
      return st;
    }
    return r;
  }

  Result<Region> allocate_memory(std::size_t length, MemoryKind kind) override {
    if (kind != MemoryKind::kHost)
      return unimplemented("this ucx build allocates host memory only");
    if (length == 0) return invalid_argument("allocate_memory: empty region");
    Result<Region> out = Status(StatusCode::kInternal, "allocation did not run");
    Status st = run([&]() -> Status {
      ucp_mem_map_params_t mp{};
      mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS;
      mp.address = nullptr;
      mp.length = length;
      mp.flags = UCP_MEM_MAP_ALLOCATE;
      Mem m;
      ucs_status_t s = ucp_mem_map(context_, &mp, &m.handle);
      if (s != UCS_OK) return ucs_error("ucp_mem_map (allocate)", s);
      ucp_mem_attr_t attr{};
      attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
      s = ucp_mem_query(m.handle, &attr);
      void* rkey = nullptr;
      size_t rkey_len = 0;
      if (s == UCS_OK) s = ucp_rkey_pack(context_, m.handle, &rkey, &rkey_len);
      if (s != UCS_OK) {
        ucp_mem_unmap(context_, m.handle);
        return ucs_error("allocate_memory", s);
      }
      m.rkey.assign(static_cast<const char*>(rkey), rkey_len);
      m.allocated = true;
      ucp_rkey_buffer_release(rkey);
      out = add_region(attr.address, length, kind);
      if (!out.is_ok()) {
        ucp_mem_unmap(context_, m.handle);
        return out.status();
      }
      mems_[out->id] = std::move(m);
      return Status::ok();
    });
    KVFLEET_RETURN_IF_ERROR(st);
    return out;
  }

  Status deregister(std::uint64_t region) override {
    KVFLEET_RETURN_IF_ERROR(remove_region(region));
    return run([&]() -> Status {
      auto it = mems_.find(region);
      if (it == mems_.end()) return Status::ok();
      if (it->second.allocated) {
        // Peers learn of the revocation below, but a write already on its way (software RMA
        // over TCP) would still land here: memory the agent allocated stays mapped until the
        // agent shuts down. Caller-owned memory is unmapped now; the caller frees it once its
        // writers are stopped (the lease protocol above the transfer layer).
        retired_.push_back(it->second);
      } else {
        ucp_mem_unmap(context_, it->second.handle);
      }
      mems_.erase(it);
      // Tell every peer, and return only once the messages are out (or the control timeout
      // passed): a caller that next frees the memory relies on peers knowing first.
      const auto deadline = std::chrono::steady_clock::now() + config_.control_timeout;
      for (auto& [peer_name, p] : peers_) {
        ucp_request_param_t param{};
        ucs_status_ptr_t sp = send_am(*p, kRevokeAm, &region, sizeof region, &param);
        if (!UCS_PTR_IS_PTR(sp)) continue;
        while (ucp_request_check_status(sp) == UCS_INPROGRESS &&
               std::chrono::steady_clock::now() < deadline) {
          ucp_worker_progress(worker_);
        }
        ucp_request_free(sp);
      }
      return Status::ok();
    });
  }

  Result<RemoteRegion> describe(std::uint64_t region) override {
    KVFLEET_ASSIGN_OR_RETURN(Region r, find_region(region));
    RemoteRegion out{name(),   instance(), r.id, reinterpret_cast<std::uint64_t>(r.addr),
                     r.length, {}};
    Status st = run([&]() -> Status {
      auto it = mems_.find(region);
      if (it == mems_.end())
        return not_found("region " + std::to_string(region) + " is not mapped");
      out.rkey = it->second.rkey;
      return Status::ok();
    });
    KVFLEET_RETURN_IF_ERROR(st);
    return out;
  }

  // Checks the request here (regions, ranges, the peer's state) and hands the posting to the
  // progress thread without waiting for it: many transfers can be in flight from one caller.
  Result<TransferId> post(const TransferRequest& req) override {
    KVFLEET_ASSIGN_OR_RETURN(Region local, find_region(req.local_region));
    KVFLEET_RETURN_IF_ERROR(validate(req, local));
    KVFLEET_RETURN_IF_ERROR(check_peer(req));
    std::uint64_t bytes = 0;
    for (const Range& g : req.ranges) bytes += g.length;
    std::string transport;
    {
      std::lock_guard<std::mutex> lock(state_mu_);
      if (auto it = peer_state_.find(req.peer); it != peer_state_.end()) {
        transport = it->second.transport;
      }
    }
    const TransferId id = start_transfer(static_cast<std::int64_t>(req.ranges.size()), bytes,
                                         transport_class(transport));
    {
      std::lock_guard<std::mutex> lock(cmd_mu_);
      if (stopping_) {
        finish_transfer(id, Status(StatusCode::kFailedPrecondition, "the ucx agent is stopping"));
        return id;
      }
      commands_.push_back([this, req, local, id] { post_on_worker(req, local, id); });
    }
    wake();
    return id;
  }

  Status cancel(TransferId id) override {
    return run([&]() -> Status {
      auto it = pending_.find(id);
      if (it == pending_.end()) return Status::ok();
      Pending& p = it->second;
      if (p.error.is_ok()) p.error = Status(StatusCode::kCancelled, "transfer cancelled");
      for (void* r : std::set<void*>(p.requests)) ucp_request_cancel(worker_, r);
      maybe_finish(id);
      return Status::ok();
    });
  }

 private:
  struct Mem {
    ucp_mem_h handle = nullptr;
    std::string rkey;
    bool allocated = false;  // from allocate_memory: UCX owns the bytes
  };
  struct Peer {
    UcxAgent* agent = nullptr;
    std::string name;
    std::uint64_t instance = 0;
    ucp_ep_h ep = nullptr;
    bool detects_failure = true;  // connected with peer error handling
    std::string transport;        // the transports UCX chose for this peer, e.g. "posix,cma"
    pid_t pid = 0;                // same-host peer's process, for liveness checks
    Status failed;
    std::map<std::string, ucp_rkey_h> rkeys;  // by packed key bytes
  };
  struct Pending {
    std::string peer;
    std::chrono::steady_clock::time_point deadline;
    bool expired = false;  // failed by its deadline; kept until UCX returns its requests
    Op op = Op::kWrite;
    int outstanding = 0;
    bool flush_done = false;
    bool notify_needed = false;
    bool notify_done = false;
    std::string notification;
    Status error;
    std::set<void*> requests;
    std::vector<std::unique_ptr<OpContext>> contexts;
  };

  // Runs fn on the progress thread and waits for its Status, up to the control timeout.
  template <typename Fn>
  Status run(Fn&& fn) {
    if (std::this_thread::get_id() == progress_.get_id()) return fn();
    auto done = std::make_shared<std::promise<Status>>();
    auto future = done->get_future();
    {
      std::lock_guard<std::mutex> lock(cmd_mu_);
      if (stopping_) return Status(StatusCode::kFailedPrecondition, "the ucx agent is stopping");
      commands_.push_back(
          [done, f = std::function<Status()>(std::forward<Fn>(fn))] { done->set_value(f()); });
    }
    wake();
    if (future.wait_for(config_.control_timeout) != std::future_status::ready) {
      return Status(StatusCode::kDeadlineExceeded,
                    "the ucx progress thread did not answer within " +
                        std::to_string(config_.control_timeout.count()) + " ms");
    }
    return future.get();
  }

  // Wakes the progress thread if it sleeps (or is about to): it sets sleeping_ before its last
  // look at the command queue, and callers read it after queueing, so no wake-up is lost.
  void wake() {
    if (!sleeping_.load()) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }

  void progress_loop() {
    set_thread_name("ucx-progress");
    while (true) {
      std::deque<std::function<void()>> cmds;
      {
        std::lock_guard<std::mutex> lock(cmd_mu_);
        cmds.swap(commands_);
        if (cmds.empty() && stop_requested_) break;
      }
      for (auto& c : cmds) c();
      while (ucp_worker_progress(worker_) != 0) {
      }
      expire_transfers();
      sleeping_.store(true);
      {
        std::lock_guard<std::mutex> lock(cmd_mu_);
        if (!commands_.empty() || stop_requested_) {
          sleeping_.store(false);
          continue;
        }
      }
      // Sleep until the network or a command needs us (or 100 ms, to re-check stop).
      if (worker_fd_ >= 0 && ucp_worker_arm(worker_) == UCS_ERR_BUSY) {
        sleeping_.store(false);
        continue;
      }
      pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {worker_fd_, POLLIN, 0}};
      ::poll(fds, worker_fd_ >= 0 ? 2 : 1, worker_fd_ >= 0 ? 100 : 1);
      sleeping_.store(false);
      std::uint64_t drained;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &drained, sizeof drained);
    }
  }

  // The peer's state as the progress thread last saw it; errors here are returned by post().
  Status check_peer(const TransferRequest& req) {
    std::lock_guard<std::mutex> lock(state_mu_);
    auto it = peer_state_.find(req.peer);
    if (it == peer_state_.end()) {
      return Status(StatusCode::kUnavailable, "peer '" + req.peer + "' is not connected");
    }
    if (!it->second.failed.is_ok()) return it->second.failed;
    if (req.remote.instance != it->second.instance) {
      return Status(StatusCode::kFailedPrecondition,
                    "stale descriptor: region " + std::to_string(req.remote.region) +
                        " belongs to an earlier instance of peer '" + req.peer + "'");
    }
    if (auto rv = revoked_.find(req.remote.agent);
        rv != revoked_.end() && rv->second.count(req.remote.region) != 0) {
      return Status(StatusCode::kFailedPrecondition, "stale descriptor: peer '" + req.peer +
                                                         "' deregistered region " +
                                                         std::to_string(req.remote.region));
    }
    return Status::ok();
  }

  void set_peer_state(const std::string& peer, std::uint64_t instance, const Status& failed,
                      const std::string& transport) {
    std::lock_guard<std::mutex> lock(state_mu_);
    peer_state_[peer] = {instance, failed, transport};
  }

 public:
  Result<PeerTransport> peer_transport(const std::string& peer) const override {
    std::lock_guard<std::mutex> lock(state_mu_);
    auto it = peer_state_.find(peer);
    if (it == peer_state_.end()) return not_found("peer '" + peer + "' is not connected");
    return PeerTransport{transport_class(it->second.transport), it->second.transport};
  }

 private:
  void post_on_worker(const TransferRequest& req, const Region& local, TransferId id) {
    auto pit = peers_.find(req.peer);
    if (pit == peers_.end()) {
      finish_transfer(id, Status(StatusCode::kUnavailable, "peer '" + req.peer + "' disconnected"));
      return;
    }
    Peer& peer = *pit->second;
    if (!peer.failed.is_ok()) {
      finish_transfer(id, peer.failed);
      return;
    }
    ucp_rkey_h rkey = nullptr;
    if (auto it = peer.rkeys.find(req.remote.rkey); it != peer.rkeys.end()) {
      rkey = it->second;
    } else {
      // UCX 1.13 can crash while unpacking a key for shared memory whose owner already exited
      // (its error path releases a half-made key): check a same-host peer first.
      if (peer.pid > 0 && ::kill(peer.pid, 0) != 0 && errno == ESRCH) {
        mark_peer_failed(peer, Status(StatusCode::kUnavailable,
                                      "peer '" + req.peer + "' failed: its process exited"));
        finish_transfer(id, peer.failed);
        return;
      }
      const ucs_status_t s = ucp_ep_rkey_unpack(peer.ep, req.remote.rkey.data(), &rkey);
      if (s != UCS_OK) {
        finish_transfer(
            id, invalid_argument("bad remote key for region " + std::to_string(req.remote.region) +
                                 " of peer '" + req.peer + "': " + ucs_status_string(s)));
        return;
      }
      peer.rkeys[req.remote.rkey] = rkey;
    }
    Pending& p = pending_[id];
    p.peer = req.peer;
    p.deadline = std::chrono::steady_clock::now() +
                 (req.timeout.count() > 0 ? req.timeout : config_.transfer_timeout);
    p.op = req.op;
    p.notification = req.notification;
    p.notify_needed = req.op == Op::kWrite && !req.notification.empty();
    for (const Range& g : req.ranges) {
      ucp_request_param_t param = request_param(id, OpContext::kData);
      void* lp = local.addr + g.local_offset;
      const std::uint64_t rp = req.remote.addr + g.remote_offset;
      ucs_status_ptr_t sp = req.op == Op::kWrite
                                ? ucp_put_nbx(peer.ep, lp, g.length, rp, rkey, &param)
                                : ucp_get_nbx(peer.ep, lp, g.length, rp, rkey, &param);
      if (!track(p, sp, "ucp_put/get")) break;
    }
    if (p.error.is_ok() && p.notify_needed) {
      // Remote completion of every put before the notification is sent.
      ucp_request_param_t param = request_param(id, OpContext::kFlush);
      ucs_status_ptr_t sp = ucp_ep_flush_nbx(peer.ep, &param);
      if (sp == nullptr) {
        on_flushed(id);
      } else {
        track(p, sp, "ucp_ep_flush");
      }
    } else {
      p.flush_done = true;  // no notification: done when every operation completed locally
    }
    maybe_finish(id);
  }

  ucp_request_param_t request_param(TransferId id, OpContext::Kind kind) {
    Pending& p = pending_.at(id);
    p.contexts.push_back(std::make_unique<OpContext>(OpContext{this, id, kind}));
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.cb.send = &UcxAgent::on_request_done;
    param.user_data = p.contexts.back().get();
    return param;
  }

  // Records a request: pending (counted), finished already, or failed. False on failure.
  bool track(Pending& p, ucs_status_ptr_t sp, const char* what) {
    if (UCS_PTR_IS_ERR(sp)) {
      if (p.error.is_ok()) p.error = ucs_error(what, UCS_PTR_STATUS(sp));
      return false;
    }
    if (UCS_PTR_IS_PTR(sp)) {
      ++p.outstanding;
      p.requests.insert(sp);
    }
    return true;
  }

  static void on_request_done(void* request, ucs_status_t status, void* user_data) {
    auto* ctx = static_cast<OpContext*>(user_data);
    ctx->agent->request_done(request, status, *ctx);
    ucp_request_free(request);
  }

  void request_done(void* request, ucs_status_t status, const OpContext& ctx) {
    auto it = pending_.find(ctx.id);
    if (it == pending_.end()) return;
    Pending& p = it->second;
    --p.outstanding;
    p.requests.erase(request);
    if (status != UCS_OK && p.error.is_ok())
      p.error = ucs_error("transfer to '" + p.peer + "'", status);
    if (ctx.kind == OpContext::kFlush && status == UCS_OK) on_flushed(ctx.id);
    if (ctx.kind == OpContext::kNotify) p.notify_done = true;
    maybe_finish(ctx.id);
  }

  void on_flushed(TransferId id) {
    Pending& p = pending_.at(id);
    p.flush_done = true;
    if (!p.notify_needed || !p.error.is_ok()) return;
    auto peer = peers_.find(p.peer);
    if (peer == peers_.end()) {
      p.error = Status(StatusCode::kUnavailable, "peer '" + p.peer + "' disconnected");
      return;
    }
    ucp_request_param_t param = request_param(id, OpContext::kNotify);
    ucs_status_ptr_t sp =
        send_am(*peer->second, kNotifyAm, p.notification.data(), p.notification.size(), &param);
    if (sp == nullptr) {
      p.notify_done = true;
    } else {
      track(p, sp, "notification");
    }
  }

  // Fails transfers past their deadline. A peer whose transports cannot report failures is
  // taken as failed when one of its transfers times out, so later posts fail at once.
  void expire_transfers() {
    const auto now = std::chrono::steady_clock::now();
    // Same-host peers whose transports cannot report failure: is the process still there?
    for (auto& [peer_name, peer] : peers_) {
      if (!peer->detects_failure && peer->pid > 0 && peer->failed.is_ok() &&
          ::kill(peer->pid, 0) != 0 && errno == ESRCH) {
        mark_peer_failed(*peer, Status(StatusCode::kUnavailable,
                                       "peer '" + peer_name + "' failed: its process exited"));
      }
    }
    std::vector<TransferId> ids;
    for (auto& [id, p] : pending_) {
      if (!p.expired && now >= p.deadline) ids.push_back(id);
    }
    for (TransferId id : ids) {
      Pending& p = pending_.at(id);
      p.expired = true;
      const Status timeout(StatusCode::kDeadlineExceeded,
                           "transfer to '" + p.peer + "' did not complete by its deadline");
      if (p.error.is_ok()) p.error = timeout;
      auto peer = peers_.find(p.peer);
      if (peer != peers_.end() && !peer->second->detects_failure && peer->second->failed.is_ok()) {
        peer->second->failed =
            Status(StatusCode::kUnavailable,
                   "peer '" + p.peer + "' is unresponsive: a transfer timed out");
      }
      for (void* r : std::set<void*>(p.requests)) ucp_request_cancel(worker_, r);
      finish_transfer(id, p.error);  // waiters learn now; the entry waits for its requests
      maybe_finish(id);
    }
  }

  void maybe_finish(TransferId id) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    Pending& p = it->second;
    if (p.outstanding > 0) return;  // requests still reference this entry
    const bool complete = p.flush_done && (!p.notify_needed || p.notify_done);
    if (!p.error.is_ok() || complete) {
      finish_transfer(id, p.error);
      pending_.erase(it);
    }
  }

  ucs_status_ptr_t send_am(Peer& peer, unsigned id, const void* data, size_t len,
                           ucp_request_param_t* param) {
    if (peer.ep == nullptr || !peer.failed.is_ok()) return UCS_STATUS_PTR(UCS_ERR_CONNECTION_RESET);
    ucp_request_param_t fire_and_forget{};
    ucp_request_param_t* pp = param != nullptr ? param : &fire_and_forget;
    pp->op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
    pp->flags = UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t sp = ucp_am_send_nbx(peer.ep, id, name().data(), name().size(), data, len, pp);
    if (param == nullptr && UCS_PTR_IS_PTR(sp)) ucp_request_free(sp);  // completes on its own
    return sp;
  }

  static ucs_status_t on_notify_am(void* arg, const void* header, size_t header_len, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
    // Sent eager, so the data is here (valid during this call); a rendezvous would need a
    // receive we never post.
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) return UCS_OK;
    static_cast<UcxAgent*>(arg)->push_notification(
        {std::string(static_cast<const char*>(header), header_len),
         std::string(static_cast<const char*>(data), length)});
    return UCS_OK;
  }

  static ucs_status_t on_revoke_am(void* arg, const void* header, size_t header_len, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 || length != sizeof(std::uint64_t)) {
      return UCS_OK;
    }
    std::uint64_t region = 0;
    std::memcpy(&region, data, sizeof region);
    auto* self = static_cast<UcxAgent*>(arg);
    std::lock_guard<std::mutex> lock(self->state_mu_);
    self->revoked_[std::string(static_cast<const char*>(header), header_len)].insert(region);
    return UCS_OK;
  }

  static void on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* peer = static_cast<Peer*>(arg);
    peer->agent->peer_failed(*peer, status);
  }

  void peer_failed(Peer& peer, ucs_status_t status) {
    mark_peer_failed(peer, Status(StatusCode::kUnavailable,
                                  "peer '" + peer.name + "' failed: " + ucs_status_string(status)));
  }

  // Fails the peer and every transfer pending on it; later posts to it fail at once.
  void mark_peer_failed(Peer& peer, Status why) {
    peer.failed = std::move(why);
    KVFLEET_LOG(kWarning) << "transfer agent " << name() << ": " << peer.failed.message();
    set_peer_state(peer.name, peer.instance, peer.failed, peer.transport);
    for (auto& [id, p] : pending_) {
      if (p.peer == peer.name && p.error.is_ok()) p.error = peer.failed;
    }
    std::vector<TransferId> ids;
    for (auto& [id, p] : pending_) ids.push_back(id);
    for (TransferId id : ids) maybe_finish(id);
  }

  void close_peer(const std::string& name_) {
    auto it = peers_.find(name_);
    if (it == peers_.end()) return;
    Peer& p = *it->second;
    for (auto& [bytes, rkey] : p.rkeys) ucp_rkey_destroy(rkey);
    p.rkeys.clear();
    if (p.ep != nullptr) {
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t sp = ucp_ep_close_nbx(p.ep, &param);
      if (UCS_PTR_IS_PTR(sp)) {
        // A forced close completes locally; progress a bounded number of times.
        for (int i = 0; i < 100000 && ucp_request_check_status(sp) == UCS_INPROGRESS; ++i) {
          ucp_worker_progress(worker_);
        }
        ucp_request_free(sp);
      }
      p.ep = nullptr;
    }
    peers_.erase(it);
    std::lock_guard<std::mutex> lock(state_mu_);
    peer_state_.erase(name_);
  }

  void shutdown() {
    if (progress_.joinable()) {
      (void)run([&]() -> Status {
        std::vector<TransferId> ids;
        for (auto& [id, p] : pending_) ids.push_back(id);
        for (TransferId id : ids) {
          Pending& p = pending_.at(id);
          if (p.error.is_ok()) p.error = Status(StatusCode::kCancelled, "the agent is stopping");
          for (void* r : std::set<void*>(p.requests)) ucp_request_cancel(worker_, r);
        }
        while (ucp_worker_progress(worker_) != 0) {
        }
        std::vector<std::string> names;
        for (auto& [n, p] : peers_) names.push_back(n);
        for (const auto& n : names) close_peer(n);
        return Status::ok();
      });
      {
        std::lock_guard<std::mutex> lock(cmd_mu_);
        stop_requested_ = true;
        stopping_ = true;
      }
      wake();
      progress_.join();
    }
    // Destroying the worker purges requests still queued and calls their callbacks, which look
    // up pending_: it must outlive the worker.
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    for (auto& [id, p] : pending_)
      finish_transfer(id, Status(StatusCode::kCancelled, "agent stopped"));
    pending_.clear();
    // Memory goes last: until the worker is gone, data from a peer may still land in it.
    for (auto& [id, m] : mems_) ucp_mem_unmap(context_, m.handle);
    mems_.clear();
    for (auto& m : retired_) ucp_mem_unmap(context_, m.handle);
    retired_.clear();
    if (context_ != nullptr) ucp_cleanup(context_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    worker_ = nullptr;
    context_ = nullptr;
    wake_fd_ = -1;
  }

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int worker_fd_ = -1;
  int wake_fd_ = -1;
  std::string worker_address_;
  std::thread progress_;
  std::mutex cmd_mu_;
  std::deque<std::function<void()>> commands_;
  bool stop_requested_ = false;
  std::atomic<bool> sleeping_{true};
  bool stopping_ = false;
  // Progress-thread state.
  std::map<std::string, std::unique_ptr<Peer>> peers_;
  std::map<std::uint64_t, Mem> mems_;
  std::vector<Mem> retired_;  // deregistered allocated memory, unmapped at shutdown
  std::map<TransferId, Pending> pending_;
  // Read by callers of post(), written by the progress thread.
  struct PeerState {
    std::uint64_t instance = 0;
    Status failed;
    std::string transport;  // UCX's transport names (endpoint_transports)
  };
  mutable std::mutex state_mu_;
  std::map<std::string, PeerState> peer_state_;
  std::map<std::string, std::set<std::uint64_t>> revoked_;  // by owning agent's name
};

}  // namespace

Result<std::unique_ptr<Agent>> make_ucx_agent(const AgentConfig& config) {
  auto agent = std::make_unique<UcxAgent>(config);
  KVFLEET_RETURN_IF_ERROR(agent->start());
  return std::unique_ptr<Agent>(std::move(agent));
}

}  // namespace kvfleet::transfer
