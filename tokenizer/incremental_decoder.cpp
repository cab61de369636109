#include "tokenizer/incremental_decoder.h"

#include "tokenizer/tokenizer_impl.h"

namespace kvfleet::tokenizer {
namespace {

// Text held back for clean-up spaces, this many tokens at most (then it goes out as it is).
constexpr std::size_t kMaxPending = 8;

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// Could clean_up_tokenization still change the end of `text` (" ." -> ".", " n't"...)?
bool cleanup_could_change(std::string_view text) {
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
  const HfTokenizerImpl& impl = *tokenizer_.impl_;
  // The last bytes the tokens stand for: when they start a character that the next token may
  // finish, its U+FFFD is not final. (Bytes before the window are whole characters.)
  std::string tail;
  for (auto it = window_.rbegin(); it != window_.rend() && tail.size() < 4; ++it) {
    if (*it < 0 || static_cast<std::size_t>(*it) >= impl.id_to_bytes.size()) continue;
    if (skip_special_tokens_ && impl.special_flags[static_cast<std::size_t>(*it)]) continue;
    tail.insert(0, impl.id_to_bytes[static_cast<std::size_t>(*it)]);
  }
  if (detail::ends_incomplete_utf8(tail)) return {};
  std::string text = impl.decode(window_, skip_special_tokens_);
  const bool stable = !impl.clean_up_spaces || !cleanup_could_change(text) ||
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
  prefix_text_ = impl.decode(window_, skip_special_tokens_);
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
