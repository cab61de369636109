#include "common/json_text.h"

#include <string>

namespace kvfleet {

Result<nlohmann::json> parse_json_text(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) {
    return invalid_argument("it contains a NUL byte");
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // what(): "[json.exception.parse_error.101] parse error at line 1, column 9: syntax error
    // while parsing value - invalid string: ill-formed UTF-8 byte; last read: '"caf<FF>'".
    // Keep the reason between " - " and "; last read", which holds no input bytes.
    std::string reason = e.what();
    const auto dash = reason.find(" - ");
    if (dash != std::string::npos) reason = reason.substr(dash + 3);
    const auto last = reason.find("; last read");
    if (last != std::string::npos) reason.resize(last);
    for (char& c : reason) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    }
    // e.byte counts from 1: the offending byte, or one past the end for a text cut short.
    return invalid_argument(reason + " at byte offset " +
                            std::to_string(e.byte > 0 ? e.byte - 1 : 0));
  }
}

}  // namespace kvfleet
