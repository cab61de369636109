#pragma once
// StepModel: the time of one engine step for an arbitrary batch of prefill chunks and decode
// tokens, per device of a tensor-parallel group. estimate() is built on it; so are simulators
// and the `sim` engine backend, which call step() once per simulated engine step.
//
// Two forms (docs/PERFMODEL.md gives every formula):
//   uncalibrated  the paper's conventions: one roofline over the whole step,
//                 max(bytes / hbm_bandwidth, flops / peak) + all-reduce bytes / link bandwidth.
//                 One chunk {L, 0} is exactly estimate().prefill; B chunks {1, c} are exactly
//                 estimate().decode_step at batch B and context c.
//   calibrated    the hardware spec has a `calibration` section (kvfleet bench engine --profile):
//                 the step's kernel classes run one after another (one stream of kernels), each
//                 at its measured efficiency, plus fixed per-step and per-token overheads.
//
// A StepModel owns copies of everything it needs (no references to the specs it was made from,
// so it may outlive them), is immutable once made (share it between threads freely), and step()
// is O(chunks) with no allocation.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/model_spec.h"
#include "common/status.h"
#include "perfmodel/deployment.h"
#include "perfmodel/hardware.h"

namespace kvfleet::perfmodel {

// Expected fraction of an MoE layer's routed experts that a batch of `tokens` tokens touches,
// each choosing k of E experts uniformly: 1 - (1 - k/E)^tokens.
double expected_expert_fraction(std::int64_t tokens, std::int64_t k, std::int64_t experts);

// The resource that decides a figure.
enum class Bound {
  kHbmCapacity,
  kCompute,
  kHbmBandwidth,
  kPcieBandwidth,
  kInterconnect,
  kOverhead,  // calibrated steps only: fixed per-step, per-token and per-call costs dominate
};
std::string_view bound_name(Bound b);  // "hbm_capacity", "compute", "hbm_bandwidth", ...

// One evaluation of a step: time = max(bytes / bandwidth, flops / peak) + communication when
// uncalibrated; the sum of the compute-bound, memory-bound and overhead terms + communication
// when calibrated (then compute_seconds and memory_seconds are those sums, and `bound` the
// largest of the four).
struct Roofline {
  double flops = 0;       // per device
  double bytes = 0;       // HBM bytes moved per device
  double comm_bytes = 0;  // tensor-parallel all-reduce bytes per device (0 when tp == 1)
  double compute_seconds = 0;
  double memory_seconds = 0;
  double comm_seconds = 0;
  double overhead_seconds = 0;  // calibrated only; 0 otherwise
  double seconds = 0;
  Bound bound = Bound::kCompute;
};

// A calibrated step's seconds by kernel class (what the calibrated step() adds up), for
// diagnostics and for fitting a profile. All zero on uncalibrated hardware, where one roofline
// covers the whole step.
struct StepParts {
  double linear = 0;             // every linear layer but the lm_head
  double lm_head = 0;            // the rows that produce logits
  double decode_attention = 0;   // decode tokens' KV reads and cold calls
  double prefill_attention = 0;  // prefill chunks' attention and their earlier context's read
  double overhead = 0;           // step and per-token overheads
  double comm = 0;               // tensor-parallel all-reduces
};

// One sequence's part of an engine step: `tokens` new tokens computed on top of `context` tokens
// whose KV is already cached. A prefill chunk has tokens >= 1 and context = the prompt tokens
// before it; a decode token has tokens == 1 and context = the sequence length so far (> 0).
// `logits`: the chunk's last token produces a row of logits (the lm_head runs for it).
struct StepChunk {
  std::int64_t tokens = 1;
  std::int64_t context = 0;
  bool logits = true;
};

class StepModel {
 public:
  // Validates like estimate(): tp positive and dividing the attention heads, hbm_utilization
  // and compression fractions in (0, 1], positive HBM size and bandwidths, dtypes that the
  // hardware has a FLOP rate for. Resolves the deployment's default dtypes.
  static Result<StepModel> create(const ModelSpec& model, const HardwareSpec& hw,
                                  const Deployment& dep);

  // One engine step over `chunks`, per device of the TP group. A chunk with tokens > 1 or
  // context == 0 is a prefill chunk, one with tokens == 1 and context > 0 a decode token.
  // Chunks with tokens <= 0 contribute nothing; an empty step costs nothing (seconds 0), not
  // even the calibrated step overhead.
  Roofline step(std::span<const StepChunk> chunks) const;
  // Shorthands that equal step() of those chunks, in O(1): one prompt of `tokens` tokens in one
  // pass (with logits), and `batch` decode tokens each at `context`.
  Roofline prefill(std::int64_t tokens) const;
  Roofline decode(std::int64_t batch, std::int64_t context) const;
  // The calibrated step() of these chunks split by kernel class (zeros when uncalibrated).
  StepParts parts(std::span<const StepChunk> chunks) const;

  bool calibrated() const { return calibration_.has_value(); }
  // The deployment with every default dtype resolved.
  const Deployment& deployment() const { return dep_; }
  double peak_flops() const { return peak_; }
  const ParamCounts& params() const { return params_; }
  // Things that do not stop a step from being modelled (fp8 weights on hardware without fp8).
  const std::vector<std::string>& warnings() const { return warnings_; }

  double kv_bytes_per_token() const { return kv_per_token_; }  // whole model, kv dtype
  // One device's share after the TP split (KV heads split, at least one per rank; MLA's latent
  // replicated), kv dtype and compression applied.
  double kv_bytes_per_token_device() const { return kv_per_token_device_; }
  double weight_bytes() const { return weight_bytes_; }
  double weight_bytes_per_device() const;
  double usable_hbm_bytes() const { return usable_hbm_; }
  // Host <-> device copy of `bytes` (one direction) over pcie_bandwidth, at the calibrated
  // swap efficiency if any.
  double swap_seconds(double bytes) const;
  // Device KV blocks of `block_tokens` tokens that fit in HBM after the weights:
  // floor((hbm * hbm_utilization - weights / tp) / (block_tokens * kv_bytes_per_token_device)),
  // as estimate() computes concurrency; 0 when nothing fits.
  std::int64_t kv_blocks(std::int64_t block_tokens) const;
  // Requests of `tokens` tokens each whose KV fits beside the weights (estimate's concurrency).
  std::int64_t max_requests(std::int64_t tokens) const;
  // The smallest TP degree (<= 64, dividing the attention heads) at which one request of
  // `tokens` tokens fits; 0 when none does. For "it fits with tp >= N" when kv_blocks() == 0.
  std::int64_t min_tp_to_fit(std::int64_t tokens) const;

  // The paper's quadratic prefill attention FLOPs of an L-token prompt, per device, under the
  // deployment's attention FLOP convention (estimate's prefill_attention_flops_share).
  double prefill_attention_flops(std::int64_t tokens) const;

 private:
  // What a step's chunks add up to; step() accumulates it, evaluate() prices it.
  struct Sums {
    double tokens = 0;           // all new tokens
    double logits_rows = 0;      // chunks whose last token produces logits
    double paper_flops = 0;      // the paper convention's FLOPs, whole model (not yet / tp)
    double paper_kv_bytes = 0;   // the paper convention's KV bytes, per device
    double decode_tokens = 0;    // tokens of decode chunks
    double decode_visits = 0;    // KV tokens decode queries attend to (context + 1 each)
    double prefill_tokens = 0;   // tokens of prefill chunks (= their query rows)
    double prefill_visits = 0;   // (query, KV token) pairs of prefill chunks
    double prefill_context = 0;  // earlier-context tokens prefill chunks read back
  };

  StepModel() = default;
  void add(Sums& s, const StepChunk& c) const;
  Roofline evaluate(const Sums& s) const;
  Roofline evaluate_paper(const Sums& s) const;
  Roofline evaluate_calibrated(const Sums& s) const;
  // The calibrated terms of a step; `roofline` (optional) gets flops, bytes, the compute /
  // memory / overhead / communication split and the bound.
  StepParts calibrated_parts(const Sums& s, Roofline* roofline) const;
  double weight_read_bytes(double tokens) const;  // per device, for a step of `tokens` tokens
  double allreduce_bytes(double tokens) const;    // per device
  double concurrency_at(std::int64_t tp, std::int64_t tokens) const;

  Deployment dep_;
  std::vector<std::string> warnings_;
  ParamCounts params_;
  std::optional<Calibration> calibration_;
  // Model shape.
  double layers_ = 0;
  double hidden_ = 0;
  double attention_width_ = 0;
  std::int64_t num_heads_ = 0;
  std::int64_t kv_shardable_heads_ = 1;
  std::int64_t moe_k_ = 0;        // routed experts per token (0: dense)
  std::int64_t moe_experts_ = 0;  // routed experts per MoE layer
  // Derived sizes and rates.
  double tp_ = 1;
  double weight_bytes_ = 0;
  double routed_expert_bytes_ = 0;
  double dense_read_bytes_ = 0;  // weights read per step except routed experts
  double lm_head_bytes_ = 0;     // the lm_head's (or the tied embedding's) weight bytes
  double kv_per_token_ = 0;
  double kv_per_token_device_ = 0;
  double act_bytes_ = 2;
  double attention_factor_ = 1;  // the paper convention's k
  double compression_ = 1;
  double peak_ = 0;
  double hbm_bandwidth_ = 0;
  double pcie_bandwidth_ = 0;
  double link_bandwidth_ = 0;
  double usable_hbm_ = 0;
};

}  // namespace kvfleet::perfmodel
