#pragma once
// Text helpers behind the Jinja interpreter that reproduce JavaScript string and number
// semantics on UTF-8 text (the reference implementation runs on JavaScript strings). Internal to
// chat/; exposed in a header only so the tests can check them one by one.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvfleet::chat::text {

// The code point starting at s[i] and its length in bytes; an invalid byte decodes as U+FFFD of
// length 1.
std::uint32_t decode_utf8(std::string_view s, std::size_t i, std::size_t* length);
void append_utf8(std::string& out, std::uint32_t code_point);
bool is_valid_utf8(std::string_view s, std::size_t* bad_offset);

// JavaScript's WhiteSpace + LineTerminator set (what /\s/ and String.prototype.trim use).
bool is_js_space(std::uint32_t code_point);
// Length in bytes of the whitespace character at s[i], 0 when s[i] does not start one.
std::size_t js_space_at(std::string_view s, std::size_t i);
std::string js_trim_start(std::string_view s);
std::string js_trim_end(std::string_view s);
std::string js_trim(std::string_view s);

// String.prototype.length: UTF-16 code units.
std::size_t utf16_length(std::string_view s);
// The code points of s, each as its UTF-8 bytes (Array.from(string)).
std::vector<std::string_view> code_points(std::string_view s);

// Number.prototype.toString() (shortest round-trip digits, exponent form outside 1e-6..1e21).
std::string js_number(double value);
// What @huggingface/jinja prints for a float: "2.0" for integral values, else js_number.
std::string js_float(double value);
// parseInt(s, 10) and parseFloat(s); NaN when no number starts the text.
double js_parse_int(std::string_view s);
double js_parse_float(std::string_view s);
// The abstract ToNumber of a string (what `==` between a number and a string uses).
double js_string_to_number(std::string_view s);

// JSON.stringify of a string; with ensure_ascii every code unit from U+007F up becomes \uXXXX.
std::string json_quote(std::string_view s, bool ensure_ascii);

// ASCII-only case mapping (see chat/README.md: non-ASCII letters are left as they are).
std::string ascii_upper(std::string_view s);
std::string ascii_lower(std::string_view s);

}  // namespace kvfleet::chat::text
