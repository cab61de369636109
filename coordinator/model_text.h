#pragma once
// ModelText: how the coordinator turns a request into token ids and output tokens back into
// text, for one model. Built-in models use the byte tokenizer and kvfleet's own chat format; a
// model served from a Hugging Face folder uses its tokenizer.json and chat template, as vLLM
// does: completions prompts are encoded with the tokenizer's special tokens (e.g. BOS), chat
// messages are rendered by the template (add_generation_prompt, bos/eos tokens of the
// tokenizer) and encoded without adding special tokens again; output is decoded incrementally
// without special tokens.
//
// Immutable and cheap to copy (the tables are shared); every method is thread-safe.

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/tokenizer.h"
#include "coordinator/openai.h"
#include "hfmodel/model_folder.h"

namespace kvfleet::coordinator {

// token_bytes_fn (openai.h) of a folder's tokenizer; the function holds a copy of it.
TokenBytesFn token_bytes_fn(const tokenizer::HfTokenizer& tokenizer);

class ModelText {
 public:
  explicit ModelText(ByteTokenizer bytes) : bytes_(bytes) {}
  // `vocab_size`: the model's (config.json's; may exceed the tokenizer's own count).
  ModelText(std::shared_ptr<const hfmodel::ModelFolder> folder, std::int64_t vocab_size)
      : bytes_(), folder_(std::move(folder)), vocab_size_(vocab_size) {}

  bool from_folder() const { return folder_ != nullptr; }
  std::int64_t vocab_size() const { return folder_ ? vocab_size_ : bytes_.vocab_size(); }

  // A completions prompt. Text that is not UTF-8 is an invalid_argument error.
  Result<std::vector<std::int32_t>> encode_prompt(std::string_view text) const;
  // A chat prompt: `messages` rendered by the folder's template (role and content checked:
  // an unknown role is an invalid_argument error), or, for a built-in model, `builtin_text`
  // (kvfleet's own format, see apply_chat_template) with BOS.
  Result<std::vector<std::int32_t>> encode_chat(const nlohmann::ordered_json& messages,
                                                std::string_view builtin_text) const;
  // A decoder for one output stream (each stream, e.g. each of n choices, needs its own).
  std::unique_ptr<TokenDecoder> decoder() const;
  // The bytes of each token, for logprobs: the byte tokenizer's, or the folder tokenizer's
  // token_bytes (byte-level and byte-fallback tokens as their bytes, added tokens as text).
  // The function holds what it needs: it may outlive this ModelText.
  TokenBytesFn token_bytes() const;
  // Text of ids (echo of a prompt given as tokens): the byte tokenizer leaves out its special
  // tokens; a folder's tokenizer keeps them, as vLLM's echo does.
  std::string decode(const std::vector<std::int32_t>& ids) const;
  // Ids that also end generation besides the workers' EOS (the folder's spec.eos_token_id,
  // which workers of the same tokenizer_id stop on): generation_config.json's other
  // eos_token_id entries. Empty for built-in models.
  std::vector<std::int32_t> extra_eos_ids() const;

 private:
  ByteTokenizer bytes_;
  std::shared_ptr<const hfmodel::ModelFolder> folder_;
  std::int64_t vocab_size_ = 0;
};

}  // namespace kvfleet::coordinator
