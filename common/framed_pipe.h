#pragma once
// Length-prefixed messages over a file descriptor (a socketpair or pipe): the small control
// channel between a process and the children it forks in tests and benchmarks.

#include <chrono>
#include <string>

namespace kvfleet {

// Writes a 4-byte length, then the bytes. False when the descriptor refuses (on a socket, also
// when the peer went away: no SIGPIPE).
bool send_frame(int fd, const std::string& message);
// Reads one message; empty on end of file, error, or when `timeout` passes between reads.
std::string recv_frame(int fd, std::chrono::milliseconds timeout);

}  // namespace kvfleet
