#pragma once
// Token sampling from one row of logits: greedy at temperature 0, else temperature, top-k and
// top-p (nucleus) sampling driven by one uniform draw per token. The draw is counter-based:
// sample_uniform(seed, k) depends only on the request's seed and the output token's index k, not
// on what ran before in this process, so a seed reproduces a sample on any worker, and a request
// re-run from its prompt plus its first k tokens (after a worker failure) draws what the lost
// run would have drawn.
//
// Before sampling, the logits go through vLLM's processing in vLLM's order: `logit_bias`, then
// the repetition, frequency and presence penalties (process_logits). Logprobs are computed from
// the raw row, before any of it (vLLM's default `logprobs_mode`, "raw_logprobs").

#include <cstdint>
#include <random>
#include <span>

#include "worker/sequence.h"

namespace kvfleet::worker {

// `uniform` in [0, 1): the draw for this token (sample_uniform). `logits` are the processed
// ones (process_logits) when the request has bias or penalties.
std::int32_t sample_token(const float* logits, std::int64_t vocab, const SamplingParams& params,
                          double uniform);

// A uniform double in [0, 1) from (seed, index): splitmix64 finalisers over both, 53 bits.
double sample_uniform(std::uint64_t seed, std::int64_t index);

// True when process_logits changes anything for these parameters.
bool needs_processing(const SamplingParams& params);

// Applies logit_bias, then the penalties, to `logits` [vocab] in place. `tokens` is the prompt
// followed by the tokens generated so far; the first `prompt_len` are the prompt. Token ids
// outside the vocabulary (in logit_bias) are ignored.
void process_logits(float* logits, std::int64_t vocab, const SamplingParams& params,
                    std::span<const std::int32_t> tokens, std::int64_t prompt_len);

// The log-softmax of `logits` [vocab]: `chosen`'s value and the `top` largest (best first, ties
// by lower id). A -inf logprob is reported as -9999 (as vLLM does), so it stays a JSON number.
TokenLogprobs compute_logprobs(const float* logits, std::int64_t vocab, std::int32_t chosen,
                               std::int64_t top);

}  // namespace kvfleet::worker
