#pragma once
// Text for tokenizer tests and benchmarks: many scripts and the cases tokenizers get wrong
// (accents and combining marks, CJK, Arabic, Hindi, Cyrillic, Thai, emoji with ZWJ sequences
// and flags, code, runs of spaces, tabs and CRLF, long numbers, special-token text embedded in
// prose, English contractions, random bytes made valid UTF-8). Deterministic for a seed.

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/text.h"

namespace kvfleet::bench {

namespace corpus_detail {

inline const std::vector<std::vector<std::string_view>>& fragment_pools() {
  static const std::vector<std::vector<std::string_view>> pools = {
      // Latin with accents, and decomposed forms NFC composes.
      {"café", "naïve", "Zürich", "São Paulo", "Ångström", "façade", "élève", "Œuvre", "straße",
       "e\u0301te\u0301", "A\u030A", "ñandú", "Łódź", "Dvořák", "İstanbul", "ǅ", "ﬁne"},
      // CJK, Korean (Hangul jamo compose under NFC).
      {"日本語のテキストです。", "中文测试文本", "漢字かなカナ", "한국어 텍스트",
       "\u1100\u1161\u11A8", "東京タワー", "你好，世界！", "（全角）", "ｈａｌｆ"},
      // Arabic, Hebrew, Hindi, Cyrillic, Thai, Greek.
      {"مرحبا بالعالم", "السَّلَامُ عَلَيْكُمْ", "שלום עולם", "नमस्ते दुनिया", "हिन्दी", "Привет, мир",
       "Съешь же ещё этих мягких французских булок", "สวัสดีชาวโลก", "ภาษาไทย", "Γειά σου Κόσμε",
       "Ελληνικά"},
      // Emoji: modifiers, ZWJ sequences, flags, variation selectors.
      {"😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸🇫🇷", "❤️",
       "🧑🏿‍💻", "🤖", "✨✨", "👩‍❤️‍💋‍👨", "☕"},
      // Code.
      {"def f(x):\n    return x**2\n", "int main() { return 0; }", "for (let i = 0; i < n; ++i) {}",
       "<div class=\"a\">&nbsp;</div>", "SELECT * FROM t WHERE id=42;", "#include <vector>\n",
       "fn main() -> Result<(), E> {}", "x = {'k': [1, 2, 3]}", "if err != nil {\n\treturn err\n}",
       "$ ls -la | grep '.cpp'"},
      // White space.
      {"   ", "\t\t", "\n\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\t \t", "\r\n\r\n", "    \n",
       "\v", "\f", "\u2028", "\u200b"},
      // Special-token text (real ones for some of the tokenizers, near misses for others).
      {"<|im_start|>",
       "<|im_end|>",
       "<s>",
       "</s>",
       "<|begin_of_text|>",
       "<|eot_id|>",
       "<bos>",
       "<eos>",
       "<unk>",
       "<pad>",
       "<think>",
       "</think>",
       "<start_of_turn>",
       "<end_of_turn>",
       "<|endoftext|>",
       "<|im_sta",
       "<s",
       "<<s>>",
       "<|start_header_id|>",
       "<tool_call>"},
      // Contractions and punctuation.
      {"I'm",          "don't",    "it's", "they're", "we've", "I'll", "he'd", "IT'S",
       "DON'T",        " .",       " ,",   " !",      " ?",    "...",  "—",    "–",
       "«guillemets»", "“quoted”", "n't",  " 's",     "'",     "' '"},
      // Plain English.
      {"The quick brown fox jumps over the lazy dog.", "Hello, world!", "tokenization",
       "Lorem ipsum dolor sit amet", "state-of-the-art", "e.g.", "U.S.A.", "HTTP/1.1"},
  };
  return pools;
}

inline std::string random_number(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> len(1, 40), digit(0, 9), kind(0, 3);
  std::string s;
  const int n = len(rng);
  for (int i = 0; i < n; ++i) s += static_cast<char>('0' + digit(rng));
  switch (kind(rng)) {
    case 0: return s;
    case 1: return s + "." + std::to_string(digit(rng)) + std::to_string(digit(rng));
    case 2: return "-" + s;
    default: return "1,000,000 and " + s;
  }
}

// Random bytes, invalid sequences replaced by U+FFFD, so the text is valid UTF-8.
inline std::string random_bytes_text(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> len(1, 24), byte(0, 255);
  std::string bytes;
  const int n = len(rng);
  for (int i = 0; i < n; ++i) bytes += static_cast<char>(byte(rng));
  return tokenizer::detail::decode_utf8_lossy(bytes, /*strip_bom=*/false);
}

// Random code points from long-assigned blocks (so Unicode versions agree on them).
inline std::string random_code_points(std::mt19937_64& rng) {
  static constexpr std::pair<char32_t, char32_t> kRanges[] = {
      {0x20, 0x7E},     {0xA0, 0x17F},    {0x300, 0x36F},     {0x391, 0x3C9},  {0x410, 0x44F},
      {0x5D0, 0x5EA},   {0x621, 0x64A},   {0x905, 0x939},     {0xE01, 0xE3A},  {0x3041, 0x3096},
      {0x4E00, 0x9FA5}, {0xAC00, 0xD7A3}, {0x1F300, 0x1F64F}, {0x2000, 0x206F}};
  std::uniform_int_distribution<std::size_t> range(0, std::size(kRanges) - 1);
  std::uniform_int_distribution<int> len(1, 16);
  std::string s;
  const int n = len(rng);
  for (int i = 0; i < n; ++i) {
    const auto [lo, hi] = kRanges[range(rng)];
    std::uniform_int_distribution<std::uint32_t> cp(lo, hi);
    tokenizer::detail::append_utf8(s, cp(rng));
  }
  return s;
}

inline std::string random_piece(std::mt19937_64& rng) {
  const auto& pools = fragment_pools();
  std::uniform_int_distribution<std::size_t> which(0, pools.size() + 2);
  const std::size_t k = which(rng);
  if (k == pools.size()) return random_number(rng);
  if (k == pools.size() + 1) return random_bytes_text(rng);
  if (k == pools.size() + 2) return random_code_points(rng);
  std::uniform_int_distribution<std::size_t> item(0, pools[k].size() - 1);
  return std::string(pools[k][item(rng)]);
}

}  // namespace corpus_detail

// `count` strings (plus a few fixed edge cases first): each joins 1-12 random pieces with
// random separators.
inline std::vector<std::string> tokenizer_corpus(std::uint64_t seed, std::size_t count) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> corpus = {
      "",
      " ",
      "a",
      "\n",
      "  ",
      "Hello world",
      "<s>",
      "<|im_start|>",
      "<|begin_of_text|>",
      std::string(3000, 'a'),
      std::string(1000, ' '),
      std::string(500, '9'),
      std::string(800, '\n'),
      "\xEF\xBB\xBF"
      "bom",
      "<s><s></s>",
  };
  std::uniform_int_distribution<int> pieces(1, 12), sep(0, 5);
  static constexpr std::string_view kSeparators[] = {" ", "", "\n", "\t", ". ", "  "};
  while (corpus.size() < count + 15) {
    std::string s;
    const int n = pieces(rng);
    for (int i = 0; i < n; ++i) {
      if (i > 0) s += kSeparators[sep(rng)];
      s += corpus_detail::random_piece(rng);
    }
    corpus.push_back(std::move(s));
  }
  return corpus;
}

// About `bytes` of mixed-language text in lines of up to a few hundred bytes, as prompts look:
// mostly prose and code, some of every other script.
inline std::vector<std::string> tokenizer_bench_lines(std::uint64_t seed, std::size_t bytes) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> lines;
  std::size_t total = 0;
  std::uniform_int_distribution<int> words(8, 60), kind(0, 9);
  const auto& pools = corpus_detail::fragment_pools();
  while (total < bytes) {
    std::string line;
    const int n = words(rng);
    for (int i = 0; i < n; ++i) {
      const int k = kind(rng);
      std::string piece;
      if (k < 5) {
        std::uniform_int_distribution<std::size_t> item(0, pools[8].size() - 1);
        piece = pools[8][item(rng)];
      } else if (k < 7) {
        std::uniform_int_distribution<std::size_t> item(0, pools[4].size() - 1);
        piece = pools[4][item(rng)];
      } else {
        piece = corpus_detail::random_piece(rng);
      }
      if (i > 0) line += ' ';
      line += piece;
    }
    total += line.size() + 1;
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace kvfleet::bench
