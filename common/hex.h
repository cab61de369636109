#pragma once
// Lower-case hex text for binary blobs that travel in JSON (remote keys, worker addresses).

#include <string>
#include <string_view>

#include "common/status.h"

namespace kvfleet {

std::string to_hex(std::string_view bytes);
// invalid_argument unless the text is an even number of lower- or upper-case hex digits.
Result<std::string> from_hex(std::string_view hex);

}  // namespace kvfleet
