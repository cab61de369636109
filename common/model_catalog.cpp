// Built-in model configs: the fields of each model's published Hugging Face config.json that
// kvfleet reads. They go through the same parser as user files, so a built-in name and a
// downloaded config.json give the same spec.
#include <array>
#include <string_view>

#include "common/model_spec.h"

namespace kvfleet {
namespace {

struct BuiltinModel {
  std::string_view name;
  std::string_view config;
};

constexpr std::array kBuiltinModels = {
    // kvfleet's own test models: Llama layout, byte-level vocabulary (256 bytes + BOS, EOS, PAD),
    // seeded random weights unless a safetensors file is given. `tiny` is for tests and demos;
    // `small` (~100M parameters, 400 MB in fp32) makes a CPU decode step memory-bound.
    BuiltinModel{"tiny", R"({
      "model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
      "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
      "vocab_size": 259, "max_position_embeddings": 4096, "rope_theta": 10000.0,
      "rms_norm_eps": 1e-05, "bos_token_id": 256, "eos_token_id": 257,
      "tie_word_embeddings": false, "torch_dtype": "float32"})"},
    BuiltinModel{"small", R"({
      "model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816,
      "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4,
      "vocab_size": 259, "max_position_embeddings": 8192, "rope_theta": 10000.0,
      "rms_norm_eps": 1e-05, "bos_token_id": 256, "eos_token_id": 257,
      "tie_word_embeddings": false, "torch_dtype": "float32"})"},
    // The paper's running example (01-ai/Yi-34B-200K).
    BuiltinModel{"yi-34b-200k", R"({
      "model_type": "llama", "hidden_size": 7168, "intermediate_size": 20480,
      "num_hidden_layers": 60, "num_attention_heads": 56, "num_key_value_heads": 8,
      "vocab_size": 64000, "max_position_embeddings": 200000, "rope_theta": 5000000.0,
      "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"llama-2-7b", R"({
      "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
      "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000,
      "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "torch_dtype": "float16"})"},
    BuiltinModel{"llama-3-8b", R"({
      "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0,
      "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"llama-3-70b", R"({
      "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
      "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
      "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0,
      "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"llama-3.1-8b", R"({
      "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
      "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"llama-3.1-70b", R"({
      "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
      "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
      "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
      "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"llama-3.1-405b", R"({
      "model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248,
      "num_hidden_layers": 126, "num_attention_heads": 128, "num_key_value_heads": 8,
      "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
      "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"mistral-7b", R"({
      "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "vocab_size": 32768, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
      "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"mixtral-8x7b", R"({
      "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
      "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"mixtral-8x22b", R"({
      "model_type": "mixtral", "hidden_size": 6144, "intermediate_size": 16384,
      "num_hidden_layers": 56, "num_attention_heads": 48, "num_key_value_heads": 8,
      "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32768,
      "max_position_embeddings": 65536, "rope_theta": 1000000.0, "rms_norm_eps": 1e-05,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"qwen2-7b", R"({
      "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
      "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
      "vocab_size": 152064, "max_position_embeddings": 131072, "rope_theta": 1000000.0,
      "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"qwen2-72b", R"({
      "model_type": "qwen2", "hidden_size": 8192, "intermediate_size": 29568,
      "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
      "vocab_size": 152064, "max_position_embeddings": 131072, "rope_theta": 1000000.0,
      "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"deepseek-v2", R"({
      "model_type": "deepseek_v2", "hidden_size": 5120, "intermediate_size": 12288,
      "moe_intermediate_size": 1536, "num_hidden_layers": 60, "num_attention_heads": 128,
      "num_key_value_heads": 128, "n_routed_experts": 160, "n_shared_experts": 2,
      "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
      "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
      "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 102400,
      "max_position_embeddings": 163840, "rope_theta": 10000, "rms_norm_eps": 1e-06,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
    BuiltinModel{"deepseek-v2-lite", R"({
      "model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944,
      "moe_intermediate_size": 1408, "num_hidden_layers": 27, "num_attention_heads": 16,
      "num_key_value_heads": 16, "n_routed_experts": 64, "n_shared_experts": 2,
      "num_experts_per_tok": 6, "first_k_dense_replace": 1, "moe_layer_freq": 1,
      "q_lora_rank": null, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
      "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 102400,
      "max_position_embeddings": 163840, "rope_theta": 10000, "rms_norm_eps": 1e-06,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16"})"},
};

}  // namespace

std::vector<std::string> builtin_model_names() {
  std::vector<std::string> names;
  for (const auto& m : kBuiltinModels) names.emplace_back(m.name);
  return names;
}

std::optional<std::string_view> builtin_model_config(std::string_view name) {
  for (const auto& m : kBuiltinModels) {
    if (m.name == name) return m.config;
  }
  return std::nullopt;
}

}  // namespace kvfleet
