#pragma once
// BpeModel (internal to tokenizer/): byte-pair encoding of one pre-tokenized word.
//
// Two alphabets: byte-level (the word is raw bytes; each byte starts as the token of its GPT-2
// character, and vocabulary keys are stored as the bytes they stand for) and character-level
// (SentencePiece style: each code point starts as its token, or, when it has none, as its
// UTF-8 bytes through "<0xXX>" tokens with byte_fallback, else the unknown token).
// Merges are looked up by the pair of token ids in an open-addressing table; a word is merged
// with a heap ordered by (rank, position), O(n log n) however long it is; words shorter than
// kMaxCachedWord bytes are cached. All const methods are thread-safe.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace kvfleet::tokenizer::detail {

// Hashing for lookups by string_view without building a std::string.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename T>
using StringMap = std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

struct BpeOptions {
  bool byte_level = false;
  bool byte_fallback = false;
  bool ignore_merges = false;  // a word that is itself a token is not merged
  std::optional<std::int32_t> unk_id;
};

class BpeModel {
 public:
  static constexpr std::size_t kMaxCachedWord = 256;

  // `vocab`: model keys (bytes for byte-level, UTF-8 otherwise) to ids. `merges`: pairs of
  // keys in rank order; a later duplicate replaces an earlier one, a pair whose parts or result
  // are not in the vocabulary is ignored (it can never apply).
  static std::unique_ptr<BpeModel> build(
      StringMap<std::int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      BpeOptions options);

  // Appends the ids of `word` (non-empty; valid UTF-8 unless byte-level) to `out`.
  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const;

  std::size_t merge_count() const { return merge_count_; }

 private:
  struct Slot {
    std::uint64_t key = kEmpty;
    std::int32_t rank = 0;
    std::int32_t id = 0;
  };
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};

  BpeModel() = default;
  const Slot* find_merge(std::int32_t left, std::int32_t right) const;
  void insert_merge(std::int32_t left, std::int32_t right, std::int32_t rank, std::int32_t id);
  void merge_word(std::string_view word, std::vector<std::int32_t>& out) const;

  BpeOptions options_;
  StringMap<std::int32_t> vocab_;
  std::unordered_map<char32_t, std::int32_t> char_ids_;  // character-level: one-character tokens
  std::int32_t byte_ids_[256];      // byte-level: the token of each byte (-1: none)
  std::int32_t fallback_ids_[256];  // "<0xXX>" tokens (-1: none)
  std::vector<Slot> merges_;        // open addressing, power-of-two size
  std::uint64_t mask_ = 0;
  std::size_t merge_count_ = 0;

  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<std::int32_t>> cache_;
};

}  // namespace kvfleet::tokenizer::detail
