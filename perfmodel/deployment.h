#pragma once
// Deployment: how a model is placed on hardware. Workload: what one request asks for.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/dtype.h"
#include "common/status.h"

namespace kvfleet::perfmodel {

// The paper's four lossless KV-compression dimensions, each the fraction of the KV cache kept
// along that dimension, in (0, 1]: layer=0.5 keeps KV for half the layers (cross-layer sharing),
// head=0.02 keeps 2% of KV heads (retrieval heads), token=0.5 keeps half the tokens, hidden=0.25
// keeps a quarter of each head's width (low-rank projection). They multiply.
struct Compression {
  double layer = 1.0;
  double head = 1.0;
  double token = 1.0;
  double hidden = 1.0;
  double factor() const { return layer * head * token * hidden; }
  bool is_identity() const { return factor() == 1.0; }
};
// Parses "layer=0.5,head=1/50,token=0.5,hidden=1" (any subset, any order; a value is a decimal or
// a fraction a/b). Unknown keys, repeated keys and values outside (0, 1] are errors.
Result<Compression> parse_compression(std::string_view text);
std::string compression_to_string(const Compression& c);

// How attention FLOPs of a prefill over L tokens are counted, per layer with attention width w:
//   paper  : L^2 * w      (matches the paper's published prefill figures; the default)
//   causal : 2 * L^2 * w  (QK^T and AV, one multiply-add = 2 FLOPs, causal half of the square)
//   full   : 4 * L^2 * w  (the same without the causal saving)
enum class AttentionFlops { kPaper, kCausal, kFull };
Result<AttentionFlops> parse_attention_flops(std::string_view text);
std::string_view attention_flops_name(AttentionFlops a);

struct Deployment {
  std::int64_t tp = 1;                 // tensor-parallel degree (devices per model replica)
  std::optional<DType> weight_dtype;   // default: the model's torch_dtype
  std::optional<DType> kv_dtype;       // default: the weight dtype (int4 weights: bf16 KV)
  std::optional<DType> compute_dtype;  // default: see resolve rules in perfmodel.h
  Compression compression;
  double hbm_utilization = 1.0;  // fraction of HBM usable for weights + KV, in (0, 1]
  AttentionFlops attention_flops = AttentionFlops::kPaper;
};

struct Workload {
  std::int64_t context_tokens = 4000;  // prompt length L
  std::int64_t decode_tokens = 250;    // tokens generated per request g
  std::int64_t batch = 1;              // concurrent requests in one decode step B
};

}  // namespace kvfleet::perfmodel
