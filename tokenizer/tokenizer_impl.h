#pragma once
// The loaded tables behind HfTokenizer (internal to tokenizer/). Built once by build(), then
// immutable: every const method may run on many threads at once.

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/status.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/text.h"

namespace kvfleet::tokenizer {

namespace detail {

struct NormalizerStep {
  enum Kind { kUnicode, kPrepend, kReplace } kind = kUnicode;
  NormalForm form = NormalForm::kNfc;
  std::optional<std::string> literal;  // Replace: a {"String": ...} pattern
  std::optional<Regex> regex;          // Replace: a {"Regex": ...} pattern
  std::string content;                 // Prepend: the prefix; Replace: the replacement
};

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };
enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizerStep {
  enum Kind { kSplit, kByteLevel, kMetaspace } kind = kSplit;
  std::optional<Regex> regex;  // Split: its pattern; ByteLevel: GPT-2's when use_regex
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  PrependScheme prepend = PrependScheme::kAlways;
  bool split = true;  // Metaspace: one word per replacement character
};

struct DecoderStep {
  enum Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind = kByteLevel;
  std::optional<std::string> literal;  // Replace
  std::optional<Regex> regex;          // Replace
  std::string content;                 // Replace: replacement; Strip: character; Metaspace
  int start = 0;                       // Strip
  int stop = 0;                        // Strip
};

}  // namespace detail

struct AddedTokenInfo {
  std::string content;
  std::int32_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// Added tokens by their bytes, for leftmost-longest matching.
class AddedTokenTrie {
 public:
  void add(std::string_view text, std::int32_t index);
  // (length, index into the added tokens) of the longest token starting at `pos`; index -1:
  // none.
  std::pair<std::size_t, std::int32_t> longest_at(std::string_view text, std::size_t pos) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::int32_t>> children;
    std::int32_t token = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

struct HfTokenizerImpl {
  struct Sources {
    std::string origin;  // for messages: the tokenizer.json path
    std::string tokenizer_json;
    std::string config_json;
    std::string special_tokens_map_json;
    std::string generation_config_json;
    std::string chat_template_jinja;
  };
  static Result<std::shared_ptr<HfTokenizerImpl>> build(const Sources& sources);
  static Result<std::shared_ptr<HfTokenizerImpl>> build_checked(const Sources& sources);

  Result<std::vector<std::int32_t>> encode(std::string_view text, bool add_special_tokens) const;
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens) const;

  struct Section {
    std::string_view text;
    std::int32_t added = -1;  // index into `added`, or -1 for plain text
  };
  void split_added(std::string_view text, const AddedTokenTrie& trie,
                   std::vector<Section>& out) const;
  Status normalize(std::string_view text, std::string& out) const;
  Status pre_tokenize(std::string_view text, std::size_t section_index,
                      std::deque<std::string>& arena, std::vector<std::string_view>& words) const;
  Status encode_plain(std::string_view text, std::size_t section_index,
                      std::vector<std::int32_t>& ids) const;
  static Status replace_all(std::string& text, const std::optional<std::string>& literal,
                            const std::optional<detail::Regex>& regex, const std::string& content);

  // Vocabulary.
  std::vector<std::string> id_to_token;  // as tokenizer.json spells them; "" for unused ids
  std::vector<std::string> id_to_bytes;  // token_bytes()
  std::unordered_map<std::string, std::int32_t> token_to_id;
  std::vector<AddedTokenInfo> added;
  std::unordered_set<std::string> added_contents;
  AddedTokenTrie raw_trie;         // matched in the text as given
  AddedTokenTrie normalized_trie;  // matched in the normalized text
  bool has_normalized_added = false;

  // Pipeline.
  std::vector<detail::NormalizerStep> normalizer;
  std::vector<detail::PreTokenizerStep> pre_tokenizer;
  std::unique_ptr<detail::BpeModel> model;
  bool fuse_unk = false;
  std::optional<std::int32_t> unk_id;
  std::vector<std::int32_t> prefix_ids;  // added before the text by add_special_tokens
  std::vector<std::int32_t> suffix_ids;  // and after it
  bool has_decoder = false;
  std::vector<detail::DecoderStep> decoder;
  bool clean_up_spaces = false;

  // From tokenizer_config.json and friends.
  std::optional<std::int32_t> bos;
  std::optional<std::int32_t> eos;
  std::string bos_token;
  std::string eos_token;
  std::vector<std::int32_t> eos_ids;
  std::vector<std::int32_t> special_ids;
  std::vector<char> special_flags;  // by id
  std::string chat_template;
};

}  // namespace kvfleet::tokenizer
