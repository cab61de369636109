#pragma once
// Engine backends: what executes a step. The engine owns scheduling and bookkeeping; a backend
// owns the model and the device KV memory. Backends are chosen by name from a registry: `cpu`
// here; `cuda` and `sim` register themselves from their own files when built.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/model_spec.h"
#include "common/status.h"
#include "kernels/kv_layout.h"
#include "kvstore/block_pool.h"
#include "kvstore/host_store.h"
#include "worker/model.h"

namespace kvfleet::worker {

struct BackendOptions {
  ModelSpec spec;
  std::string weights_path;            // empty: seeded random weights
  std::uint64_t seed = 0;              // for random weights
  std::shared_ptr<const Model> model;  // optional: an already built model (tests share one)
  std::int32_t num_blocks = 0;         // device KV blocks
  std::int64_t block_tokens = 16;
  DType kv_dtype = DType::kFp32;
};

class EngineBackend {
 public:
  virtual ~EngineBackend() = default;
  virtual std::string_view name() const = 0;
  virtual const ModelSpec& spec() const = 0;
  virtual const kernels::KvLayout& kv_layout() const = 0;
  virtual std::int32_t num_blocks() const = 0;
  virtual std::size_t weight_bytes() const = 0;

  // Runs one step (see Model::forward). Must be called from the engine thread only.
  virtual void forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) = 0;
  // Copies device blocks to new host blocks (returned, one reference each) / host blocks back
  // into device blocks. Errors: resource_exhausted when the host store is full.
  virtual Result<std::vector<kvstore::BlockId>> swap_out(std::span<const kvstore::BlockId> device,
                                                         kvstore::HostKvStore& host) = 0;
  virtual Status swap_in(std::span<const kvstore::BlockId> host_blocks,
                         std::span<const kvstore::BlockId> device, kvstore::HostKvStore& host) = 0;
  // The device KV memory as bytes, for backends whose device memory the host can address
  // (cpu); nullptr otherwise. Used by tests and by transfer registration.
  virtual std::byte* host_addressable_kv() = 0;
  std::byte* host_addressable_kv_const() const {
    return const_cast<EngineBackend*>(this)->host_addressable_kv();
  }
};

using BackendFactory =
    std::function<Result<std::unique_ptr<EngineBackend>>(const BackendOptions& options)>;

// Registers a backend under `name` (at static-initialisation time or before first use).
void register_backend(const std::string& name, BackendFactory factory);
// Creates a backend; unknown names are an error listing the registered ones.
Result<std::unique_ptr<EngineBackend>> create_backend(std::string_view name,
                                                      const BackendOptions& options);
std::vector<std::string> backend_names();

}  // namespace kvfleet::worker
