#pragma once
// Text helpers of the tokenizer (internal to tokenizer/): UTF-8 checks and decoding with
// replacement, Unicode normalization (ICU), the GPT-2 byte-to-character alphabet, and PCRE2
// regexes with Oniguruma's meaning of \s.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvfleet::tokenizer::detail {

// Byte offset of the first byte that does not start a valid UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF are invalid), or std::string_view::npos.
std::size_t find_invalid_utf8(std::string_view text);

// The code point at byte `i` of valid UTF-8 `text`; advances `i` past it.
char32_t next_code_point(std::string_view text, std::size_t& i);
void append_utf8(std::string& out, char32_t cp);

// Bytes to valid UTF-8 as the WHATWG decoder (TextDecoder, fatal: false) does it: each maximal
// invalid subpart becomes U+FFFD. With `strip_bom`, a leading U+FEFF is dropped (TextDecoder's
// default, ignoreBOM: false).
std::string decode_utf8_lossy(std::string_view bytes, bool strip_bom);

// Whether `bytes` ends with the start of a UTF-8 sequence that more bytes could complete (e.g.
// "\xE6\xA1"): a decoder's U+FFFD for it is not final yet.
bool ends_incomplete_utf8(std::string_view bytes);

// White space as JavaScript's trim() and \s see it.
bool is_js_whitespace(char32_t cp);
// Letters, digits and '_' (Unicode), for added tokens marked single_word.
bool is_word_char(char32_t cp);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// `text` (valid UTF-8) in the normal form; ICU errors become a Status.
Result<std::string> normalize_unicode(std::string_view text, NormalForm form);

// GPT-2's byte-level alphabet: byte -> the character standing for it, and back (-1: none).
const std::array<char32_t, 256>& byte_to_unicode();
int unicode_to_byte(char32_t cp);

// A compiled PCRE2 pattern (UTF and Unicode properties, JIT when the library has it). Shared
// and immutable after compile; matching may run on many threads at once.
class Regex {
 public:
  // `literal`: the pattern is a plain string. Otherwise \s and \S mean White_Space, as in
  // Oniguruma (tokenizers' regex library) and the reference, whatever PCRE2's version says.
  static Result<Regex> compile(std::string_view pattern, bool literal);

  // Appends the [begin, end) byte ranges of the non-overlapping, non-empty matches in `text`
  // (valid UTF-8) to `out`.
  Status find_all(std::string_view text,
                  std::vector<std::pair<std::size_t, std::size_t>>& out) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
};

}  // namespace kvfleet::tokenizer::detail
