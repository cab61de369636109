#pragma once
// Host memory for KV blocks. With CUDA it is pinned (page-locked and registered with the driver,
// so device<->host copies run at full PCIe speed); without CUDA, or when no GPU is present at run
// time, it is ordinary page-aligned memory. Which one is chosen by the file compiled
// (host_memory_cpu.cpp or host_memory_cuda.cpp), never by #ifdef in callers.

#include <cstddef>
#include <memory>
#include <string_view>

#include "common/status.h"

namespace kvfleet::kvstore {

class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(std::byte* data, std::size_t size, bool pinned, void (*free_fn)(std::byte*))
      : data_(data, free_fn), size_(size), pinned_(pinned) {}

  std::byte* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  bool pinned() const { return pinned_; }

 private:
  std::unique_ptr<std::byte, void (*)(std::byte*)> data_{nullptr, nullptr};
  std::size_t size_ = 0;
  bool pinned_ = false;
};

// Allocates `bytes` (zero-filled, 4 KiB aligned). resource_exhausted when the system refuses.
Result<HostBuffer> allocate_host_buffer(std::size_t bytes);
// "cuda-pinned" or "pageable": what allocate_host_buffer gives in this build.
std::string_view host_memory_kind();

}  // namespace kvfleet::kvstore
