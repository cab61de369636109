#pragma once
// Portable 8-wide float vectors (GCC vector extensions) and run-time dispatch to an AVX2+FMA
// build of a kernel. A kernel body is written once as an always-inline template; it is compiled
// twice, inside a function with target("avx2,fma") and inside a plain one, and the first call
// picks by the CPU's features. (target_clones("arch=...") dispatches on the CPU model, which
// misses newer CPUs; this checks the features themselves.)

#include <cstring>

namespace kvfleet::kernels::cpu::simd {

typedef float v8 __attribute__((vector_size(32)));

#define KVFLEET_INLINE inline __attribute__((always_inline))
#define KVFLEET_TARGET_AVX2_FMA __attribute__((target("avx2,fma")))

KVFLEET_INLINE v8 load(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
KVFLEET_INLINE void store(float* p, v8 v) {
  std::memcpy(p, &v, sizeof v);
}
KVFLEET_INLINE v8 splat(float x) {
  return v8{x, x, x, x, x, x, x, x};
}
KVFLEET_INLINE float hsum(v8 v) {
  // Pairwise in three shuffle-add steps: lanes (i, i+4), then (i, i+2), then (i, i+1).
  typedef int v8m __attribute__((vector_size(32)));
  v = v + __builtin_shuffle(v, v8m{4, 5, 6, 7, 0, 1, 2, 3});
  v = v + __builtin_shuffle(v, v8m{2, 3, 0, 1, 6, 7, 4, 5});
  v = v + __builtin_shuffle(v, v8m{1, 0, 3, 2, 5, 4, 7, 6});
  return v[0];
}

typedef int v8i __attribute__((vector_size(32)));

// [x0+x1, y0+y1, x2+x3, y2+y3, x4+x5, y4+y5, x6+x7, y6+y7]
KVFLEET_INLINE v8 pair_sums(v8 x, v8 y) {
  return __builtin_shuffle(x, y, v8i{0, 8, 2, 10, 4, 12, 6, 14}) +
         __builtin_shuffle(x, y, v8i{1, 9, 3, 11, 5, 13, 7, 15});
}
// From two pair_sums results: four sums of lanes 0-3 of each original input, then of lanes 4-7.
KVFLEET_INLINE v8 quad_sums(v8 x, v8 y) {
  return __builtin_shuffle(x, y, v8i{0, 1, 8, 9, 4, 5, 12, 13}) +
         __builtin_shuffle(x, y, v8i{2, 3, 10, 11, 6, 7, 14, 15});
}
// The horizontal sums of eight vectors, as one vector: result[j] = sum of a[j]'s lanes.
// (Helpers taking or returning vectors must be always-inline: a real call between an AVX and a
// baseline function would pass 256-bit vectors under two different ABIs.)
KVFLEET_INLINE v8 hsum8(const v8 (&a)[8]) {
  const v8 lo = quad_sums(pair_sums(a[0], a[1]), pair_sums(a[2], a[3]));
  const v8 hi = quad_sums(pair_sums(a[4], a[5]), pair_sums(a[6], a[7]));
  return __builtin_shuffle(lo, hi, v8i{0, 1, 2, 3, 8, 9, 10, 11}) +
         __builtin_shuffle(lo, hi, v8i{4, 5, 6, 7, 12, 13, 14, 15});
}

// e^x for x in [-87, 88] (smaller x gives ~1e-38, not 0), within about 2 ulp: Cody-Waite range
// reduction to r in [-ln2/2, ln2/2], a degree-6 polynomial, then scaling by 2^n in the exponent.
KVFLEET_INLINE v8 exp(v8 x) {
  const v8 lo = splat(-87.3f), hi = splat(88.3f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const v8 magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const v8 n = (x * splat(1.44269504088896341f) + magic) - magic;
  const v8 r = (x - n * splat(0.693359375f)) - n * splat(-2.12194440e-4f);
  v8 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  const v8 y = p * r * r + r + splat(1.0f);
  const v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8 scale;
  std::memcpy(&scale, &e, sizeof scale);
  return y * scale;
}

// True when the CPU has AVX2 and FMA (checked once).
bool has_avx2_fma();

}  // namespace kvfleet::kernels::cpu::simd
