#include "hfmodel/gguf_export.h"

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numbers>
#include <set>
#include <sstream>

#include "hfmodel/gguf_writer.h"
#include "hfmodel/model_folder.h"
#include "worker/model.h"

namespace kvfleet::hfmodel {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// llama_token_type in llama.cpp (gguf-py TokenType).
enum TokenType : std::int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// The split regexes of the byte-level pre-tokenizers llama.cpp knows, by its names for them.
struct KnownPre {
  const char* name;
  const char* regex;
};
constexpr KnownPre kKnownPre[] = {
    {"llama-bpe",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"qwen2",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

Result<json> read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot read '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  json j = json::parse(s.str(), nullptr, false);
  if (j.is_discarded()) return invalid_argument("'" + path.string() + "' is not JSON");
  return j;
}

// Every object of a (possibly Sequence) normalizer / pre-tokenizer / decoder tree.
void flatten(const json& node, std::vector<json>& out) {
  if (!node.is_object()) return;
  for (const char* list : {"pretokenizers", "normalizers", "decoders"}) {
    if (auto it = node.find(list); it != node.end() && it->is_array()) {
      for (const json& child : *it) flatten(child, out);
      return;
    }
  }
  out.push_back(node);
}

bool has_type(const json& node, const std::string& type) {
  std::vector<json> parts;
  flatten(node, parts);
  for (const json& p : parts) {
    if (p.value("type", "") == type) return true;
  }
  return false;
}

// "a b" for each merge, whichever of the two tokenizer.json spellings the file uses.
Result<std::vector<std::string>> merges_of(const json& model, const std::string& where) {
  std::vector<std::string> merges;
  auto it = model.find("merges");
  if (it == model.end() || !it->is_array()) return merges;
  for (const json& m : *it) {
    if (m.is_string()) {
      merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return invalid_argument(where +
                              ": model.merges holds an entry that is neither \"a b\" "
                              "nor [\"a\", \"b\"]");
    }
  }
  return merges;
}

// tokenizer.ggml.pre for a byte-level BPE tokenizer, from its Split regex.
Result<std::string> pre_tokenizer_name(const json& tokenizer, const std::string& where) {
  std::vector<json> parts;
  flatten(tokenizer.value("pre_tokenizer", json()), parts);
  std::vector<std::string> regexes;
  bool byte_level_regex = false;
  for (const json& p : parts) {
    const std::string type = p.value("type", "");
    if (type == "Split" && p.contains("pattern") && p["pattern"].contains("Regex")) {
      regexes.push_back(p["pattern"]["Regex"].get<std::string>());
    } else if (type == "ByteLevel") {
      byte_level_regex = p.value("use_regex", true);
    }
  }
  if (regexes.empty() && byte_level_regex) return std::string("gpt2");
  if (regexes.size() == 1 && !byte_level_regex) {
    for (const KnownPre& k : kKnownPre) {
      if (regexes[0] == k.regex) return std::string(k.name);
    }
  }
  return invalid_argument(where +
                          ": the pre-tokenizer is not one llama.cpp is known to run as kvfleet "
                          "does (known: Llama 3's split regex as 'llama-bpe', Qwen2's as "
                          "'qwen2', GPT-2's ByteLevel regex as 'gpt2')" +
                          (regexes.empty() ? std::string() : "; its regex: " + regexes[0]));
}

// llama.cpp's rope_freqs for llama3 rope scaling (convert_hf_to_gguf.py, LlamaModel): the
// factor each frequency is divided by.
std::vector<float> llama3_rope_factors(const ModelSpec& s) {
  const RopeScaling& r = *s.rope_scaling;
  const double old_len = static_cast<double>(r.original_max_position);
  const double low_wavelen = old_len / r.low_freq_factor;
  const double high_wavelen = old_len / r.high_freq_factor;
  std::vector<float> factors;
  for (std::int64_t i = 0; i < s.head_dim; i += 2) {
    const float freq = static_cast<float>(
        1.0 / std::pow(s.rope_theta, static_cast<double>(i) / static_cast<double>(s.head_dim)));
    const double wavelen = 2 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(static_cast<float>(r.factor));
    } else {
      const double smooth =
          (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      factors.push_back(static_cast<float>(1.0 / ((1 - smooth) / r.factor + smooth)));
    }
  }
  return factors;
}

// The tokenizer keys: tokens, types, merges or scores, special ids.
Status add_tokenizer(GgufWriter& w, const ModelFolder& folder, GgufExportSummary& summary) {
  const fs::path path = folder.dir / "tokenizer.json";
  const std::string where = "'" + path.string() + "'";
  KVFLEET_ASSIGN_OR_RETURN(json tj, read_json(path));
  const json model = tj.value("model", json::object());
  if (model.value("type", "") != "BPE") {
    return invalid_argument(where + ": only BPE tokenizers can be exported to GGUF (this is '" +
                            model.value("type", "") + "')");
  }
  const tokenizer::HfTokenizer& tok = folder.tokenizer;
  const std::int64_t n = folder.spec.vocab_size;
  std::set<std::int32_t> added;
  for (const json& a : tj.value("added_tokens", json::array())) {
    added.insert(a.value("id", -1));
  }
  KVFLEET_ASSIGN_OR_RETURN(std::vector<std::string> merges, merges_of(model, where));
  const bool byte_level = has_type(tj.value("pre_tokenizer", json()), "ByteLevel") ||
                          has_type(tj.value("decoder", json()), "ByteLevel");
  const bool byte_fallback = model.value("byte_fallback", false);

  std::vector<std::string> tokens;
  std::vector<std::int32_t> types;
  tokens.reserve(static_cast<size_t>(n));
  types.reserve(static_cast<size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto id = static_cast<std::int32_t>(i);
    std::string text = i < tok.vocab_size() ? tok.token_string(id) : "";
    if (text.empty()) {
      // Rows of the embedding beyond the tokenizer (vocab_size padded): unused, as converted.
      tokens.push_back("[PAD" + std::to_string(i) + "]");
      types.push_back(kUnused);
      continue;
    }
    std::int32_t type = kNormal;
    if (added.count(id)) {
      type = tok.is_special(id) ? kControl : kUserDefined;
    } else if (byte_fallback && text.size() == 6 && text.rfind("<0x", 0) == 0 && text[5] == '>') {
      type = kByte;
    } else if (!byte_level && text == model.value("unk_token", std::string())) {
      type = kUnknown;
    }
    tokens.push_back(std::move(text));
    types.push_back(type);
  }

  if (byte_level) {
    KVFLEET_ASSIGN_OR_RETURN(summary.pre_tokenizer, pre_tokenizer_name(tj, where));
    summary.tokenizer_model = "gpt2";
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", summary.pre_tokenizer);
    w.add_strings("tokenizer.ggml.tokens", std::move(tokens));
    w.add_i32s("tokenizer.ggml.token_type", std::move(types));
    w.add_strings("tokenizer.ggml.merges", std::move(merges));
  } else if (byte_fallback) {
    // SentencePiece-style: llama.cpp merges the adjacent pair whose result scores highest, so a
    // token made by merge r scores -r (earlier merges first); others score 0.
    std::map<std::string, std::size_t> rank;
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const std::string& m = merges[r];
      const auto space = m.find(' ');
      if (space == std::string::npos) continue;
      rank.emplace(m.substr(0, space) + m.substr(space + 1), r);
    }
    std::vector<float> scores;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      auto it = rank.find(tokens[i]);
      scores.push_back(types[i] == kNormal && it != rank.end() ? -static_cast<float>(it->second)
                                                               : 0.0f);
    }
    summary.tokenizer_model = "llama";
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_strings("tokenizer.ggml.tokens", std::move(tokens));
    w.add_f32s("tokenizer.ggml.scores", std::move(scores));
    w.add_i32s("tokenizer.ggml.token_type", std::move(types));
    if (auto unk = tok.token_id(model.value("unk_token", std::string()))) {
      w.add_u32("tokenizer.ggml.unknown_token_id", static_cast<std::uint32_t>(*unk));
    }
    // A normalizer that prepends "▁" (Llama 2) is llama.cpp's add_space_prefix.
    bool prefix = false;
    std::vector<json> parts;
    flatten(tj.value("normalizer", json()), parts);
    flatten(tj.value("pre_tokenizer", json()), parts);
    for (const json& p : parts) {
      if (p.value("type", "") == "Prepend" && p.value("prepend", "") == "\xe2\x96\x81") {
        prefix = true;
      }
      if (p.value("type", "") == "Metaspace" && p.value("prepend_scheme", "always") != "never") {
        prefix = true;
      }
    }
    w.add_bool("tokenizer.ggml.add_space_prefix", prefix);
  } else {
    return invalid_argument(where +
                            ": a BPE tokenizer that is neither byte-level nor SentencePiece-style "
                            "with byte fallback cannot be exported to GGUF");
  }
  if (auto b = tok.bos_id())
    w.add_u32("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(*b));
  if (auto e = tok.eos_id())
    w.add_u32("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(*e));
  // Whether encoding adds BOS / EOS, as this tokenizer does it (post-processor or config).
  auto with = tok.encode("a", true), without = tok.encode("a", false);
  if (with.is_ok() && without.is_ok()) {
    const bool bos =
        tok.bos_id() && with->size() > without->size() && with->front() == *tok.bos_id();
    const bool eos =
        tok.eos_id() && with->size() > without->size() && with->back() == *tok.eos_id();
    w.add_bool("tokenizer.ggml.add_bos_token", bos);
    w.add_bool("tokenizer.ggml.add_eos_token", eos);
  }
  if (!tok.chat_template().empty()) w.add_string("tokenizer.chat_template", tok.chat_template());
  return Status::ok();
}

}  // namespace

std::vector<float> permute_rope_rows(const float* w, std::int64_t heads, std::int64_t head_dim,
                                     std::int64_t cols) {
  std::vector<float> out(static_cast<size_t>(heads * head_dim * cols));
  const std::int64_t half = head_dim / 2;
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t j = 0; j < half; ++j) {
      for (std::int64_t s = 0; s < 2; ++s) {
        const float* src = w + (h * head_dim + s * half + j) * cols;
        float* dst = out.data() + (h * head_dim + 2 * j + s) * cols;
        std::copy_n(src, cols, dst);
      }
    }
  }
  return out;
}

Result<GgufExportSummary> export_gguf(const fs::path& model_dir, const fs::path& out) {
  KVFLEET_ASSIGN_OR_RETURN(ModelFolder folder, load_model_folder(model_dir));
  const ModelSpec& s = folder.spec;
  const std::string where = "model folder '" + model_dir.string() + "'";
  GgufExportSummary summary;
  bool permute = false;
  if (s.model_type == "llama" || s.model_type == "mistral" || s.model_type == "yi") {
    summary.architecture = "llama";
    permute = true;
  } else if (s.model_type == "qwen2" || s.model_type == "qwen3") {
    summary.architecture = s.model_type;
  } else {
    return invalid_argument(where + ": model_type '" + s.model_type +
                            "' has no GGUF export (llama, mistral, yi, qwen2, qwen3)");
  }
  if (s.max_position_embeddings <= 0) {
    return invalid_argument(where +
                            ": config.json gives no max_position_embeddings, which GGUF needs as "
                            "the context length");
  }
  if (s.rope_scaling && s.rope_scaling->type != "default" && s.rope_scaling->type != "linear" &&
      s.rope_scaling->type != "llama3") {
    return invalid_argument(where + ": rope_scaling type '" + s.rope_scaling->type +
                            "' has no GGUF export (linear, llama3)");
  }
  if (s.rope_scaling && s.rope_scaling->type == "llama3" && summary.architecture != "llama") {
    return invalid_argument(where + ": llama3 rope_scaling is exported for llama layouts only");
  }
  auto model = worker::Model::load(s, model_dir.string());
  if (!model.is_ok()) return model.status().with_context(where);

  GgufWriter w;
  const std::string a = summary.architecture;
  auto u32 = [](std::int64_t v) { return static_cast<std::uint32_t>(v); };
  w.add_string("general.architecture", a);
  w.add_string("general.type", "model");
  w.add_string("general.name", model_dir.filename().empty()
                                   ? model_dir.parent_path().filename().string()
                                   : model_dir.filename().string());
  w.add_u32("general.file_type", 0);  // all F32
  w.add_u32(a + ".vocab_size", u32(s.vocab_size));
  w.add_u32(a + ".context_length", u32(s.max_position_embeddings));
  w.add_u32(a + ".embedding_length", u32(s.hidden_size));
  w.add_u32(a + ".block_count", u32(s.num_layers));
  w.add_u32(a + ".feed_forward_length", u32(s.intermediate_size));
  w.add_u32(a + ".attention.head_count", u32(s.num_heads));
  w.add_u32(a + ".attention.head_count_kv", u32(s.num_kv_heads));
  w.add_u32(a + ".attention.key_length", u32(s.head_dim));
  w.add_u32(a + ".attention.value_length", u32(s.head_dim));
  w.add_f32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(s.rms_norm_eps));
  w.add_f32(a + ".rope.freq_base", static_cast<float>(s.rope_theta));
  w.add_u32(a + ".rope.dimension_count", u32(s.head_dim));
  if (s.rope_scaling && s.rope_scaling->type == "linear") {
    w.add_string(a + ".rope.scaling.type", "linear");
    w.add_f32(a + ".rope.scaling.factor", static_cast<float>(s.rope_scaling->factor));
  }
  KVFLEET_RETURN_IF_ERROR(add_tokenizer(w, folder, summary).with_context(where));
  summary.vocab_size = s.vocab_size;

  // Hugging Face names -> llama.cpp's, with the Q/K permutation for the llama layout.
  const std::string layer_prefix = "model.layers.";
  const std::map<std::string, std::string> in_layer = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (s.rope_scaling && s.rope_scaling->type == "llama3") {
    std::vector<float> factors = llama3_rope_factors(s);
    const auto count = static_cast<std::int64_t>(factors.size());
    w.add_tensor("rope_freqs.weight", {count}, std::move(factors));
  }
  for (const worker::TensorToWrite& t : (*model)->tensors()) {
    std::int64_t numel = 1;
    for (std::int64_t d : t.shape) numel *= d;
    std::vector<float> data(t.data, t.data + numel);
    std::string name;
    if (t.name == "model.embed_tokens.weight") {
      name = "token_embd.weight";
    } else if (t.name == "model.norm.weight") {
      name = "output_norm.weight";
    } else if (t.name == "lm_head.weight") {
      name = "output.weight";
    } else if (t.name.rfind(layer_prefix, 0) == 0) {
      const auto dot = t.name.find('.', layer_prefix.size());
      const std::string layer = t.name.substr(layer_prefix.size(), dot - layer_prefix.size());
      const std::string rest = t.name.substr(dot + 1);
      auto it = in_layer.find(rest);
      if (it == in_layer.end()) {
        return internal_error(where + ": no GGUF name for tensor '" + t.name + "'");
      }
      name = "blk." + layer + "." + it->second;
      const bool q = rest.rfind("self_attn.q_proj.", 0) == 0;
      const bool k = rest.rfind("self_attn.k_proj.", 0) == 0;
      if (permute && (q || k)) {
        const std::int64_t heads = q ? s.num_heads : s.num_kv_heads;
        const std::int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
        data = permute_rope_rows(t.data, heads, s.head_dim, cols);
      }
    } else {
      return internal_error(where + ": no GGUF name for tensor '" + t.name + "'");
    }
    w.add_tensor(std::move(name), t.shape, std::move(data));
  }
  summary.tensors = w.tensor_count();
  summary.tensor_bytes = w.tensor_bytes();
  KVFLEET_RETURN_IF_ERROR(w.write(out));
  return summary;
}

}  // namespace kvfleet::hfmodel
