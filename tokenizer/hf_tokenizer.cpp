#include "tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <deque>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "common/config_file.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/text.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvfleet::tokenizer {

using detail::BpeModel;
using detail::NormalForm;
using detail::Regex;
using Json = nlohmann::json;

namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // "▁"
// Ids are refused from here on: tables are sized by the largest id, and real vocabularies stay
// well below a million.
constexpr std::int64_t kMaxId = std::int64_t{1} << 24;

// ---- loading helpers -------------------------------------------------------------------------

Status unsupported(const std::string& where, std::string_view what, std::string_view type,
                   std::string_view supported) {
  return unimplemented(where + ": " + std::string(what) + " type '" + std::string(type) +
                       "' is not supported (supported: " + std::string(supported) + ")");
}

Result<std::string> type_of(const Json& j, const std::string& where) {
  if (!j.is_object()) return invalid_argument(where + ": expected an object");
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) return invalid_argument(where + ": no string 'type'");
  return it->get<std::string>();
}

// A pattern object {"String": "..."} or {"Regex": "..."}.
Result<Regex> pattern_of(const Json& j, const std::string& where) {
  if (j.is_object()) {
    if (auto it = j.find("String"); it != j.end() && it->is_string()) {
      return Regex::compile(it->get<std::string>(), /*literal=*/true);
    }
    if (auto it = j.find("Regex"); it != j.end() && it->is_string()) {
      auto regex = Regex::compile(it->get<std::string>(), /*literal=*/false);
      if (!regex) return regex.status().with_context(where);
      return regex;
    }
  }
  return invalid_argument(where + ": expected {\"String\": ...} or {\"Regex\": ...}");
}

// The literal text of a {"String": "..."} pattern, or nullopt for a regex.
std::optional<std::string> literal_of(const Json& j) {
  if (j.is_object()) {
    if (auto it = j.find("String"); it != j.end() && it->is_string()) {
      return it->get<std::string>();
    }
  }
  return std::nullopt;
}

Result<bool> bool_or(const Json& object, const char* key, bool fallback, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return invalid_argument(where + "." + key + ": expected true or false");
  return it->get<bool>();
}

Result<std::string> string_or(const Json& object, const char* key, std::string fallback,
                              const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) return invalid_argument(where + "." + key + ": expected a string");
  return it->get<std::string>();
}

// tokenizer_config.json spells a token as "text" or as {"content": "text", ...}.
std::optional<std::string> token_text(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return std::nullopt;
}

// ---- pipeline pieces -------------------------------------------------------------------------

// A "Sequence" of steps (normalizers, pre_tokenizers, decoders), flattened: each item of the
// list under `key` parsed by `parse` (which may itself meet a nested Sequence).
template <typename Step, typename Parse>
Result<std::vector<Step>> flatten_sequence(const Json& j, const char* key, const std::string& where,
                                           Parse parse) {
  auto list = j.find(key);
  if (list == j.end() || !list->is_array()) {
    return invalid_argument(where + "." + key + ": expected a list");
  }
  std::vector<Step> steps;
  for (std::size_t i = 0; i < list->size(); ++i) {
    KVFLEET_ASSIGN_OR_RETURN(std::vector<Step> inner,
                             parse((*list)[i], where + "." + key + "[" + std::to_string(i) + "]"));
    steps.insert(steps.end(), inner.begin(), inner.end());
  }
  return steps;
}

Result<std::vector<detail::NormalizerStep>> parse_normalizer(const Json& j,
                                                             const std::string& where) {
  std::vector<detail::NormalizerStep> steps;
  KVFLEET_ASSIGN_OR_RETURN(std::string type, type_of(j, where));
  detail::NormalizerStep step;
  if (type == "Sequence") {
    return flatten_sequence<detail::NormalizerStep>(j, "normalizers", where, parse_normalizer);
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    step.kind = detail::NormalizerStep::kUnicode;
    step.form = type == "NFC"    ? NormalForm::kNfc
                : type == "NFD"  ? NormalForm::kNfd
                : type == "NFKC" ? NormalForm::kNfkc
                                 : NormalForm::kNfkd;
  } else if (type == "Prepend") {
    step.kind = detail::NormalizerStep::kPrepend;
    KVFLEET_ASSIGN_OR_RETURN(step.content, string_or(j, "prepend", "", where));
  } else if (type == "Replace") {
    step.kind = detail::NormalizerStep::kReplace;
    auto pattern = j.find("pattern");
    if (pattern == j.end()) return invalid_argument(where + ".pattern: missing");
    step.literal = literal_of(*pattern);
    if (!step.literal) {
      KVFLEET_ASSIGN_OR_RETURN(Regex regex, pattern_of(*pattern, where + ".pattern"));
      step.regex = std::move(regex);
    }
    KVFLEET_ASSIGN_OR_RETURN(step.content, string_or(j, "content", "", where));
  } else {
    return unsupported(where, "normalizer", type,
                       "Sequence, NFC, NFD, NFKC, NFKD, Prepend, Replace");
  }
  steps.push_back(std::move(step));
  return steps;
}

Result<std::vector<detail::PreTokenizerStep>> parse_pre_tokenizer(const Json& j,
                                                                  const std::string& where) {
  std::vector<detail::PreTokenizerStep> steps;
  KVFLEET_ASSIGN_OR_RETURN(std::string type, type_of(j, where));
  detail::PreTokenizerStep step;
  if (type == "Sequence") {
    return flatten_sequence<detail::PreTokenizerStep>(j, "pretokenizers", where,
                                                      parse_pre_tokenizer);
  }
  if (type == "Split") {
    step.kind = detail::PreTokenizerStep::kSplit;
    auto pattern = j.find("pattern");
    if (pattern == j.end()) return invalid_argument(where + ".pattern: missing");
    KVFLEET_ASSIGN_OR_RETURN(Regex regex, pattern_of(*pattern, where + ".pattern"));
    step.regex = std::move(regex);
    KVFLEET_ASSIGN_OR_RETURN(bool invert, bool_or(j, "invert", false, where));
    if (invert) return unimplemented(where + ".invert: true is not supported");
    KVFLEET_ASSIGN_OR_RETURN(std::string behavior, string_or(j, "behavior", "Isolated", where));
    if (behavior == "Isolated") {
      step.behavior = detail::SplitBehavior::kIsolated;
    } else if (behavior == "Removed") {
      step.behavior = detail::SplitBehavior::kRemoved;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = detail::SplitBehavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = detail::SplitBehavior::kMergedWithNext;
    } else {
      return unsupported(where + ".behavior", "split behavior", behavior,
                         "Isolated, Removed, MergedWithPrevious, MergedWithNext");
    }
  } else if (type == "ByteLevel") {
    step.kind = detail::PreTokenizerStep::kByteLevel;
    KVFLEET_ASSIGN_OR_RETURN(step.add_prefix_space, bool_or(j, "add_prefix_space", false, where));
    KVFLEET_ASSIGN_OR_RETURN(bool use_regex, bool_or(j, "use_regex", true, where));
    if (use_regex) {
      // GPT-2's pattern, as the reference's ByteLevel pre-tokenizer spells it.
      KVFLEET_ASSIGN_OR_RETURN(
          Regex regex,
          Regex::compile("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
                         "\\s+(?!\\S)|\\s+",
                         false));
      step.regex = std::move(regex);
    }
  } else if (type == "Metaspace") {
    step.kind = detail::PreTokenizerStep::kMetaspace;
    KVFLEET_ASSIGN_OR_RETURN(step.replacement,
                             string_or(j, "replacement", std::string(kMetaspace), where));
    KVFLEET_ASSIGN_OR_RETURN(std::string scheme, string_or(j, "prepend_scheme", "", where));
    if (scheme.empty()) {  // older files: add_prefix_space
      KVFLEET_ASSIGN_OR_RETURN(bool add, bool_or(j, "add_prefix_space", true, where));
      scheme = add ? "always" : "never";
    }
    if (scheme == "always") {
      step.prepend = detail::PrependScheme::kAlways;
    } else if (scheme == "first") {
      step.prepend = detail::PrependScheme::kFirst;
    } else if (scheme == "never") {
      step.prepend = detail::PrependScheme::kNever;
    } else {
      return unsupported(where + ".prepend_scheme", "prepend scheme", scheme,
                         "always, first, never");
    }
    KVFLEET_ASSIGN_OR_RETURN(step.split, bool_or(j, "split", true, where));
  } else {
    return unsupported(where, "pre_tokenizer", type, "Sequence, Split, ByteLevel, Metaspace");
  }
  steps.push_back(std::move(step));
  return steps;
}

Result<std::vector<detail::DecoderStep>> parse_decoder(const Json& j, const std::string& where) {
  std::vector<detail::DecoderStep> steps;
  KVFLEET_ASSIGN_OR_RETURN(std::string type, type_of(j, where));
  detail::DecoderStep step;
  if (type == "Sequence") {
    return flatten_sequence<detail::DecoderStep>(j, "decoders", where, parse_decoder);
  }
  if (type == "ByteLevel") {
    step.kind = detail::DecoderStep::kByteLevel;
  } else if (type == "Replace") {
    step.kind = detail::DecoderStep::kReplace;
    auto pattern = j.find("pattern");
    if (pattern == j.end()) return invalid_argument(where + ".pattern: missing");
    step.literal = literal_of(*pattern);
    if (!step.literal) {
      KVFLEET_ASSIGN_OR_RETURN(Regex regex, pattern_of(*pattern, where + ".pattern"));
      step.regex = std::move(regex);
    }
    KVFLEET_ASSIGN_OR_RETURN(step.content, string_or(j, "content", "", where));
  } else if (type == "ByteFallback") {
    step.kind = detail::DecoderStep::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = detail::DecoderStep::kFuse;
  } else if (type == "Strip") {
    step.kind = detail::DecoderStep::kStrip;
    KVFLEET_ASSIGN_OR_RETURN(step.content, string_or(j, "content", " ", where));
    auto count = [&](const char* key) -> Result<int> {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return 0;
      if (!it->is_number_unsigned()) {
        return invalid_argument(where + "." + key + ": expected a count");
      }
      return static_cast<int>(std::min<std::uint64_t>(it->get<std::uint64_t>(), 1 << 20));
    };
    KVFLEET_ASSIGN_OR_RETURN(step.start, count("start"));
    KVFLEET_ASSIGN_OR_RETURN(step.stop, count("stop"));
  } else if (type == "Metaspace") {
    step.kind = detail::DecoderStep::kMetaspace;
    KVFLEET_ASSIGN_OR_RETURN(step.content,
                             string_or(j, "replacement", std::string(kMetaspace), where));
  } else {
    return unsupported(where, "decoder", type,
                       "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace");
  }
  steps.push_back(std::move(step));
  return steps;
}

// The special tokens a post-processor puts around the sequence: (before, after).
Status parse_post_processor(const Json& j, const std::string& where, const HfTokenizerImpl& t,
                            std::vector<std::int32_t>& before, std::vector<std::int32_t>& after) {
  KVFLEET_ASSIGN_OR_RETURN(std::string type, type_of(j, where));
  if (type == "ByteLevel") return Status::ok();  // offsets only
  if (type == "Sequence") {
    auto list = j.find("processors");
    if (list == j.end() || !list->is_array()) {
      return invalid_argument(where + ".processors: expected a list");
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
      KVFLEET_RETURN_IF_ERROR(parse_post_processor(
          (*list)[i], where + ".processors[" + std::to_string(i) + "]", t, before, after));
    }
    return Status::ok();
  }
  if (type != "TemplateProcessing") {
    return unsupported(where, "post_processor", type, "TemplateProcessing, ByteLevel, Sequence");
  }
  auto single = j.find("single");
  if (single == j.end() || !single->is_array()) {
    return invalid_argument(where + ".single: expected a list");
  }
  const Json* specials = nullptr;
  if (auto it = j.find("special_tokens"); it != j.end() && it->is_object()) specials = &*it;
  bool seen_sequence = false;
  for (std::size_t i = 0; i < single->size(); ++i) {
    const Json& item = (*single)[i];
    const std::string item_where = where + ".single[" + std::to_string(i) + "]";
    if (item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    auto special = item.find("SpecialToken");
    if (special == item.end() || !special->is_object() || !special->contains("id") ||
        !(*special)["id"].is_string()) {
      return invalid_argument(item_where + ": expected Sequence or SpecialToken");
    }
    const std::string name = (*special)["id"].get<std::string>();
    std::vector<std::int32_t> ids;
    if (specials != nullptr && specials->contains(name) && (*specials)[name].contains("ids") &&
        (*specials)[name]["ids"].is_array()) {
      for (const Json& id : (*specials)[name]["ids"]) {
        if (!id.is_number_integer()) return invalid_argument(item_where + ": bad ids");
        ids.push_back(id.get<std::int32_t>());
      }
    } else {
      auto id = t.token_to_id.find(name);
      if (id == t.token_to_id.end()) {
        return invalid_argument(item_where + ": special token '" + name +
                                "' is not in the vocabulary");
      }
      ids.push_back(id->second);
    }
    auto& side = seen_sequence ? after : before;
    side.insert(side.end(), ids.begin(), ids.end());
  }
  return Status::ok();
}

Status parse_model(const Json& tokenizer, const std::string& origin, bool byte_level,
                   HfTokenizerImpl& t) {
  const std::string where = origin + ": model";
  auto model_it = tokenizer.find("model");
  if (model_it == tokenizer.end() || !model_it->is_object()) {
    return invalid_argument(where + ": missing");
  }
  const Json& model = *model_it;
  std::string type = model.value("type", "");
  if (type.empty() && model.contains("merges")) type = "BPE";
  if (type != "BPE") {
    return unsupported(where, "model", type.empty() ? "(none)" : type, "BPE");
  }
  if (auto it = model.find("dropout");
      it != model.end() && it->is_number() && it->get<double>() > 0) {
    return unimplemented(where + ".dropout: BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    KVFLEET_ASSIGN_OR_RETURN(std::string value, string_or(model, key, "", where));
    if (!value.empty()) return unimplemented(where + "." + key + " is not supported");
  }
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return invalid_argument(where + ".vocab: expected an object of token: id");
  }
  std::int32_t max_id = -1;
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<std::int64_t>() < 0 ||
        it.value().get<std::int64_t>() >= kMaxId) {
      return invalid_argument(where + ".vocab['" + it.key() + "']: expected an id");
    }
    const auto id = it.value().get<std::int32_t>();
    t.token_to_id[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  for (const auto& added : t.added) max_id = std::max(max_id, added.id);
  t.id_to_token.assign(static_cast<std::size_t>(max_id) + 1, std::string());
  for (const auto& [token, id] : t.token_to_id) t.id_to_token[static_cast<std::size_t>(id)] = token;
  for (const auto& added : t.added) {
    t.token_to_id[added.content] = added.id;
    t.id_to_token[static_cast<std::size_t>(added.id)] = added.content;
  }

  // The model sees raw bytes when a ByteLevel pre-tokenizer maps them to characters; its keys
  // are stored as those bytes. A key with a character outside the alphabet cannot come out of
  // the pre-tokenizer and is left out.
  auto model_key = [&](const std::string& token) -> std::optional<std::string> {
    if (!byte_level) return token;
    std::string bytes;
    std::size_t i = 0;
    while (i < token.size()) {
      const int b = detail::unicode_to_byte(detail::next_code_point(token, i));
      if (b < 0) return std::nullopt;
      bytes.push_back(static_cast<char>(b));
    }
    return bytes;
  };
  detail::StringMap<std::int32_t> keys;
  keys.reserve(t.token_to_id.size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (auto key = model_key(it.key())) keys[*key] = it.value().get<std::int32_t>();
  }
  for (const auto& added : t.added) {
    if (auto key = model_key(added.content)) keys[*key] = added.id;
  }

  auto merges_it = model.find("merges");
  std::vector<std::pair<std::string, std::string>> merges;
  if (merges_it != model.end() && !merges_it->is_null()) {
    if (!merges_it->is_array()) return invalid_argument(where + ".merges: expected a list");
    merges.reserve(merges_it->size());
    for (std::size_t i = 0; i < merges_it->size(); ++i) {
      const Json& m = (*merges_it)[i];
      std::string a, b;
      if (m.is_string()) {
        // "a b"; as the reference, a third part is ignored.
        const std::string& s = m.get_ref<const std::string&>();
        const std::size_t space = s.find(' ');
        if (space == std::string::npos) {
          return invalid_argument(where + ".merges[" + std::to_string(i) + "]: expected \"a b\"");
        }
        a = s.substr(0, space);
        b = s.substr(space + 1, s.find(' ', space + 1) - space - 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return invalid_argument(where + ".merges[" + std::to_string(i) +
                                "]: expected \"a b\" or [a, b]");
      }
      auto ka = model_key(a), kb = model_key(b);
      if (!ka || !kb) continue;
      merges.emplace_back(std::move(*ka), std::move(*kb));
    }
  }

  detail::BpeOptions options;
  options.byte_level = byte_level;
  KVFLEET_ASSIGN_OR_RETURN(options.byte_fallback, bool_or(model, "byte_fallback", false, where));
  KVFLEET_ASSIGN_OR_RETURN(options.ignore_merges, bool_or(model, "ignore_merges", false, where));
  KVFLEET_ASSIGN_OR_RETURN(t.fuse_unk, bool_or(model, "fuse_unk", false, where));
  KVFLEET_ASSIGN_OR_RETURN(std::string unk, string_or(model, "unk_token", "", where));
  if (!unk.empty()) {
    if (auto it = t.token_to_id.find(unk); it != t.token_to_id.end()) t.unk_id = it->second;
  }
  options.unk_id = t.unk_id;
  t.model = BpeModel::build(std::move(keys), merges, options);
  return Status::ok();
}

// ---- added tokens ----------------------------------------------------------------------------

void trim_js_whitespace(std::string_view& s, bool front, bool back) {
  if (front) {
    std::size_t i = 0;
    while (i < s.size()) {
      std::size_t next = i;
      if (!detail::is_js_whitespace(detail::next_code_point(s, next))) break;
      i = next;
    }
    s.remove_prefix(i);
  }
  if (back) {
    while (!s.empty()) {
      std::size_t start = s.size() - 1;
      while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      std::size_t i = start;
      if (!detail::is_js_whitespace(detail::next_code_point(s, i))) break;
      s.remove_suffix(s.size() - start);
    }
  }
}

char32_t code_point_before(std::string_view s, std::size_t pos) {
  std::size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return detail::next_code_point(s, start);
}

}  // namespace

// ---- AddedTokenTrie --------------------------------------------------------------------------

void AddedTokenTrie::add(std::string_view text, std::int32_t index) {
  if (text.empty()) return;
  if (nodes_.empty()) nodes_.emplace_back();
  std::size_t node = 0;
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    std::int32_t child = -1;
    for (const auto& [byte, next] : nodes_[node].children) {
      if (byte == b) child = next;
    }
    if (child < 0) {
      child = static_cast<std::int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(b, child);
      nodes_.emplace_back();
    }
    node = static_cast<std::size_t>(child);
  }
  nodes_[node].token = index;
  first_byte_[static_cast<unsigned char>(text[0])] = true;
}

std::pair<std::size_t, std::int32_t> AddedTokenTrie::longest_at(std::string_view text,
                                                                std::size_t pos) const {
  std::pair<std::size_t, std::int32_t> best{0, -1};
  if (nodes_.empty() || !first_byte_[static_cast<unsigned char>(text[pos])]) return best;
  std::size_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    std::int32_t child = -1;
    for (const auto& [byte, next] : nodes_[node].children) {
      if (byte == b) {
        child = next;
        break;
      }
    }
    if (child < 0) break;
    node = static_cast<std::size_t>(child);
    if (nodes_[node].token >= 0) best = {i + 1 - pos, nodes_[node].token};
  }
  return best;
}

// Splits `text` at the added tokens of `trie` (leftmost, then longest match), and trims the
// neighbours of lstrip/rstrip tokens, as the reference does.
void HfTokenizerImpl::split_added(std::string_view text, const AddedTokenTrie& trie,
                                  std::vector<Section>& out) const {
  const std::size_t first = out.size();
  std::size_t start = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    auto [len, index] = trie.longest_at(text, i);
    if (index >= 0 && added[static_cast<std::size_t>(index)].single_word) {
      const bool word_before = i > 0 && detail::is_word_char(code_point_before(text, i));
      std::size_t after = i + len;
      const bool word_after =
          after < text.size() && detail::is_word_char(detail::next_code_point(text, after));
      if (word_before || word_after) index = -1;
    }
    if (index < 0) {
      ++i;
      continue;
    }
    if (i > start) out.push_back(Section{text.substr(start, i - start), -1});
    out.push_back(Section{text.substr(i, len), index});
    i += len;
    start = i;
  }
  if (start < text.size()) out.push_back(Section{text.substr(start), -1});
  for (std::size_t k = first; k < out.size(); ++k) {
    if (out[k].added < 0) continue;
    const AddedTokenInfo& token = added[static_cast<std::size_t>(out[k].added)];
    if (token.lstrip && k > first) trim_js_whitespace(out[k - 1].text, false, true);
    if (token.rstrip && k + 1 < out.size()) trim_js_whitespace(out[k + 1].text, true, false);
  }
}

// ---- encoding --------------------------------------------------------------------------------

Status HfTokenizerImpl::normalize(std::string_view text, std::string& out) const {
  out.assign(text);
  for (const auto& step : normalizer) {
    switch (step.kind) {
      case detail::NormalizerStep::kUnicode: {
        KVFLEET_ASSIGN_OR_RETURN(out, detail::normalize_unicode(out, step.form));
        break;
      }
      case detail::NormalizerStep::kPrepend: out.insert(0, step.content); break;
      case detail::NormalizerStep::kReplace:
        KVFLEET_RETURN_IF_ERROR(replace_all(out, step.literal, step.regex, step.content));
        break;
    }
  }
  return Status::ok();
}

Status HfTokenizerImpl::replace_all(std::string& text, const std::optional<std::string>& literal,
                                    const std::optional<Regex>& regex, const std::string& content) {
  std::string result;
  if (literal) {
    if (literal->empty()) return Status::ok();
    std::size_t pos = text.find(*literal);
    if (pos == std::string::npos) return Status::ok();
    std::size_t start = 0;
    while (pos != std::string::npos) {
      result.append(text, start, pos - start).append(content);
      start = pos + literal->size();
      pos = text.find(*literal, start);
    }
    result.append(text, start, std::string::npos);
  } else {
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    KVFLEET_RETURN_IF_ERROR(regex->find_all(text, matches));
    if (matches.empty()) return Status::ok();
    std::size_t start = 0;
    for (auto [b, e] : matches) {
      result.append(text, start, b - start).append(content);
      start = e;
    }
    result.append(text, start, std::string::npos);
  }
  text = std::move(result);
  return Status::ok();
}

Status HfTokenizerImpl::pre_tokenize(std::string_view text, std::size_t section_index,
                                     std::deque<std::string>& arena,
                                     std::vector<std::string_view>& words) const {
  words.clear();
  words.push_back(text);
  std::vector<std::string_view> next;
  std::vector<std::pair<std::size_t, std::size_t>> matches;
  for (const auto& step : pre_tokenizer) {
    next.clear();
    for (std::string_view w : words) {
      switch (step.kind) {
        case detail::PreTokenizerStep::kSplit: {
          matches.clear();
          KVFLEET_RETURN_IF_ERROR(step.regex->find_all(w, matches));
          std::size_t start = 0;
          std::size_t pending = 0;  // MergedWithNext: start of a match to prepend to the next
          bool has_pending = false;
          for (auto [b, e] : matches) {
            switch (step.behavior) {
              case detail::SplitBehavior::kIsolated:
                if (b > start) next.push_back(w.substr(start, b - start));
                next.push_back(w.substr(b, e - b));
                break;
              case detail::SplitBehavior::kRemoved:
                if (b > start) next.push_back(w.substr(start, b - start));
                break;
              case detail::SplitBehavior::kMergedWithPrevious:
                next.push_back(w.substr(start, e - start));
                break;
              case detail::SplitBehavior::kMergedWithNext:
                if (b > start) {
                  const std::size_t from = has_pending ? pending : start;
                  next.push_back(w.substr(from, b - from));
                } else if (has_pending) {
                  next.push_back(w.substr(pending, b - pending));
                }
                pending = b;
                has_pending = true;
                break;
            }
            start = e;
          }
          if (step.behavior == detail::SplitBehavior::kMergedWithNext && has_pending) {
            next.push_back(w.substr(pending));
          } else if (start < w.size()) {
            next.push_back(w.substr(start));
          }
          break;
        }
        case detail::PreTokenizerStep::kByteLevel: {
          std::string_view piece = w;
          if (step.add_prefix_space && (w.empty() || w[0] != ' ')) {
            arena.push_back(" " + std::string(w));
            piece = arena.back();
          }
          if (!step.regex) {
            next.push_back(piece);
            break;
          }
          matches.clear();
          KVFLEET_RETURN_IF_ERROR(step.regex->find_all(piece, matches));
          for (auto [b, e] : matches) next.push_back(piece.substr(b, e - b));
          break;
        }
        case detail::PreTokenizerStep::kMetaspace: {
          std::string replaced;
          std::size_t start = 0;
          for (std::size_t pos = w.find(' '); pos != std::string_view::npos;
               pos = w.find(' ', start)) {
            replaced.append(w.substr(start, pos - start)).append(step.replacement);
            start = pos + 1;
          }
          replaced.append(w.substr(start));
          const bool prepend =
              step.prepend == detail::PrependScheme::kAlways ||
              (step.prepend == detail::PrependScheme::kFirst && section_index == 0);
          if (prepend && replaced.compare(0, step.replacement.size(), step.replacement) != 0) {
            replaced.insert(0, step.replacement);
          }
          arena.push_back(std::move(replaced));
          std::string_view r = arena.back();
          if (!step.split || step.replacement.empty()) {
            next.push_back(r);
            break;
          }
          // Split before each replacement character, which stays with the word after it.
          std::size_t from = 0;
          for (std::size_t pos = r.find(step.replacement, 1); pos != std::string_view::npos;
               pos = r.find(step.replacement, pos + step.replacement.size())) {
            next.push_back(r.substr(from, pos - from));
            from = pos;
          }
          if (from < r.size()) next.push_back(r.substr(from));
          break;
        }
      }
    }
    words.swap(next);
  }
  return Status::ok();
}

Status HfTokenizerImpl::encode_plain(std::string_view text, std::size_t section_index,
                                     std::vector<std::int32_t>& ids) const {
  thread_local std::deque<std::string> arena;
  thread_local std::vector<std::string_view> words;
  arena.clear();
  KVFLEET_RETURN_IF_ERROR(pre_tokenize(text, section_index, arena, words));
  const std::size_t first = ids.size();
  for (std::string_view w : words) {
    if (!w.empty()) model->encode_word(w, ids);
  }
  if (fuse_unk && unk_id) {
    // Consecutive unknown tokens become one, as the reference's fuse_unk.
    auto end = std::unique(ids.begin() + static_cast<std::ptrdiff_t>(first), ids.end(),
                           [&](std::int32_t a, std::int32_t b) { return a == *unk_id && b == a; });
    ids.erase(end, ids.end());
  }
  return Status::ok();
}

Result<std::vector<std::int32_t>> HfTokenizerImpl::encode(std::string_view text,
                                                          bool add_special_tokens) const {
  if (const std::size_t bad = detail::find_invalid_utf8(text); bad != std::string_view::npos) {
    return invalid_argument("text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = prefix_ids;
  std::vector<Section> sections;
  split_added(text, raw_trie, sections);
  std::string normalized;
  std::vector<Section> subsections;
  for (std::size_t i = 0; i < sections.size(); ++i) {
    const Section& section = sections[i];
    if (section.text.empty()) continue;
    if (section.added >= 0) {
      ids.push_back(added[static_cast<std::size_t>(section.added)].id);
      continue;
    }
    std::string_view plain = section.text;
    if (!normalizer.empty()) {
      KVFLEET_RETURN_IF_ERROR(normalize(section.text, normalized));
      plain = normalized;
    }
    if (plain.empty()) continue;
    if (!has_normalized_added) {
      KVFLEET_RETURN_IF_ERROR(encode_plain(plain, i, ids));
      continue;
    }
    subsections.clear();
    split_added(plain, normalized_trie, subsections);
    for (const Section& sub : subsections) {
      if (sub.text.empty()) continue;
      if (sub.added >= 0) {
        ids.push_back(added[static_cast<std::size_t>(sub.added)].id);
      } else {
        KVFLEET_RETURN_IF_ERROR(encode_plain(sub.text, i, ids));
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids.begin(), suffix_ids.end());
  return ids;
}

// ---- decoding --------------------------------------------------------------------------------

namespace {

void decode_byte_level(const HfTokenizerImpl& t, std::vector<std::string>& tokens) {
  std::vector<std::string> out;
  std::string bytes;
  bool pending = false;
  auto flush = [&] {
    if (!pending) return;
    out.push_back(detail::decode_utf8_lossy(bytes, /*strip_bom=*/false));
    bytes.clear();
    pending = false;
  };
  for (auto& token : tokens) {
    if (t.added_contents.count(token) != 0) {
      flush();
      out.push_back(std::move(token));
      continue;
    }
    pending = true;
    std::size_t i = 0;
    while (i < token.size()) {
      const int b = detail::unicode_to_byte(detail::next_code_point(token, i));
      bytes.push_back(static_cast<char>(b < 0 ? 0 : b));  // the reference's Uint8Array gives 0
    }
  }
  flush();
  tokens = std::move(out);
}

int parse_byte_token(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : -1;
  };
  const int hi = hex(token[3]), lo = hex(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

void decode_byte_fallback(std::vector<std::string>& tokens) {
  std::vector<std::string> out;
  std::string bytes;
  for (auto& token : tokens) {
    const int b = parse_byte_token(token);
    if (b >= 0) {
      bytes.push_back(static_cast<char>(b));
      continue;
    }
    if (!bytes.empty()) {
      out.push_back(detail::decode_utf8_lossy(bytes, /*strip_bom=*/true));
      bytes.clear();
    }
    out.push_back(std::move(token));
  }
  if (!bytes.empty()) out.push_back(detail::decode_utf8_lossy(bytes, /*strip_bom=*/true));
  tokens = std::move(out);
}

void strip_token(std::string& token, const std::string& content, int start, int stop) {
  if (content.empty()) return;
  std::size_t begin = 0;
  for (int i = 0; i < start && token.compare(begin, content.size(), content) == 0; ++i) {
    begin += content.size();
  }
  std::size_t end = token.size();
  for (int i = 0; i < stop && end >= begin + content.size() &&
                  token.compare(end - content.size(), content.size(), content) == 0;
       ++i) {
    end -= content.size();
  }
  token = token.substr(begin, end - begin);
}

// transformers' clean_up_tokenization, in the reference's order.
std::string clean_up_tokenization(std::string text) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::size_t pos = text.find(from);
    if (pos == std::string::npos) continue;
    std::string out;
    std::size_t start = 0;
    while (pos != std::string::npos) {
      out.append(text, start, pos - start).append(to);
      start = pos + from.size();
      pos = text.find(from, start);
    }
    out.append(text, start, std::string::npos);
    text = std::move(out);
  }
  return text;
}

}  // namespace

std::string HfTokenizerImpl::decode(const std::vector<std::int32_t>& ids,
                                    bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (std::int32_t id : ids) {
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_token.size()) continue;
    if (skip_special_tokens && special_flags[static_cast<std::size_t>(id)]) continue;
    const std::string& token = id_to_token[static_cast<std::size_t>(id)];
    if (token.empty()) continue;
    tokens.push_back(token);
  }
  std::string text;
  if (!has_decoder) {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text += ' ';
      text += tokens[i];
    }
  } else {
    for (const auto& step : decoder) {
      switch (step.kind) {
        case detail::DecoderStep::kByteLevel: decode_byte_level(*this, tokens); break;
        case detail::DecoderStep::kReplace:
          for (auto& token : tokens) {
            // A regex that fails to match (resource limits) leaves the token as it is.
            (void)replace_all(token, step.literal, step.regex, step.content);
          }
          break;
        case detail::DecoderStep::kByteFallback: decode_byte_fallback(tokens); break;
        case detail::DecoderStep::kFuse: {
          std::string all;
          for (const auto& token : tokens) all += token;
          tokens.assign(1, std::move(all));
          break;
        }
        case detail::DecoderStep::kStrip:
          for (auto& token : tokens) strip_token(token, step.content, step.start, step.stop);
          break;
        case detail::DecoderStep::kMetaspace:
          for (std::size_t i = 0; i < tokens.size(); ++i) {
            (void)replace_all(tokens[i], step.content, std::nullopt, " ");
            if (i == 0 && !tokens[i].empty() && tokens[i][0] == ' ') tokens[i].erase(0, 1);
          }
          break;
      }
    }
    for (const auto& token : tokens) text += token;
  }
  if (clean_up_spaces) text = clean_up_tokenization(std::move(text));
  return text;
}

// ---- loading ---------------------------------------------------------------------------------

Result<std::shared_ptr<HfTokenizerImpl>> HfTokenizerImpl::build(const Sources& sources) {
  // The parsers check types before reading; this catches what they missed (a JSON value of an
  // unexpected type), so a bad file is an error, never an exception out of load().
  try {
    return build_checked(sources);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(sources.origin + ": unexpected JSON: " + e.what());
  }
}

Result<std::shared_ptr<HfTokenizerImpl>> HfTokenizerImpl::build_checked(const Sources& sources) {
  const std::string& origin = sources.origin;
  Json tokenizer;
  Json config = Json::object();
  try {
    tokenizer = Json::parse(sources.tokenizer_json);
    if (!sources.config_json.empty()) config = Json::parse(sources.config_json);
  } catch (const Json::exception& e) {
    return invalid_argument(origin + ": not valid JSON: " + e.what());
  }
  if (!tokenizer.is_object()) return invalid_argument(origin + ": expected a JSON object");
  if (!config.is_object()) config = Json::object();
  Json special_map = Json::object();
  if (!sources.special_tokens_map_json.empty()) {
    try {
      special_map = Json::parse(sources.special_tokens_map_json);
    } catch (const Json::exception& e) {
      return invalid_argument("special_tokens_map.json: not valid JSON: " + std::string(e.what()));
    }
    if (!special_map.is_object()) special_map = Json::object();
  }

  auto t = std::make_shared<HfTokenizerImpl>();

  // Added tokens first: the model's tables include them.
  if (auto list = tokenizer.find("added_tokens"); list != tokenizer.end() && !list->is_null()) {
    if (!list->is_array()) return invalid_argument(origin + ": added_tokens: expected a list");
    for (std::size_t i = 0; i < list->size(); ++i) {
      const Json& a = (*list)[i];
      const std::string where = origin + ": added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() ||
          !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<std::int64_t>() < 0 ||
          a["id"].get<std::int64_t>() >= kMaxId) {
        return invalid_argument(where + ": expected {\"id\": N, \"content\": \"...\"}");
      }
      AddedTokenInfo info;
      info.content = a["content"].get<std::string>();
      info.id = a["id"].get<std::int32_t>();
      if (detail::find_invalid_utf8(info.content) != std::string_view::npos) {
        return invalid_argument(where + ".content: not valid UTF-8");
      }
      KVFLEET_ASSIGN_OR_RETURN(info.special, bool_or(a, "special", false, where));
      KVFLEET_ASSIGN_OR_RETURN(info.lstrip, bool_or(a, "lstrip", false, where));
      KVFLEET_ASSIGN_OR_RETURN(info.rstrip, bool_or(a, "rstrip", false, where));
      KVFLEET_ASSIGN_OR_RETURN(info.single_word, bool_or(a, "single_word", false, where));
      KVFLEET_ASSIGN_OR_RETURN(info.normalized, bool_or(a, "normalized", !info.special, where));
      t->added.push_back(std::move(info));
    }
  }

  auto present = [&](const char* key) {
    auto it = tokenizer.find(key);
    return it != tokenizer.end() && !it->is_null();
  };
  if (present("normalizer")) {
    KVFLEET_ASSIGN_OR_RETURN(t->normalizer,
                             parse_normalizer(tokenizer["normalizer"], origin + ": normalizer"));
  }
  if (present("pre_tokenizer")) {
    KVFLEET_ASSIGN_OR_RETURN(t->pre_tokenizer, parse_pre_tokenizer(tokenizer["pre_tokenizer"],
                                                                   origin + ": pre_tokenizer"));
  }
  bool byte_level = false;
  for (std::size_t i = 0; i < t->pre_tokenizer.size(); ++i) {
    if (t->pre_tokenizer[i].kind != detail::PreTokenizerStep::kByteLevel) continue;
    if (i + 1 != t->pre_tokenizer.size()) {
      return unimplemented(origin +
                           ": pre_tokenizer: a ByteLevel step must be the last one (it is not)");
    }
    byte_level = true;
  }
  KVFLEET_RETURN_IF_ERROR(parse_model(tokenizer, origin, byte_level, *t));
  if (present("decoder")) {
    t->has_decoder = true;
    KVFLEET_ASSIGN_OR_RETURN(t->decoder, parse_decoder(tokenizer["decoder"], origin + ": decoder"));
  }
  if (present("post_processor")) {
    KVFLEET_RETURN_IF_ERROR(parse_post_processor(tokenizer["post_processor"],
                                                 origin + ": post_processor", *t, t->prefix_ids,
                                                 t->suffix_ids));
  }

  // Added tokens are matched in the raw text, or, when marked normalized (and there is a
  // normalizer), in the normalized text, as their normalized form.
  for (std::size_t i = 0; i < t->added.size(); ++i) {
    const AddedTokenInfo& a = t->added[i];
    t->added_contents.insert(a.content);
    if (a.normalized && !t->normalizer.empty()) {
      std::string normalized;
      KVFLEET_RETURN_IF_ERROR(t->normalize(a.content, normalized));
      t->normalized_trie.add(normalized, static_cast<std::int32_t>(i));
      t->has_normalized_added = true;
    } else {
      t->raw_trie.add(a.content, static_cast<std::int32_t>(i));
    }
  }

  // tokenizer_config.json (and special_tokens_map.json where the config is silent).
  const std::string config_where = "tokenizer_config.json";
  auto config_token = [&](const char* key) {
    auto text = token_text(config, key);
    if (!text && !config.contains(key)) text = token_text(special_map, key);
    return text;
  };
  if (auto bos = config_token("bos_token")) {
    t->bos_token = *bos;
    if (auto it = t->token_to_id.find(*bos); it != t->token_to_id.end()) t->bos = it->second;
  }
  if (auto eos = config_token("eos_token")) {
    t->eos_token = *eos;
    if (auto it = t->token_to_id.find(*eos); it != t->token_to_id.end()) t->eos = it->second;
  }
  KVFLEET_ASSIGN_OR_RETURN(t->clean_up_spaces,
                           bool_or(config, "clean_up_tokenization_spaces", false, config_where));
  // add_bos_token / add_eos_token, when the config has them, decide what encode adds, as
  // transformers' update_post_processor does; a missing one keeps what the template does.
  const bool has_add_bos = config.contains("add_bos_token") && config["add_bos_token"].is_boolean();
  const bool has_add_eos = config.contains("add_eos_token") && config["add_eos_token"].is_boolean();
  if (has_add_bos || has_add_eos) {
    const bool add_bos = has_add_bos
                             ? config["add_bos_token"].get<bool>()
                             : t->bos && !t->prefix_ids.empty() && t->prefix_ids.front() == *t->bos;
    const bool add_eos = has_add_eos
                             ? config["add_eos_token"].get<bool>()
                             : t->eos && !t->suffix_ids.empty() && t->suffix_ids.back() == *t->eos;
    if (add_bos && !t->bos) {
      return invalid_argument(config_where +
                              ": add_bos_token is true but bos_token is not a token");
    }
    if (add_eos && !t->eos) {
      return invalid_argument(config_where +
                              ": add_eos_token is true but eos_token is not a token");
    }
    t->prefix_ids.clear();
    t->suffix_ids.clear();
    if (add_bos) t->prefix_ids.push_back(*t->bos);
    if (add_eos) t->suffix_ids.push_back(*t->eos);
  }

  // Special tokens: added tokens marked special, and additional_special_tokens.
  t->special_flags.assign(t->id_to_token.size(), 0);
  auto mark_special = [&](std::int32_t id) {
    if (!t->special_flags[static_cast<std::size_t>(id)]) {
      t->special_flags[static_cast<std::size_t>(id)] = 1;
      t->special_ids.push_back(id);
    }
  };
  for (const auto& a : t->added) {
    if (a.special) mark_special(a.id);
  }
  const Json* additional = nullptr;
  if (config.contains("additional_special_tokens")) {
    additional = &config["additional_special_tokens"];
  } else if (special_map.contains("additional_special_tokens")) {
    additional = &special_map["additional_special_tokens"];
  }
  if (additional != nullptr && additional->is_array()) {
    for (const Json& item : *additional) {
      std::string text;
      if (item.is_string()) {
        text = item.get<std::string>();
      } else if (item.is_object() && item.contains("content") && item["content"].is_string()) {
        text = item["content"].get<std::string>();
      }
      if (auto it = t->token_to_id.find(text); it != t->token_to_id.end()) mark_special(it->second);
    }
  }

  // Ends of generation.
  if (t->eos) t->eos_ids.push_back(*t->eos);
  if (!sources.generation_config_json.empty()) {
    try {
      Json generation = Json::parse(sources.generation_config_json);
      if (generation.is_object() && generation.contains("eos_token_id")) {
        Json eos = generation["eos_token_id"];
        if (!eos.is_array()) eos = Json::array({eos});
        for (const Json& id : eos) {
          if (!id.is_number_integer()) continue;
          const auto value = id.get<std::int64_t>();
          if (value < 0 || value >= static_cast<std::int64_t>(t->id_to_token.size())) continue;
          const auto id32 = static_cast<std::int32_t>(value);
          if (std::find(t->eos_ids.begin(), t->eos_ids.end(), id32) == t->eos_ids.end()) {
            t->eos_ids.push_back(id32);
          }
        }
      }
    } catch (const Json::exception& e) {
      return invalid_argument("generation_config.json: not valid JSON: " + std::string(e.what()));
    }
  }

  // The chat template.
  if (!sources.chat_template_jinja.empty()) {
    t->chat_template = sources.chat_template_jinja;
  } else if (config.contains("chat_template")) {
    const Json& ct = config["chat_template"];
    if (ct.is_string()) {
      t->chat_template = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const Json& named : ct) {
        if (!named.is_object() || !named.contains("template") || !named["template"].is_string()) {
          continue;
        }
        if (t->chat_template.empty() || named.value("name", "") == "default") {
          t->chat_template = named["template"].get<std::string>();
        }
      }
    }
  }

  // Bytes of each token (logprobs): byte-level tokens as their bytes, byte-fallback tokens as
  // the byte, SentencePiece's "▁" as a space, added tokens as their text.
  bool metaspace_to_space = false;
  for (const auto& step : t->decoder) {
    if (step.kind == detail::DecoderStep::kMetaspace) metaspace_to_space = true;
    if (step.kind == detail::DecoderStep::kReplace && step.literal == kMetaspace &&
        step.content == " ") {
      metaspace_to_space = true;
    }
  }
  t->id_to_bytes.resize(t->id_to_token.size());
  for (std::size_t id = 0; id < t->id_to_token.size(); ++id) {
    const std::string& token = t->id_to_token[id];
    std::string& bytes = t->id_to_bytes[id];
    if (t->added_contents.count(token) != 0) {
      bytes = token;
    } else if (byte_level) {
      std::size_t i = 0;
      while (i < token.size()) {
        const int b = detail::unicode_to_byte(detail::next_code_point(token, i));
        bytes.push_back(static_cast<char>(b < 0 ? 0 : b));
      }
    } else if (const int b = parse_byte_token(token); b >= 0) {
      bytes.push_back(static_cast<char>(b));
    } else {
      bytes = token;
      if (metaspace_to_space) (void)replace_all(bytes, std::string(kMetaspace), std::nullopt, " ");
    }
  }
  return t;
}

// ---- HfTokenizer -----------------------------------------------------------------------------

namespace {

Result<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot read '" + path.string() + "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return io_error("error reading '" + path.string() + "'");
  return text.str();
}

}  // namespace

Result<HfTokenizer> HfTokenizer::load(const std::filesystem::path& path) {
  std::error_code ec;
  const bool is_dir = std::filesystem::is_directory(path, ec);
  const std::filesystem::path dir = is_dir ? path : path.parent_path();
  const std::filesystem::path file = is_dir ? path / "tokenizer.json" : path;
  if (!std::filesystem::exists(file, ec)) {
    return not_found("no tokenizer.json at '" + file.string() + "'");
  }
  HfTokenizerImpl::Sources sources;
  sources.origin = file.string();
  KVFLEET_ASSIGN_OR_RETURN(sources.tokenizer_json, read_file(file));
  auto optional_file = [&](const char* name, std::string& out) -> Status {
    const auto p = dir / name;
    if (!std::filesystem::exists(p, ec)) return Status::ok();
    KVFLEET_ASSIGN_OR_RETURN(out, read_file(p));
    return Status::ok();
  };
  KVFLEET_RETURN_IF_ERROR(optional_file("tokenizer_config.json", sources.config_json));
  KVFLEET_RETURN_IF_ERROR(
      optional_file("special_tokens_map.json", sources.special_tokens_map_json));
  KVFLEET_RETURN_IF_ERROR(optional_file("generation_config.json", sources.generation_config_json));
  KVFLEET_RETURN_IF_ERROR(optional_file("chat_template.jinja", sources.chat_template_jinja));
  KVFLEET_ASSIGN_OR_RETURN(auto impl, HfTokenizerImpl::build(sources));
  return HfTokenizer(std::move(impl));
}

Result<HfTokenizer> HfTokenizer::from_json(std::string_view tokenizer_json,
                                           std::string_view tokenizer_config_json,
                                           std::string_view origin) {
  HfTokenizerImpl::Sources sources;
  sources.origin = origin;
  sources.tokenizer_json = tokenizer_json;
  sources.config_json = tokenizer_config_json;
  KVFLEET_ASSIGN_OR_RETURN(auto impl, HfTokenizerImpl::build(sources));
  return HfTokenizer(std::move(impl));
}

Result<std::vector<std::int32_t>> HfTokenizer::encode(std::string_view text,
                                                      bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string HfTokenizer::decode(const std::vector<std::int32_t>& ids,
                                bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::string HfTokenizer::token_bytes(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= impl_->id_to_bytes.size()) return {};
  return impl_->id_to_bytes[static_cast<std::size_t>(id)];
}

std::string HfTokenizer::token_string(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= impl_->id_to_token.size()) return {};
  return impl_->id_to_token[static_cast<std::size_t>(id)];
}

std::optional<std::int32_t> HfTokenizer::token_id(std::string_view token) const {
  auto it = impl_->token_to_id.find(std::string(token));
  if (it == impl_->token_to_id.end()) return std::nullopt;
  return it->second;
}

std::int32_t HfTokenizer::vocab_size() const {
  return static_cast<std::int32_t>(impl_->id_to_token.size());
}

std::optional<std::int32_t> HfTokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<std::int32_t> HfTokenizer::eos_id() const {
  return impl_->eos;
}
std::string HfTokenizer::bos_token() const {
  return impl_->bos_token;
}
std::string HfTokenizer::eos_token() const {
  return impl_->eos_token;
}
std::vector<std::int32_t> HfTokenizer::eos_ids() const {
  return impl_->eos_ids;
}
const std::vector<std::int32_t>& HfTokenizer::special_tokens() const {
  return impl_->special_ids;
}
bool HfTokenizer::is_special(std::int32_t id) const {
  return id >= 0 && static_cast<std::size_t>(id) < impl_->special_flags.size() &&
         impl_->special_flags[static_cast<std::size_t>(id)] != 0;
}
const std::string& HfTokenizer::chat_template() const {
  return impl_->chat_template;
}

}  // namespace kvfleet::tokenizer
