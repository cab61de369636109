// Built when NCCL is not: the `nccl` backend answers "unimplemented", so callers need no #ifdef.
#include "transfer/backends.h"

namespace kvfleet::transfer {

Result<std::unique_ptr<Agent>> make_nccl_agent(const AgentConfig&) {
  return unimplemented("the nccl transfer backend needs a build with CUDA and NCCL");
}
bool nccl_available() {
  return false;
}

}  // namespace kvfleet::transfer
