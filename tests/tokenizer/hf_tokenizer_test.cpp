// HfTokenizer on small tokenizer.json files written here: byte-level and SentencePiece-style
// BPE, special tokens, tokenizer_config.json settings, bad input and unsupported files.

#include "tokenizer/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/test_util.h"
#include "tokenizer/incremental_decoder.h"
#include "tokenizer/text.h"

namespace kvfleet::tokenizer {
namespace {

using Json = nlohmann::json;

// A byte-level BPE (GPT-2 alphabet): the 256 byte tokens, merges making "hello" and " world",
// "<s>" (special) and "<x>" (not special) as added tokens, BOS by a TemplateProcessing.
Json byte_level_json() {
  Json vocab = Json::object();
  const auto& alphabet = detail::byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    detail::append_utf8(ch, alphabet[static_cast<std::size_t>(b)]);
    vocab[ch] = b;
  }
  const char* merged[] = {"he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"};
  int id = 256;
  for (const char* m : merged) vocab[m] = id++;
  Json merges = Json::array({"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d"});
  merges.push_back(Json::array({"Ġwor", "ld"}));  // the newer [a, b] form
  return {
      {"version", "1.0"},
      {"added_tokens", Json::array({{{"id", 300}, {"content", "<s>"}, {"special", true}},
                                    {{"id", 301}, {"content", "<x>"}, {"special", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         Json::array(
             {{{"type", "Split"},
               {"pattern", {{"Regex", " ?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+|\\s+"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {300}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", false}}},
  };
}

// A SentencePiece-style BPE: "▁" for spaces by normalizers, byte fallback, Llama 2's decoder.
Json sentencepiece_json() {
  Json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t :
       {"▁", "h", "i", "t", "e", "r", "▁h", "▁hi", "▁t", "he", "▁the", "re", "▁there"}) {
    vocab[t] = id++;
  }
  return {
      {"added_tokens", Json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                    {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}}})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         Json::array({{{"type", "Prepend"}, {"prepend", "▁"}},
                      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         Json::array({{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", Json::array({"▁ h", "▁h i", "▁ t", "h e", "▁t he", "r e", "▁the re"})},
        {"unk_token", "<unk>"},
        {"byte_fallback", true},
        {"fuse_unk", true}}},
  };
}

HfTokenizer load_json(const Json& tokenizer, const Json& config = Json::object()) {
  auto t = HfTokenizer::from_json(tokenizer.dump(), config.dump());
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  return std::move(t).value();
}

std::vector<std::int32_t> encode(const HfTokenizer& t, std::string_view text, bool special) {
  auto ids = t.encode(text, special);
  EXPECT_TRUE(ids.is_ok()) << ids.status().to_string();
  return ids.is_ok() ? *ids : std::vector<std::int32_t>{};
}

TEST(HfTokenizer, ByteLevelMergesAndSpecialTokens) {
  const HfTokenizer t = load_json(byte_level_json());
  EXPECT_EQ(t.vocab_size(), 302);
  EXPECT_EQ(encode(t, "hello world", false), (std::vector<std::int32_t>{259, 264}));
  EXPECT_EQ(encode(t, "hello world", true), (std::vector<std::int32_t>{300, 259, 264}));
  // Added tokens in the text are matched whether or not special tokens are added.
  EXPECT_EQ(encode(t, "<s>hello<x>", false), (std::vector<std::int32_t>{300, 259, 301}));
  EXPECT_EQ(t.decode({300, 259, 301, 264}, false), "<s>hello<x> world");
  EXPECT_EQ(t.decode({300, 259, 301, 264}, true), "hello<x> world");  // <x> is not special
  EXPECT_EQ(t.token_string(264), "Ġworld");
  EXPECT_EQ(t.token_bytes(264), " world");
  EXPECT_EQ(t.token_bytes(0xC3), "\xC3");  // half a character
  EXPECT_EQ(t.token_id("Ġworld"), 264);
  EXPECT_EQ(t.token_id("<s>"), 300);
  EXPECT_FALSE(t.token_id("nope").has_value());
  EXPECT_TRUE(t.is_special(300));
  EXPECT_FALSE(t.is_special(301));
  // Bytes outside any merge, and their decode.
  const std::string text = "naïve 日本 🇯🇵\r\n\t 12345";
  EXPECT_EQ(t.decode(encode(t, text, false), false), text);
  // Ids outside the vocabulary are skipped; lone bytes decode to U+FFFD.
  EXPECT_EQ(t.decode({259, -1, 5000, 0xC3}, false), "hello\xEF\xBF\xBD");
}

TEST(HfTokenizer, InvalidUtf8IsAnError) {
  const HfTokenizer t = load_json(byte_level_json());
  for (std::string_view bad : {std::string_view("\xFF"), std::string_view("ok \xC3"),
                               std::string_view("\xED\xA0\x80"),  // a surrogate
                               std::string_view("\xC0\xAF"),      // overlong
                               std::string_view("\xF4\x90\x80\x80")}) {
    auto ids = t.encode(bad, true);
    ASSERT_FALSE(ids.is_ok());
    EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(ids.status().message().find("UTF-8"), std::string::npos);
  }
  EXPECT_TRUE(t.encode(std::string_view("nul \0 inside", 12), false).is_ok());
}

TEST(HfTokenizer, SentencePieceStyleWithByteFallback) {
  const HfTokenizer t =
      load_json(sentencepiece_json(), {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  // "▁hi▁there": merges; "é" has no token and becomes its two bytes.
  EXPECT_EQ(encode(t, "hi there", true), (std::vector<std::int32_t>{1, 266, 271}));
  EXPECT_EQ(encode(t, "hi é", false), (std::vector<std::int32_t>{266, 259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t.decode(encode(t, "hi é there", true), true), "hi é there");
  EXPECT_EQ(t.decode(encode(t, " hi", false), false), " hi");  // only the prepended ▁ goes
  EXPECT_EQ(t.token_bytes(266), " hi");
  EXPECT_EQ(t.token_bytes(3 + 0x0A), "\n");
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.bos_token(), "<s>");
}

TEST(HfTokenizer, AddBosAndEosFromTheConfigOverrideTheTemplate) {
  const Json tok = sentencepiece_json();
  const HfTokenizer none = load_json(tok, {{"bos_token", "<s>"}, {"add_bos_token", false}});
  EXPECT_EQ(encode(none, "hi", true), (std::vector<std::int32_t>{266}));
  const HfTokenizer both =
      load_json(tok, {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_eos_token", true}});
  EXPECT_EQ(encode(both, "hi", true), (std::vector<std::int32_t>{1, 266, 2}));
  EXPECT_EQ(encode(both, "hi", false), (std::vector<std::int32_t>{266}));
  auto bad = HfTokenizer::from_json(tok.dump(), R"({"add_eos_token": true})");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("eos_token"), std::string::npos);
}

TEST(HfTokenizer, IncrementalDecodeJoinsBytesAndKeepsSpaces) {
  const HfTokenizer sp = load_json(sentencepiece_json());
  const std::vector<std::int32_t> ids = encode(sp, "hi é there", false);
  IncrementalDecoder d(sp, false);
  std::vector<std::string> pieces;
  for (std::int32_t id : ids) pieces.push_back(d.add(id));
  pieces.push_back(d.finish());
  // "▁hi" (no leading space: first token), "▁" (a space), <C3> (nothing yet), <A9> ("é").
  EXPECT_EQ(pieces, (std::vector<std::string>{"hi", " ", "", "é", " there", ""}));

  const HfTokenizer bl = load_json(byte_level_json());
  IncrementalDecoder b(bl, true);
  EXPECT_EQ(b.add(300), "");  // <s>, skipped
  EXPECT_EQ(b.add(0xF0), "");
  EXPECT_EQ(b.add(0x9F), "");
  EXPECT_EQ(b.add(0x98), "");
  EXPECT_EQ(b.add(0x80), "😀");
  EXPECT_EQ(b.add(0xC3), "");
  EXPECT_EQ(b.finish(), "\xEF\xBF\xBD");  // the stream ended inside a character
}

// Real U+FFFD characters in the text are final; a character split across tokens after many of
// them still comes out whole (an early version emitted its U+FFFD after 8 held tokens).
TEST(HfTokenizer, IncrementalDecodeAfterManyReplacementCharacters) {
  const HfTokenizer bl = load_json(byte_level_json());
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 12; ++i) ids.insert(ids.end(), {0xEF, 0xBF, 0xBD});
  ids.insert(ids.end(), {0xE6, 0xA1, 0xBC, 'x'});
  IncrementalDecoder d(bl, false);
  std::string joined;
  for (std::int32_t id : ids) joined += d.add(id);
  joined += d.finish();
  EXPECT_EQ(joined, bl.decode(ids, false));
  EXPECT_TRUE(detail::ends_incomplete_utf8("ab\xE6\xA1"));
  EXPECT_TRUE(detail::ends_incomplete_utf8("\xF0"));
  EXPECT_FALSE(detail::ends_incomplete_utf8("\xE6\xA1\xBC"));
  EXPECT_FALSE(detail::ends_incomplete_utf8("\xE0\x80"));  // can never complete
  EXPECT_FALSE(detail::ends_incomplete_utf8("\xBF"));
}

TEST(HfTokenizer, LoadsAModelFolder) {
  test::TempDir dir;
  dir.write("tokenizer.json", sentencepiece_json().dump());
  dir.write("tokenizer_config.json",
            Json{{"bos_token", {{"content", "<s>"}, {"__type", "AddedToken"}}},
                 {"eos_token", "</s>"},
                 {"chat_template", "{{ messages }}"},
                 {"additional_special_tokens", {"▁hi"}}}
                .dump());
  dir.write("generation_config.json", R"({"eos_token_id": [2, 266, 2]})");
  auto t = HfTokenizer::load(dir.path());
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->chat_template(), "{{ messages }}");
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->eos_ids(), (std::vector<std::int32_t>{2, 266}));
  EXPECT_TRUE(t->is_special(266));
  EXPECT_EQ(t->decode({1, 266, 271}, true), "there");  // ▁hi skipped, then the first space goes

  // chat_template.jinja wins over the config's; a tokenizer.json path works too.
  dir.write("chat_template.jinja", "{% for m in messages %}{{ m }}{% endfor %}");
  auto by_file = HfTokenizer::load(dir.path() + "/tokenizer.json");
  ASSERT_TRUE(by_file.is_ok()) << by_file.status().to_string();
  EXPECT_EQ(by_file->chat_template(), "{% for m in messages %}{{ m }}{% endfor %}");

  auto missing = HfTokenizer::load(dir.path() + "/nowhere");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

// Every unsupported part is an error naming where it is and what it is.
TEST(HfTokenizer, UnsupportedPartsAreNamedErrors) {
  struct Case {
    std::string pointer;  // JSON pointer of the part to replace
    Json value;
    std::string expected;  // in the message
  };
  const std::vector<Case> cases = {
      {"/model/type", "Unigram", "model type 'Unigram'"},
      {"/model/type", "WordPiece", "model type 'WordPiece'"},
      {"/normalizer/normalizers/1",
       {{"type", "BertNormalizer"}},
       "normalizer.normalizers[1]: normalizer type 'BertNormalizer'"},
      {"/normalizer", {{"type", "Precompiled"}}, "normalizer type 'Precompiled'"},
      {"/pre_tokenizer", {{"type", "Whitespace"}}, "pre_tokenizer type 'Whitespace'"},
      {"/decoder/decoders/2", {{"type", "CTC"}}, "decoder.decoders[2]: decoder type 'CTC'"},
      {"/post_processor", {{"type", "BertProcessing"}}, "post_processor type 'BertProcessing'"},
      {"/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "("}}}}, "does not compile"},
      {"/model/dropout", 0.1, "dropout"},
  };
  for (const Case& c : cases) {
    Json tok = sentencepiece_json();
    tok[Json::json_pointer(c.pointer)] = c.value;
    auto t = HfTokenizer::from_json(tok.dump(), "{}");
    ASSERT_FALSE(t.is_ok()) << c.pointer;
    EXPECT_NE(t.status().message().find(c.expected), std::string::npos) << t.status().to_string();
  }
  auto not_json = HfTokenizer::from_json("{\"model\": ", "{}");
  ASSERT_FALSE(not_json.is_ok());
  EXPECT_EQ(not_json.status().code(), StatusCode::kInvalidArgument);
  Json wrong_type = sentencepiece_json();
  wrong_type["model"]["type"] = 7;
  EXPECT_FALSE(HfTokenizer::from_json(wrong_type.dump(), "{}").is_ok());
  Json huge_id = sentencepiece_json();
  huge_id["model"]["vocab"]["x"] = 2000000000;
  EXPECT_FALSE(HfTokenizer::from_json(huge_id.dump(), "{}").is_ok());
  auto no_model = HfTokenizer::from_json("{}", "{}");
  ASSERT_FALSE(no_model.is_ok());
  EXPECT_NE(no_model.status().message().find("model"), std::string::npos);
}

TEST(HfTokenizer, LongWordsMergeInLinearishTime) {
  const HfTokenizer t = load_json(byte_level_json());
  std::string word;
  for (int i = 0; i < 20000; ++i) word += "hello";  // one 100 kB pre-token
  const auto ids = encode(t, word, false);
  EXPECT_EQ(ids.size(), 20000u);
  EXPECT_EQ(t.decode(ids, false), word);
}

// One tokenizer, several threads (the server's HTTP threads): the same ids as one thread.
TEST(HfTokenizer, ConcurrentEncodesAgree) {
  const HfTokenizer t = load_json(byte_level_json());
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("hello world " + std::to_string(i * 7919) + " héllo <s> wörld " +
                    std::string(static_cast<std::size_t>(i % 17), 'l'));
  }
  std::vector<std::vector<std::int32_t>> expected;
  for (const auto& text : texts) expected.push_back(encode(t, text, true));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&] {
      for (int round = 0; round < 20; ++round) {
        for (std::size_t i = 0; i < texts.size(); ++i) {
          auto ids = t.encode(texts[i], true);
          if (!ids.is_ok() || *ids != expected[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Text, LossyUtf8DecodingFollowsWhatwg) {
  // Maximal subparts: E0 80 is two U+FFFD (80 cannot follow E0), F0 9F 98 at the end is one.
  EXPECT_EQ(detail::decode_utf8_lossy("a\xE0\x80"
                                      "b",
                                      false),
            "a\uFFFD\uFFFD"
            "b");
  EXPECT_EQ(detail::decode_utf8_lossy("\xF0\x9F\x98", false), "\uFFFD");
  EXPECT_EQ(detail::decode_utf8_lossy("\xEF\xBB\xBFx", true), "x");
  EXPECT_EQ(detail::decode_utf8_lossy("\xEF\xBB\xBFx", false), "\xEF\xBB\xBFx");
}

TEST(Text, RegexWhiteSpaceIsUnicodes) {
  auto re = detail::Regex::compile("\\s+", false);
  ASSERT_TRUE(re.is_ok());
  std::vector<std::pair<std::size_t, std::size_t>> m;
  ASSERT_TRUE(re->find_all("a\xEF\xBB\xBF\xC2\x85"
                           "b",
                           m)
                  .is_ok());
  // U+0085 is White_Space (as Oniguruma's \s); U+FEFF is not (JavaScript's \s would take it).
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (std::pair<std::size_t, std::size_t>{4, 6}));
}

}  // namespace
}  // namespace kvfleet::tokenizer
