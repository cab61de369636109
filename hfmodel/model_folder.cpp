#include "hfmodel/model_folder.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/config_file.h"

namespace kvfleet::hfmodel {
namespace {

namespace fs = std::filesystem;

// The architectures the cpu engine runs (config.json's `architectures`); model_type is checked
// by parse_hf_config and the engine.
constexpr std::string_view kArchitectures[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                               "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                                               "YiForCausalLM"};

Result<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot read '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Status check_architectures(const nlohmann::json& config, const std::string& where) {
  auto it = config.find("architectures");
  if (it == config.end() || !it->is_array()) return Status::ok();
  for (const auto& a : *it) {
    if (!a.is_string()) return invalid_argument(where + ": 'architectures' must list strings");
    const std::string name = a.get<std::string>();
    if (std::find(std::begin(kArchitectures), std::end(kArchitectures), name) ==
        std::end(kArchitectures)) {
      return invalid_argument(where + ": unsupported architecture '" + name +
                              "' (supported: LlamaForCausalLM, MistralForCausalLM, "
                              "Qwen2ForCausalLM, Qwen3ForCausalLM, YiForCausalLM)");
    }
  }
  return Status::ok();
}

// At least one .safetensors file; with an index, every shard the index names.
Status check_weights(const fs::path& dir) {
  std::error_code ec;
  bool any = false;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".safetensors") any = true;
  }
  if (!any) return not_found("model folder '" + dir.string() + "' has no .safetensors weights");
  const fs::path index = dir / "model.safetensors.index.json";
  if (!fs::exists(index, ec)) return Status::ok();
  KVFLEET_ASSIGN_OR_RETURN(nlohmann::json j, load_config_file(index.string()));
  auto map = j.find("weight_map");
  if (map == j.end() || !map->is_object()) {
    return invalid_argument("'" + index.string() + "' has no 'weight_map' object");
  }
  std::set<std::string> shards;
  for (const auto& [tensor, file] : map->items()) {
    if (!file.is_string()) {
      return invalid_argument("'" + index.string() + "': weight_map['" + tensor +
                              "'] must be a file name");
    }
    shards.insert(file.get<std::string>());
  }
  for (const std::string& s : shards) {
    if (s.find('/') != std::string::npos || !fs::exists(dir / s, ec)) {
      return not_found("'" + index.string() + "' names shard '" + s +
                       "', which is not in the folder");
    }
  }
  return Status::ok();
}

}  // namespace

bool is_model_folder(const fs::path& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

std::string folder_model_name(const fs::path& dir) {
  std::string s = dir.string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

Result<std::string> tokenizer_identity(const fs::path& dir) {
  // FNV-1a over each file's name and bytes: an identity check between hosts, not security
  // (registrations are signed with the cluster secret).
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  };
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "chat_template.jinja", "generation_config.json"}) {
    std::error_code ec;
    if (!fs::exists(dir / name, ec)) continue;
    KVFLEET_ASSIGN_OR_RETURN(std::string text, read_file(dir / name));
    mix(name);
    mix(text);
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return std::string(out);
}

Result<ModelFolder> load_model_folder(const fs::path& dir, const LoadFolderOptions& options) {
  std::error_code ec;
  const std::string where = "model folder '" + dir.string() + "'";
  if (!fs::is_directory(dir, ec)) return not_found(where + " is not a directory");
  if (!fs::exists(dir / "config.json", ec)) return not_found(where + " has no config.json");
  if (!fs::exists(dir / "tokenizer.json", ec)) {
    return not_found(where +
                     " has no tokenizer.json (kvfleet needs the Hugging Face fast "
                     "tokenizer file)");
  }
  const fs::path config_path = dir / "config.json";
  KVFLEET_ASSIGN_OR_RETURN(nlohmann::json config, load_config_file(config_path.string()));
  KVFLEET_RETURN_IF_ERROR(check_architectures(config, config_path.string()));
  KVFLEET_ASSIGN_OR_RETURN(ModelSpec spec, parse_hf_config(config, config_path.string()));
  spec.name = folder_model_name(dir);

  auto tok = tokenizer::HfTokenizer::load(dir);
  if (!tok.is_ok()) return tok.status().with_context(where + ": tokenizer");
  if (tok->vocab_size() > spec.vocab_size) {
    return invalid_argument(where + ": the tokenizer has " + std::to_string(tok->vocab_size()) +
                            " tokens, more than config.json's vocab_size " +
                            std::to_string(spec.vocab_size));
  }
  // Generation starts and stops on the tokenizer's special tokens, as transformers and vLLM do.
  if (auto b = tok->bos_id()) spec.bos_token_id = *b;
  if (auto e = tok->eos_id()) {
    spec.eos_token_id = *e;
  } else if (auto ids = tok->eos_ids(); !ids.empty()) {
    spec.eos_token_id = ids.front();
  }

  std::optional<chat::ChatTemplate> chat_template;
  if (!tok->chat_template().empty()) {
    auto t = chat::ChatTemplate::create(tok->chat_template(), tok->bos_token(), tok->eos_token());
    if (!t.is_ok()) return t.status().with_context(where + ": chat template");
    // A template that parses but cannot render the simplest conversation (it raises, or fails
    // at run time) would fail every chat request: refuse it now, before anything serves.
    auto probe = t->render(nlohmann::ordered_json::parse(R"([{"role":"user","content":"Hello"}])"),
                           /*add_generation_prompt=*/true);
    if (!probe.is_ok()) {
      return probe.status().with_context(
          where + ": chat template: it cannot render a conversation of one user message");
    }
    chat_template = std::move(t).value();
  }
  KVFLEET_ASSIGN_OR_RETURN(std::string id, tokenizer_identity(dir));
  if (options.weights) KVFLEET_RETURN_IF_ERROR(check_weights(dir));
  return ModelFolder{dir, std::move(spec), std::move(tok).value(), std::move(chat_template),
                     std::move(id)};
}

}  // namespace kvfleet::hfmodel
