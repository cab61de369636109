#pragma once
// fp32 <-> fp16 / bf16 conversion for KV storage (round to nearest even, NaN and Inf kept).

#include <cstdint>
#include <cstring>

namespace kvfleet::kernels::cpu {

inline std::uint16_t fp32_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float bf16_to_fp32(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(std::uint16_t h);

}  // namespace kvfleet::kernels::cpu
