#pragma once
// The kvfleet version (`kvfleet --version`, recorded in hardware profiles).

namespace kvfleet::apps {

inline constexpr const char* kVersion = "0.1.0";

}  // namespace kvfleet::apps
