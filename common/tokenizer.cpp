#include "common/tokenizer.h"

namespace kvfleet {

Result<ByteTokenizer> ByteTokenizer::for_model(const ModelSpec& spec) {
  ByteTokenizer t;
  t.vocab_size_ = spec.vocab_size;
  t.bos_ = static_cast<std::int32_t>(spec.bos_token_id.value_or(256));
  t.eos_ = static_cast<std::int32_t>(spec.eos_token_id.value_or(257));
  if (spec.vocab_size < 258) {
    return invalid_argument("model '" + spec.name + "': vocab_size " +
                            std::to_string(spec.vocab_size) +
                            " cannot hold the byte-level tokenizer (256 bytes + BOS + EOS)");
  }
  for (std::int32_t id : {t.bos_, t.eos_}) {
    if (id < 0 || id >= spec.vocab_size) {
      return invalid_argument("model '" + spec.name + "': special token id " + std::to_string(id) +
                              " is outside the vocabulary");
    }
  }
  return t;
}

std::vector<std::int32_t> ByteTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() + 1);
  if (add_bos) ids.push_back(bos_);
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string ByteTokenizer::decode_token(std::int32_t token) const {
  if (token >= 0 && token < 256) return std::string(1, static_cast<char>(token));
  return {};
}

std::string ByteTokenizer::decode(const std::vector<std::int32_t>& tokens) const {
  std::string out;
  for (auto t : tokens) out += decode_token(t);
  return out;
}

}  // namespace kvfleet
