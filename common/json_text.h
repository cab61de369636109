#pragma once
// Parsing a request body as one JSON value, with an error that says why it is not one: the
// parser's reason (an ill-formed UTF-8 byte, an unpaired surrogate escape, a syntax error) and
// the byte offset, in plain ASCII, never echoing the body's bytes (which may not be UTF-8 and
// would make the error itself unencodable).

#include <nlohmann/json.hpp>
#include <string_view>

#include "common/status.h"

namespace kvfleet {

// Exactly the bytes of `text` as one JSON value. invalid_argument naming the reason: "it contains
// a NUL byte" (nlohmann's lexer would stop at one and ignore the rest) or "<reason> at byte offset
// N" (counted from 0).
Result<nlohmann::json> parse_json_text(std::string_view text);

}  // namespace kvfleet
