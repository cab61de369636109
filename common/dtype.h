#pragma once
// Element types of weights, KV caches and arithmetic. Sizes may be fractional (int4 = 0.5 bytes).

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvfleet {

enum class DType { kFp32, kTf32, kFp16, kBf16, kFp8, kInt8, kInt4 };

// Bytes one element occupies in memory (tf32 is stored as fp32).
double dtype_bytes(DType t);
// "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4".
std::string_view dtype_name(DType t);
// Accepts the names above plus common spellings: float32, float16, bfloat16, half, fp8_e4m3,
// fp8_e5m2, e4m3, float8_e4m3fn; case-insensitive.
Result<DType> parse_dtype(std::string_view text);
// Every dtype, in declaration order.
const std::vector<DType>& all_dtypes();

}  // namespace kvfleet
