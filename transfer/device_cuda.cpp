// Device helpers over the CUDA runtime (built with CUDA).
#include <cuda_runtime_api.h>

#include <string>

#include "transfer/device.h"

namespace kvfleet::transfer::device {
namespace {

Status cuda_error(std::string_view what, cudaError_t e) {
  return Status(StatusCode::kUnavailable, std::string(what) + ": " + cudaGetErrorString(e));
}

// Restores the calling thread's current device when it leaves scope.
class DeviceScope {
 public:
  DeviceScope() { had_ = cudaGetDevice(&saved_) == cudaSuccess; }
  ~DeviceScope() {
    if (had_) cudaSetDevice(saved_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int saved_ = 0;
  bool had_ = false;
};

}  // namespace

int count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // "no device" is sticky in the runtime's last-error slot; clear it
    return 0;
  }
  return n;
}

bool built_with_cuda() {
  return true;
}

Status use(int device) {
  const int n = count();
  if (device < 0 || device >= n) {
    return invalid_argument("CUDA device " + std::to_string(device) + " does not exist (" +
                            std::to_string(n) + " present)");
  }
  const cudaError_t e = cudaSetDevice(device);
  return e == cudaSuccess ? Status::ok() : cuda_error("cudaSetDevice", e);
}

Result<void*> allocate(int device, std::size_t bytes) {
  DeviceScope scope;
  KVFLEET_RETURN_IF_ERROR(use(device));
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) return cuda_error("cudaMalloc of " + std::to_string(bytes) + " bytes", e);
  return p;
}

void release(void* ptr) {
  if (ptr != nullptr) cudaFree(ptr);
}

Status copy_to_device(void* dst, const void* src, std::size_t bytes) {
  const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  return e == cudaSuccess ? Status::ok() : cuda_error("cudaMemcpy host to device", e);
}

Status copy_to_host(void* dst, const void* src, std::size_t bytes) {
  const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  return e == cudaSuccess ? Status::ok() : cuda_error("cudaMemcpy device to host", e);
}

Result<CopyRate> copy_rate(int dst_device, void* dst, int src_device, const void* src,
                           std::size_t bytes, std::int64_t iterations) {
  if (iterations < 1) return invalid_argument("copy_rate needs at least one iteration");
  DeviceScope scope;
  KVFLEET_RETURN_IF_ERROR(use(src_device));
  CopyRate rate;
  if (dst_device != src_device) {
    int can = 0;
    if (cudaDeviceCanAccessPeer(&can, src_device, dst_device) == cudaSuccess && can != 0) {
      const cudaError_t e = cudaDeviceEnablePeerAccess(dst_device, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
      rate.peer_access = e == cudaSuccess || e == cudaErrorPeerAccessAlreadyEnabled;
    }
  }
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreate(&start);
  if (e == cudaSuccess) e = cudaEventCreate(&stop);
  auto copy = [&] {
    return dst_device == src_device
               ? cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream)
               : cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, stream);
  };
  if (e == cudaSuccess) e = copy();  // warm-up: first-touch and peer mappings
  if (e == cudaSuccess) e = cudaEventRecord(start, stream);
  for (std::int64_t i = 0; i < iterations && e == cudaSuccess; ++i) e = copy();
  if (e == cudaSuccess) e = cudaEventRecord(stop, stream);
  if (e == cudaSuccess) e = cudaEventSynchronize(stop);
  float ms = 0;
  if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, start, stop);
  if (stop != nullptr) cudaEventDestroy(stop);
  if (start != nullptr) cudaEventDestroy(start);
  if (stream != nullptr) cudaStreamDestroy(stream);
  if (e != cudaSuccess) return cuda_error("cudaMemcpy baseline", e);
  if (!(ms > 0)) return internal_error("cudaMemcpy baseline measured no time");
  rate.gbps = static_cast<double>(bytes) * static_cast<double>(iterations) / (ms * 1e-3) / 1e9;
  return rate;
}

}  // namespace kvfleet::transfer::device
