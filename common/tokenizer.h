#pragma once
// The byte-level tokenizer of kvfleet's built-in models: token i < 256 is byte i; BOS, EOS and
// PAD follow (ids from the config when it names them). Any model whose vocabulary covers the 256
// bytes can run with it, which is what the cpu engine needs to serve text end to end.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/model_spec.h"
#include "common/status.h"

namespace kvfleet {

class ByteTokenizer {
 public:
  // Fails when the vocabulary cannot hold the bytes and the special tokens.
  static Result<ByteTokenizer> for_model(const ModelSpec& spec);

  std::vector<std::int32_t> encode(std::string_view text, bool add_bos) const;
  // Bytes of the non-special tokens, in order.
  std::string decode(const std::vector<std::int32_t>& tokens) const;
  std::string decode_token(std::int32_t token) const;

  std::int32_t bos() const { return bos_; }
  std::int32_t eos() const { return eos_; }
  std::int64_t vocab_size() const { return vocab_size_; }

 private:
  std::int32_t bos_ = 256;
  std::int32_t eos_ = 257;
  std::int64_t vocab_size_ = 259;
};

}  // namespace kvfleet
