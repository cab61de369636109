#include "perfmodel/estimate.h"

#include <algorithm>
#include <cmath>

#include "common/units.h"

namespace kvfleet::perfmodel {
namespace {

constexpr std::int64_t kMaxDecodeTokens = 10'000'000;
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

// Fraction of one request's KV that a device of a TP group holds. KV heads are split across
// ranks; with more ranks than KV heads each rank still holds one head (replication), and MLA's
// single latent is replicated on every rank.
double kv_device_fraction(const ModelSpec& m, std::int64_t tp) {
  const std::int64_t heads = m.kv_shardable_heads();
  const std::int64_t per_device = (heads + tp - 1) / tp;
  return static_cast<double>(per_device) / static_cast<double>(heads);
}

Roofline make_roofline(double flops, double bytes, double comm_bytes, double peak, double bw,
                       double link_bw) {
  Roofline r;
  r.flops = flops;
  r.bytes = bytes;
  r.comm_bytes = comm_bytes;
  r.compute_seconds = flops / peak;
  r.memory_seconds = bytes / bw;
  r.comm_seconds = comm_bytes > 0 ? comm_bytes / link_bw : 0.0;
  const double local = std::max(r.compute_seconds, r.memory_seconds);
  r.seconds = local + r.comm_seconds;
  if (r.comm_seconds > local) {
    r.bound = Bound::kInterconnect;
  } else {
    r.bound = r.compute_seconds >= r.memory_seconds ? Bound::kCompute : Bound::kHbmBandwidth;
  }
  return r;
}

// Everything about one (model, hardware, deployment) that does not depend on the workload.
class Model {
 public:
  Model(const ModelSpec& m, const HardwareSpec& hw, const Deployment& dep, const Dtypes& d)
      : m_(m), hw_(hw), dep_(dep), d_(d), params_(count_params(m)) {
    const double wb = dtype_bytes(d.weight);
    weight_bytes_ = params_.total * wb;
    routed_expert_bytes_ = params_.routed_experts * wb;
    // Per step, the input embedding is a gather of a few rows, not a read of the table; a tied
    // table is still read whole as the lm_head.
    const double read_all = weight_bytes_ - (m.tie_word_embeddings ? 0.0 : params_.embedding * wb);
    dense_read_bytes_ = read_all - routed_expert_bytes_;
    kv_per_token_ = static_cast<double>(m.kv_elements_per_token()) * dtype_bytes(d.kv) *
                    dep.compression.factor();
    act_bytes_ = (d.compute == DType::kFp32 || d.compute == DType::kTf32) ? 4.0 : 2.0;
    link_bw_ = hw.nvlink_bandwidth > 0 ? hw.nvlink_bandwidth : hw.pcie_bandwidth;
  }

  const ParamCounts& params() const { return params_; }
  double weight_bytes() const { return weight_bytes_; }
  double kv_per_token() const { return kv_per_token_; }
  double kv_per_token_device(std::int64_t tp) const {
    return kv_per_token_ * kv_device_fraction(m_, tp);
  }
  double usable_hbm() const { return hw_.hbm_bytes * dep_.hbm_utilization; }

  std::int64_t concurrency(std::int64_t tp, std::int64_t peak_tokens) const {
    const double budget = usable_hbm() - weight_bytes_ / static_cast<double>(tp);
    const double per_request = kv_per_token_device(tp) * static_cast<double>(peak_tokens);
    if (budget <= 0 || per_request <= 0) return 0;
    return static_cast<std::int64_t>(std::floor(budget / per_request));
  }

  // Tensor-parallel all-reduce bytes per device for `tokens` tokens: two all-reduces per layer
  // (after attention and after the MLP), ring algorithm: 2 (tp-1)/tp of the message each.
  double allreduce_bytes(double tokens) const {
    const double tp = static_cast<double>(dep_.tp);
    if (dep_.tp <= 1) return 0.0;
    const double message = tokens * static_cast<double>(m_.hidden_size) * act_bytes_;
    return static_cast<double>(m_.num_layers) * 2.0 * 2.0 * (tp - 1.0) / tp * message;
  }

  double weight_read_bytes(std::int64_t tokens) const {
    double expert_fraction = 1.0;
    if (m_.moe) {
      expert_fraction =
          expected_expert_fraction(tokens, m_.moe->experts_per_token, m_.moe->num_experts);
    }
    return (dense_read_bytes_ + routed_expert_bytes_ * expert_fraction) /
           static_cast<double>(dep_.tp);
  }

  double prefill_attention_flops(std::int64_t len) const {
    const double l = static_cast<double>(len);
    return attention_flops_factor(dep_.attention_flops) * static_cast<double>(m_.num_layers) * l *
           l * m_.attention_width();
  }

  Roofline prefill(std::int64_t len) const {
    const double tp = static_cast<double>(dep_.tp);
    const double l = static_cast<double>(len);
    const double flops = (2.0 * params_.matmul_active * l + prefill_attention_flops(len)) / tp;
    const double bytes = weight_read_bytes(len) + l * kv_per_token_device(dep_.tp);
    return make_roofline(flops, bytes, allreduce_bytes(l), d_.peak, hw_.hbm_bandwidth, link_bw_);
  }

  // One decode step: `batch` requests, each with `context` tokens of KV, each producing a token.
  // Attention reads (and multiplies) only the KV that compression kept.
  Roofline decode_step(std::int64_t batch, std::int64_t context) const {
    const double tp = static_cast<double>(dep_.tp);
    const double b = static_cast<double>(batch);
    const double c = static_cast<double>(context);
    const double attn = 4.0 * static_cast<double>(m_.num_layers) * c * m_.attention_width() *
                        dep_.compression.factor();
    const double flops = b * (2.0 * params_.matmul_active + attn) / tp;
    const double bytes = weight_read_bytes(batch) + b * c * kv_per_token_device(dep_.tp);
    return make_roofline(flops, bytes, allreduce_bytes(b), d_.peak, hw_.hbm_bandwidth, link_bw_);
  }

  double decode_seconds(std::int64_t batch, std::int64_t context, std::int64_t tokens) const {
    double total = 0;
    for (std::int64_t i = 0; i < tokens; ++i) total += decode_step(batch, context + i).seconds;
    return total;
  }

 private:
  const ModelSpec& m_;
  const HardwareSpec& hw_;
  const Deployment& dep_;
  Dtypes d_;
  ParamCounts params_;
  double weight_bytes_ = 0;
  double routed_expert_bytes_ = 0;
  double dense_read_bytes_ = 0;
  double kv_per_token_ = 0;
  double act_bytes_ = 2.0;
  double link_bw_ = 0;
};

Status validate(const ModelSpec& m, const HardwareSpec& hw, const Deployment& dep,
                const Workload& w) {
  if (w.context_tokens <= 0) {
    return invalid_argument("context must be a positive number of tokens, got " +
                            std::to_string(w.context_tokens));
  }
  if (w.decode_tokens < 0 || w.decode_tokens > kMaxDecodeTokens) {
    return invalid_argument("decode tokens must be in [0, " + std::to_string(kMaxDecodeTokens) +
                            "], got " + std::to_string(w.decode_tokens));
  }
  if (w.batch <= 0) {
    return invalid_argument("batch must be positive, got " + std::to_string(w.batch));
  }
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

}  // namespace

std::string_view bound_name(Bound b) {
  switch (b) {
    case Bound::kHbmCapacity: return "hbm_capacity";
    case Bound::kCompute: return "compute";
    case Bound::kHbmBandwidth: return "hbm_bandwidth";
    case Bound::kPcieBandwidth: return "pcie_bandwidth";
    case Bound::kInterconnect: return "interconnect";
  }
  return "?";
}

double expected_expert_fraction(std::int64_t tokens, std::int64_t k, std::int64_t experts) {
  if (experts <= 0 || k <= 0) return 0.0;
  if (k >= experts) return 1.0;
  const double miss = 1.0 - static_cast<double>(k) / static_cast<double>(experts);
  return 1.0 - std::pow(miss, static_cast<double>(tokens));
}

Result<Estimate> estimate(const ModelSpec& m, const HardwareSpec& hw, const Deployment& dep,
                          const Workload& w) {
  KVFLEET_RETURN_IF_ERROR(validate(m, hw, dep, w));
  Estimate e;
  KVFLEET_ASSIGN_OR_RETURN(Dtypes d, resolve_dtypes(m, hw, dep, &e.warnings));
  const Model model(m, hw, dep, d);
  const ParamCounts& p = model.params();
  const std::int64_t tp = dep.tp;
  const std::int64_t peak_tokens = w.context_tokens + w.decode_tokens;

  e.model = m.name;
  e.hardware = hw.name;
  e.workload = w;
  e.deployment = dep;
  e.deployment.weight_dtype = d.weight;
  e.deployment.kv_dtype = d.kv;
  e.deployment.compute_dtype = d.compute;
  e.weight_dtype = d.weight;
  e.kv_dtype = d.kv;
  e.compute_dtype = d.compute;
  e.attention = m.attention_kind();
  e.peak_flops = d.peak;
  e.params_total = p.total;
  e.params_active = p.active;

  // Sizes.
  const double ctx = static_cast<double>(w.context_tokens);
  e.kv_bytes_per_token = model.kv_per_token();
  e.kv_bytes_per_request = e.kv_bytes_per_token * ctx;
  e.kv_bytes_per_token_per_device = model.kv_per_token_device(tp);
  e.kv_bytes_per_request_per_device = e.kv_bytes_per_token_per_device * ctx;
  e.kv_bytes_per_request_peak_per_device =
      e.kv_bytes_per_token_per_device * static_cast<double>(peak_tokens);
  e.weight_bytes = model.weight_bytes();
  e.weight_bytes_per_device = e.weight_bytes / static_cast<double>(tp);
  e.usable_hbm_bytes = model.usable_hbm();
  e.kv_budget_bytes = e.usable_hbm_bytes - e.weight_bytes_per_device;

  // Concurrency.
  e.max_concurrency = model.concurrency(tp, peak_tokens);
  if (e.max_concurrency == 0) {
    if (e.kv_budget_bytes <= 0) {
      e.concurrency_limit = "weights need " + format_bytes(e.weight_bytes_per_device) +
                            " per device but only " + format_bytes(e.usable_hbm_bytes) +
                            " of HBM is usable";
    } else {
      e.concurrency_limit =
          "one request's KV (" + format_bytes(e.kv_bytes_per_request_peak_per_device) +
          " per device at " + std::to_string(peak_tokens) + " tokens) exceeds the " +
          format_bytes(e.kv_budget_bytes) + " of HBM left after the weights";
    }
  }
  for (std::int64_t t = 1; t <= kMaxTpSearched; ++t) {
    if (m.num_heads % t == 0 && model.concurrency(t, peak_tokens) >= 1) {
      e.min_tp_to_fit = t;
      break;
    }
  }
  if (e.max_concurrency == 0) {
    e.concurrency_limit +=
        e.min_tp_to_fit > 0
            ? "; it fits with tp >= " + std::to_string(e.min_tp_to_fit)
            : "; it does not fit with any tp up to " + std::to_string(kMaxTpSearched);
  }
  if (e.kv_bytes_per_request_peak_per_device > 0) {
    e.host_kv_capacity = static_cast<std::int64_t>(
        std::floor(hw.host_memory_bytes / e.kv_bytes_per_request_peak_per_device));
  }

  // Prefill.
  e.prefill = model.prefill(w.context_tokens);
  e.prefill_seconds = e.prefill.seconds;
  const double attn = model.prefill_attention_flops(w.context_tokens) / static_cast<double>(tp);
  e.prefill_attention_flops_share = e.prefill.flops > 0 ? attn / e.prefill.flops : 0.0;

  // Decode.
  e.decode_step = model.decode_step(w.batch, w.context_tokens);
  e.decode_seconds_per_token = e.decode_step.seconds;
  e.decode_seconds = model.decode_seconds(w.batch, w.context_tokens, w.decode_tokens);
  e.decode_tokens_per_second = static_cast<double>(w.batch) / e.decode_step.seconds;
  const double kv_read = static_cast<double>(w.batch) * e.kv_bytes_per_request_per_device;
  e.decode_kv_read_share = e.decode_step.bytes > 0 ? kv_read / e.decode_step.bytes : 0.0;

  // Context switch: one request's KV leaves HBM for host memory and another's comes back.
  e.context_switch_bytes = 2.0 * e.kv_bytes_per_request_per_device;
  e.context_switch_seconds = e.context_switch_bytes / hw.pcie_bandwidth;

  // Session throughput.
  e.session_batch = e.max_concurrency;
  if (e.session_batch > 0) {
    const double b = static_cast<double>(e.session_batch);
    e.session_seconds = b * e.prefill_seconds +
                        model.decode_seconds(e.session_batch, w.context_tokens, w.decode_tokens);
    e.sessions_per_second = b / e.session_seconds;
    e.session_tokens_per_second = b * static_cast<double>(w.decode_tokens) / e.session_seconds;
  }

  // Warnings that do not stop the estimate.
  if (m.max_position_embeddings > 0 && peak_tokens > m.max_position_embeddings) {
    e.warnings.push_back("context + decode tokens (" + std::to_string(peak_tokens) +
                         ") exceed the model's max_position_embeddings (" +
                         std::to_string(m.max_position_embeddings) + ")");
  }
  if (e.max_concurrency > 0 && w.batch > e.max_concurrency) {
    e.warnings.push_back("batch " + std::to_string(w.batch) + " exceeds the " +
                         std::to_string(e.max_concurrency) +
                         " requests that fit in HBM: the decode figures assume it fits");
  }
  if (m.sliding_window > 0 && m.sliding_window < peak_tokens) {
    e.warnings.push_back("the model declares a sliding window of " +
                         std::to_string(m.sliding_window) +
                         " tokens; this estimate keeps the full context's KV");
  }
  return e;
}

}  // namespace kvfleet::perfmodel
