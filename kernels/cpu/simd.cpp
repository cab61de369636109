#include "kernels/cpu/simd.h"

namespace kvfleet::kernels::cpu::simd {

bool has_avx2_fma() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
}

}  // namespace kvfleet::kernels::cpu::simd
