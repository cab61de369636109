#include "chat/jinja_text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace kvfleet::chat::text {

std::uint32_t decode_utf8(std::string_view s, std::size_t i, std::size_t* length) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(i);
  *length = 1;
  if (b0 < 0x80) return b0;
  int extra = 0;
  std::uint32_t cp = 0;
  std::uint32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    extra = 1, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    extra = 2, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    extra = 3, cp = b0 & 0x07, min = 0x10000;
  } else {
    return 0xFFFD;
  }
  if (i + extra >= s.size()) return 0xFFFD;
  for (int k = 1; k <= extra; ++k) {
    unsigned char b = byte(i + k);
    if ((b & 0xC0) != 0x80) return 0xFFFD;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0xFFFD;
  *length = 1 + extra;
  return cp;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(std::string_view s, std::size_t* bad_offset) {
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 0;
    std::uint32_t cp = decode_utf8(s, i, &len);
    if (cp == 0xFFFD && !(len == 3 && s.substr(i, 3) == "\xEF\xBF\xBD")) {
      *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

bool is_js_space(std::uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000 || c == 0xFEFF;
}

std::size_t js_space_at(std::string_view s, std::size_t i) {
  if (i >= s.size()) return 0;
  std::size_t len = 0;
  std::uint32_t cp = decode_utf8(s, i, &len);
  return is_js_space(cp) ? len : 0;
}

std::string js_trim_start(std::string_view s) {
  std::size_t i = 0;
  while (std::size_t n = js_space_at(s, i)) i += n;
  return std::string(s.substr(i));
}

std::string js_trim_end(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4) {
      --start;
    }
    std::size_t len = 0;
    std::uint32_t cp = decode_utf8(s, start, &len);
    if (start + len != end || !is_js_space(cp)) break;
    end = start;
  }
  return std::string(s.substr(0, end));
}

std::string js_trim(std::string_view s) {
  return js_trim_end(js_trim_start(s));
}

std::size_t utf16_length(std::string_view s) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 0;
    std::uint32_t cp = decode_utf8(s, i, &len);
    n += cp >= 0x10000 ? 2 : 1;
    i += len;
  }
  return n;
}

std::vector<std::string_view> code_points(std::string_view s) {
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 0;
    decode_utf8(s, i, &len);
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

std::string js_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0) return "0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  bool negative = s[0] == '-';
  if (negative) s.erase(0, 1);
  std::size_t e = s.find('e');
  std::string digits;
  for (char c : s.substr(0, e)) {
    if (c != '.') digits += c;
  }
  int k = static_cast<int>(digits.size());
  int n = std::atoi(s.c_str() + e + 1) + 1;
  std::string out;
  if (k <= n && n <= 21) {
    out = digits + std::string(n - k, '0');
  } else if (0 < n && n <= 21) {
    out = digits.substr(0, n) + "." + digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out = "0." + std::string(-n, '0') + digits;
  } else {
    out = digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += n - 1 >= 0 ? "e+" : "e-";
    out += std::to_string(std::abs(n - 1));
  }
  return negative ? "-" + out : out;
}

std::string js_float(double value) {
  if (value == 0 && std::signbit(value)) return "-0.0";
  if (std::isfinite(value) && std::fmod(value, 1.0) == 0 && std::fabs(value) < 1e21) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", value);
    return buf;
  }
  return js_number(value);
}

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Length of the longest StrDecimalLiteral prefix of s (sign, Infinity, digits, fraction,
// exponent); 0 when there is none.
std::size_t decimal_prefix(std::string_view s) {
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  if (s.substr(i, 8) == "Infinity") return i + 8;
  std::size_t int_digits = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++int_digits;
  std::size_t frac_digits = 0;
  std::size_t before_dot = i;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i, ++frac_digits;
    if (frac_digits == 0 && int_digits == 0) return 0;
    if (frac_digits == 0) i = before_dot + 1;
  }
  if (int_digits == 0 && frac_digits == 0) return 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    std::size_t j = i + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    std::size_t exp_digits = 0;
    while (j < s.size() && is_digit(s[j])) ++j, ++exp_digits;
    if (exp_digits > 0) i = j;
  }
  return i;
}

double parse_decimal(std::string_view s) {
  std::string copy(s);
  if (copy.find("Infinity") != std::string::npos) {
    return copy[0] == '-' ? -std::numeric_limits<double>::infinity()
                          : std::numeric_limits<double>::infinity();
  }
  return std::strtod(copy.c_str(), nullptr);
}

}  // namespace

double js_parse_int(std::string_view s) {
  std::string t = js_trim_start(s);
  std::size_t i = 0;
  bool negative = false;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) negative = t[i++] == '-';
  std::size_t start = i;
  while (i < t.size() && is_digit(t[i])) ++i;
  if (i == start) return std::numeric_limits<double>::quiet_NaN();
  double v = std::strtod(t.substr(start, i - start).c_str(), nullptr);
  return negative ? -v : v;
}

double js_parse_float(std::string_view s) {
  std::string t = js_trim_start(s);
  std::size_t n = decimal_prefix(t);
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  return parse_decimal(std::string_view(t).substr(0, n));
}

double js_string_to_number(std::string_view s) {
  std::string t = js_trim(s);
  if (t.empty()) return 0;
  if (t.size() > 2 && t[0] == '0' && (t[1] | 0x20) != 0 &&
      std::string("xob").find(t[1] | 0x20) != std::string::npos) {
    int base = (t[1] | 0x20) == 'x' ? 16 : (t[1] | 0x20) == 'o' ? 8 : 2;
    double v = 0;
    for (std::size_t i = 2; i < t.size(); ++i) {
      int d = -1;
      char c = static_cast<char>(t[i] | 0x20);
      if (is_digit(t[i]))
        d = t[i] - '0';
      else if (c >= 'a' && c <= 'f')
        d = c - 'a' + 10;
      if (d < 0 || d >= base) return std::numeric_limits<double>::quiet_NaN();
      v = v * base + d;
    }
    return v;
  }
  if (decimal_prefix(t) != t.size()) return std::numeric_limits<double>::quiet_NaN();
  return parse_decimal(t);
}

std::string json_quote(std::string_view s, bool ensure_ascii) {
  static const char* kHex = "0123456789abcdef";
  std::string out = "\"";
  auto hex4 = [&](std::uint32_t unit) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(unit >> shift) & 0xF];
  };
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || (ensure_ascii && c == 0x7F)) {
            hex4(c);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = decode_utf8(s, i, &len);
    if (ensure_ascii) {
      if (cp >= 0x10000) {
        std::uint32_t v = cp - 0x10000;
        hex4(0xD800 + (v >> 10));
        hex4(0xDC00 + (v & 0x3FF));
      } else {
        hex4(cp);
      }
    } else {
      out.append(s.substr(i, len));
    }
    i += len;
  }
  out += '"';
  return out;
}

std::string ascii_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace kvfleet::chat::text
