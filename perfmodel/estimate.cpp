#include "perfmodel/estimate.h"

#include <algorithm>
#include <cmath>

#include "common/units.h"

namespace kvfleet::perfmodel {
namespace {

constexpr std::int64_t kMaxDecodeTokens = 10'000'000;
constexpr std::int64_t kMaxTpSearched = 64;  // as StepModel::min_tp_to_fit searches

Status validate_workload(const Workload& w) {
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
  return Status::ok();
}

// `tokens` decode steps of `batch` requests, the context growing by one token per step.
double decode_seconds(const StepModel& model, std::int64_t batch, std::int64_t context,
                      std::int64_t tokens) {
  double total = 0;
  for (std::int64_t i = 0; i < tokens; ++i) total += model.decode(batch, context + i).seconds;
  return total;
}

}  // namespace

Result<Estimate> estimate(const ModelSpec& m, const HardwareSpec& hw, const Deployment& dep,
                          const Workload& w) {
  KVFLEET_RETURN_IF_ERROR(validate_workload(w));
  KVFLEET_ASSIGN_OR_RETURN(StepModel model, StepModel::create(m, hw, dep));
  Estimate e;
  e.warnings = model.warnings();
  const ParamCounts& p = model.params();
  const std::int64_t tp = dep.tp;
  const std::int64_t peak_tokens = w.context_tokens + w.decode_tokens;

  e.model = m.name;
  e.hardware = hw.name;
  e.workload = w;
  e.deployment = model.deployment();
  e.weight_dtype = *e.deployment.weight_dtype;
  e.kv_dtype = *e.deployment.kv_dtype;
  e.compute_dtype = *e.deployment.compute_dtype;
  e.attention = m.attention_kind();
  e.peak_flops = model.peak_flops();
  e.params_total = p.total;
  e.params_active = p.active;
  e.calibrated = model.calibrated();

  // Sizes.
  const double ctx = static_cast<double>(w.context_tokens);
  e.kv_bytes_per_token = model.kv_bytes_per_token();
  e.kv_bytes_per_request = e.kv_bytes_per_token * ctx;
  e.kv_bytes_per_token_per_device = model.kv_bytes_per_token_device();
  e.kv_bytes_per_request_per_device = e.kv_bytes_per_token_per_device * ctx;
  e.kv_bytes_per_request_peak_per_device =
      e.kv_bytes_per_token_per_device * static_cast<double>(peak_tokens);
  e.weight_bytes = model.weight_bytes();
  e.weight_bytes_per_device = e.weight_bytes / static_cast<double>(tp);
  e.usable_hbm_bytes = model.usable_hbm_bytes();
  e.kv_budget_bytes = e.usable_hbm_bytes - e.weight_bytes_per_device;

  // Concurrency.
  e.max_concurrency = model.max_requests(peak_tokens);
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
  e.min_tp_to_fit = model.min_tp_to_fit(peak_tokens);
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
  const double attn = model.prefill_attention_flops(w.context_tokens);
  e.prefill_attention_flops_share = e.prefill.flops > 0 ? attn / e.prefill.flops : 0.0;

  // Decode.
  e.decode_step = model.decode(w.batch, w.context_tokens);
  e.decode_seconds_per_token = e.decode_step.seconds;
  e.decode_seconds = decode_seconds(model, w.batch, w.context_tokens, w.decode_tokens);
  e.decode_tokens_per_second = static_cast<double>(w.batch) / e.decode_step.seconds;
  const double kv_read = static_cast<double>(w.batch) * e.kv_bytes_per_request_per_device;
  e.decode_kv_read_share = e.decode_step.bytes > 0 ? kv_read / e.decode_step.bytes : 0.0;

  // Context switch: one request's KV leaves HBM for host memory and another's comes back.
  e.context_switch_bytes = 2.0 * e.kv_bytes_per_request_per_device;
  e.context_switch_seconds = model.swap_seconds(e.context_switch_bytes);

  // Session throughput.
  e.session_batch = e.max_concurrency;
  if (e.session_batch > 0) {
    const double b = static_cast<double>(e.session_batch);
    e.session_seconds = b * e.prefill_seconds +
                        decode_seconds(model, e.session_batch, w.context_tokens, w.decode_tokens);
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
