// Framed messages between processes: large frames arrive whole, silence and end of file read as
// empty, and writing to a socket whose reader went away fails instead of killing the writer.
#include "common/framed_pipe.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <thread>

#include "tests/test_util.h"

namespace kvfleet {
namespace {

using namespace std::chrono_literals;

TEST(FramedPipe, LargeFramesArriveWholeThenEndOfFileReadsEmpty) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::string big(3 << 20, '\0');  // larger than the socket buffer: written in pieces
  for (auto& c : big) c = static_cast<char>(rng());
  std::thread writer([&] {
    EXPECT_TRUE(send_frame(sv[0], big));
    EXPECT_TRUE(send_frame(sv[0], ""));
    EXPECT_TRUE(send_frame(sv[0], "last"));
    ::close(sv[0]);
  });
  EXPECT_EQ(recv_frame(sv[1], 10s), big);
  EXPECT_EQ(recv_frame(sv[1], 10s), "");
  EXPECT_EQ(recv_frame(sv[1], 10s), "last");
  writer.join();
  EXPECT_EQ(recv_frame(sv[1], 10s), "");  // end of file
  ::close(sv[1]);
}

TEST(FramedPipe, SilenceTimesOut) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  EXPECT_EQ(recv_frame(sv[1], 10ms), "");
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(FramedPipe, WritingToAGoneReaderFailsWithoutSigpipe) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ::close(sv[1]);
  EXPECT_FALSE(send_frame(sv[0], "bye"));  // the test process is still here to check
  ::close(sv[0]);
}

}  // namespace
}  // namespace kvfleet
