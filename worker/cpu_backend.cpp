#include "worker/cpu_backend.h"

#include <mutex>

#include "kvstore/host_memory.h"

namespace kvfleet::worker {
namespace {

class CpuBackend final : public EngineBackend {
 public:
  CpuBackend(std::shared_ptr<const Model> model, kernels::KvLayout layout, std::int32_t blocks,
             kvstore::HostBuffer pool)
      : model_(std::move(model)), layout_(layout), blocks_(blocks), pool_(std::move(pool)) {}

  std::string_view name() const override { return "cpu"; }
  const ModelSpec& spec() const override { return model_->spec(); }
  const kernels::KvLayout& kv_layout() const override { return layout_; }
  std::int32_t num_blocks() const override { return blocks_; }
  std::size_t weight_bytes() const override { return model_->weight_bytes(); }

  void forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) override {
    model_->forward(chunks, layout_, pool_.data(), workspace_, logits);
  }

  Result<std::vector<kvstore::BlockId>> swap_out(std::span<const kvstore::BlockId> device,
                                                 kvstore::HostKvStore& host) override {
    return host.spill(pool_.data(), device);
  }

  Status swap_in(std::span<const kvstore::BlockId> host_blocks,
                 std::span<const kvstore::BlockId> device, kvstore::HostKvStore& host) override {
    return host.restore(host_blocks, pool_.data(), device);
  }

  std::byte* host_addressable_kv() override { return pool_.data(); }

 private:
  std::shared_ptr<const Model> model_;
  kernels::KvLayout layout_;
  std::int32_t blocks_;
  kvstore::HostBuffer pool_;
  Workspace workspace_;
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
  const kernels::KvLayout layout = model->kv_layout(o.block_tokens, o.kv_dtype);
  KVFLEET_RETURN_IF_ERROR(kernels::validate_kv_layout(layout));
  if (o.num_blocks <= 0) return invalid_argument("the engine needs at least one KV block");
  const std::size_t bytes = static_cast<std::size_t>(o.num_blocks) * layout.block_bytes();
  KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer pool, kvstore::allocate_host_buffer(bytes));
  return std::unique_ptr<EngineBackend>(
      new CpuBackend(std::move(model), layout, o.num_blocks, std::move(pool)));
}

}  // namespace

void register_cpu_backend() {
  static std::once_flag once;
  std::call_once(once, [] { register_backend("cpu", make_cpu_backend); });
}

}  // namespace kvfleet::worker
