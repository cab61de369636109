#include "common/model_spec.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/config_file.h"

namespace kvfleet {
namespace {

using nlohmann::json;

constexpr std::string_view kSupportedTypes[] = {"llama",     "mistral",     "yi",
                                                "qwen2",     "qwen3",       "mixtral",
                                                "qwen2_moe", "deepseek_v2", "deepseek_v3"};

std::string supported_types_list() {
  std::string out;
  for (auto t : kSupportedTypes) {
    if (!out.empty()) out += ", ";
    out += t;
  }
  return out;
}

bool is_deepseek(std::string_view t) {
  return t == "deepseek_v2" || t == "deepseek_v3";
}

Status positive(const std::string& where, std::string_view field, std::int64_t v) {
  if (v > 0) return Status::ok();
  return invalid_argument(where + ": field '" + std::string(field) + "' must be positive, got " +
                          std::to_string(v));
}

Result<MoeSpec> parse_moe(const FieldReader& f, const ModelSpec& spec) {
  MoeSpec moe;
  const std::string& type = spec.model_type;
  if (type == "mixtral") {
    KVFLEET_ASSIGN_OR_RETURN(moe.num_experts, f.integer("num_local_experts"));
    KVFLEET_ASSIGN_OR_RETURN(moe.experts_per_token, f.integer("num_experts_per_tok"));
    moe.expert_intermediate_size = spec.intermediate_size;
  } else if (type == "qwen2_moe") {
    KVFLEET_ASSIGN_OR_RETURN(moe.num_experts, f.integer("num_experts"));
    KVFLEET_ASSIGN_OR_RETURN(moe.experts_per_token, f.integer("num_experts_per_tok"));
    KVFLEET_ASSIGN_OR_RETURN(moe.expert_intermediate_size, f.integer("moe_intermediate_size"));
    KVFLEET_ASSIGN_OR_RETURN(moe.shared_intermediate_size,
                             f.integer_or("shared_expert_intermediate_size", 0));
    moe.num_shared_experts = moe.shared_intermediate_size > 0 ? 1 : 0;
    moe.shared_expert_gate = moe.num_shared_experts > 0;
    KVFLEET_ASSIGN_OR_RETURN(moe.layer_step, f.integer_or("decoder_sparse_step", 1));
  } else {  // deepseek_v2 / deepseek_v3
    KVFLEET_ASSIGN_OR_RETURN(moe.num_experts, f.integer("n_routed_experts"));
    KVFLEET_ASSIGN_OR_RETURN(moe.experts_per_token, f.integer("num_experts_per_tok"));
    KVFLEET_ASSIGN_OR_RETURN(moe.expert_intermediate_size, f.integer("moe_intermediate_size"));
    KVFLEET_ASSIGN_OR_RETURN(moe.num_shared_experts, f.integer_or("n_shared_experts", 0));
    moe.shared_intermediate_size = moe.expert_intermediate_size;
    KVFLEET_ASSIGN_OR_RETURN(moe.first_dense_layers, f.integer_or("first_k_dense_replace", 0));
    KVFLEET_ASSIGN_OR_RETURN(moe.layer_step, f.integer_or("moe_layer_freq", 1));
  }
  const std::string& w = f.where();
  KVFLEET_RETURN_IF_ERROR(positive(w, "number of experts", moe.num_experts));
  KVFLEET_RETURN_IF_ERROR(positive(w, "num_experts_per_tok", moe.experts_per_token));
  KVFLEET_RETURN_IF_ERROR(positive(w, "expert intermediate size", moe.expert_intermediate_size));
  KVFLEET_RETURN_IF_ERROR(positive(w, "MoE layer step", moe.layer_step));
  if (moe.experts_per_token > moe.num_experts) {
    return invalid_argument(w + ": num_experts_per_tok (" + std::to_string(moe.experts_per_token) +
                            ") exceeds the number of experts (" + std::to_string(moe.num_experts) +
                            ")");
  }
  if (moe.num_shared_experts < 0 || moe.first_dense_layers < 0) {
    return invalid_argument(w + ": shared experts and dense-layer counts must not be negative");
  }
  return moe;
}

Result<MlaSpec> parse_mla(const FieldReader& f) {
  MlaSpec mla;
  KVFLEET_ASSIGN_OR_RETURN(mla.kv_lora_rank, f.integer("kv_lora_rank"));
  KVFLEET_ASSIGN_OR_RETURN(mla.q_lora_rank, f.integer_or("q_lora_rank", 0));
  KVFLEET_ASSIGN_OR_RETURN(mla.qk_nope_head_dim, f.integer("qk_nope_head_dim"));
  KVFLEET_ASSIGN_OR_RETURN(mla.qk_rope_head_dim, f.integer("qk_rope_head_dim"));
  KVFLEET_ASSIGN_OR_RETURN(mla.v_head_dim, f.integer("v_head_dim"));
  const std::string& w = f.where();
  KVFLEET_RETURN_IF_ERROR(positive(w, "kv_lora_rank", mla.kv_lora_rank));
  KVFLEET_RETURN_IF_ERROR(positive(w, "qk_nope_head_dim", mla.qk_nope_head_dim));
  KVFLEET_RETURN_IF_ERROR(positive(w, "qk_rope_head_dim", mla.qk_rope_head_dim));
  KVFLEET_RETURN_IF_ERROR(positive(w, "v_head_dim", mla.v_head_dim));
  if (mla.q_lora_rank < 0) return invalid_argument(w + ": q_lora_rank must not be negative");
  return mla;
}

}  // namespace

std::string_view attention_kind_name(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::kMha: return "mha";
    case AttentionKind::kGqa: return "gqa";
    case AttentionKind::kMqa: return "mqa";
    case AttentionKind::kMla: return "mla";
  }
  return "?";
}

AttentionKind ModelSpec::attention_kind() const {
  if (mla) return AttentionKind::kMla;
  if (num_kv_heads == num_heads) return AttentionKind::kMha;
  if (num_kv_heads == 1) return AttentionKind::kMqa;
  return AttentionKind::kGqa;
}

bool ModelSpec::is_moe_layer(std::int64_t layer) const {
  if (!moe) return false;
  if (layer < moe->first_dense_layers) return false;
  return (layer - moe->first_dense_layers) % moe->layer_step == 0;
}

std::int64_t ModelSpec::num_moe_layers() const {
  std::int64_t n = 0;
  for (std::int64_t l = 0; l < num_layers; ++l) n += is_moe_layer(l) ? 1 : 0;
  return n;
}

std::int64_t ModelSpec::kv_elements_per_token_layer() const {
  if (mla) return mla->kv_lora_rank + mla->qk_rope_head_dim;
  return 2 * num_kv_heads * head_dim;
}

std::int64_t ModelSpec::kv_elements_per_token() const {
  return num_layers * kv_elements_per_token_layer();
}

std::int64_t ModelSpec::kv_shardable_heads() const {
  return mla ? 1 : num_kv_heads;
}

double ModelSpec::attention_width() const {
  if (mla) {
    const double qk = static_cast<double>(mla->qk_nope_head_dim + mla->qk_rope_head_dim);
    return static_cast<double>(num_heads) * (qk + static_cast<double>(mla->v_head_dim)) / 2.0;
  }
  return static_cast<double>(num_heads * head_dim);
}

ParamCounts count_params(const ModelSpec& s) {
  ParamCounts p;
  const double d = static_cast<double>(s.hidden_size);
  const double v = static_cast<double>(s.vocab_size);
  const double h = static_cast<double>(s.num_heads);
  p.embedding = v * d;
  p.lm_head = v * d;

  double attn_per_layer = 0;
  double norm_per_layer = 2 * d;  // input and post-attention RMSNorm
  if (s.mla) {
    const MlaSpec& m = *s.mla;
    const double qk = static_cast<double>(m.qk_nope_head_dim + m.qk_rope_head_dim);
    if (m.q_lora_rank > 0) {
      const double r = static_cast<double>(m.q_lora_rank);
      attn_per_layer += d * r + r * h * qk;  // q_a_proj, q_b_proj
      norm_per_layer += r;                   // q_a_layernorm
    } else {
      attn_per_layer += d * h * qk;  // q_proj
    }
    const double kv_rank = static_cast<double>(m.kv_lora_rank);
    attn_per_layer += d * (kv_rank + static_cast<double>(m.qk_rope_head_dim));  // kv_a_proj
    attn_per_layer += kv_rank * h * static_cast<double>(m.qk_nope_head_dim + m.v_head_dim);
    attn_per_layer += h * static_cast<double>(m.v_head_dim) * d;  // o_proj
    norm_per_layer += kv_rank;                                    // kv_a_layernorm
  } else {
    const double q = h * static_cast<double>(s.head_dim);
    const double kv = static_cast<double>(s.num_kv_heads * s.head_dim);
    attn_per_layer = d * q + 2 * d * kv + q * d;
    if (s.attention_bias) attn_per_layer += q + 2 * kv;
    if (s.qk_norm) norm_per_layer += 2 * static_cast<double>(s.head_dim);
  }

  const double dense_mlp = 3 * d * static_cast<double>(s.intermediate_size);  // gate, up, down
  double routed_active = 0;
  for (std::int64_t l = 0; l < s.num_layers; ++l) {
    if (s.is_moe_layer(l)) {
      const MoeSpec& m = *s.moe;
      const double expert = 3 * d * static_cast<double>(m.expert_intermediate_size);
      p.routed_experts += static_cast<double>(m.num_experts) * expert;
      routed_active += static_cast<double>(m.experts_per_token) * expert;
      p.shared_experts += static_cast<double>(m.num_shared_experts) * 3 * d *
                          static_cast<double>(m.shared_intermediate_size);
      if (m.shared_expert_gate) p.shared_experts += d;
      p.routers += d * static_cast<double>(m.num_experts);
    } else {
      p.dense_mlp += dense_mlp;
    }
  }
  const double layers = static_cast<double>(s.num_layers);
  p.attention = layers * attn_per_layer;
  p.norms = layers * norm_per_layer + d;  // + final norm

  const double body = p.attention + p.dense_mlp + p.shared_experts + p.routers + p.norms;
  p.total = body + p.routed_experts + p.embedding + (s.tie_word_embeddings ? 0.0 : p.lm_head);
  p.active = body + routed_active + p.embedding + (s.tie_word_embeddings ? 0.0 : p.lm_head);
  // The lm_head matmul runs even when its weights are the embedding table's.
  p.matmul_active = body - p.norms + routed_active + p.lm_head;
  return p;
}

Result<ModelSpec> parse_hf_config(const json& config, const std::string& name) {
  const std::string where = "model config '" + name + "'";
  if (!config.is_object()) return invalid_argument(where + ": expected a JSON object");
  FieldReader f(config, where);

  ModelSpec s;
  s.name = name;
  KVFLEET_ASSIGN_OR_RETURN(s.model_type, f.string("model_type"));
  if (std::find(std::begin(kSupportedTypes), std::end(kSupportedTypes), s.model_type) ==
      std::end(kSupportedTypes)) {
    return invalid_argument(where + ": unsupported model_type '" + s.model_type +
                            "' (supported: " + supported_types_list() + ")");
  }
  KVFLEET_ASSIGN_OR_RETURN(s.num_layers, f.integer("num_hidden_layers"));
  KVFLEET_ASSIGN_OR_RETURN(s.hidden_size, f.integer("hidden_size"));
  KVFLEET_ASSIGN_OR_RETURN(s.num_heads, f.integer("num_attention_heads"));
  KVFLEET_ASSIGN_OR_RETURN(s.num_kv_heads, f.integer_or("num_key_value_heads", s.num_heads));
  KVFLEET_ASSIGN_OR_RETURN(s.intermediate_size, f.integer("intermediate_size"));
  KVFLEET_ASSIGN_OR_RETURN(s.vocab_size, f.integer("vocab_size"));
  KVFLEET_ASSIGN_OR_RETURN(s.max_position_embeddings, f.integer_or("max_position_embeddings", 0));
  KVFLEET_ASSIGN_OR_RETURN(s.tie_word_embeddings, f.boolean_or("tie_word_embeddings", false));
  KVFLEET_ASSIGN_OR_RETURN(
      s.attention_bias,
      f.boolean_or("attention_bias", s.model_type == "qwen2" || s.model_type == "qwen2_moe"));
  s.qk_norm = s.model_type == "qwen3";
  KVFLEET_ASSIGN_OR_RETURN(s.rope_theta, f.number_or("rope_theta", 10000.0));
  KVFLEET_ASSIGN_OR_RETURN(s.rms_norm_eps, f.number_or("rms_norm_eps", 1e-6));
  if (f.has("sliding_window") && config.at("sliding_window").is_number()) {
    KVFLEET_ASSIGN_OR_RETURN(s.sliding_window, f.integer("sliding_window"));
  }
  // Qwen2/3 configs name a window but switch it off with use_sliding_window: false.
  KVFLEET_ASSIGN_OR_RETURN(bool use_window, f.boolean_or("use_sliding_window", true));
  if (!use_window) s.sliding_window = 0;
  if (f.has("torch_dtype")) {
    KVFLEET_ASSIGN_OR_RETURN(std::string dt, f.string("torch_dtype"));
    auto parsed = parse_dtype(dt);
    if (!parsed.is_ok()) return parsed.status().with_context(where + ": field 'torch_dtype'");
    s.dtype = *parsed;
  }

  if (f.has("rope_scaling")) {
    const json& rs = config.at("rope_scaling");
    if (!rs.is_object())
      return invalid_argument(where + ": field 'rope_scaling' must be an object");
    FieldReader r(rs, where + " rope_scaling");
    RopeScaling scaling;
    KVFLEET_ASSIGN_OR_RETURN(scaling.type, r.string_or("rope_type", ""));
    if (scaling.type.empty()) {
      KVFLEET_ASSIGN_OR_RETURN(scaling.type, r.string_or("type", "default"));
    }
    KVFLEET_ASSIGN_OR_RETURN(scaling.factor, r.number_or("factor", 1.0));
    KVFLEET_ASSIGN_OR_RETURN(scaling.low_freq_factor, r.number_or("low_freq_factor", 1.0));
    KVFLEET_ASSIGN_OR_RETURN(scaling.high_freq_factor, r.number_or("high_freq_factor", 4.0));
    KVFLEET_ASSIGN_OR_RETURN(scaling.original_max_position,
                             r.integer_or("original_max_position_embeddings", 0));
    if (!(scaling.factor > 0))
      return invalid_argument(where + ": rope_scaling factor must be positive");
    s.rope_scaling = scaling;
  }
  for (auto [key, out] :
       {std::pair{"bos_token_id", &s.bos_token_id}, std::pair{"eos_token_id", &s.eos_token_id}}) {
    if (!f.has(key)) continue;
    const json& v = config.at(key);
    if (v.is_array() && !v.empty() && v.front().is_number_integer()) {
      *out = v.front().get<std::int64_t>();
    } else {
      KVFLEET_ASSIGN_OR_RETURN(std::int64_t id, f.integer(key));
      *out = id;
    }
  }

  KVFLEET_RETURN_IF_ERROR(positive(where, "num_hidden_layers", s.num_layers));
  KVFLEET_RETURN_IF_ERROR(positive(where, "hidden_size", s.hidden_size));
  KVFLEET_RETURN_IF_ERROR(positive(where, "num_attention_heads", s.num_heads));
  KVFLEET_RETURN_IF_ERROR(positive(where, "num_key_value_heads", s.num_kv_heads));
  KVFLEET_RETURN_IF_ERROR(positive(where, "intermediate_size", s.intermediate_size));
  KVFLEET_RETURN_IF_ERROR(positive(where, "vocab_size", s.vocab_size));
  if (s.max_position_embeddings < 0) {
    return invalid_argument(where + ": max_position_embeddings must not be negative");
  }
  if (s.num_heads % s.num_kv_heads != 0) {
    return invalid_argument(where + ": num_attention_heads (" + std::to_string(s.num_heads) +
                            ") must be a multiple of num_key_value_heads (" +
                            std::to_string(s.num_kv_heads) + ")");
  }
  if (f.has("head_dim")) {
    KVFLEET_ASSIGN_OR_RETURN(s.head_dim, f.integer("head_dim"));
    KVFLEET_RETURN_IF_ERROR(positive(where, "head_dim", s.head_dim));
  } else {
    if (s.hidden_size % s.num_heads != 0) {
      return invalid_argument(where + ": hidden_size (" + std::to_string(s.hidden_size) +
                              ") is not divisible by num_attention_heads (" +
                              std::to_string(s.num_heads) + ") and no head_dim is given");
    }
    s.head_dim = s.hidden_size / s.num_heads;
  }

  if (is_deepseek(s.model_type)) {
    KVFLEET_ASSIGN_OR_RETURN(MlaSpec mla, parse_mla(f));
    s.mla = mla;
    s.num_kv_heads = s.num_heads;  // every head has its own K and V after up-projection
    s.head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim;
  }
  if (s.model_type == "mixtral" || s.model_type == "qwen2_moe" || is_deepseek(s.model_type)) {
    KVFLEET_ASSIGN_OR_RETURN(MoeSpec moe, parse_moe(f, s));
    s.moe = moe;
  }
  return s;
}

Result<ModelSpec> load_model_spec(std::string_view name_or_path) {
  if (auto text = builtin_model_config(name_or_path)) {
    json config = json::parse(*text);
    return parse_hf_config(config, std::string(name_or_path));
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path path(name_or_path);
  if (fs::is_directory(path, ec)) path /= "config.json";
  if (!fs::exists(path, ec)) {
    std::string known;
    for (const auto& n : builtin_model_names()) known += (known.empty() ? "" : ", ") + n;
    return not_found("unknown model '" + std::string(name_or_path) +
                     "': not a built-in name and no such file (built-in models: " + known + ")");
  }
  KVFLEET_ASSIGN_OR_RETURN(json config, load_config_file(path.string()));
  return parse_hf_config(config, path.string());
}

}  // namespace kvfleet
