#pragma once
// CUDA device helpers for code that must build without CUDA headers (the transfer benchmark, its
// tests). In a build without CUDA every call answers "no device" / `unimplemented`, so callers
// need no #ifdef.

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace kvfleet::transfer::device {

// CUDA devices this process sees; 0 in a build without CUDA or on a machine without a GPU.
int count();
// Whether this build has CUDA at all (count() may still be 0).
bool built_with_cuda();
// Makes `device` the calling thread's current device, with a clear error when it does not exist.
Status use(int device);

// Device memory on `device` (the calling thread's current device is left unchanged).
Result<void*> allocate(int device, std::size_t bytes);
void release(void* ptr);
Status copy_to_device(void* dst, const void* src, std::size_t bytes);
Status copy_to_host(void* dst, const void* src, std::size_t bytes);

// The cudaMemcpy baseline: GB/s of `iterations` back-to-back copies of `bytes` from `src`
// (on `src_device`) to `dst` (on `dst_device`), timed with CUDA events on a fresh stream. The
// same device: a device-to-device copy; two devices: a peer copy, over peer access (NVLink or
// PCIe P2P) where the devices allow it, else staged by the driver. `peer_access` says which.
struct CopyRate {
  double gbps = 0;
  bool peer_access = false;
};
Result<CopyRate> copy_rate(int dst_device, void* dst, int src_device, const void* src,
                           std::size_t bytes, std::int64_t iterations);

}  // namespace kvfleet::transfer::device
