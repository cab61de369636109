#include "tokenizer/incremental_decoder.h"

#include "tokenizer/tokenizer_impl.h"

namespace kvfleet::tokenizer {
namespace {

// A piece held back this many tokens at most: past it, whatever the text ends with is final
// (an incomplete UTF-8 character needs at most three more bytes).
constexpr std::size_t kMaxPending = 8;

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// Could a later token still change the end of `text`?
bool unstable_end(std::string_view text, bool clean_up_spaces) {
  if (ends_with(text, "\xEF\xBF\xBD")) return true;  // U+FFFD: maybe an incomplete character
  if (!clean_up_spaces) return false;
  // The beginnings of clean_up_tokenization's patterns (" .", " n't", " 're"...).
  for (std::string_view tail : {" ", " '", " n", " n'", " 'v", " 'r"}) {
    if (ends_with(text, tail)) return true;
  }
  return false;
}

}  // namespace

IncrementalDecoder::IncrementalDecoder(HfTokenizer tokenizer, bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDecoder::add(std::int32_t id) {
  window_.push_back(id);
  std::string text = tokenizer_.impl_->decode(window_, skip_special_tokens_);
  const bool stable = !unstable_end(text, tokenizer_.impl_->clean_up_spaces) ||
                      window_.size() - prefix_tokens_ > kMaxPending;
  if (!stable || text.size() <= prefix_text_.size() ||
      text.compare(0, prefix_text_.size(), prefix_text_) != 0) {
    return {};
  }
  std::string piece = text.substr(prefix_text_.size());
  // The tokens of this piece become the window: decoding them again with what follows gives the
  // same leading-space and byte handling as in a whole decode.
  window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(prefix_tokens_));
  prefix_tokens_ = window_.size();
  prefix_text_ = tokenizer_.impl_->decode(window_, skip_special_tokens_);
  return piece;
}

std::string IncrementalDecoder::finish() {
  std::string text = tokenizer_.impl_->decode(window_, skip_special_tokens_);
  std::string piece;
  if (text.size() > prefix_text_.size() &&
      text.compare(0, prefix_text_.size(), prefix_text_) == 0) {
    piece = text.substr(prefix_text_.size());
  }
  window_.clear();
  prefix_tokens_ = 0;
  prefix_text_.clear();
  return piece;
}

}  // namespace kvfleet::tokenizer
