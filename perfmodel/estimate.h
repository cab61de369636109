#pragma once
// The paper's analytical framework (see docs/PERFMODEL.md for every formula and convention).
//
// estimate() predicts, for one model on one kind of device under one deployment and workload,
// the four figures that decide long-context serving throughput:
//   concurrency       how many requests' KV fits in HBM beside the weights   (HBM capacity)
//   prefill           seconds to run one prompt                               (FLOP/s, roofline)
//   decode            seconds per decode step at batch B, and for g tokens    (HBM bandwidth,
//   roofline) context switch    seconds to swap one request's KV out and another's in  (PCIe
//   bandwidth)
// plus the session throughput they combine into. All figures are per device of a tensor-parallel
// group unless the name says otherwise. Pure functions: no I/O, no clocks.
//
// Prefill and decode steps come from StepModel (perfmodel/step_model.h): the paper's roofline on
// built-in hardware, the calibrated kernel-class sum on a hardware profile with a calibration.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/model_spec.h"
#include "perfmodel/deployment.h"
#include "perfmodel/hardware.h"
#include "perfmodel/step_model.h"

namespace kvfleet::perfmodel {

struct Estimate {
  // --- inputs, resolved ---------------------------------------------------------------------
  std::string model;
  std::string hardware;
  Workload workload;
  Deployment deployment;  // with every optional dtype filled in
  DType weight_dtype = DType::kBf16;
  DType kv_dtype = DType::kBf16;
  DType compute_dtype = DType::kBf16;
  AttentionKind attention = AttentionKind::kGqa;
  double peak_flops = 0;     // at compute_dtype, per device
  double params_total = 0;   // every parameter (all experts)
  double params_active = 0;  // parameters used per token (active experts)
  bool calibrated = false;   // prefill and decode come from the hardware's calibration

  // --- sizes ----------------------------------------------------------------------------------
  double kv_bytes_per_token = 0;    // whole model, after kv dtype and compression
  double kv_bytes_per_request = 0;  // at context_tokens
  double kv_bytes_per_token_per_device =
      0;  // after TP split (or replication for MLA / tp > kv heads)
  double kv_bytes_per_request_per_device = 0;
  double kv_bytes_per_request_peak_per_device = 0;  // at context + decode tokens
  double weight_bytes = 0;                          // whole model
  double weight_bytes_per_device = 0;               // weight_bytes / tp
  double usable_hbm_bytes = 0;                      // per device: hbm * hbm_utilization
  double kv_budget_bytes = 0;  // per device: usable - weights (may be negative)

  // --- concurrency ----------------------------------------------------------------------------
  std::int64_t max_concurrency = 0;   // requests whose peak KV fits beside the weights
  std::string concurrency_limit;      // why it is 0, empty otherwise
  std::int64_t host_kv_capacity = 0;  // swapped-out requests host memory can hold
  std::int64_t min_tp_to_fit = 0;     // smallest TP degree with concurrency >= 1 (0: none <= 64)

  // --- prefill (one request, batch 1) ---------------------------------------------------------
  Roofline prefill;
  double prefill_seconds = 0;
  double prefill_attention_flops_share = 0;  // attention FLOPs / all prefill FLOPs

  // --- decode ---------------------------------------------------------------------------------
  Roofline decode_step;                 // one step at `batch`, context_tokens of KV each
  double decode_seconds_per_token = 0;  // == decode_step.seconds (each request gets one token)
  double decode_seconds = 0;            // decode_tokens steps with the context growing by one
  double decode_tokens_per_second = 0;  // batch / step seconds, per TP group
  double decode_kv_read_share = 0;      // KV bytes / all bytes read in one step

  // --- context switch -------------------------------------------------------------------------
  double context_switch_bytes = 0;  // one request's KV out + another's in, per device
  double context_switch_seconds = 0;

  // --- session throughput ---------------------------------------------------------------------
  // With max_concurrency requests decoding together, each prefilled in turn before the batch
  // decodes: seconds for one such wave, and sessions and generated tokens per second it yields.
  std::int64_t session_batch = 0;
  double session_seconds = 0;
  double sessions_per_second = 0;
  double session_tokens_per_second = 0;

  std::vector<std::string> warnings;

  Bound concurrency_bound() const { return Bound::kHbmCapacity; }
  Bound context_switch_bound() const { return Bound::kPcieBandwidth; }
};

// Validates the inputs (positive context, batch, tp dividing the heads, known dtypes with a
// native rate...) and computes every figure. A model that does not fit is not an error: it gets
// max_concurrency 0 and a concurrency_limit that says why.
Result<Estimate> estimate(const ModelSpec& model, const HardwareSpec& hw, const Deployment& dep,
                          const Workload& work);

}  // namespace kvfleet::perfmodel
