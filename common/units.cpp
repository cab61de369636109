#include "common/units.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <utility>

namespace kvfleet {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

// Multiplier for an SI or binary prefix letter ("K", "Mi", ...); 0 when unknown.
double prefix_multiplier(std::string_view prefix) {
  if (prefix.empty()) return 1.0;
  const bool binary = prefix.size() == 2 && prefix[1] == 'i';
  if (prefix.size() > 2 || (prefix.size() == 2 && !binary)) return 0.0;
  const char p = static_cast<char>(std::toupper(static_cast<unsigned char>(prefix[0])));
  static constexpr std::string_view kLetters = "KMGTP";
  const auto pos = kLetters.find(p);
  if (pos == std::string_view::npos) return 0.0;
  return std::pow(binary ? 1024.0 : 1000.0, static_cast<double>(pos + 1));
}

const char* kind_name(Quantity kind) {
  switch (kind) {
    case Quantity::kBytes: return "a byte size (e.g. 80GiB, 40e9)";
    case Quantity::kBytesPerSecond: return "a bandwidth (e.g. 2039GB/s, 2.039e12)";
    case Quantity::kFlopsPerSecond: return "a FLOP rate (e.g. 312TFLOPS, 312e12)";
    case Quantity::kCount: return "a count (e.g. 4000, 50K)";
    case Quantity::kSeconds: return "a duration (e.g. 5us, 1.5ms, 2e-6)";
  }
  return "a quantity";
}

// Splits "12.5 GiB/s" into the number and the unit text.
bool split_number(std::string_view text, double* number, std::string_view* unit) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, *number, std::chars_format::general);
  if (ec != std::errc() || ptr == begin) return false;
  *unit = trim(std::string_view(ptr, static_cast<size_t>(end - ptr)));
  return true;
}

// Returns the multiplier the unit stands for, or 0 when it is not valid for `kind`.
double unit_multiplier(std::string_view unit, Quantity kind) {
  if (unit.empty()) return 1.0;
  switch (kind) {
    case Quantity::kCount: return prefix_multiplier(unit);
    case Quantity::kSeconds: {
      // Case-sensitive: "ms" is a millisecond, "Ms" would be a megasecond.
      static constexpr std::pair<std::string_view, double> kUnits[] = {
          {"s", 1.0}, {"ms", 1e-3}, {"us", 1e-6}, {"ns", 1e-9}};
      for (const auto& [name, mult] : kUnits) {
        if (unit == name) return mult;
      }
      return 0.0;
    }
    case Quantity::kBytes:
    case Quantity::kBytesPerSecond: {
      if (kind == Quantity::kBytesPerSecond) {
        if (unit.size() < 2 || unit.substr(unit.size() - 2) != "/s") return 0.0;
        unit.remove_suffix(2);
        unit = trim(unit);
      }
      if (unit.empty() || (unit.back() != 'B' && unit.back() != 'b')) return 0.0;
      unit.remove_suffix(1);
      return prefix_multiplier(unit);
    }
    case Quantity::kFlopsPerSecond: {
      for (std::string_view suffix : {"FLOP/s", "FLOPS", "FLOPs"}) {
        if (unit.size() >= suffix.size() &&
            iequals(unit.substr(unit.size() - suffix.size()), suffix)) {
          unit.remove_suffix(suffix.size());
          break;
        }
      }
      unit = trim(unit);
      if (unit.size() == 2 && unit[1] == 'i') return 0.0;  // binary prefixes make no sense here
      return prefix_multiplier(unit);
    }
  }
  return 0.0;
}

std::string printf_string(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// Formats v / 1000^k (or 1024^k) with the largest prefix that keeps it >= 1.
std::string format_scaled(double v, double base, const std::array<const char*, 6>& names) {
  size_t i = 0;
  double scaled = v;
  while (i + 1 < names.size() && std::fabs(scaled) >= base) {
    scaled /= base;
    ++i;
  }
  const char* fmt =
      std::fabs(scaled) >= 100 ? "%.0f %s" : (std::fabs(scaled) >= 10 ? "%.1f %s" : "%.2f %s");
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, scaled, names[i]);
  return buf;
}

}  // namespace

Result<double> parse_quantity(std::string_view text, Quantity kind) {
  const std::string_view t = trim(text);
  double number = 0;
  std::string_view unit;
  if (t.empty() || !split_number(t, &number, &unit)) {
    return invalid_argument("'" + std::string(text) + "' is not " + kind_name(kind));
  }
  const double mult = unit_multiplier(unit, kind);
  if (mult == 0.0) {
    return invalid_argument("'" + std::string(text) + "' has an unknown unit '" +
                            std::string(unit) + "'; expected " + kind_name(kind));
  }
  const double value = number * mult;
  if (!std::isfinite(value) || value < 0) {
    return invalid_argument("'" + std::string(text) + "' must be a finite, non-negative value");
  }
  return value;
}

Result<std::int64_t> parse_positive_count(std::string_view text) {
  auto parsed = parse_quantity(text, Quantity::kCount);
  const double v = parsed.is_ok() ? *parsed : 0.0;
  if (v < 1 || v != std::floor(v) || v > 9.0e18) {
    return invalid_argument("'" + std::string(text) + "' must be a positive whole number");
  }
  return static_cast<std::int64_t>(v);
}

std::string format_bytes(double bytes) {
  return format_scaled(bytes, 1024.0, {"B", "KiB", "MiB", "GiB", "TiB", "PiB"});
}
std::string format_rate_bytes(double per_sec) {
  return format_scaled(per_sec, 1000.0, {"B/s", "KB/s", "MB/s", "GB/s", "TB/s", "PB/s"});
}
std::string format_flops(double per_sec) {
  return format_scaled(per_sec, 1000.0,
                       {"FLOP/s", "KFLOP/s", "MFLOP/s", "GFLOP/s", "TFLOP/s", "PFLOP/s"});
}
std::string format_count(double count) {
  if (std::fabs(count) < 1000) return format_number(count, 4);
  return format_scaled(count, 1000.0, {"", "K", "M", "B", "T", "P"});
}

std::string format_seconds(double s) {
  const double a = std::fabs(s);
  if (a == 0) return "0 s";
  if (a >= 3600) return printf_string("%.2f h", s / 3600);
  if (a >= 100) return printf_string("%.0f s", s);
  if (a >= 10) return printf_string("%.1f s", s);
  if (a >= 1) return printf_string("%.2f s", s);
  if (a >= 0.1) return printf_string("%.0f ms", s * 1e3);
  if (a >= 1e-3) return printf_string(a >= 1e-2 ? "%.1f ms" : "%.2f ms", s * 1e3);
  return printf_string("%.1f us", s * 1e6);
}

std::string format_number(double value, int significant) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", significant, value);
  return buf;
}

}  // namespace kvfleet
