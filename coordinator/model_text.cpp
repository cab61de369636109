#include "coordinator/model_text.h"

#include <algorithm>

#include "tokenizer/incremental_decoder.h"

namespace kvfleet::coordinator {
namespace {

class HfTokenDecoder final : public TokenDecoder {
 public:
  explicit HfTokenDecoder(const tokenizer::HfTokenizer& tok)
      : decoder_(tok, /*skip_special_tokens=*/true) {}
  std::string add(std::int32_t token) override { return decoder_.add(token); }
  std::string finish() override { return decoder_.finish(); }

 private:
  tokenizer::IncrementalDecoder decoder_;
};

}  // namespace

Result<std::vector<std::int32_t>> ModelText::encode_prompt(std::string_view text) const {
  if (!folder_) return bytes_.encode(text, /*add_bos=*/true);
  auto ids = folder_->tokenizer.encode(text, /*add_special_tokens=*/true);
  if (!ids.is_ok()) return ids.status().with_context("prompt");
  return ids;
}

Result<std::vector<std::int32_t>> ModelText::encode_chat(const nlohmann::ordered_json& messages,
                                                         std::string_view builtin_text) const {
  if (!folder_) return bytes_.encode(builtin_text, /*add_bos=*/true);
  if (!folder_->chat_template) {
    return invalid_argument("model '" + folder_->spec.name +
                            "' has no chat template (tokenizer_config.json's chat_template or "
                            "chat_template.jinja): use /v1/completions");
  }
  auto text = folder_->chat_template->render(messages, /*add_generation_prompt=*/true);
  if (!text.is_ok()) return text.status().with_context("messages");
  // The template already wrote the special tokens (BOS...): do not add them again (vLLM).
  auto ids = folder_->tokenizer.encode(*text, /*add_special_tokens=*/false);
  if (!ids.is_ok()) return ids.status().with_context("messages");
  return ids;
}

std::unique_ptr<TokenDecoder> ModelText::decoder() const {
  if (!folder_) return byte_token_decoder(bytes_);
  return std::make_unique<HfTokenDecoder>(folder_->tokenizer);
}

TokenBytesFn token_bytes_fn(const tokenizer::HfTokenizer& tokenizer) {
  return [tokenizer](std::int32_t id) { return tokenizer.token_bytes(id); };
}

TokenBytesFn ModelText::token_bytes() const {
  if (!folder_) {
    return [bytes = bytes_](std::int32_t id) { return bytes.decode_token(id); };
  }
  return token_bytes_fn(folder_->tokenizer);
}

std::string ModelText::decode(const std::vector<std::int32_t>& ids) const {
  if (!folder_) return bytes_.decode(ids);
  return folder_->tokenizer.decode(ids, /*skip_special_tokens=*/false);
}

std::vector<std::int32_t> ModelText::extra_eos_ids() const {
  std::vector<std::int32_t> out;
  if (!folder_) return out;
  const std::int64_t primary_eos = folder_->spec.eos_token_id.value_or(-1);
  for (std::int32_t id : folder_->tokenizer.eos_ids()) {
    if (id != primary_eos) out.push_back(id);
  }
  return out;
}

}  // namespace kvfleet::coordinator
