#include "common/framed_pipe.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace kvfleet {

namespace {

// Writes every byte. On a socket a peer that went away is an error (EPIPE), not a SIGPIPE that
// kills this process; a pipe has no such flag and keeps the process's SIGPIPE disposition.
bool write_all(int fd, const char* p, std::size_t n) {
  bool socket = true;
  while (n > 0) {
    ssize_t w = socket ? ::send(fd, p, n, MSG_NOSIGNAL) : ::write(fd, p, n);
    if (w < 0 && socket && errno == ENOTSOCK) {
      socket = false;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

bool send_frame(int fd, const std::string& m) {
  const auto n = static_cast<std::uint32_t>(m.size());
  return write_all(fd, reinterpret_cast<const char*>(&n), 4) && write_all(fd, m.data(), m.size());
}

std::string recv_frame(int fd, std::chrono::milliseconds timeout) {
  auto read_exact = [&](char* p, size_t n) {
    while (n > 0) {
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return false;
      const ssize_t r = ::read(fd, p, n);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  };
  std::uint32_t n = 0;
  if (!read_exact(reinterpret_cast<char*>(&n), 4)) return {};
  std::string m(n, '\0');
  if (!read_exact(m.data(), n)) return {};
  return m;
}

}  // namespace kvfleet
