#pragma once
// ModelSpec: the architecture of a transformer, read from a Hugging Face config.json.
//
// Supported layouts (the `model_type` field):
//   llama, mistral, yi, qwen2, qwen3  dense decoder, gated (SwiGLU) MLP, MHA / GQA / MQA attention
//   mixtral, qwen2_moe                  mixture of experts in every (or every k-th) layer
//   deepseek_v2, deepseek_v3            multi-head latent attention (MLA) + shared/routed experts
// Everything the serving system and the analytical model need follows from this struct: KV
// elements per token, parameter counts for memory (all experts) and for FLOPs (active experts).

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace kvfleet {

enum class AttentionKind { kMha, kGqa, kMqa, kMla };
std::string_view attention_kind_name(AttentionKind kind);  // "mha", "gqa", "mqa", "mla"

// Multi-head latent attention (DeepSeek-V2): K and V are rebuilt from one cached latent vector
// of kv_lora_rank plus a shared RoPE key of qk_rope_head_dim per token and layer.
struct MlaSpec {
  std::int64_t kv_lora_rank = 0;
  std::int64_t q_lora_rank = 0;  // 0: queries are projected directly from the hidden state
  std::int64_t qk_nope_head_dim = 0;
  std::int64_t qk_rope_head_dim = 0;
  std::int64_t v_head_dim = 0;
};

// Mixture of experts. A layer is an MoE layer when index >= first_dense_layers and
// (index - first_dense_layers) % layer_step == 0 ... see ModelSpec::is_moe_layer.
struct MoeSpec {
  std::int64_t num_experts = 0;               // routed experts per MoE layer
  std::int64_t experts_per_token = 0;         // routed experts each token uses (top-k)
  std::int64_t expert_intermediate_size = 0;  // FFN width of one routed expert
  std::int64_t num_shared_experts = 0;        // experts every token uses
  std::int64_t shared_intermediate_size = 0;  // FFN width of one shared expert
  std::int64_t first_dense_layers = 0;        // leading layers with a dense MLP instead
  std::int64_t layer_step = 1;                // every layer_step-th layer after those is MoE
  bool shared_expert_gate = false;            // qwen2_moe: a sigmoid gate (hidden -> 1) on it
};

// rope_scaling from the config: "linear" divides positions by `factor`; "llama3" rescales low
// frequencies (Llama 3.1); others (yarn, dynamic, longrope) are parsed but not run by the cpu
// engine.
struct RopeScaling {
  std::string type;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position = 0;
};

struct ModelSpec {
  std::string name;        // built-in name, or the path it was loaded from
  std::string model_type;  // the config's model_type
  std::int64_t num_layers = 0;
  std::int64_t hidden_size = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;  // == num_heads for MHA, 1 for MQA; unused for MLA
  std::int64_t head_dim = 0;
  std::int64_t intermediate_size = 0;  // dense MLP width
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;  // 0 when the config does not say
  std::int64_t sliding_window = 0;           // 0: full attention
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry biases (qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k (qwen3)
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  DType dtype = DType::kBf16;  // torch_dtype: the weights' native type
  std::optional<RopeScaling> rope_scaling;
  std::optional<std::int64_t> bos_token_id;
  std::optional<std::int64_t> eos_token_id;  // the first one when the config lists several
  std::optional<MoeSpec> moe;
  std::optional<MlaSpec> mla;

  AttentionKind attention_kind() const;
  bool is_moe_layer(std::int64_t layer) const;
  std::int64_t num_moe_layers() const;
  // Elements the KV cache stores per token over all layers: 2 * layers * kv_heads * head_dim, or
  // layers * (kv_lora_rank + qk_rope_head_dim) for MLA.
  std::int64_t kv_elements_per_token() const;
  // Elements per token and layer, and the number of such "KV heads" that tensor parallelism can
  // split (1 for MLA: the latent is shared by all heads and is replicated on every rank).
  std::int64_t kv_elements_per_token_layer() const;
  std::int64_t kv_shardable_heads() const;
  // Width of the attention score (QK^T) and value (AV) products per layer, averaged:
  // num_heads * (qk_head_dim + v_head_dim) / 2. Used for attention FLOPs.
  double attention_width() const;
};

// Parameter counts. `total` is what weights occupy; `active` is what one token multiplies.
struct ParamCounts {
  double embedding = 0;       // input embedding table (a lookup: memory, no FLOPs)
  double lm_head = 0;         // output projection (shares memory with embedding when tied)
  double attention = 0;       // all layers' attention projections (+ biases)
  double dense_mlp = 0;       // all dense (non-MoE) MLPs
  double routed_experts = 0;  // all routed experts of all MoE layers
  double shared_experts = 0;  // all shared experts (+ their gates)
  double routers = 0;         // MoE gating networks
  double norms = 0;           // RMSNorm weights
  double total = 0;           // memory footprint in parameters
  double active = 0;          // parameters touched per token (routed experts scaled by top-k/E)
  double matmul_active = 0;   // `active` minus the embedding lookup: 2 FLOPs each per token
};
ParamCounts count_params(const ModelSpec& spec);

// Parses a Hugging Face config.json tree. `name` labels the spec and error messages.
Result<ModelSpec> parse_hf_config(const nlohmann::json& config, const std::string& name);

// A built-in name (see builtin_model_names), a path to a config.json (JSON or YAML), or a
// directory holding one. Unknown names get an error listing the built-in ones.
Result<ModelSpec> load_model_spec(std::string_view name_or_path);

std::vector<std::string> builtin_model_names();
// The built-in config.json text for a name, or nullopt.
std::optional<std::string_view> builtin_model_config(std::string_view name);

}  // namespace kvfleet
