#pragma once
// Shared by the two drivers of `kvfleet bench transfer`: one-sided (ucx, loopback; in
// bench_transfer_command.cpp) and two-sided (nccl; bench_transfer_nccl.cpp).

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "apps/bench_transfer_command.h"
#include "common/status.h"
#include "transfer/transfer.h"

namespace kvfleet::apps::bench_transfer {

// One size of the sweep: what a request of that size posts.
struct SizePlan {
  std::uint64_t size = 0;
  std::vector<transfer::Range> ranges;
  std::int64_t blocks = 0;  // --pattern blocks: how many scattered blocks the ranges cover
};

struct Row {
  std::uint64_t size = 0;
  double gbps = 0, p50_us = 0, p99_us = 0;
  std::int64_t ops = 0, blocks = 0;
  double memcpy_gbps = 0;  // host memcpy (ucx, loopback)
  double perftest_gbps = 0;  // ucx_perftest, same transport, size and window (ucx)
  std::string perftest_note;
  double cuda_d2d_gbps = 0;   // cudaMemcpy device-to-device on the sending GPU (nccl)
  double cuda_peer_gbps = 0;  // cudaMemcpyPeer sending GPU -> receiving GPU (nccl)
  bool peer_access = false;
  bool verified = false;  // nccl: the receiver's checksum of one transfer matched
  double check_share = 0;  // checksumming the bytes once / one transfer's p50 time
  std::string transport;  // what carried it, as TransferInfo::transport reports it
  std::string transport_detail;  // the backend's own names (ucx: e.g. "sysv,posix,cma")
};

// Latency samples (seconds) -> p50 / p99 in microseconds; sorts `seconds`.
void set_percentiles(std::vector<double>& seconds, Row& row);

// Iterations that fill `seconds` at `per_transfer` seconds each, within [lo, hi].
std::int64_t iterations_for(double seconds, double per_transfer, std::int64_t lo, std::int64_t hi);

// The two-sided benchmark over NCCL between two GPUs of this machine: forks the receiving
// process (on `receive_device`) before this one touches CUDA, runs every plan from
// `send_device`, fills `rows`.
struct NcclDevices {
  int send = 0;
  int receive = 1;
};
Status run_nccl(const BenchTransferOptions& o, NcclDevices devices,
                const std::vector<SizePlan>& plans, std::uint64_t region_bytes,
                std::vector<Row>& rows, std::ostream& err);

}  // namespace kvfleet::apps::bench_transfer
