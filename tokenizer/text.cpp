#include "tokenizer/text.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace kvfleet::tokenizer::detail {

std::size_t find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return i;
    }
    if (i + need >= n) return i;  // cut short by the end of the text
    for (std::size_t k = 1; k <= need; ++k) {
      const unsigned char c = s[i + k];
      const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (c < l || c > h) return i;
    }
    i += need + 1;
  }
  return std::string_view::npos;
}

char32_t next_code_point(std::string_view text, std::size_t& i) {
  const auto b = static_cast<unsigned char>(text[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  const int len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
  char32_t cp = b & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  i += static_cast<std::size_t>(len);
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string decode_utf8_lossy(std::string_view bytes, bool strip_bom) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  static constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (strip_bom && bytes.substr(0, 3) == kBom) bytes.remove_prefix(3);
  std::string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      out += kReplacement;
      ++i;
      continue;
    }
    // The WHATWG decoder: a sequence ends at the first byte outside the allowed range, which is
    // then read again on its own; the bytes before it become one U+FFFD.
    std::size_t k = 1;
    for (; k <= need; ++k) {
      if (i + k >= n) break;
      const unsigned char c = s[i + k];
      const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (c < l || c > h) break;
    }
    if (k == need + 1) {
      out.append(bytes.substr(i, need + 1));
    } else {
      out += kReplacement;
    }
    i += k;
  }
  return out;
}

bool ends_incomplete_utf8(std::string_view bytes) {
  const std::size_t n = bytes.size();
  for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(bytes[n - back]);
    if (b < 0x80) return false;
    if (b < 0xC0) continue;  // a continuation byte: look further back for the lead
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (back - 1 >= need) return false;  // complete (or followed by strays)
    for (std::size_t k = 1; k < back; ++k) {
      const auto c = static_cast<unsigned char>(bytes[n - back + k]);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) return false;
    }
    return true;
  }
  return false;
}

bool is_js_whitespace(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool is_word_char(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           cp == '_';
  }
  return u_isalnum(static_cast<UChar32>(cp)) != 0;
}

Result<std::string> normalize_unicode(std::string_view text, NormalForm form) {
  bool ascii = true;
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return std::string(text);  // every normal form of ASCII is itself

  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* normalizer = nullptr;
  switch (form) {
    case NormalForm::kNfc: normalizer = unorm2_getNFCInstance(&err); break;
    case NormalForm::kNfd: normalizer = unorm2_getNFDInstance(&err); break;
    case NormalForm::kNfkc: normalizer = unorm2_getNFKCInstance(&err); break;
    case NormalForm::kNfkd: normalizer = unorm2_getNFKDInstance(&err); break;
  }
  auto icu_error = [&](const char* what) {
    return internal_error(std::string("Unicode normalization (ICU ") + what +
                          "): " + u_errorName(err));
  };
  if (U_FAILURE(err)) return icu_error("instance");
  if (text.size() > static_cast<std::size_t>(INT32_MAX / 4)) {
    return invalid_argument("text too long to normalize");
  }
  std::u16string wide(text.size(), u'\0');  // UTF-16 needs at most one unit per UTF-8 byte
  int32_t wide_len = 0;
  u_strFromUTF8(wide.data(), static_cast<int32_t>(wide.size()), &wide_len, text.data(),
                static_cast<int32_t>(text.size()), &err);
  if (U_FAILURE(err)) return icu_error("from UTF-8");
  if (unorm2_quickCheck(normalizer, wide.data(), wide_len, &err) == UNORM_YES && U_SUCCESS(err)) {
    return std::string(text);
  }
  err = U_ZERO_ERROR;
  std::u16string normal(static_cast<std::size_t>(wide_len) * 4 + 16, u'\0');
  int32_t normal_len = unorm2_normalize(normalizer, wide.data(), wide_len, normal.data(),
                                        static_cast<int32_t>(normal.size()), &err);
  if (err == U_BUFFER_OVERFLOW_ERROR) {
    err = U_ZERO_ERROR;
    normal.assign(static_cast<std::size_t>(normal_len), u'\0');
    normal_len = unorm2_normalize(normalizer, wide.data(), wide_len, normal.data(),
                                  static_cast<int32_t>(normal.size()), &err);
  }
  if (U_FAILURE(err)) return icu_error("normalize");
  std::string out(static_cast<std::size_t>(normal_len) * 3, '\0');
  int32_t out_len = 0;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &out_len, normal.data(), normal_len,
              &err);
  if (U_FAILURE(err)) return icu_error("to UTF-8");
  out.resize(static_cast<std::size_t>(out_len));
  return out;
}

namespace {

struct ByteAlphabet {
  std::array<char32_t, 256> to_unicode{};
  std::array<int, 512> to_byte{};  // every character of the alphabet is below U+0200
  ByteAlphabet() {
    to_byte.fill(-1);
    char32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_unicode[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : extra++;
      to_byte[to_unicode[static_cast<std::size_t>(b)]] = b;
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// Unicode's White_Space property, as a class body ("[...]" without the brackets): what \s
// means in Oniguruma, the regex library of tokenizers, and in the reference's translation.
constexpr std::string_view kWhiteSpaceClass =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Rewrites \s and \S (outside character classes) and \s (inside them) to White_Space.
std::string white_space_pattern(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      if (e == 's') {
        if (in_class) {
          out += kWhiteSpaceClass;
        } else {
          out += "[";
          out += kWhiteSpaceClass;
          out += "]";
        }
      } else if (e == 'S' && !in_class) {
        out += "[^";
        out += kWhiteSpaceClass;
        out += "]";
      } else {
        out += c;
        out += e;
      }
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // "[]" and "[^]" start a class whose first member is ']'.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

}  // namespace

const std::array<char32_t, 256>& byte_to_unicode() {
  return byte_alphabet().to_unicode;
}

int unicode_to_byte(char32_t cp) {
  return cp < 512 ? byte_alphabet().to_byte[cp] : -1;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

Result<Regex> Regex::compile(std::string_view pattern, bool literal) {
  const std::string source = literal ? std::string(pattern) : white_space_pattern(pattern);
  uint32_t options = PCRE2_UTF | PCRE2_UCP;  // the pattern's UTF-8 is checked
  if (literal) options |= PCRE2_LITERAL;
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto code = std::make_shared<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options,
                             &error, &offset, nullptr);
  if (code->code == nullptr) {
    std::array<PCRE2_UCHAR, 256> message{};
    pcre2_get_error_message(error, message.data(), message.size());
    return invalid_argument("regex '" + std::string(pattern) + "' does not compile at offset " +
                            std::to_string(offset) + ": " +
                            reinterpret_cast<const char*>(message.data()));
  }
  pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE);  // fails harmlessly where there is no JIT
  Regex regex;
  regex.code_ = std::move(code);
  return regex;
}

Status Regex::find_all(std::string_view text,
                       std::vector<std::pair<std::size_t, std::size_t>>& out) const {
  thread_local MatchScratch scratch;
  if (scratch.data == nullptr) return internal_error("PCRE2 match data: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                               scratch.data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(rc, message.data(), message.size());
      return internal_error(std::string("regex match failed: ") +
                            reinterpret_cast<const char*>(message.data()));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
    const std::size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      out.emplace_back(begin, end);
      start = end;
    } else {
      // An empty match: try again one character further on.
      if (begin >= text.size()) break;
      std::size_t next = begin;
      next_code_point(text, next);
      start = next;
    }
  }
  return Status::ok();
}

}  // namespace kvfleet::tokenizer::detail
