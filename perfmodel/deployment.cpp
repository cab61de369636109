#include "perfmodel/deployment.h"

#include <charconv>
#include <cmath>
#include <sstream>

namespace kvfleet::perfmodel {
namespace {

Result<double> parse_ratio(std::string_view key, std::string_view text) {
  auto parse_double = [](std::string_view s, double* out) {
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
  };
  double value = 0;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    double num = 0, den = 0;
    if (!parse_double(text.substr(0, slash), &num) || !parse_double(text.substr(slash + 1), &den) ||
        den == 0) {
      return invalid_argument("compression " + std::string(key) + "='" + std::string(text) +
                              "' is not a number or a fraction a/b");
    }
    value = num / den;
  } else if (!parse_double(text, &value)) {
    return invalid_argument("compression " + std::string(key) + "='" + std::string(text) +
                            "' is not a number or a fraction a/b");
  }
  if (!(value > 0 && value <= 1)) {
    return invalid_argument("compression " + std::string(key) + "=" + std::string(text) +
                            " must be the fraction of KV kept, in (0, 1]");
  }
  return value;
}

}  // namespace

Result<Compression> parse_compression(std::string_view text) {
  Compression c;
  bool seen[4] = {false, false, false, false};
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view item = text.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) {
      if (comma == text.size()) break;
      return invalid_argument("compression '" + std::string(text) + "' has an empty item");
    }
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return invalid_argument("compression item '" + std::string(item) +
                              "' must be KEY=RATIO with KEY one of layer, head, token, hidden");
    }
    const std::string_view key = item.substr(0, eq);
    static constexpr std::string_view kKeys[] = {"layer", "head", "token", "hidden"};
    int index = -1;
    for (int i = 0; i < 4; ++i) {
      if (kKeys[i] == key) index = i;
    }
    if (index < 0) {
      return invalid_argument("unknown compression key '" + std::string(key) +
                              "' (known: layer, head, token, hidden)");
    }
    if (seen[index]) {
      return invalid_argument("compression key '" + std::string(key) + "' is given twice");
    }
    seen[index] = true;
    KVFLEET_ASSIGN_OR_RETURN(double r, parse_ratio(key, item.substr(eq + 1)));
    double* fields[] = {&c.layer, &c.head, &c.token, &c.hidden};
    *fields[index] = r;
  }
  return c;
}

std::string compression_to_string(const Compression& c) {
  std::ostringstream out;
  out << "layer=" << c.layer << ",head=" << c.head << ",token=" << c.token
      << ",hidden=" << c.hidden;
  return out.str();
}

Result<AttentionFlops> parse_attention_flops(std::string_view text) {
  if (text == "paper") return AttentionFlops::kPaper;
  if (text == "causal") return AttentionFlops::kCausal;
  if (text == "full") return AttentionFlops::kFull;
  return invalid_argument("unknown attention FLOP convention '" + std::string(text) +
                          "' (known: paper, causal, full)");
}

std::string_view attention_flops_name(AttentionFlops a) {
  switch (a) {
    case AttentionFlops::kPaper: return "paper";
    case AttentionFlops::kCausal: return "causal";
    case AttentionFlops::kFull: return "full";
  }
  return "?";
}

}  // namespace kvfleet::perfmodel
