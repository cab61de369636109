#include <string>

#include "transfer/backends.h"

namespace kvfleet::transfer {

std::vector<std::string> agent_backends() {
  std::vector<std::string> names = {"loopback", "ucx"};
  if (nccl_available()) names.push_back("nccl");
  return names;
}

Result<std::unique_ptr<Agent>> create_agent(std::string_view backend, const AgentConfig& config) {
  if (config.name.empty()) return invalid_argument("a transfer agent needs a name");
  if (backend == "loopback") return make_loopback_agent(config);
  if (backend == "ucx") return make_ucx_agent(config);
  if (backend == "nccl") return make_nccl_agent(config);
  std::string known;
  for (const auto& n : agent_backends()) known += (known.empty() ? "" : ", ") + n;
  return not_found("unknown transfer backend '" + std::string(backend) + "' (known: " + known +
                   ")");
}

}  // namespace kvfleet::transfer
