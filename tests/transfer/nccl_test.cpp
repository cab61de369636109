// nccl between two GPUs of this machine: scattered device blocks arrive intact (checksums).
// Needs two CUDA devices; skips cleanly otherwise (a single-GPU machine cannot form a 2-rank
// communicator: NCCL refuses two ranks on one device).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <numeric>
#include <random>
#include <thread>

#include "tests/test_util.h"
#include "transfer/transfer.h"

namespace kvfleet::transfer {
namespace {

using namespace std::chrono_literals;

TEST(Nccl, WithoutTwoGpusTheBackendSaysWhy) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  if (devices >= 1) GTEST_SKIP() << devices << " CUDA device(s) present";
  auto a = create_agent("nccl", {"g"});
  ASSERT_FALSE(a.is_ok());
  EXPECT_EQ(a.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(a.status().message().find("no CUDA device"), std::string::npos) << a.status().message();
}

TEST(Nccl, AnAgentOnAMissingDeviceIsRefused) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 1) GTEST_SKIP() << "no CUDA device";
  AgentConfig config;
  config.name = "g";
  config.device = devices;
  auto a = create_agent("nccl", config);
  ASSERT_FALSE(a.is_ok());
  EXPECT_NE(a.status().message().find("does not exist"), std::string::npos)
      << a.status().message();
}

TEST(Nccl, ScatteredDeviceBlocksArriveIntact) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2) {
    GTEST_SKIP() << "needs two CUDA devices, found " << devices;
  }
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  constexpr size_t kBlock = 256 * 1024, kBlocks = 64;
  std::vector<std::byte> host(kBlock * kBlocks);
  std::mt19937_64 rng(seed);
  for (auto& b : host) b = static_cast<std::byte>(rng());
  std::vector<std::int32_t> src(kBlocks), dst(kBlocks);
  std::iota(src.begin(), src.end(), 0);
  std::iota(dst.begin(), dst.end(), 0);
  std::shuffle(dst.begin(), dst.end(), rng);
  const auto ranges = block_ranges(src, dst, kBlock);

  // Each GPU's side runs on its own thread: communicator set-up needs both ranks at once.
  std::promise<std::string> address[2], descriptor[2];
  std::shared_future<std::string> address_of[2] = {address[0].get_future().share(),
                                                   address[1].get_future().share()};
  std::shared_future<std::string> descriptor_of[2] = {descriptor[0].get_future().share(),
                                                      descriptor[1].get_future().share()};
  std::vector<std::byte> received(host.size());
  auto side = [&](int device) -> Status {
    cudaSetDevice(device);
    const int other = 1 - device;
    KVFLEET_ASSIGN_OR_RETURN(auto agent, create_agent("nccl", {"gpu" + std::to_string(device)}));
    void* buf = nullptr;
    if (cudaMalloc(&buf, host.size()) != cudaSuccess) return internal_error("cudaMalloc failed");
    if (device == 0) cudaMemcpy(buf, host.data(), host.size(), cudaMemcpyHostToDevice);
    KVFLEET_ASSIGN_OR_RETURN(Region r,
                             agent->register_memory(buf, host.size(), MemoryKind::kDevice));
    address[device].set_value(*agent->address());
    descriptor[device].set_value(agent->describe(r.id)->serialize());
    KVFLEET_RETURN_IF_ERROR(agent->connect("peer", address_of[other].get()));
    KVFLEET_ASSIGN_OR_RETURN(RemoteRegion remote, RemoteRegion::parse(descriptor_of[other].get()));
    TransferRequest req{"peer", device == 0 ? Op::kWrite : Op::kRead, r.id, remote, {}, ""};
    for (const Range& g : ranges) {  // the receiver mirrors the sender's ranges, same order
      req.ranges.push_back(device == 0 ? g : Range{g.remote_offset, g.local_offset, g.length});
    }
    KVFLEET_ASSIGN_OR_RETURN(TransferId id, agent->post(req));
    KVFLEET_RETURN_IF_ERROR(agent->wait(id, 30s));
    if (device == 1) cudaMemcpy(received.data(), buf, host.size(), cudaMemcpyDeviceToHost);
    cudaFree(buf);
    return Status::ok();
  };
  auto sender = std::async(std::launch::async, side, 0);
  auto receiver = std::async(std::launch::async, side, 1);
  const Status s0 = sender.get(), s1 = receiver.get();
  ASSERT_TRUE(s0.is_ok()) << s0.to_string();
  ASSERT_TRUE(s1.is_ok()) << s1.to_string();
  for (size_t i = 0; i < kBlocks; ++i) {
    ASSERT_EQ(std::memcmp(received.data() + static_cast<size_t>(dst[i]) * kBlock,
                          host.data() + static_cast<size_t>(src[i]) * kBlock, kBlock),
              0)
        << "block " << i;
  }
}

}  // namespace
}  // namespace kvfleet::transfer
