#pragma once
// Token sampling from one row of logits: greedy at temperature 0, else temperature, top-k and
// top-p (nucleus) sampling with the sequence's own seeded RNG, so a seed reproduces a sample.

#include <cstdint>
#include <random>

#include "worker/sequence.h"

namespace kvfleet::worker {

std::int32_t sample_token(const float* logits, std::int64_t vocab, const SamplingParams& params,
                          std::mt19937_64& rng);

}  // namespace kvfleet::worker
