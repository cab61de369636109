#pragma once
// The `cpu` engine backend: the Llama model in fp32 over a paged KV pool in host memory, which
// stands for the device's HBM (its size is the engine's --kv-blocks budget).

#include "worker/backend.h"

namespace kvfleet::worker {

// Registers "cpu" with the backend registry. Idempotent; called by the engine's users before
// create_backend (a static initialiser in a static library could be dropped by the linker).
void register_cpu_backend();

}  // namespace kvfleet::worker
