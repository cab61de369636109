// Host memory without CUDA: page-aligned, zero-filled.
#include <cstdlib>
#include <cstring>

#include "kvstore/host_memory.h"

namespace kvfleet::kvstore {

Result<HostBuffer> allocate_host_buffer(std::size_t bytes) {
  constexpr std::size_t kAlign = 4096;
  const std::size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (p == nullptr) {
    return Status(StatusCode::kResourceExhausted,
                  "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  }
  std::memset(p, 0, rounded);
  return HostBuffer(static_cast<std::byte*>(p), bytes, false, [](std::byte* q) { std::free(q); });
}

std::string_view host_memory_kind() {
  return "pageable";
}

}  // namespace kvfleet::kvstore
