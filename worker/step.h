#pragma once
// What one engine step asks of a backend, and what it gives back.

#include <cstdint>
#include <span>
#include <vector>

#include "worker/sequence.h"

namespace kvfleet::worker {

enum class LogitsWanted { kNone, kLast, kAll };

// One sequence's slice of a step: tokens at positions [pos0, pos0 + tokens.size()). The block
// table must cover pos0 + tokens.size() positions. The KV of earlier positions is in the blocks.
struct SeqChunk {
  std::span<const std::int32_t> tokens;
  std::int64_t pos0 = 0;
  std::span<const std::int32_t> block_table;
  LogitsWanted logits = LogitsWanted::kLast;
};

// A chunk with what a backend that samples (StepOutput::Kind::kTokens) needs to draw the
// sequence's next token exactly as the engine's sampler would: the parameters and the
// counter-based draw's (seed, index) (see sampler.h).
struct StepSequence {
  SeqChunk chunk;
  const SamplingParams* sampling = nullptr;
  std::uint64_t sample_seed = 0;
  std::int64_t sample_index = 0;  // the output token's index: the draw is (seed, index)
};

struct StepOutput {
  enum class Kind {
    kLogits,  // `logits`: one row of [vocab] per chunk with kLast (one per token for kAll)
    kTokens,  // `tokens`: the next token of each chunk with kLast, in chunk order
  };
  Kind kind = Kind::kLogits;
  std::vector<float> logits;
  std::vector<std::int32_t> tokens;
  void clear() {
    logits.clear();
    tokens.clear();
  }
};

}  // namespace kvfleet::worker
