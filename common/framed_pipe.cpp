#include "common/framed_pipe.h"

#include <poll.h>
#include <unistd.h>

#include <cstdint>

namespace kvfleet {

bool send_frame(int fd, const std::string& m) {
  const auto n = static_cast<std::uint32_t>(m.size());
  return ::write(fd, &n, 4) == 4 &&
         ::write(fd, m.data(), m.size()) == static_cast<ssize_t>(m.size());
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
