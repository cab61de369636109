#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>

#include "tests/test_util.h"
#include "transfer/transfer.h"

namespace kvfleet::transfer {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<Agent> agent(const std::string& name) {
  auto a = create_agent("loopback", {name});
  EXPECT_TRUE(a.is_ok()) << a.status().to_string();
  return std::move(a).value();
}

TEST(Ranges, CoalesceMergesOnlyWhatIsContiguousOnBothSides) {
  const auto r = block_ranges({3, 4, 5, 9, 10}, {0, 1, 2, 7, 9}, 100);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].length, 300u);  // blocks 3-5 -> 0-2
  EXPECT_EQ(r[1].local_offset, 900u);
  EXPECT_EQ(r[1].length, 100u);  // 9 -> 7, then 10 -> 9 is not adjacent remotely
  // A request's KV in consecutive blocks on both sides is one operation, however many blocks.
  std::vector<std::int32_t> src(512), dst(512);
  std::iota(src.begin(), src.end(), 0);
  std::iota(dst.begin(), dst.end(), 1000);
  EXPECT_EQ(block_ranges(src, dst, 4096).size(), 1u);
}

TEST(RemoteRegion, SerializesAndRejectsGarbage) {
  RemoteRegion r{"decode-0", 77, 3, 0x7f0000001000ull, 1 << 20, std::string("\x01\x02\xff", 3)};
  auto back = RemoteRegion::parse(r.serialize());
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->rkey, r.rkey);
  EXPECT_EQ(back->addr, r.addr);
  EXPECT_EQ(back->instance, 77u);
  for (const char* bad :
       {"", "[]", "{\"agent\": 1}",
        R"({"agent":"a","instance":1,"region":1,"addr":1,"length":-1,"rkey":""})",
        R"({"agent":"a","instance":1,"region":1,"addr":1,"length":1,"rkey":"xyz"})"}) {
    EXPECT_FALSE(RemoteRegion::parse(bad).is_ok()) << bad;
  }
  // A damaged remote key (one hex digit changed) or address is refused before any backend
  // would unpack it.
  const std::string good = r.serialize();
  const std::string hex = "\"rkey\":\"0102ff\"";
  ASSERT_NE(good.find(hex), std::string::npos) << good;
  std::string flipped = good;
  flipped.replace(flipped.find(hex), hex.size(), "\"rkey\":\"0102fe\"");
  auto corrupt = RemoteRegion::parse(flipped);
  ASSERT_FALSE(corrupt.is_ok());
  EXPECT_NE(corrupt.status().message().find("corrupted"), std::string::npos) << corrupt.status().message();
  std::string moved = good;
  moved.replace(moved.find("\"addr\":"), 7, "\"addr\":1");
  EXPECT_FALSE(RemoteRegion::parse(moved).is_ok()) << moved;
}

TEST(Loopback, WritesReadsAndNotifiesAfterTheData) {
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto a = agent("lb-a"), b = agent("lb-b");
  std::vector<std::byte> src(64 * 1024), dst(64 * 1024, std::byte{0});
  for (auto& x : src) x = static_cast<std::byte>(rng());
  auto rs = *a->register_memory(src.data(), src.size(), MemoryKind::kHost);
  auto rd = *b->register_memory(dst.data(), dst.size(), MemoryKind::kHost);
  ASSERT_TRUE(a->connect("b", *b->address()).is_ok());
  TransferRequest w{"b",
                    Op::kWrite,
                    rs.id,
                    *b->describe(rd.id),
                    block_ranges({0, 1, 7}, {5, 6, 2}, 4096),
                    "blocks ready"};
  auto id = a->post(w);
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  ASSERT_TRUE(a->wait(*id, 1s).is_ok());
  EXPECT_EQ(a->poll(*id).operations, 2);  // {0,1}->{5,6} coalesced, 7->2 alone
  EXPECT_EQ(a->poll(*id).transport, "loopback");
  ASSERT_TRUE(a->peer_transport("b").is_ok());
  EXPECT_EQ(a->peer_transport("b")->transport, "loopback");
  EXPECT_FALSE(a->peer_transport("nobody").is_ok());
  auto note = b->wait_notification(1s);
  ASSERT_TRUE(note.is_ok());
  EXPECT_EQ(note->message, "blocks ready");
  EXPECT_EQ(note->peer, "lb-a");
  EXPECT_EQ(std::memcmp(dst.data() + 5 * 4096, src.data(), 2 * 4096), 0);
  EXPECT_EQ(std::memcmp(dst.data() + 2 * 4096, src.data() + 7 * 4096, 4096), 0);
  // Read back into another local region.
  std::vector<std::byte> back(4096);
  auto rb = *a->register_memory(back.data(), back.size(), MemoryKind::kHost);
  auto r = a->post({"b", Op::kRead, rb.id, *b->describe(rd.id), {{0, 2 * 4096, 4096}}, ""});
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(std::memcmp(back.data(), src.data() + 7 * 4096, 4096), 0);
  a->release(*id);
  a->release(*r);
  EXPECT_EQ(a->stats().transfers_done, 2);
}

TEST(Loopback, BadRequestsAreClearErrors) {
  auto a = agent("lb-c"), b = agent("lb-d");
  std::vector<std::byte> buf(8192);
  auto local = *a->register_memory(buf.data(), 4096, MemoryKind::kHost);
  auto remote = *b->register_memory(buf.data() + 4096, 4096, MemoryKind::kHost);
  const RemoteRegion desc = *b->describe(remote.id);
  auto expect = [&](const TransferRequest& r, StatusCode code, const std::string& fragment) {
    auto id = a->post(r);
    ASSERT_FALSE(id.is_ok());
    EXPECT_EQ(id.status().code(), code) << id.status().to_string();
    EXPECT_NE(id.status().message().find(fragment), std::string::npos) << id.status().message();
  };
  expect({"d", Op::kWrite, local.id, desc, {{0, 0, 16}}, ""}, StatusCode::kUnavailable,
         "not connected");
  ASSERT_TRUE(a->connect("d", *b->address()).is_ok());
  expect({"d", Op::kWrite, local.id, desc, {{0, 4000, 200}}, ""}, StatusCode::kOutOfRange,
         "outside remote region");
  expect({"d", Op::kWrite, local.id, desc, {{4090, 0, 16}}, ""}, StatusCode::kOutOfRange,
         "outside local region");
  expect({"d", Op::kWrite, 999, desc, {{0, 0, 16}}, ""}, StatusCode::kNotFound,
         "no registered local region 999");
  expect({"d", Op::kRead, local.id, desc, {{0, 0, 16}}, "x"}, StatusCode::kInvalidArgument,
         "writes only");
  RemoteRegion old = desc;
  old.instance ^= 1;
  expect({"d", Op::kWrite, local.id, old, {{0, 0, 16}}, ""}, StatusCode::kFailedPrecondition,
         "stale");
  ASSERT_TRUE(b->deregister(remote.id).is_ok());
  expect({"d", Op::kWrite, local.id, desc, {{0, 0, 16}}, ""}, StatusCode::kFailedPrecondition,
         "stale");
  EXPECT_FALSE(create_agent("loopback", {"lb-c"}).is_ok()) << "names are unique";
  auto unknown = create_agent("rdma-magic", {"x"});
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_NE(unknown.status().message().find("known: loopback, ucx"), std::string::npos);
}

}  // namespace
}  // namespace kvfleet::transfer
