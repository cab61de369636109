#pragma once
// HfTokenizer: a Hugging Face `tokenizer.json` tokenizer (BPE models: byte-level like Llama 3,
// Qwen2/3, DeepSeek, GPT-2, and SentencePiece-style with byte fallback like Llama 2, Mistral,
// Gemma), with the settings transformers takes from tokenizer_config.json.
//
// Thread-safety: a loaded HfTokenizer is immutable; every const method may be called from any
// number of threads at once. Copies are cheap (they share the loaded tables).
// Results are checked token for token against the reference implementation
// (@huggingface/tokenizers, see tests/tokenizer/); tokenizer/README.md lists the decisions.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvfleet::tokenizer {

struct HfTokenizerImpl;

class HfTokenizer {
 public:
  // `path` is a model folder (tokenizer.json, and tokenizer_config.json, special_tokens_map.json,
  // generation_config.json, chat_template.jinja when present) or a tokenizer.json file (its
  // folder is searched for the others). Anything the file uses that this library does not
  // implement (a Unigram or WordPiece model, an unknown normalizer, pre-tokenizer,
  // post-processor or decoder) is an error naming the JSON path and the type.
  static Result<HfTokenizer> load(const std::filesystem::path& path);
  // The same from the texts of tokenizer.json and tokenizer_config.json ("" or "{}" for none).
  // `origin` names the source in error messages.
  static Result<HfTokenizer> from_json(std::string_view tokenizer_json,
                                       std::string_view tokenizer_config_json,
                                       std::string_view origin = "tokenizer.json");

  // Token ids of `text`. Added tokens (special or not, e.g. "<|im_start|>") in the text are
  // always matched as such. `add_special_tokens` adds what the post-processor template (or
  // add_bos_token / add_eos_token in tokenizer_config.json) asks for, e.g. BOS.
  // Text that is not valid UTF-8 is an invalid_argument error naming the byte offset.
  Result<std::vector<std::int32_t>> encode(std::string_view text, bool add_special_tokens) const;

  // Text of `ids` through the tokenizer's decoder. Ids outside the vocabulary are skipped.
  // `skip_special_tokens` leaves out special tokens (BOS, EOS, <|im_end|>...). Byte sequences
  // that are not UTF-8 become U+FFFD, so the result is always valid UTF-8.
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens) const;

  // The raw bytes token `id` stands for (OpenAI logprobs `bytes`): byte-level tokens as bytes,
  // "<0x0A>" byte-fallback tokens as that byte, "▁" as a space, added tokens as their text.
  // May be a part of a UTF-8 character. Empty for an id outside the vocabulary.
  std::string token_bytes(std::int32_t id) const;
  // The token as the vocabulary spells it ("Ġthe", "▁the", "<0x0A>"); empty when unknown.
  std::string token_string(std::int32_t id) const;
  // The id of a vocabulary string (model vocabulary or added token).
  std::optional<std::int32_t> token_id(std::string_view token) const;

  // One more than the largest id (model vocabulary and added tokens), as len(tokenizer).
  std::int32_t vocab_size() const;

  // bos_token / eos_token of tokenizer_config.json (or special_tokens_map.json) and their ids.
  std::optional<std::int32_t> bos_id() const;
  std::optional<std::int32_t> eos_id() const;
  std::string bos_token() const;  // "" when none
  std::string eos_token() const;  // "" when none
  // Every id that ends generation: eos_id and generation_config.json's eos_token_id (one or a
  // list), without repeats, eos_id first.
  std::vector<std::int32_t> eos_ids() const;
  // Ids of the special tokens: added tokens marked special, and additional_special_tokens.
  const std::vector<std::int32_t>& special_tokens() const;
  bool is_special(std::int32_t id) const;

  // The raw chat template (Jinja text): chat_template.jinja in the folder, else the
  // chat_template of tokenizer_config.json (the "default" one when it is a list); "" if none.
  const std::string& chat_template() const;

 private:
  explicit HfTokenizer(std::shared_ptr<const HfTokenizerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const HfTokenizerImpl> impl_;
  friend class IncrementalDecoder;
};

}  // namespace kvfleet::tokenizer
