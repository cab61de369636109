#pragma once
// Factories of the compiled-in backends (internal to transfer/). A backend that is not built
// (nccl without CUDA) is provided by a stub file that answers "unimplemented", so callers need
// no #ifdef.
#include "transfer/transfer.h"

namespace kvfleet::transfer {

Result<std::unique_ptr<Agent>> make_loopback_agent(const AgentConfig& config);
Result<std::unique_ptr<Agent>> make_ucx_agent(const AgentConfig& config);
Result<std::unique_ptr<Agent>> make_nccl_agent(const AgentConfig& config);
bool nccl_available();

}  // namespace kvfleet::transfer
