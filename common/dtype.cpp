#include "common/dtype.h"

#include <algorithm>
#include <cctype>

namespace kvfleet {

double dtype_bytes(DType t) {
  switch (t) {
    case DType::kFp32:
    case DType::kTf32: return 4.0;
    case DType::kFp16:
    case DType::kBf16: return 2.0;
    case DType::kFp8:
    case DType::kInt8: return 1.0;
    case DType::kInt4: return 0.5;
  }
  return 0.0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kFp32: return "fp32";
    case DType::kTf32: return "tf32";
    case DType::kFp16: return "fp16";
    case DType::kBf16: return "bf16";
    case DType::kFp8: return "fp8";
    case DType::kInt8: return "int8";
    case DType::kInt4: return "int4";
  }
  return "?";
}

const std::vector<DType>& all_dtypes() {
  static const std::vector<DType> kAll = {DType::kFp32, DType::kTf32, DType::kFp16, DType::kBf16,
                                          DType::kFp8,  DType::kInt8, DType::kInt4};
  return kAll;
}

Result<DType> parse_dtype(std::string_view text) {
  std::string t(text);
  std::transform(t.begin(), t.end(), t.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  struct Alias {
    std::string_view name;
    DType type;
  };
  static constexpr Alias kAliases[] = {
      {"fp32", DType::kFp32},       {"float32", DType::kFp32}, {"float", DType::kFp32},
      {"tf32", DType::kTf32},       {"fp16", DType::kFp16},    {"float16", DType::kFp16},
      {"half", DType::kFp16},       {"bf16", DType::kBf16},    {"bfloat16", DType::kBf16},
      {"fp8", DType::kFp8},         {"fp8_e4m3", DType::kFp8}, {"fp8_e5m2", DType::kFp8},
      {"e4m3", DType::kFp8},        {"e5m2", DType::kFp8},     {"float8_e4m3fn", DType::kFp8},
      {"float8_e5m2", DType::kFp8}, {"int8", DType::kInt8},    {"int4", DType::kInt4},
  };
  for (const auto& a : kAliases) {
    if (a.name == t) return a.type;
  }
  return invalid_argument("unknown dtype '" + std::string(text) +
                          "' (known: fp32, tf32, fp16, bf16, fp8, int8, int4)");
}

}  // namespace kvfleet
