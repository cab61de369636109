// Host memory with CUDA: pinned through cudaHostAlloc, so copies to and from the GPU run at
// PCIe speed. Without a usable GPU at run time it falls back to ordinary page-aligned memory.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

#include "kvstore/host_memory.h"

namespace kvfleet::kvstore {

Result<HostBuffer> allocate_host_buffer(std::size_t bytes) {
  void* p = nullptr;
  const std::size_t size = bytes == 0 ? 1 : bytes;
  if (cudaHostAlloc(&p, size, cudaHostAllocPortable) == cudaSuccess) {
    std::memset(p, 0, size);
    return HostBuffer(static_cast<std::byte*>(p), bytes, true,
                      [](std::byte* q) { cudaFreeHost(q); });
  }
  cudaGetLastError();  // clear the sticky error: no device is not fatal for host memory
  constexpr std::size_t kAlign = 4096;
  const std::size_t rounded = (size + kAlign - 1) / kAlign * kAlign;
  p = std::aligned_alloc(kAlign, rounded);
  if (p == nullptr) {
    return Status(StatusCode::kResourceExhausted,
                  "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  }
  std::memset(p, 0, rounded);
  return HostBuffer(static_cast<std::byte*>(p), bytes, false, [](std::byte* q) { std::free(q); });
}

std::string_view host_memory_kind() {
  return "cuda-pinned";
}

}  // namespace kvfleet::kvstore
