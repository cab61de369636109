#include "worker/sim_backend.h"

#include <cmath>
#include <sstream>

#include "common/units.h"
#include "kvstore/block_ranges.h"
#include "perfmodel/hardware.h"
#include "perfmodel/link.h"
#include "perfmodel/step_model.h"
#include "worker/backend.h"
#include "worker/sampler.h"

namespace kvfleet::worker {
namespace {

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The KV layout of one device's share of the model's KV: what a block holds and weighs.
Result<kernels::KvLayout> sim_layout(const ModelSpec& spec, std::int64_t tp,
                                     std::int64_t block_tokens, DType dtype) {
  if (dtype == DType::kInt4 || dtype == DType::kTf32) {
    return invalid_argument("sim backend: KV dtype " + std::string(dtype_name(dtype)) +
                            " is not a storage type with whole bytes per element");
  }
  kernels::KvLayout l;
  l.num_layers = spec.num_layers;
  l.block_tokens = block_tokens;
  l.dtype = dtype;
  if (spec.mla) {
    // One latent (kv_lora_rank) plus one RoPE key per token and layer, replicated on every
    // rank: as one "head" of half that width per K and V.
    const std::int64_t per_layer = spec.mla->kv_lora_rank + spec.mla->qk_rope_head_dim;
    l.num_kv_heads = 1;
    l.head_dim = (per_layer + 1) / 2;
  } else {
    l.num_kv_heads = (spec.num_kv_heads + tp - 1) / tp;
    l.head_dim = spec.head_dim;
  }
  if (l.num_layers <= 0 || l.num_kv_heads <= 0 || l.head_dim <= 0 || block_tokens <= 0) {
    return invalid_argument("sim backend: model '" + spec.name + "' has no KV geometry");
  }
  return l;
}

class SimBackend final : public EngineBackend {
 public:
  SimBackend(ModelSpec spec, perfmodel::HardwareSpec hw, perfmodel::LinkSpec link,
             perfmodel::StepModel model, kernels::KvLayout layout, std::int32_t blocks,
             std::int64_t tp, std::shared_ptr<Clock> clock, double time_scale, std::uint64_t seed)
      : spec_(std::move(spec)),
        hw_(std::move(hw)),
        link_(std::move(link)),
        model_(std::move(model)),
        layout_(layout),
        blocks_(blocks),
        tp_(tp),
        clock_(std::move(clock)),
        time_scale_(time_scale),
        seed_(seed) {
    chunks_.reserve(256);
  }

  std::string_view name() const override { return "sim"; }
  const ModelSpec& spec() const override { return spec_; }
  const kernels::KvLayout& kv_layout() const override { return layout_; }
  std::int32_t num_blocks() const override { return blocks_; }
  std::size_t weight_bytes() const override {
    return static_cast<std::size_t>(model_.weight_bytes_per_device());
  }
  BackendCapabilities capabilities() const override {
    BackendCapabilities c;
    c.computes = false;
    c.modelled_time = true;
    return c;
  }
  std::string describe() const override {
    std::ostringstream o;
    o << "sim (modelled by perfmodel): " << spec_.name << " on " << hw_.name;
    if (tp_ > 1) o << " x" << tp_ << " (tp " << tp_ << ")";
    o << ", " << dtype_name(layout_.dtype) << " KV, " << blocks_ << " blocks of "
      << layout_.block_tokens << " tokens ("
      << format_bytes(static_cast<double>(layout_.block_bytes())) << " each per device), link "
      << link_.name;
    if (!clock_->is_virtual()) o << ", time scale " << time_scale_;
    return o.str();
  }

  Status step(std::span<const StepSequence> batch, StepOutput& out) override {
    chunks_.clear();
    out.kind = StepOutput::Kind::kTokens;
    out.clear();
    for (const StepSequence& s : batch) {
      const auto n = static_cast<std::int64_t>(s.chunk.tokens.size());
      if (n == 0) continue;
      const bool logits = s.chunk.logits != LogitsWanted::kNone;
      chunks_.push_back({n, s.chunk.pos0, logits});
      if (!logits) continue;
      // The token after position p = pos0 + n - 1.
      const std::int64_t p = s.chunk.pos0 + n - 1;
      std::uint64_t h = mix(seed_ ^ mix(static_cast<std::uint64_t>(p)) ^
                            (static_cast<std::uint64_t>(s.chunk.tokens.back()) << 32));
      if (s.sampling != nullptr && s.sampling->temperature > 0) {
        const double u = sample_uniform(s.sample_seed, s.sample_index);
        h = mix(h ^ static_cast<std::uint64_t>(u * 4294967296.0));
      }
      out.tokens.push_back(token_from_hash(h));
    }
    if (!chunks_.empty()) wait(model_.step(chunks_).seconds);
    return Status::ok();
  }

  KvMemory kv_memory() const override {
    KvMemory m;
    m.kind = KvMemory::Kind::kNone;
    m.bytes = static_cast<std::size_t>(blocks_) * layout_.block_bytes();
    m.block_stride = layout_.block_bytes();
    return m;
  }
  Status allocate_host_kv(std::int32_t blocks) override {
    host_blocks_ = blocks;
    return Status::ok();
  }
  KvMemory host_kv_memory() const override {
    KvMemory m;
    m.bytes = static_cast<std::size_t>(host_blocks_) * layout_.block_bytes();
    m.block_stride = layout_.block_bytes();
    return m;
  }
  Result<std::int64_t> copy_blocks(CopyDirection, std::span<const kvstore::BlockId> device,
                                   std::span<const kvstore::BlockId> host) override {
    if (device.size() != host.size()) {
      return invalid_argument("copy_blocks: " + std::to_string(device.size()) +
                              " device blocks for " + std::to_string(host.size()) + " host blocks");
    }
    const double bytes =
        static_cast<double>(device.size()) * static_cast<double>(layout_.block_bytes());
    wait(model_.swap_seconds(bytes));
    return static_cast<std::int64_t>(kvstore::coalesce_runs(device, host).size());
  }
  Status sync() override { return Status::ok(); }

  std::optional<double> handoff_seconds(std::uint64_t bytes) const override {
    return link_.transfer_seconds(static_cast<double>(bytes));
  }
  double time_scale() const override { return clock_->is_virtual() ? 1.0 : time_scale_; }

 private:
  // Waits out `modelled` seconds of device time. On a virtual clock that just advances it. In
  // wall time the waits are chained on absolute deadlines: the engine's own work between two
  // steps (scheduling, sampling, streaming) and the sleep's overshoot are absorbed by the next
  // wait, as a device that runs ahead of its host would, so back-to-back steps last exactly what
  // the model predicts. After an idle gap longer than kMaxCatchUp the chain restarts at now.
  void wait(double modelled) {
    if (modelled <= 0) return;
    if (clock_->is_virtual()) {
      clock_->sleep_for(modelled);
      return;
    }
    constexpr double kMaxCatchUp = 0.002;
    const double now = clock_->now();
    if (deadline_ < now - kMaxCatchUp) deadline_ = now;
    deadline_ += modelled * time_scale_;
    clock_->sleep_for(deadline_ - now);
  }

  std::int32_t token_from_hash(std::uint64_t h) const {
    if (spec_.vocab_size >= 127) return static_cast<std::int32_t>(32 + h % 95);  // printable ASCII
    const auto eos = spec_.eos_token_id.value_or(-1);
    auto t = static_cast<std::int32_t>(h % static_cast<std::uint64_t>(spec_.vocab_size));
    if (t == eos) t = (t + 1) % static_cast<std::int32_t>(spec_.vocab_size);
    return t;
  }

  ModelSpec spec_;
  perfmodel::HardwareSpec hw_;
  perfmodel::LinkSpec link_;
  perfmodel::StepModel model_;
  kernels::KvLayout layout_;
  std::int32_t blocks_;
  std::int32_t host_blocks_ = 0;
  std::int64_t tp_;
  std::shared_ptr<Clock> clock_;
  double time_scale_;
  std::uint64_t seed_;
  std::vector<perfmodel::StepChunk> chunks_;
  double deadline_ = 0;  // wall time the last modelled wait ends (see wait())
};

Result<std::unique_ptr<EngineBackend>> make_sim_backend(const BackendOptions& o) {
  if (!(o.time_scale > 0) || !std::isfinite(o.time_scale)) {
    return invalid_argument("sim backend: time scale must be a positive number, got " +
                            format_number(o.time_scale));
  }
  if (o.tp < 1) return invalid_argument("sim backend: tp must be >= 1");
  if (o.block_tokens < 1) return invalid_argument("sim backend: block tokens must be >= 1");
  if (o.num_blocks < 0) return invalid_argument("sim backend: KV blocks must be >= 0");
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::HardwareSpec hw,
                           perfmodel::load_hardware(o.hardware.empty() ? "a100-80g" : o.hardware));
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::LinkSpec link,
                           perfmodel::load_link(o.link.empty() ? "nvlink" : o.link));
  perfmodel::Deployment dep;
  dep.tp = o.tp;
  if (o.kv_dtype) dep.kv_dtype = *o.kv_dtype;
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::StepModel model,
                           perfmodel::StepModel::create(o.spec, hw, dep));
  const DType kv_dtype = o.kv_dtype.value_or(o.spec.dtype);
  KVFLEET_ASSIGN_OR_RETURN(kernels::KvLayout layout,
                           sim_layout(o.spec, o.tp, o.block_tokens, kv_dtype));
  const std::int64_t fit = model.kv_blocks(o.block_tokens);
  if (fit < 1) {
    const std::int64_t min_tp = model.min_tp_to_fit(o.block_tokens);
    return invalid_argument("model '" + o.spec.name + "' does not fit " + hw.name + " at tp " +
                            std::to_string(o.tp) + ": its weights need " +
                            format_bytes(model.weight_bytes_per_device()) +
                            " per device and leave no room for KV" +
                            (min_tp > 0 ? "; it fits with tp >= " + std::to_string(min_tp)
                                        : "; it does not fit with any tp up to 64"));
  }
  if (fit > INT32_MAX)
    return invalid_argument("sim backend: too many KV blocks; raise --block-tokens");
  std::int32_t blocks = static_cast<std::int32_t>(fit);
  if (o.num_blocks > 0) {
    if (o.num_blocks > fit) {
      return invalid_argument("sim backend: " + std::to_string(o.num_blocks) +
                              " KV blocks asked, but " + hw.name + " holds " + std::to_string(fit) +
                              " after the weights");
    }
    blocks = o.num_blocks;
  }
  std::shared_ptr<Clock> clock = o.clock ? o.clock : steady_clock();
  return std::unique_ptr<EngineBackend>(new SimBackend(o.spec, std::move(hw), std::move(link),
                                                       std::move(model), layout, blocks, o.tp,
                                                       std::move(clock), o.time_scale, o.seed));
}

}  // namespace

void register_sim_backend() {
  register_backend("sim", make_sim_backend);
}

}  // namespace kvfleet::worker
