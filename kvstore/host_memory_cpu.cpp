// Host memory without CUDA: page-aligned, zero-filled.
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include "kvstore/host_memory.h"

namespace kvfleet::kvstore {

Result<HostBuffer> allocate_host_buffer(std::size_t bytes) {
  // Large buffers (KV pools, the host store) are 2 MiB aligned and asked to use transparent huge
  // pages: scattered block accesses then stay within the TLB.
  constexpr std::size_t kHuge = 2u << 20;
  const std::size_t align = bytes >= kHuge ? kHuge : 4096;
  const std::size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
  if (p == nullptr) {
    return Status(StatusCode::kResourceExhausted,
                  "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  }
  if (align == kHuge) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
  std::memset(p, 0, rounded);
  return HostBuffer(static_cast<std::byte*>(p), bytes, false, [](std::byte* q) { std::free(q); });
}

std::string_view host_memory_kind() {
  return "pageable";
}

}  // namespace kvfleet::kvstore
