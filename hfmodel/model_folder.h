#pragma once
// A Hugging Face model folder as kvfleet serves it: config.json (the architecture),
// tokenizer.json + tokenizer_config.json (the tokenizer, its special tokens and chat template),
// generation_config.json (extra EOS ids) and the weights (.safetensors, one file or shards with
// model.safetensors.index.json).
//
// load_model_folder() checks everything a server needs before it starts, so a bad folder is one
// clear error naming the file, never a failure at the first request. A loaded ModelFolder is
// immutable; its tokenizer and chat template are thread-safe.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "common/model_spec.h"
#include "common/status.h"
#include "tokenizer/hf_tokenizer.h"

namespace kvfleet::hfmodel {

struct ModelFolder {
  std::filesystem::path dir;
  // config.json, named after the folder as given (vLLM's default served model name), with
  // bos_token_id / eos_token_id replaced by the tokenizer's (what generation stops on first).
  ModelSpec spec;
  tokenizer::HfTokenizer tokenizer;
  // The folder's chat template; nullopt when it has none (chat requests are then refused).
  std::optional<chat::ChatTemplate> chat_template;
  // Identity of the tokenizer: 16 hex digits of a hash over tokenizer.json,
  // tokenizer_config.json, chat_template.jinja and generation_config.json. Hosts serving one
  // model must agree on it (the coordinator refuses workers whose identity differs from its own).
  std::string tokenizer_id;
};

struct LoadFolderOptions {
  // Require weights: at least one .safetensors file, and when model.safetensors.index.json is
  // present every shard it names. (A worker needs them; the coordinator and `tokenize` do not.)
  bool weights = true;
};

// True when `path` is a directory: then it is loaded as a model folder (and must be a complete
// one), not as a built-in name or a config file.
bool is_model_folder(const std::filesystem::path& path);

// Loads and checks a folder. Errors name the folder and the missing or bad file.
Result<ModelFolder> load_model_folder(const std::filesystem::path& dir,
                                      const LoadFolderOptions& options = {});

// The tokenizer identity of a folder's files (see ModelFolder::tokenizer_id).
Result<std::string> tokenizer_identity(const std::filesystem::path& dir);

// The name a folder is served under: the path as given, without trailing slashes.
std::string folder_model_name(const std::filesystem::path& dir);

}  // namespace kvfleet::hfmodel
