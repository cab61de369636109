#pragma once
// Token sampling from one row of logits: greedy at temperature 0, else temperature, top-k and
// top-p (nucleus) sampling driven by one uniform draw per token. The draw is counter-based:
// sample_uniform(seed, k) depends only on the request's seed and the output token's index k, not
// on what ran before in this process, so a seed reproduces a sample on any worker, and a request
// re-run from its prompt plus its first k tokens (after a worker failure) draws what the lost
// run would have drawn.

#include <cstdint>
#include <random>

#include "worker/sequence.h"

namespace kvfleet::worker {

// `uniform` in [0, 1): the draw for this token (sample_uniform).
std::int32_t sample_token(const float* logits, std::int64_t vocab, const SamplingParams& params,
                          double uniform);

// A uniform double in [0, 1) from (seed, index): splitmix64 finalisers over both, 53 bits.
double sample_uniform(std::uint64_t seed, std::int64_t index);

}  // namespace kvfleet::worker
