#pragma once
// Quantities with units, as users type them in flags and files, and as reports print them.
//
// Parsing accepts a plain number in base units ("2.039e12") or a number with a unit:
//   bytes:        B, KB, MB, GB, TB (powers of 1000) and KiB, MiB, GiB, TiB (powers of 1024)
//   bytes/second: any byte unit followed by "/s" ("2039 GB/s", "25GiB/s")
//   FLOP/second:  K, M, G, T, P with an optional "FLOPS" or "FLOP/s" ("312T", "312 TFLOPS")
//   counts:       K, M, G (powers of 1000) and Ki, Mi (powers of 1024) ("4K" = 4000, "4Ki" = 4096)
//   seconds:      s, ms, us, ns ("5us", "1.5 ms"); a plain number is seconds
// Whitespace between the number and its unit is allowed; unit names are case-sensitive for the
// byte prefixes' 'i' but accept either case for the rest ("gb" = "GB").

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvfleet {

enum class Quantity { kBytes, kBytesPerSecond, kFlopsPerSecond, kCount, kSeconds };

// Parses `text` as a non-negative finite quantity of the given kind, in base units.
Result<double> parse_quantity(std::string_view text, Quantity kind);

// Parses a whole, positive count ("4000", "50K", "1Mi"); rejects fractions and values < 1.
Result<std::int64_t> parse_positive_count(std::string_view text);

// Human-readable forms used by reports.
std::string format_bytes(double bytes);         // binary prefixes: "22.89 GiB"
std::string format_rate_bytes(double per_sec);  // decimal prefixes: "2.04 TB/s"
std::string format_flops(double per_sec);       // "312 TFLOP/s"
std::string format_seconds(double seconds);     // "14.3 s", "34.2 ms", "12.0 us"
std::string format_count(double count);         // "34.39 B", "7.2 M", "512"
// Shortest decimal for a number: "0.5", "1e-05", "4000".
std::string format_number(double value, int significant = 4);

}  // namespace kvfleet
