// The `cpu` engine backend: the Llama model (worker/model.h) in fp32 over a paged KV pool in host
// memory, which stands for the device's HBM (its size is the engine's KV block budget). The host
// KV store's memory is a second host buffer; swaps are coalesced bulk copies between the two.
// Steps produce logits (the engine samples); copies are synchronous.

#include <mutex>

#include "kernels/cpu/ops.h"
#include "kvstore/bulk_copy.h"
#include "kvstore/host_memory.h"
#include "worker/backend.h"
#include "worker/model.h"

namespace kvfleet::worker {
namespace {

constexpr std::int32_t kDefaultBlocks = 1024;

class CpuBackend final : public EngineBackend {
 public:
  CpuBackend(std::shared_ptr<const Model> model, kernels::KvLayout layout, std::int32_t blocks,
             kvstore::HostBuffer pool, int threads)
      : model_(std::move(model)),
        layout_(layout),
        blocks_(blocks),
        pool_(std::move(pool)),
        threads_(threads) {}

  std::string_view name() const override { return "cpu"; }
  const ModelSpec& spec() const override { return model_->spec(); }
  const kernels::KvLayout& kv_layout() const override { return layout_; }
  std::int32_t num_blocks() const override { return blocks_; }
  std::size_t weight_bytes() const override { return model_->weight_bytes(); }
  BackendCapabilities capabilities() const override { return {}; }
  std::string describe() const override {
    return "cpu: " + spec().name + ", fp32 weights, " + std::string(dtype_name(layout_.dtype)) +
           " KV, " + std::to_string(blocks_) + " blocks of " +
           std::to_string(layout_.block_tokens) + " tokens" +
           (threads_ > 0 ? ", " + std::to_string(threads_) + " BLAS threads" : "");
  }

  Status step(std::span<const StepSequence> batch, StepOutput& out) override {
    if (threads_ > 0 && !threads_set_) {
      // The BLAS thread count is per process and set from the engine thread, once.
      kernels::cpu::set_blas_threads(threads_);
      threads_set_ = true;
    }
    chunks_.clear();
    for (const StepSequence& s : batch) chunks_.push_back(s.chunk);
    out.kind = StepOutput::Kind::kLogits;
    out.clear();
    try {
      model_->forward(chunks_, layout_, pool_.data(), workspace_, out.logits);
    } catch (const std::bad_alloc&) {
      return Status(StatusCode::kResourceExhausted, "cpu backend: out of memory in a step");
    }
    return Status::ok();
  }

  KvMemory kv_memory() const override {
    return {KvMemory::Kind::kHost, pool_.data(), pool_.size(), layout_.block_bytes(), -1};
  }

  Status allocate_host_kv(std::int32_t blocks) override {
    if (host_.data() != nullptr)
      return Status(StatusCode::kFailedPrecondition, "host KV memory exists");
    KVFLEET_ASSIGN_OR_RETURN(host_, kvstore::allocate_host_buffer(static_cast<std::size_t>(blocks) *
                                                                  layout_.block_bytes()));
    host_blocks_ = blocks;
    return Status::ok();
  }
  KvMemory host_kv_memory() const override {
    return {host_.data() ? KvMemory::Kind::kHost : KvMemory::Kind::kNone, host_.data(),
            host_.size(), layout_.block_bytes(), -1};
  }

  Result<std::int64_t> copy_blocks(CopyDirection direction,
                                   std::span<const kvstore::BlockId> device,
                                   std::span<const kvstore::BlockId> host) override {
    KVFLEET_RETURN_IF_ERROR(check_copy(device, host));
    const std::size_t bb = layout_.block_bytes();
    if (direction == CopyDirection::kDeviceToHost) {
      return kvstore::copy_blocks(host_.data(), host, pool_.data(), device, bb);
    }
    return kvstore::copy_blocks(pool_.data(), device, host_.data(), host, bb);
  }
  Status sync() override { return Status::ok(); }
  Result<std::int64_t> copy_blocks_checksummed(CopyDirection direction,
                                               std::span<const kvstore::BlockId> device,
                                               std::span<const kvstore::BlockId> host,
                                               std::span<std::uint64_t> checksums) override {
    KVFLEET_RETURN_IF_ERROR(check_copy(device, host));
    if (checksums.size() != host.size()) {
      return invalid_argument("copy_blocks_checksummed: one checksum per block");
    }
    // Each piece is hashed as it is copied (kvstore/bulk_copy.h): of the device pool's bytes
    // on a spill, which the copy wrote to host; of the host's on a restore.
    const std::size_t bb = layout_.block_bytes();
    if (direction == CopyDirection::kDeviceToHost) {
      return kvstore::copy_blocks_checksummed(host_.data(), host, pool_.data(), device, bb,
                                              checksums);
    }
    return kvstore::copy_blocks_checksummed(pool_.data(), device, host_.data(), host, bb,
                                            checksums);
  }

 private:
  Status check_copy(std::span<const kvstore::BlockId> device,
                    std::span<const kvstore::BlockId> host) const {
    if (device.size() != host.size()) {
      return invalid_argument("copy_blocks: " + std::to_string(device.size()) +
                              " device blocks for " + std::to_string(host.size()) + " host blocks");
    }
    for (kvstore::BlockId b : device) {
      if (b < 0 || b >= blocks_)
        return invalid_argument("copy_blocks: no device block " + std::to_string(b));
    }
    for (kvstore::BlockId b : host) {
      if (b < 0 || b >= host_blocks_)
        return invalid_argument("copy_blocks: no host block " + std::to_string(b));
    }
    return Status::ok();
  }

  std::shared_ptr<const Model> model_;
  kernels::KvLayout layout_;
  std::int32_t blocks_;
  kvstore::HostBuffer pool_;
  kvstore::HostBuffer host_;
  std::int32_t host_blocks_ = 0;
  int threads_;
  bool threads_set_ = false;
  Workspace workspace_;
  std::vector<SeqChunk> chunks_;
};

Result<std::unique_ptr<EngineBackend>> make_cpu_backend(const BackendOptions& o) {
  std::shared_ptr<const Model> model = o.model;
  if (!model) {
    if (o.weights_path.empty()) {
      KVFLEET_ASSIGN_OR_RETURN(model, Model::random(o.spec, o.seed));
    } else {
      KVFLEET_ASSIGN_OR_RETURN(model, Model::load(o.spec, o.weights_path));
    }
  }
  const kernels::KvLayout layout =
      model->kv_layout(o.block_tokens, o.kv_dtype.value_or(DType::kFp32));
  KVFLEET_RETURN_IF_ERROR(kernels::validate_kv_layout(layout));
  if (o.num_blocks < 0) return invalid_argument("the engine needs at least one KV block");
  if (o.threads < 0) return invalid_argument("cpu backend: threads must be >= 0");
  const std::int32_t blocks = o.num_blocks > 0 ? o.num_blocks : kDefaultBlocks;
  const std::size_t bytes = static_cast<std::size_t>(blocks) * layout.block_bytes();
  KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer pool, kvstore::allocate_host_buffer(bytes));
  return std::unique_ptr<EngineBackend>(
      new CpuBackend(std::move(model), layout, blocks, std::move(pool), o.threads));
}

}  // namespace

void register_cpu_backend() {
  register_backend("cpu", make_cpu_backend);
}

}  // namespace kvfleet::worker
