#include "perfmodel/step_model.h"

#include <algorithm>
#include <cmath>

#include "common/units.h"

namespace kvfleet::perfmodel {
namespace {

constexpr std::int64_t kMaxTpSearched = 64;

double attention_flops_factor(AttentionFlops a) {
  switch (a) {
    case AttentionFlops::kPaper: return 1.0;
    case AttentionFlops::kCausal: return 2.0;
    case AttentionFlops::kFull: return 4.0;
  }
  return 1.0;
}

struct Dtypes {
  DType weight;
  DType kv;
  DType compute;
  double peak;
};

std::string known_rates(const HardwareSpec& hw) {
  std::string out;
  for (const auto& [t, rate] : hw.flops) {
    out += (out.empty() ? "" : ", ") + std::string(dtype_name(t));
  }
  return out;
}

// Default compute dtype: 16-bit weights compute in their own type; fp32 weights use tf32 where
// the device has it; fp8 weights compute in fp8 where the device has it (else bf16); int8 and int4
// are taken as weight-only quantization (bf16 arithmetic) unless --compute-dtype says otherwise.
Result<Dtypes> resolve_dtypes(const ModelSpec& m, const HardwareSpec& hw, const Deployment& dep,
                              std::vector<std::string>* warnings) {
  Dtypes d{};
  d.weight = dep.weight_dtype.value_or(m.dtype);
  if (dep.kv_dtype) {
    d.kv = *dep.kv_dtype;
  } else {
    d.kv = (d.weight == DType::kInt4 || d.weight == DType::kInt8) ? DType::kBf16 : d.weight;
    if (d.kv == DType::kTf32) d.kv = DType::kFp32;
  }
  if (d.kv == DType::kTf32) {
    return invalid_argument("tf32 is an arithmetic mode, not a storage type; use fp32 for KV");
  }
  if (d.weight == DType::kTf32) {
    return invalid_argument("tf32 is an arithmetic mode, not a storage type; use fp32 weights");
  }
  if (dep.compute_dtype) {
    d.compute = *dep.compute_dtype;
  } else {
    switch (d.weight) {
      case DType::kFp32:
      case DType::kTf32:
        d.compute = hw.flops_for(DType::kTf32) ? DType::kTf32 : DType::kFp32;
        break;
      case DType::kFp16:
      case DType::kBf16: d.compute = d.weight; break;
      case DType::kFp8:
        d.compute = hw.flops_for(DType::kFp8) ? DType::kFp8 : DType::kBf16;
        if (d.compute != DType::kFp8) {
          warnings->push_back(hw.name + " has no fp8 arithmetic: fp8 weights are computed in bf16");
        }
        break;
      case DType::kInt8:
      case DType::kInt4: d.compute = DType::kBf16; break;
    }
  }
  auto peak = hw.flops_for(d.compute);
  if (!peak) {
    return invalid_argument("hardware '" + hw.name + "' has no " +
                            std::string(dtype_name(d.compute)) +
                            " FLOP rate (it has: " + known_rates(hw) + ")");
  }
  d.peak = *peak;
  return d;
}

Status validate(const ModelSpec& m, const HardwareSpec& hw, const Deployment& dep) {
  if (dep.tp <= 0) return invalid_argument("tp must be positive, got " + std::to_string(dep.tp));
  if (m.num_heads % dep.tp != 0) {
    return invalid_argument("tp " + std::to_string(dep.tp) + " must divide the model's " +
                            std::to_string(m.num_heads) + " attention heads");
  }
  if (!(dep.hbm_utilization > 0 && dep.hbm_utilization <= 1)) {
    return invalid_argument("hbm utilization must be in (0, 1], got " +
                            format_number(dep.hbm_utilization));
  }
  const Compression& c = dep.compression;
  for (double r : {c.layer, c.head, c.token, c.hidden}) {
    if (!(r > 0 && r <= 1)) {
      return invalid_argument("compression ratios must be in (0, 1], got " +
                              compression_to_string(c));
    }
  }
  if (hw.hbm_bytes <= 0 || hw.hbm_bandwidth <= 0 || hw.pcie_bandwidth <= 0) {
    return invalid_argument("hardware '" + hw.name +
                            "' needs positive hbm_bytes, hbm_bandwidth and pcie_bandwidth");
  }
  return Status::ok();
}

// Fraction of one request's KV that a device of a TP group holds. KV heads are split across
// ranks; with more ranks than KV heads each rank still holds one head (replication), and MLA's
// single latent is replicated on every rank.
double kv_device_fraction(std::int64_t shardable_heads, std::int64_t tp) {
  const std::int64_t per_device = (shardable_heads + tp - 1) / tp;
  return static_cast<double>(per_device) / static_cast<double>(shardable_heads);
}

}  // namespace

std::string_view bound_name(Bound b) {
  switch (b) {
    case Bound::kHbmCapacity: return "hbm_capacity";
    case Bound::kCompute: return "compute";
    case Bound::kHbmBandwidth: return "hbm_bandwidth";
    case Bound::kPcieBandwidth: return "pcie_bandwidth";
    case Bound::kInterconnect: return "interconnect";
    case Bound::kOverhead: return "overhead";
  }
  return "?";
}

double expected_expert_fraction(std::int64_t tokens, std::int64_t k, std::int64_t experts) {
  if (experts <= 0 || k <= 0) return 0.0;
  if (k >= experts) return 1.0;
  const double miss = 1.0 - static_cast<double>(k) / static_cast<double>(experts);
  return 1.0 - std::pow(miss, static_cast<double>(tokens));
}

Result<StepModel> StepModel::create(const ModelSpec& m, const HardwareSpec& hw,
                                    const Deployment& dep) {
  KVFLEET_RETURN_IF_ERROR(validate(m, hw, dep));
  StepModel s;
  KVFLEET_ASSIGN_OR_RETURN(Dtypes d, resolve_dtypes(m, hw, dep, &s.warnings_));
  s.dep_ = dep;
  s.dep_.weight_dtype = d.weight;
  s.dep_.kv_dtype = d.kv;
  s.dep_.compute_dtype = d.compute;
  s.params_ = count_params(m);
  s.calibration_ = hw.calibration;

  s.layers_ = static_cast<double>(m.num_layers);
  s.hidden_ = static_cast<double>(m.hidden_size);
  s.attention_width_ = m.attention_width();
  s.num_heads_ = m.num_heads;
  s.kv_shardable_heads_ = m.kv_shardable_heads();
  if (m.moe) {
    s.moe_k_ = m.moe->experts_per_token;
    s.moe_experts_ = m.moe->num_experts;
  }

  s.tp_ = static_cast<double>(dep.tp);
  const double wb = dtype_bytes(d.weight);
  s.weight_bytes_ = s.params_.total * wb;
  s.routed_expert_bytes_ = s.params_.routed_experts * wb;
  // Per step, the input embedding is a gather of a few rows, not a read of the table; a tied
  // table is still read whole as the lm_head.
  const double read_all =
      s.weight_bytes_ - (m.tie_word_embeddings ? 0.0 : s.params_.embedding * wb);
  s.dense_read_bytes_ = read_all - s.routed_expert_bytes_;
  s.lm_head_bytes_ = s.params_.lm_head * wb;
  s.kv_per_token_ =
      static_cast<double>(m.kv_elements_per_token()) * dtype_bytes(d.kv) * dep.compression.factor();
  s.kv_per_token_device_ = s.kv_per_token_ * kv_device_fraction(s.kv_shardable_heads_, dep.tp);
  s.act_bytes_ = (d.compute == DType::kFp32 || d.compute == DType::kTf32) ? 4.0 : 2.0;
  s.attention_factor_ = attention_flops_factor(dep.attention_flops);
  s.compression_ = dep.compression.factor();
  s.peak_ = d.peak;
  s.hbm_bandwidth_ = hw.hbm_bandwidth;
  s.pcie_bandwidth_ = hw.pcie_bandwidth;
  s.link_bandwidth_ = hw.nvlink_bandwidth > 0 ? hw.nvlink_bandwidth : hw.pcie_bandwidth;
  s.usable_hbm_ = hw.hbm_bytes * dep.hbm_utilization;
  return s;
}

double StepModel::weight_bytes_per_device() const {
  return weight_bytes_ / tp_;
}

double StepModel::swap_seconds(double bytes) const {
  const double efficiency = calibration_ ? calibration_->swap_efficiency : 1.0;
  return bytes / (pcie_bandwidth_ * efficiency);
}

double StepModel::concurrency_at(std::int64_t tp, std::int64_t tokens) const {
  const double budget = usable_hbm_ - weight_bytes_ / static_cast<double>(tp);
  const double per_request =
      kv_per_token_ * kv_device_fraction(kv_shardable_heads_, tp) * static_cast<double>(tokens);
  if (budget <= 0 || per_request <= 0) return 0;
  return std::floor(budget / per_request);
}

std::int64_t StepModel::max_requests(std::int64_t tokens) const {
  return static_cast<std::int64_t>(concurrency_at(dep_.tp, tokens));
}

std::int64_t StepModel::kv_blocks(std::int64_t block_tokens) const {
  return max_requests(block_tokens);
}

std::int64_t StepModel::min_tp_to_fit(std::int64_t tokens) const {
  for (std::int64_t t = 1; t <= kMaxTpSearched; ++t) {
    if (num_heads_ % t == 0 && concurrency_at(t, tokens) >= 1) return t;
  }
  return 0;
}

double StepModel::prefill_attention_flops(std::int64_t tokens) const {
  const double l = static_cast<double>(tokens);
  return attention_factor_ * layers_ * l * l * attention_width_ / tp_;
}

double StepModel::weight_read_bytes(double tokens) const {
  double expert_fraction = 1.0;
  if (moe_experts_ > 0) {
    expert_fraction =
        expected_expert_fraction(static_cast<std::int64_t>(tokens), moe_k_, moe_experts_);
  }
  return (dense_read_bytes_ + routed_expert_bytes_ * expert_fraction) / tp_;
}

// Tensor-parallel all-reduce bytes per device for `tokens` tokens: two all-reduces per layer
// (after attention and after the MLP), ring algorithm: 2 (tp-1)/tp of the message each.
double StepModel::allreduce_bytes(double tokens) const {
  if (tp_ <= 1) return 0.0;
  const double message = tokens * hidden_ * act_bytes_;
  return layers_ * 2.0 * 2.0 * (tp_ - 1.0) / tp_ * message;
}

void StepModel::add(Sums& s, const StepChunk& c) const {
  if (c.tokens <= 0) return;
  const double n = static_cast<double>(c.tokens);
  const double p = static_cast<double>(std::max<std::int64_t>(c.context, 0));
  s.tokens += n;
  if (c.logits) s.logits_rows += 1;
  if (c.tokens == 1 && c.context > 0) {
    // A decode token: the paper's per-token attention over the (compressed) context, which it
    // reads whole; the kernel attends to its own new token too.
    s.paper_flops += 4.0 * layers_ * p * attention_width_ * compression_;
    s.paper_kv_bytes += p * kv_per_token_device_;
    s.decode_tokens += 1;
    s.decode_visits += p + 1;
  } else {
    // A prefill chunk: the convention's L^2 term split so that chunks of one prompt add up to
    // the one-pass figure; its own KV is written and the earlier context read back once.
    const double e = p + n;
    s.paper_flops += attention_factor_ * layers_ * e * e * attention_width_ -
                     attention_factor_ * layers_ * p * p * attention_width_;
    s.paper_kv_bytes += e * kv_per_token_device_;
    s.prefill_tokens += n;
    s.prefill_visits += n * p + n * (n + 1) / 2;  // query i attends to p + i + 1 tokens
    s.prefill_context += p;
  }
}

Roofline StepModel::step(std::span<const StepChunk> chunks) const {
  Sums s;
  for (const StepChunk& c : chunks) add(s, c);
  if (s.tokens <= 0) return Roofline{};
  s.paper_flops = 2.0 * params_.matmul_active * s.tokens + s.paper_flops;
  return evaluate(s);
}

Roofline StepModel::prefill(std::int64_t tokens) const {
  if (tokens <= 0) return Roofline{};
  const StepChunk c{tokens, 0, true};
  return step(std::span(&c, 1));
}

Roofline StepModel::decode(std::int64_t batch, std::int64_t context) const {
  if (batch <= 0) return Roofline{};
  if (context <= 0) {
    // Not a decode token by step()'s rule: batch one-token prompts.
    Sums s;
    const StepChunk c{1, 0, true};
    for (std::int64_t i = 0; i < batch; ++i) add(s, c);
    s.paper_flops = 2.0 * params_.matmul_active * s.tokens + s.paper_flops;
    return evaluate(s);
  }
  // step() of `batch` chunks {1, context}, in closed form (and in the order estimate() has
  // always computed it, so the paper's figures are bit-for-bit what they were).
  const double b = static_cast<double>(batch);
  const double c = static_cast<double>(context);
  Sums s;
  s.tokens = b;
  s.logits_rows = b;
  const double attn = 4.0 * layers_ * c * attention_width_ * compression_;
  s.paper_flops = b * (2.0 * params_.matmul_active + attn);
  s.paper_kv_bytes = b * c * kv_per_token_device_;
  s.decode_tokens = b;
  s.decode_visits = b * (c + 1);
  return evaluate(s);
}

Roofline StepModel::evaluate(const Sums& s) const {
  return calibration_ ? evaluate_calibrated(s) : evaluate_paper(s);
}

Roofline StepModel::evaluate_paper(const Sums& s) const {
  Roofline r;
  r.flops = s.paper_flops / tp_;
  r.bytes = weight_read_bytes(s.tokens) + s.paper_kv_bytes;
  r.comm_bytes = allreduce_bytes(s.tokens);
  r.compute_seconds = r.flops / peak_;
  r.memory_seconds = r.bytes / hbm_bandwidth_;
  r.comm_seconds = r.comm_bytes > 0 ? r.comm_bytes / link_bandwidth_ : 0.0;
  const double local = std::max(r.compute_seconds, r.memory_seconds);
  r.seconds = local + r.comm_seconds;
  if (r.comm_seconds > local) {
    r.bound = Bound::kInterconnect;
  } else {
    r.bound = r.compute_seconds >= r.memory_seconds ? Bound::kCompute : Bound::kHbmBandwidth;
  }
  return r;
}

// The calibrated form (docs/PERFMODEL.md): the kernels of a step run one after another, each
// bounded by its own resource at its measured efficiency.
Roofline StepModel::evaluate_calibrated(const Sums& s) const {
  Roofline r;
  calibrated_parts(s, &r);
  return r;
}

StepParts StepModel::parts(std::span<const StepChunk> chunks) const {
  if (!calibration_) return StepParts{};
  Sums s;
  for (const StepChunk& c : chunks) add(s, c);
  if (s.tokens <= 0) return StepParts{};
  return calibrated_parts(s, nullptr);
}

StepParts StepModel::calibrated_parts(const Sums& s, Roofline* roofline) const {
  const Calibration& k = *calibration_;
  const double weight_bw = hbm_bandwidth_ * k.weight_read_efficiency;
  // Decode attention reads the step's whole KV footprint once; its rate depends on how large
  // that is (TLB reach), per the profile's table.
  const double kv_footprint = s.decode_visits * kv_per_token_device_;
  const double kv_bw = hbm_bandwidth_ * k.kv_read_efficiency_at(kv_footprint);
  // Linear layers of every token: stream the weights or multiply, whichever is slower at this
  // many tokens per step.
  const double lm_params = params_.lm_head / tp_;
  const double linear_params = params_.matmul_active / tp_ - lm_params;
  const double lm_bytes = lm_head_bytes_ / tp_;
  const double linear_bytes = weight_read_bytes(s.tokens) - lm_bytes;
  const double linear_flops = 2.0 * linear_params * s.tokens;
  const double linear_memory = linear_bytes / weight_bw;
  const double linear_compute = linear_flops / (peak_ * k.gemm_efficiency_at(s.tokens));
  // The lm_head only for the rows that produce logits.
  double lm_flops = 0, lm_memory = 0, lm_compute = 0;
  if (s.logits_rows > 0) {
    lm_flops = 2.0 * lm_params * s.logits_rows;
    lm_memory = lm_bytes / weight_bw;
    lm_compute = lm_flops / (peak_ * k.gemm_efficiency_at(s.logits_rows));
  }
  // Attention: decode queries stream their context's KV from memory; prefill queries work on
  // KV just written (cache-resident), bounded by arithmetic: 4 FLOPs per (query, KV token) and
  // unit of attention width (QK^T and AV, a multiply-add each).
  const double per_visit_flops = 4.0 * layers_ * attention_width_ / tp_;
  const double decode_kv_bytes = s.decode_visits * kv_per_token_device_;
  const double decode_memory = decode_kv_bytes / kv_bw;
  const double prefill_read = s.prefill_context * kv_per_token_device_ / kv_bw;
  const double prefill_flops = s.prefill_visits * per_visit_flops;
  const double prefill_compute = prefill_flops / (peak_ * k.prefill_attention_efficiency);
  // Each decode sequence's attention starts cold in every layer (its first block's K and V come
  // from memory before the prefetch of the next ones runs ahead); a prefill query's KV is warm.
  const double calls = s.decode_tokens * layers_ * k.attention_call_overhead;
  const double comm_bytes = allreduce_bytes(s.tokens);

  StepParts p;
  p.linear = std::max(linear_memory, linear_compute);
  p.lm_head = std::max(lm_memory, lm_compute);
  p.decode_attention = decode_memory + calls;
  p.prefill_attention = prefill_compute + prefill_read;
  p.overhead = k.step_overhead + k.token_overhead * s.tokens;
  p.comm = comm_bytes > 0 ? comm_bytes / link_bandwidth_ : 0.0;
  if (roofline == nullptr) return p;

  Roofline& r = *roofline;
  r.flops =
      linear_flops + lm_flops + prefill_flops + s.decode_visits * per_visit_flops * compression_;
  r.bytes = linear_bytes + (s.logits_rows > 0 ? lm_bytes : 0.0) + decode_kv_bytes +
            (s.prefill_context + s.prefill_tokens) * kv_per_token_device_;
  r.comm_bytes = comm_bytes;
  r.comm_seconds = p.comm;
  // Each max() term counts toward the resource that decided it; the cold calls are fixed costs.
  auto split = [&r](double memory, double compute) {
    if (compute >= memory) {
      r.compute_seconds += compute;
    } else {
      r.memory_seconds += memory;
    }
  };
  split(linear_memory, linear_compute);
  if (s.logits_rows > 0) split(lm_memory, lm_compute);
  r.memory_seconds += decode_memory + prefill_read;
  r.compute_seconds += prefill_compute;
  r.overhead_seconds = p.overhead + calls;
  r.seconds = r.compute_seconds + r.memory_seconds + r.overhead_seconds + r.comm_seconds;
  r.bound = Bound::kCompute;
  double largest = r.compute_seconds;
  for (auto [seconds, bound] : {std::pair{r.memory_seconds, Bound::kHbmBandwidth},
                                std::pair{r.overhead_seconds, Bound::kOverhead},
                                std::pair{r.comm_seconds, Bound::kInterconnect}}) {
    if (seconds > largest) {
      largest = seconds;
      r.bound = bound;
    }
  }
  return p;
}

}  // namespace kvfleet::perfmodel
