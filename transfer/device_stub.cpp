// Built without CUDA: no devices, and every device call says so.
#include "transfer/device.h"

namespace kvfleet::transfer::device {
namespace {
Status no_cuda() {
  return unimplemented("this kvfleet was built without CUDA");
}
}  // namespace

int count() {
  return 0;
}
bool built_with_cuda() {
  return false;
}
Status use(int) {
  return no_cuda();
}
Result<void*> allocate(int, std::size_t) {
  return no_cuda();
}
void release(void*) {}
Status copy_to_device(void*, const void*, std::size_t) {
  return no_cuda();
}
Status copy_to_host(void*, const void*, std::size_t) {
  return no_cuda();
}
Result<CopyRate> copy_rate(int, void*, int, const void*, std::size_t, std::int64_t) {
  return no_cuda();
}

}  // namespace kvfleet::transfer::device
