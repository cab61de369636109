#pragma once
// IncrementalDecoder: the text of a token stream, piece by piece, as tokens arrive.
//
// Each piece is complete UTF-8 (a character whose bytes span several tokens comes out once its
// last byte has arrived), and the pieces put together equal HfTokenizer::decode of all the
// tokens. It works like the streaming detokenizers of transformers and tokenizers
// (DecodeStream): a piece is decode(window + new) minus decode(window), where the window holds
// the tokens of the previous piece, so SentencePiece's removal of the first token's leading
// space and the joining of byte-fallback tokens come out as in a whole decode. Text that a later
// token could still change is held back: while the tokens' bytes end inside a character, and,
// when the tokenizer cleans up tokenization spaces, a trailing " " that a following "." would
// remove (for at most 8 tokens). finish() gives what is left.
//
// Not thread-safe: one decoder per stream. The HfTokenizer's tables are shared, not copied.

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/hf_tokenizer.h"

namespace kvfleet::tokenizer {

class IncrementalDecoder {
 public:
  IncrementalDecoder(HfTokenizer tokenizer, bool skip_special_tokens);

  // The new text that `id` completes; often empty (e.g. the first byte of a character).
  std::string add(std::int32_t id);
  // What is still held back, at the end of the stream. The decoder may be reused afterwards as
  // if new.
  std::string finish();

 private:
  HfTokenizer tokenizer_;
  bool skip_special_tokens_;
  std::vector<std::int32_t> window_;  // tokens of the last piece, then the pending ones
  std::size_t prefix_tokens_ = 0;     // how many of window_ made the last piece
  std::string prefix_text_;           // decode(window_[0, prefix_tokens_))
};

}  // namespace kvfleet::tokenizer
