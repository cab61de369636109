#include "common/model_spec.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace kvfleet {
namespace {

using nlohmann::json;

ModelSpec must_load(std::string_view name) {
  auto m = load_model_spec(name);
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  return m.is_ok() ? *m : ModelSpec{};
}

json llama_like(int heads, int kv_heads) {
  return {{"model_type", "llama"},        {"hidden_size", 1024},
          {"intermediate_size", 4096},    {"num_hidden_layers", 12},
          {"num_attention_heads", heads}, {"num_key_value_heads", kv_heads},
          {"vocab_size", 32000}};
}

// KV elements per token from first principles: K and V, every layer, every KV head.
TEST(ModelSpec, KvPerTokenForMhaGqaMqa) {
  struct Case {
    int heads, kv_heads;
    AttentionKind kind;
  };
  for (Case c : {Case{16, 16, AttentionKind::kMha}, Case{16, 4, AttentionKind::kGqa},
                 Case{16, 1, AttentionKind::kMqa}}) {
    auto m = parse_hf_config(llama_like(c.heads, c.kv_heads), "t");
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    EXPECT_EQ(m->attention_kind(), c.kind);
    const std::int64_t head_dim = 1024 / c.heads;
    EXPECT_EQ(m->head_dim, head_dim);
    EXPECT_EQ(m->kv_elements_per_token(), 2 * 12 * c.kv_heads * head_dim);
  }
  // Missing num_key_value_heads means MHA.
  json cfg = llama_like(16, 16);
  cfg.erase("num_key_value_heads");
  EXPECT_EQ(parse_hf_config(cfg, "t")->attention_kind(), AttentionKind::kMha);
  // An explicit head_dim wins over hidden_size / heads.
  cfg["head_dim"] = 128;
  EXPECT_EQ(parse_hf_config(cfg, "t")->kv_elements_per_token(), 2 * 12 * 16 * 128);
}

TEST(ModelSpec, KvPerTokenForMla) {
  ModelSpec m = must_load("deepseek-v2");
  EXPECT_EQ(m.attention_kind(), AttentionKind::kMla);
  // One latent (kv_lora_rank) plus the shared RoPE key per layer; no per-head K/V.
  EXPECT_EQ(m.kv_elements_per_token(), 60 * (512 + 64));
  EXPECT_EQ(m.kv_shardable_heads(), 1);
  // Attention width averages the QK (192) and V (128) head widths over 128 heads.
  EXPECT_DOUBLE_EQ(m.attention_width(), 128 * (192 + 128) / 2.0);
}

TEST(ModelSpec, RunningExampleMatchesThePaper) {
  ModelSpec m = must_load("yi-34b-200k");
  EXPECT_EQ(m.num_layers, 60);
  EXPECT_EQ(m.hidden_size, 7168);
  EXPECT_EQ(m.num_heads, 56);
  EXPECT_EQ(m.num_kv_heads, 8);
  EXPECT_EQ(m.head_dim, 128);
  EXPECT_EQ(m.kv_elements_per_token() * 2, 245760);  // bf16 bytes, as PAPER.md states
}

// Parameter counts against the published totals of each model (safetensors metadata).
TEST(ModelSpec, ParameterCountsMatchPublishedModels) {
  struct Case {
    const char* name;
    double total;
    double active;
    double tolerance;
    bool active_without_embedding = false;  // DeepSeek reports activated params this way
  };
  const Case cases[] = {
      {"llama-3-8b", 8'030'261'248.0, 8'030'261'248.0, 0.0},
      {"llama-3-70b", 70'553'706'496.0, 70'553'706'496.0, 0.0},
      {"llama-2-7b", 6'738'415'616.0, 6'738'415'616.0, 0.0},
      {"yi-34b-200k", 34'388'917'248.0, 34'388'917'248.0, 0.0},
      {"qwen2-7b", 7'615'616'512.0, 7'615'616'512.0, 0.0},
      {"mixtral-8x7b", 46'702'792'704.0, 12'879'925'248.0, 0.0},
      {"deepseek-v2", 235.7e9, 21.0e9, 0.01, true},
      {"deepseek-v2-lite", 15.7e9, 2.4e9, 0.03, true},
  };
  for (const Case& c : cases) {
    ParamCounts p = count_params(must_load(c.name));
    if (c.tolerance == 0) {
      EXPECT_DOUBLE_EQ(p.total, c.total) << c.name;
      EXPECT_DOUBLE_EQ(p.active, c.active) << c.name;
    } else {
      EXPECT_NEAR(p.total / c.total, 1.0, c.tolerance) << c.name << " total " << p.total;
      const double active = c.active_without_embedding ? p.active - p.embedding : p.active;
      EXPECT_NEAR(active / c.active, 1.0, c.tolerance) << c.name << " active " << active;
    }
    // FLOP-bearing parameters leave out only the embedding lookup (and the norms).
    EXPECT_LT(p.matmul_active, p.active) << c.name;
  }
}

TEST(ModelSpec, MoeCountsAllExpertsForMemoryAndTopKForCompute) {
  ModelSpec m = must_load("mixtral-8x7b");
  ASSERT_TRUE(m.moe);
  EXPECT_EQ(m.num_moe_layers(), 32);
  ParamCounts p = count_params(m);
  const double expert = 3.0 * 4096 * 14336;
  EXPECT_DOUBLE_EQ(p.routed_experts, 32 * 8 * expert);
  EXPECT_DOUBLE_EQ(p.total - p.active, 32 * (8 - 2) * expert);

  ModelSpec ds = must_load("deepseek-v2");
  EXPECT_FALSE(ds.is_moe_layer(0));  // first_k_dense_replace = 1
  EXPECT_TRUE(ds.is_moe_layer(1));
  EXPECT_EQ(ds.num_moe_layers(), 59);
}

TEST(ModelSpec, TiedEmbeddingsCountOnceForMemoryButStillMultiply) {
  json cfg = llama_like(16, 4);
  auto untied = count_params(*parse_hf_config(cfg, "t"));
  cfg["tie_word_embeddings"] = true;
  auto tied = count_params(*parse_hf_config(cfg, "t"));
  EXPECT_DOUBLE_EQ(untied.total - tied.total, 32000.0 * 1024);
  EXPECT_DOUBLE_EQ(untied.matmul_active, tied.matmul_active);
}

TEST(ModelSpec, LoadsConfigFilesAndDirectories) {
  test::TempDir dir;
  json cfg = llama_like(8, 2);
  dir.write("config.json", cfg.dump());
  auto from_dir = load_model_spec(dir.path());
  ASSERT_TRUE(from_dir.is_ok()) << from_dir.status().to_string();
  EXPECT_EQ(from_dir->num_kv_heads, 2);
  auto from_file = load_model_spec(dir.path() + "/config.json");
  ASSERT_TRUE(from_file.is_ok());
  EXPECT_EQ(from_file->kv_elements_per_token(), from_dir->kv_elements_per_token());
}

TEST(ModelSpec, BadConfigsGetErrorsNamingTheProblem) {
  auto expect_error = [](const json& cfg, const std::string& fragment) {
    auto m = parse_hf_config(cfg, "cfg.json");
    ASSERT_FALSE(m.is_ok()) << "accepted: " << cfg.dump();
    EXPECT_NE(m.status().message().find(fragment), std::string::npos)
        << m.status().message() << " (wanted '" << fragment << "')";
  };
  json missing = llama_like(16, 4);
  missing.erase("hidden_size");
  expect_error(missing, "required field 'hidden_size' is missing");

  json wrong_type = llama_like(16, 4);
  wrong_type["num_hidden_layers"] = "twelve";
  expect_error(wrong_type, "'num_hidden_layers' must be an integer");

  json unknown = llama_like(16, 4);
  unknown["model_type"] = "rwkv";
  expect_error(unknown, "unsupported model_type 'rwkv' (supported: llama");

  expect_error(llama_like(16, 5), "must be a multiple of num_key_value_heads");
  expect_error(llama_like(0, 1), "'num_attention_heads' must be positive");
  expect_error(json::array(), "expected a JSON object");

  json moe = llama_like(16, 4);
  moe["model_type"] = "mixtral";
  expect_error(moe, "'num_local_experts' is missing");
  moe["num_local_experts"] = 4;
  moe["num_experts_per_tok"] = 8;
  expect_error(moe, "exceeds the number of experts");

  json mla = llama_like(16, 16);
  mla["model_type"] = "deepseek_v2";
  expect_error(mla, "'kv_lora_rank' is missing");

  json dtype = llama_like(16, 4);
  dtype["torch_dtype"] = "float128";
  expect_error(dtype, "unknown dtype 'float128'");

  auto unknown_name = load_model_spec("gpt-17");
  ASSERT_FALSE(unknown_name.is_ok());
  EXPECT_EQ(unknown_name.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown_name.status().message().find("yi-34b-200k"), std::string::npos)
      << "the error lists the built-in models";
}

TEST(ModelSpec, EveryBuiltinParses) {
  for (const auto& name : builtin_model_names()) {
    auto m = load_model_spec(name);
    EXPECT_TRUE(m.is_ok()) << name << ": " << m.status().to_string();
  }
}

}  // namespace
}  // namespace kvfleet
