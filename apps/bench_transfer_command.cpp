#include "apps/bench_transfer_command.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>

#include "apps/bench_transfer_internal.h"
#include "apps/exit_code.h"
#include "common/checksum.h"
#include "common/framed_pipe.h"
#include "common/units.h"
#include "kvstore/host_memory.h"
#include "transfer/transfer.h"

namespace kvfleet::apps {
namespace bench_transfer {

void set_percentiles(std::vector<double>& seconds, Row& row) {
  if (seconds.empty()) return;
  std::sort(seconds.begin(), seconds.end());
  row.p50_us = seconds[seconds.size() / 2] * 1e6;
  row.p99_us = seconds[std::min(seconds.size() - 1, seconds.size() * 99 / 100)] * 1e6;
}

std::int64_t iterations_for(double seconds, double per_transfer, std::int64_t lo, std::int64_t hi) {
  if (!(per_transfer > 0)) return hi;
  return std::clamp(static_cast<std::int64_t>(seconds / per_transfer), lo, hi);
}

}  // namespace bench_transfer

namespace {

using namespace bench_transfer;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using transfer::Op;
using transfer::Range;

constexpr std::int64_t kLayersForComparison =
    8;  // `small`: what a per-block-per-layer scheme posts

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool send_msg(int fd, const std::string& m) {
  return send_frame(fd, m);
}
std::string recv_msg(int fd, int timeout_ms = 30000) {
  return recv_frame(fd, std::chrono::milliseconds(timeout_ms));
}

transfer::AgentConfig named(std::string name) {
  transfer::AgentConfig c;
  c.name = std::move(name);
  return c;
}

// The receiving process: registers `bytes`, publishes address and descriptor, waits for "bye".
int receiver_main(int fd, const std::string& backend, std::size_t bytes) {
  auto agent = transfer::create_agent(backend, named("bench-receiver"));
  if (!agent.is_ok()) return 3;
  auto region = (*agent)->allocate_memory(bytes, transfer::MemoryKind::kHost);
  if (!region.is_ok()) return 5;
  send_msg(fd, *(*agent)->address());
  send_msg(fd, (*agent)->describe(region->id)->serialize());
  while (recv_msg(fd, 600000) != "bye") {
  }
  return 0;
}

// --- ucx_perftest as the baseline --------------------------------------------------------------
int free_tcp_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(s);
  return port;  // released for ucx_perftest to bind (a small window another process could take)
}

struct Spawned {
  pid_t pid = -1;
  int out = -1;  // stdout+stderr
};

Spawned spawn(const std::vector<std::string>& argv) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  ::close(p[1]);
  return {pid, p[0]};
}

// Reads the child's output until `marker` appears (true), it exits, or the timeout passes.
bool read_until(int fd, std::string& text, const std::string& marker, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[4096];
  while (text.find(marker) == std::string::npos) {
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, left) <= 0) return false;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    text.append(buf, static_cast<size_t>(n));
  }
  return true;
}

void reap(Spawned& s) {
  if (s.pid > 0) {
    ::kill(s.pid, SIGKILL);
    ::waitpid(s.pid, nullptr, 0);
  }
  if (s.out >= 0) ::close(s.out);
  s = {};
}

// ucx_perftest put bandwidth for one size: GB/s, or a Status saying why there is none.
Result<double> ucx_perftest_gbps(std::uint64_t size, std::int64_t iterations, std::int64_t window) {
  const std::string port = std::to_string(free_tcp_port());
  // stdbuf: ucx_perftest block-buffers stdout into a pipe, hiding its readiness line.
  Spawned server = spawn({"stdbuf", "-oL", "ucx_perftest", "-p", port});
  if (server.pid < 0) return Status(StatusCode::kUnavailable, "cannot start ucx_perftest");
  std::string text;
  if (!read_until(server.out, text, "Waiting for connection", 10000)) {
    reap(server);
    return Status(StatusCode::kUnavailable, "ucx_perftest server did not start: " + text);
  }
  Spawned client = spawn({"stdbuf", "-oL", "ucx_perftest", "127.0.0.1", "-p", port, "-t",
                          "ucp_put_bw", "-s", std::to_string(size), "-n",
                          std::to_string(iterations), "-w", "5", "-O", std::to_string(window)});
  std::string out;
  const bool done = read_until(client.out, out, "Final:", 120000);
  std::string rest;
  read_until(client.out, rest, "\n", 2000);
  out += rest;
  reap(client);
  reap(server);
  if (!done) return Status(StatusCode::kUnavailable, "ucx_perftest client failed: " + out);
  // "Final: iters p50 avg overall bw_avg(MB/s) bw_overall(MB/s) ..." with MB = 2^20 bytes.
  // Fields may read "inf" (ucx_perftest's average over one sample): read them as text.
  std::istringstream line(out.substr(out.find("Final:") + 6));
  std::vector<std::string> fields;
  for (std::string f; line >> f && fields.size() < 6;) fields.push_back(f);
  char* end = nullptr;
  const double bw_overall = fields.size() == 6 ? std::strtod(fields[5].c_str(), &end) : 0.0;
  if (fields.size() < 6 || end == fields[5].c_str() || !(bw_overall > 0)) {
    return Status(StatusCode::kInternal, "cannot parse ucx_perftest's Final line");
  }
  return bw_overall * 1048576.0 / 1e9;
}

Result<std::vector<std::uint64_t>> parse_sizes(std::string_view rest) {
  std::vector<std::uint64_t> sizes;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    auto v = parse_quantity(rest.substr(0, comma), Quantity::kBytes);
    if (!v.is_ok() || *v < 1) {
      return invalid_argument("--sizes: '" + std::string(rest.substr(0, comma)) +
                              "' is not a positive byte size");
    }
    sizes.push_back(static_cast<std::uint64_t>(*v));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (sizes.empty()) return invalid_argument("--sizes: give at least one size");
  return sizes;
}

// "S,R": the sending and receiving CUDA devices of --backend nccl.
Result<NcclDevices> parse_devices(const std::string& text) {
  const auto comma = text.find(',');
  NcclDevices d;
  auto number = [](std::string_view s, int& v) {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc() && r.ptr == s.data() + s.size() && v >= 0;
  };
  if (comma == std::string::npos ||
      !number(std::string_view(text).substr(0, comma), d.send) ||
      !number(std::string_view(text).substr(comma + 1), d.receive)) {
    return invalid_argument("--devices takes two CUDA device numbers, SEND,RECEIVE (e.g. 0,1)");
  }
  if (d.send == d.receive) {
    return invalid_argument("--devices: sender and receiver need different GPUs (NCCL does not put "
                            "two ranks of one communicator on one GPU)");
  }
  return d;
}

// One-sided backends (ucx, loopback): the sender writes into the receiver's registered memory
// with no help from the receiving side.
Status run_one_sided(const BenchTransferOptions& o, const std::vector<SizePlan>& plans,
                     std::uint64_t region, std::vector<Row>& rows, std::ostream& err) {
  // The receiver: another process for ucx, another agent in this one for loopback.
  int sv[2] = {-1, -1};
  pid_t child = -1;
  std::unique_ptr<transfer::Agent> local_receiver;
  std::string peer_address, peer_descriptor;
  std::optional<kvstore::HostBuffer> loop_buf;
  if (o.backend == "ucx") {
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return io_error("socketpair failed");
    child = fork();
    if (child == 0) {
      ::close(sv[0]);
      _exit(receiver_main(sv[1], "ucx", region));
    }
    ::close(sv[1]);
    peer_address = recv_msg(sv[0]);
    peer_descriptor = recv_msg(sv[0]);
    if (peer_address.empty() || peer_descriptor.empty()) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
      return Status(StatusCode::kUnavailable, "the receiving process did not start its agent");
    }
  } else {
    KVFLEET_ASSIGN_OR_RETURN(local_receiver,
                             transfer::create_agent("loopback", named("bench-receiver")));
    KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer b, kvstore::allocate_host_buffer(region));
    loop_buf = std::move(b);
    KVFLEET_ASSIGN_OR_RETURN(
        transfer::Region r,
        local_receiver->register_memory(loop_buf->data(), region, transfer::MemoryKind::kHost));
    peer_address = *local_receiver->address();
    peer_descriptor = local_receiver->describe(r.id)->serialize();
  }
  auto cleanup = [&] {
    if (child > 0) {
      send_msg(sv[0], "bye");
      ::waitpid(child, nullptr, 0);
      ::close(sv[0]);
      child = -1;
    }
  };

  auto sender_or = transfer::create_agent(o.backend, named("bench-sender"));
  if (!sender_or.is_ok()) {
    cleanup();
    return sender_or.status();
  }
  auto sender = std::move(sender_or).value();
  KVFLEET_ASSIGN_OR_RETURN(transfer::Region local,
                           sender->allocate_memory(region, transfer::MemoryKind::kHost));
  std::memset(local.addr, 0x5a, region);
  KVFLEET_RETURN_IF_ERROR(sender->connect("receiver", peer_address));
  KVFLEET_ASSIGN_OR_RETURN(transfer::RemoteRegion remote,
                           transfer::RemoteRegion::parse(peer_descriptor));
  std::uint64_t max_size = 0;
  for (const SizePlan& p : plans) max_size = std::max(max_size, p.size);
  KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer copy_dst, kvstore::allocate_host_buffer(max_size));

  std::string transport_detail;
  if (auto pt = sender->peer_transport("receiver"); pt.is_ok()) transport_detail = pt->detail;
  for (const SizePlan& plan : plans) {
    const std::uint64_t size = plan.size;
    err << "bench transfer: " << format_bytes(static_cast<double>(size)) << " (" << o.backend
        << (o.backend == "ucx"
                ? ", UCX_TLS=" + std::string(getenv("UCX_TLS") ? getenv("UCX_TLS") : "default")
                : "")
        << ")\n"
        << std::flush;
    Row row;
    row.size = size;
    row.blocks = plan.blocks;
    row.transport_detail = transport_detail;
    const transfer::TransferRequest req{"receiver", Op::kWrite, local.id, remote, plan.ranges, "",
                                        0ms};
    auto once = [&]() -> Status {
      KVFLEET_ASSIGN_OR_RETURN(transfer::TransferId id, sender->post(req));
      Status st = sender->wait(id, 120s);
      const transfer::TransferInfo info = sender->poll(id);
      row.ops = info.operations;
      row.transport = info.transport;
      sender->release(id);
      return st;
    };
    // Latency: one at a time, for the time budget (at least 5, at most 2000).
    std::vector<double> lat;
    const auto t_lat = Clock::now();
    while ((lat.size() < 5 || since(t_lat) < o.seconds) && lat.size() < 2000) {
      const auto t0 = Clock::now();
      Status st = once();
      if (!st.is_ok()) {
        cleanup();
        return st.with_context("transfer of " + std::to_string(size) + " bytes");
      }
      lat.push_back(since(t0));
    }
    set_percentiles(lat, row);
    // Bandwidth: `window` transfers in flight.
    const std::int64_t iterations = iterations_for(o.seconds, row.p50_us * 1e-6, 8, 20000);
    std::vector<transfer::TransferId> inflight;
    const auto t_bw = Clock::now();
    for (std::int64_t i = 0; i < iterations; ++i) {
      if (static_cast<std::int64_t>(inflight.size()) >= o.window) {
        KVFLEET_RETURN_IF_ERROR(sender->wait(inflight.front(), 120s));
        sender->release(inflight.front());
        inflight.erase(inflight.begin());
      }
      KVFLEET_ASSIGN_OR_RETURN(transfer::TransferId id, sender->post(req));
      inflight.push_back(id);
    }
    for (auto id : inflight) {
      KVFLEET_RETURN_IF_ERROR(sender->wait(id, 120s));
      sender->release(id);
    }
    row.gbps = static_cast<double>(size) * static_cast<double>(iterations) / since(t_bw) / 1e9;
    // Baselines in the same run.
    const auto copies =
        std::max<std::int64_t>(3, static_cast<std::int64_t>(2e8 / static_cast<double>(size)));
    const auto t_mc = Clock::now();
    for (std::int64_t i = 0; i < copies; ++i) std::memcpy(copy_dst.data(), local.addr, size);
    row.memcpy_gbps = static_cast<double>(size) * static_cast<double>(copies) / since(t_mc) / 1e9;
    // Integrity: what verifying the transfer's bytes costs a receiver (the worker checks every
    // pulled hand-off, common/checksum.h), as a share of one transfer's p50 time.
    std::vector<double> hashes;
    volatile std::uint64_t sink = 0;
    const auto t_h = Clock::now();
    while (hashes.size() < 5 || (since(t_h) < o.seconds / 4 && hashes.size() < 2000)) {
      const auto t0 = Clock::now();
      for (const transfer::Range& g : plan.ranges)
        sink = sink + checksum64(local.addr + g.local_offset, g.length);
      hashes.push_back(since(t0));
    }
    std::sort(hashes.begin(), hashes.end());
    row.check_share = hashes[hashes.size() / 2] / (row.p50_us * 1e-6);
    if (o.backend == "ucx") {
      auto pt = ucx_perftest_gbps(size, iterations, o.window);
      if (pt.is_ok()) {
        row.perftest_gbps = *pt;
      } else {
        row.perftest_note = pt.status().message();
      }
    }
    rows.push_back(row);
  }
  cleanup();
  return Status::ok();
}

json optional_number(double v) {
  return v > 0 ? json(v) : json(nullptr);
}

void print_json(const BenchTransferOptions& o, const std::vector<Row>& rows, std::ostream& out) {
  json list = json::array();
  for (const auto& r : rows) {
    json j = {{"size_bytes", r.size}, {"gbps", r.gbps},           {"p50_us", r.p50_us},
              {"p99_us", r.p99_us},   {"ops_per_request", r.ops}, {"backend", o.backend},
              {"pattern", o.pattern}, {"transport", r.transport}};
    if (!r.transport_detail.empty()) j["transport_detail"] = r.transport_detail;
    if (o.pattern == "blocks") {
      j["blocks"] = r.blocks;
      j["ops_per_block_per_layer_scheme"] = r.blocks * kLayersForComparison * 2;
    }
    if (o.backend == "nccl") {
      j["devices"] = o.devices;
      j["verified"] = r.verified;
      j["cuda_memcpy_d2d_gbps"] = optional_number(r.cuda_d2d_gbps);
      j["cuda_memcpy_peer_gbps"] = optional_number(r.cuda_peer_gbps);
      j["peer_access"] = r.peer_access;
      j["ratio_vs_cuda_memcpy_peer"] =
          r.cuda_peer_gbps > 0 ? json(r.gbps / r.cuda_peer_gbps) : json(nullptr);
    } else {
      j["memcpy_gbps"] = r.memcpy_gbps;
      j["checksum_share_of_transfer"] = r.check_share;
    }
    if (o.backend == "ucx") {
      j["ucx_tls"] = getenv("UCX_TLS") ? getenv("UCX_TLS") : "";
      j["ucx_perftest_gbps"] = optional_number(r.perftest_gbps);
      j["ratio_vs_ucx_perftest"] =
          r.perftest_gbps > 0 ? json(r.gbps / r.perftest_gbps) : json(nullptr);
      if (!r.perftest_note.empty()) j["ucx_perftest_error"] = r.perftest_note;
    }
    list.push_back(j);
  }
  out << list.dump(2) << "\n";
}

void print_table(const BenchTransferOptions& o, const std::vector<Row>& rows, std::ostream& out) {
  const bool nccl = o.backend == "nccl";
  out << "kvfleet bench transfer: backend " << o.backend << ", pattern " << o.pattern << ", window "
      << o.window
      << (o.backend == "ucx"
              ? ", UCX_TLS=" + std::string(getenv("UCX_TLS") ? getenv("UCX_TLS") : "(default)")
              : "")
      << (nccl ? ", GPUs " + o.devices : "") << "\n\n";
  char line[256];
  if (nccl) {
    std::snprintf(line, sizeof line, "%10s %10s %10s %10s %6s %12s %8s %12s %9s\n", "size", "GB/s",
                  "p50 us", "p99 us", "ops", "cudaMemcpy", "ratio", "(same GPU)", "verified");
  } else {
    std::snprintf(line, sizeof line, "%10s %10s %10s %10s %6s %14s %8s %10s %8s  %s\n", "size",
                  "GB/s", "p50 us", "p99 us", "ops", "ucx_perftest", "ratio", "memcpy", "check+",
                  "transport");
  }
  out << line;
  for (const auto& r : rows) {
    if (nccl) {
      std::snprintf(line, sizeof line, "%10s %10.2f %10.1f %10.1f %6lld %12.2f %8s %12.2f %9s\n",
                    format_bytes(static_cast<double>(r.size)).c_str(), r.gbps, r.p50_us, r.p99_us,
                    static_cast<long long>(r.ops), r.cuda_peer_gbps,
                    r.cuda_peer_gbps > 0 ? format_number(r.gbps / r.cuda_peer_gbps, 3).c_str()
                                         : "-",
                    r.cuda_d2d_gbps, r.verified ? "yes" : "no");
    } else {
      std::snprintf(
          line, sizeof line, "%10s %10.2f %10.1f %10.1f %6lld %14s %8s %10.2f %7.1f%%  %s\n",
          format_bytes(static_cast<double>(r.size)).c_str(), r.gbps, r.p50_us, r.p99_us,
          static_cast<long long>(r.ops),
          r.perftest_gbps > 0 ? format_number(r.perftest_gbps, 4).c_str() : "-",
          r.perftest_gbps > 0 ? format_number(r.gbps / r.perftest_gbps, 3).c_str() : "-",
          r.memcpy_gbps, 100 * r.check_share,
          (r.transport + (r.transport_detail.empty() ? "" : " (" + r.transport_detail + ")"))
              .c_str());
    }
    out << line;
    if (o.pattern == "blocks") {
      out << "           " << r.blocks << " scattered blocks -> " << r.ops
          << " operations (one per block per layer for K and V would be "
          << r.blocks * kLayersForComparison * 2 << ")\n";
    }
    if (!r.perftest_note.empty()) out << "           ucx_perftest: " << r.perftest_note << "\n";
  }
  if (nccl && !rows.empty()) {
    out << "\ncudaMemcpy: GPU " << o.devices.substr(0, o.devices.find(',')) << " -> GPU "
        << o.devices.substr(o.devices.find(',') + 1) << " ("
        << (rows.front().peer_access ? "peer access" : "no peer access: staged by the driver")
        << "); ratio = nccl / cudaMemcpy between the GPUs; same GPU: a device-to-device copy "
           "within the sending GPU\n";
  }
}

Status bench(const BenchTransferOptions& o, std::ostream& out, std::ostream& err) {
  KVFLEET_ASSIGN_OR_RETURN(std::vector<std::uint64_t> sizes, parse_sizes(o.sizes));
  if (o.pattern != "contiguous" && o.pattern != "blocks") {
    return invalid_argument("--pattern must be contiguous or blocks");
  }
  if (o.backend != "ucx" && o.backend != "loopback" && o.backend != "nccl") {
    return invalid_argument("--backend must be ucx, loopback or nccl");
  }
  NcclDevices devices;
  if (o.backend == "nccl") {
    KVFLEET_ASSIGN_OR_RETURN(devices, parse_devices(o.devices));
  }
  auto block_q = parse_quantity(o.block_bytes, Quantity::kBytes);
  if (!block_q.is_ok() || *block_q < 64) return invalid_argument("--block-bytes must be >= 64");
  const auto block = static_cast<std::uint64_t>(*block_q);
  if (o.window < 1 || o.window > 1024) return invalid_argument("--window must be in [1, 1024]");
  if (!(o.seconds > 0)) return invalid_argument("--seconds must be positive");
  if (!o.ucx_tls.empty()) setenv("UCX_TLS", o.ucx_tls.c_str(), 1);
  const std::uint64_t max_size = *std::max_element(sizes.begin(), sizes.end());
  // Blocks pattern: the local and remote regions hold twice the blocks, so each side's blocks
  // are a scattered subset, as a fragmented KV pool gives.
  const std::uint64_t region =
      o.pattern == "blocks" ? 2 * ((max_size + block - 1) / block) * block : max_size;

  std::mt19937_64 rng(7);
  std::vector<SizePlan> plans;
  for (std::uint64_t size : sizes) {
    SizePlan plan;
    plan.size = size;
    if (o.pattern == "contiguous") {
      plan.ranges.push_back({0, 0, size});
    } else {
      // Whole blocks: a size that is not a multiple of the block rounds up to one.
      const std::int64_t n = static_cast<std::int64_t>((size + block - 1) / block);
      std::vector<std::int32_t> pool(static_cast<size_t>(2 * n));
      std::iota(pool.begin(), pool.end(), 0);
      std::vector<std::int32_t> s = pool, d = pool;
      std::shuffle(s.begin(), s.end(), rng);
      std::shuffle(d.begin(), d.end(), rng);
      s.resize(static_cast<size_t>(n));
      d.resize(static_cast<size_t>(n));
      std::sort(s.begin(), s.end());  // a request's blocks in token order
      std::sort(d.begin(), d.end());
      plan.ranges = transfer::block_ranges(s, d, block);
      plan.blocks = n;
      plan.size = static_cast<std::uint64_t>(n) * block;  // what moves: whole blocks
    }
    plans.push_back(std::move(plan));
  }

  std::vector<Row> rows;
  if (o.backend == "nccl") {
    KVFLEET_RETURN_IF_ERROR(run_nccl(o, devices, plans, region, rows, err));
  } else {
    KVFLEET_RETURN_IF_ERROR(run_one_sided(o, plans, region, rows, err));
  }
  if (o.json) {
    print_json(o, rows, out);
  } else {
    print_table(o, rows, out);
  }
  return Status::ok();
}

}  // namespace

CLI::App* add_bench_transfer_command(CLI::App& bench, BenchTransferOptions& o) {
  CLI::App* cmd =
      bench.add_subcommand("transfer", "KV transfer bandwidth and latency vs baselines");
  cmd->add_option("--backend", o.backend, "ucx | loopback | nccl")->capture_default_str();
  cmd->add_option("--sizes", o.sizes, "Transfer sizes")->capture_default_str();
  cmd->add_option("--pattern", o.pattern, "contiguous | blocks")->capture_default_str();
  cmd->add_option("--block-bytes", o.block_bytes, "Block size for --pattern blocks")
      ->capture_default_str();
  cmd->add_option("--ucx-tls", o.ucx_tls, "Sets UCX_TLS for both processes and ucx_perftest");
  cmd->add_option("--devices", o.devices, "nccl: sending and receiving CUDA devices, SEND,RECEIVE")
      ->capture_default_str();
  cmd->add_option("--window", o.window, "Transfers in flight (bandwidth pass)")
      ->capture_default_str();
  cmd->add_option("--seconds", o.seconds, "Time budget per size and pass")->capture_default_str();
  cmd->add_flag("--json", o.json, "JSON rows");
  return cmd;
}

int run_bench_transfer(const BenchTransferOptions& opts, std::ostream& out, std::ostream& err) {
  // UCX logs to the process's stdout; results (JSON) must own it. Send fd 1 to stderr while the
  // benchmark runs, and print the results to the real stdout afterwards.
  std::ostringstream results;
  std::fflush(stdout);
  out.flush();
  const int saved = ::dup(1);
  ::dup2(2, 1);
  const Status status = bench(opts, results, err);
  std::fflush(stdout);
  ::dup2(saved, 1);
  ::close(saved);
  out << results.str() << std::flush;
  return finish_command("bench transfer", status, err);
}

}  // namespace kvfleet::apps
