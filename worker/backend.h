#pragma once
// Engine backends: what executes a step. The engine owns scheduling and bookkeeping (which
// sequences run, which blocks they hold, the host store's index); a backend owns the model, the
// device KV memory and the host memory behind the host store, and does the work: steps and
// block copies. One interface for `cpu` (real math in host memory standing for HBM), `cuda`
// (device memory) and `sim` (no weights, no KV bytes: step times from the analytical model).
//
// Backends are chosen by name from a registry. Each backend's source file defines a
// `register_<name>_backend()` function; CMake generates the call list from the files it compiles
// (worker/CMakeLists.txt), so a backend that is built is registered, and nothing else is.
//
// Threading: every method except the const queries is called from the engine's thread only.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/model_spec.h"
#include "common/status.h"
#include "kernels/kv_layout.h"
#include "kvstore/block_pool.h"
#include "worker/step.h"

namespace kvfleet::worker {

class Model;

// Where a backend's KV blocks live, so that the worker process can register them with a
// transfer agent without knowing the backend. Block b occupies
// [base + b * block_stride, base + b * block_stride + block_bytes).
struct KvMemory {
  enum class Kind {
    kHost,    // addressable by this process (cpu: the pool standing for HBM; pinned host memory)
    kDevice,  // GPU memory of `device`
    kNone,    // no bytes: a modelled backend (sim); hand-offs are modelled too (handoff_seconds)
  };
  Kind kind = Kind::kNone;
  std::byte* base = nullptr;
  std::size_t bytes = 0;
  std::size_t block_stride = 0;
  int device = -1;
};
std::string_view kv_memory_kind_name(KvMemory::Kind kind);  // "host", "device", "none"

struct BackendCapabilities {
  // Real math on real tensors: outputs are comparable token for token with the cpu backend.
  // False for sim (its tokens are pseudo-random): numeric conformance cases are skipped.
  bool computes = true;
  // Step durations are modelled (the backend waits on the clock for them), not measured work.
  bool modelled_time = false;
  // copy_blocks returns before the bytes moved (completion: sync(), or a later step()).
  bool async_copies = false;
};

struct BackendOptions {
  ModelSpec spec;
  std::string weights_path;            // empty: seeded random weights
  std::uint64_t seed = 0;              // random weights; sim: its token stream
  std::shared_ptr<const Model> model;  // cpu: an already built model (tests share one)
  // Device KV blocks. 0: the backend's default (cpu: 1024; sim: what fits in HBM after the
  // weights, as `kvfleet plan` computes concurrency).
  std::int32_t num_blocks = 0;
  std::int64_t block_tokens = 16;
  std::optional<DType> kv_dtype;  // default: cpu fp32, sim the model's dtype (as plan)
  int threads = 0;                // cpu: BLAS threads (0: the library's default)
  // The engine's clock: backends with modelled time wait on it (real or virtual time).
  std::shared_ptr<Clock> clock;
  // Modelled backends (sim): the device, its tensor-parallel degree, the link KV hand-offs
  // cross (perfmodel/link.h), and the ratio of wall time to modelled time (0.1: ten times
  // faster than the modelled hardware; virtual clocks ignore it).
  std::string hardware;
  std::int64_t tp = 1;
  std::string link;
  double time_scale = 1.0;
};

enum class CopyDirection { kDeviceToHost, kHostToDevice };

class EngineBackend {
 public:
  virtual ~EngineBackend() = default;
  virtual std::string_view name() const = 0;
  virtual const ModelSpec& spec() const = 0;
  virtual const kernels::KvLayout& kv_layout() const = 0;
  virtual std::int32_t num_blocks() const = 0;
  virtual std::size_t weight_bytes() const = 0;  // per device
  virtual BackendCapabilities capabilities() const = 0;
  // One line for logs and reports: what runs (e.g. "sim: yi-34b-200k on a100-80g x2, nvlink").
  virtual std::string describe() const = 0;

  // Runs one step over `batch` (see step.h): writes the chunks' KV into their blocks and fills
  // `out` with logits or sampled tokens (out.kind says which). An error fails the requests of
  // this step only; the backend must stay usable (the engine carries on with other requests).
  virtual Status step(std::span<const StepSequence> batch, StepOutput& out) = 0;

  // The device KV pool (see KvMemory).
  virtual KvMemory kv_memory() const = 0;
  // Sets up the host memory behind the engine's host KV store: `blocks` blocks of
  // kv_layout().block_bytes() (cpu: page-aligned memory; cuda: pinned; sim: none). Called once,
  // before any copy_blocks.
  virtual Status allocate_host_kv(std::int32_t blocks) = 0;
  virtual KvMemory host_kv_memory() const = 0;
  // Copies whole blocks device[i] -> host[i] (kDeviceToHost) or host[i] -> device[i]. Copies and
  // steps take effect in the order they are issued (a later step reads what an earlier copy
  // restored; a later copy sees what an earlier step wrote). With async_copies the call may
  // return before the bytes moved: sync() (or a later step()) waits for them. Returns the number
  // of contiguous copies issued (runs of blocks consecutive on both sides coalesce).
  virtual Result<std::int64_t> copy_blocks(CopyDirection direction,
                                           std::span<const kvstore::BlockId> device,
                                           std::span<const kvstore::BlockId> host) = 0;
  virtual Status sync() = 0;
  // copy_blocks, and checksums[i] = checksum64 (common/checksum.h) of host block host[i]'s bytes
  // as the copy wrote (kDeviceToHost) or read (kHostToDevice) them: the engine checksums every
  // spill and verifies every restore with it. Returns when the bytes moved. The default copies,
  // syncs, then hashes the host blocks in host_kv_memory() (a second pass over them); a backend
  // whose copies run on the CPU hashes each piece as it copies it. Only for host memory of kind
  // kHost (the engine does not call it on backends whose KV has no bytes).
  virtual Result<std::int64_t> copy_blocks_checksummed(CopyDirection direction,
                                                       std::span<const kvstore::BlockId> device,
                                                       std::span<const kvstore::BlockId> host,
                                                       std::span<std::uint64_t> checksums);

  // Modelled backends: how long a hand-off of `bytes` of KV to a peer takes over the configured
  // link, in modelled seconds (wait time_scale() times that in wall time). nullopt: the bytes
  // really move (a transfer agent carries them).
  virtual std::optional<double> handoff_seconds(std::uint64_t bytes) const {
    (void)bytes;
    return std::nullopt;
  }
  virtual double time_scale() const { return 1.0; }
};

using BackendFactory =
    std::function<Result<std::unique_ptr<EngineBackend>>(const BackendOptions& options)>;

// Registers a backend under `name` (the generated list does this for every compiled backend;
// tests may add their own).
void register_backend(const std::string& name, BackendFactory factory);
// Creates a backend; unknown names are an error listing the registered ones.
Result<std::unique_ptr<EngineBackend>> create_backend(std::string_view name,
                                                      const BackendOptions& options);
std::vector<std::string> backend_names();

}  // namespace kvfleet::worker
