#pragma once
// Request-facing types of the engine, and the engine's per-sequence state.

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kvstore/block_pool.h"

namespace kvfleet::worker {

using RequestId = std::uint64_t;

struct SamplingParams {
  std::int64_t max_tokens = 16;
  std::int64_t min_tokens = 0;  // EOS is ignored until this many tokens were generated
  double temperature = 0.0;     // 0: greedy
  double top_p = 1.0;           // nucleus sampling, in (0, 1]
  std::int64_t top_k = 0;       // 0: all tokens
  // Sampling seed (with temperature > 0); unset: a random one per request. The draw for a
  // request's k-th output token depends on (seed, k) only (sampler.h), so a request re-run
  // elsewhere from its prompt and first k tokens continues with the same tokens.
  std::optional<std::uint64_t> seed;
  // Output tokens this request generated before this run, when they arrive as part of the
  // prompt (a re-run after a failure): the first token sampled here is number sample_offset.
  std::int64_t sample_offset = 0;
  bool ignore_eos = false;
  std::vector<std::int32_t> stop_token_ids;
  // vLLM's penalties: presence and frequency (in [-2, 2]) subtract from the logits of tokens
  // already generated (once, and once per occurrence); repetition (> 0; 1: none) divides the
  // positive logits and multiplies the negative ones of tokens in the prompt or the output.
  double presence_penalty = 0, frequency_penalty = 0, repetition_penalty = 1;
  // Added to a token's logit before the penalties (vLLM's order), as (token, bias).
  std::vector<std::pair<std::int32_t, double>> logit_bias;
  // Unset: no logprobs. N >= 0: each token's logprob and the N most likely alternatives, from
  // the raw logits (vLLM's default `logprobs_mode`: before bias, penalties and temperature).
  std::optional<std::int64_t> logprobs;
};

// A sampled token's log-probability and the most likely alternatives (best first).
struct TokenLogprob {
  std::int32_t token = 0;
  float logprob = 0;
};
struct TokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;
};

enum class FinishReason { kStop, kLength, kAbort, kError };
std::string_view finish_reason_name(FinishReason r);  // "stop", "length", "abort", "error"

// What one request cost, for metrics and for `kvfleet generate --json`. Seconds from the
// engine's clock.
struct RequestTimings {
  double queue_seconds = 0;                 // arrival -> first scheduled
  double prefill_seconds = 0;               // first scheduled -> first token
  double time_to_first_token = 0;           // arrival -> first token
  std::vector<double> inter_token_seconds;  // between consecutive tokens
  std::vector<double> decode_step_seconds;  // forward time of each step that produced a token
  std::int64_t prompt_tokens = 0;
  std::int64_t generated_tokens = 0;
  std::int64_t prefix_hit_tokens = 0;       // prompt tokens whose KV came from the device cache
  std::int64_t host_prefix_hit_tokens = 0;  // ... from the host KV store
  std::int64_t swap_out_count = 0;
  std::int64_t swap_in_count = 0;
  double swap_out_seconds = 0;
  double swap_in_seconds = 0;
  std::int64_t swap_out_bytes = 0;
  std::int64_t swap_in_bytes = 0;
  std::int64_t recompute_preemptions = 0;  // preempted without a host copy (recomputed later)
};

struct RequestOutput {
  RequestId id = 0;
  std::vector<std::int32_t> tokens;  // generated tokens
  FinishReason finish = FinishReason::kStop;
  std::string error;  // for kError
  RequestTimings timings;
  // With Request::hold_kv: the device blocks holding the KV of the first `held_tokens` tokens
  // (prompt, then generated), kept until Engine::release_held(id).
  std::vector<kvstore::BlockId> held_blocks;
  std::int64_t held_tokens = 0;
};

// Called on the engine thread: keep them short and never block.
using TokenCallback = std::function<void(RequestId, std::int32_t token)>;
// With SamplingParams::logprobs: called just before the token's TokenCallback.
using LogprobsCallback = std::function<void(RequestId, const TokenLogprobs&)>;
using FinishCallback = std::function<void(const RequestOutput&)>;

// KV computed elsewhere (a prefill worker) and copied into blocks reserved with
// Engine::reserve(). The request's `prompt` then holds the original prompt followed by the
// tokens generated so far; the KV of its first `computed_tokens` tokens is in the blocks.
struct KvImport {
  std::uint64_t reservation = 0;
  std::int64_t prompt_len = 0;       // original prompt length (the rest was generated)
  std::int64_t computed_tokens = 0;  // tokens whose KV is in the reserved blocks
};

struct Request {
  std::vector<std::int32_t> prompt;
  SamplingParams params;
  TokenCallback on_token;    // optional
  LogprobsCallback on_logprobs;  // optional
  FinishCallback on_finish;  // optional
  // Keep the KV after a normal finish (a prefill worker hands it to a decode worker).
  bool hold_kv = false;
  std::uint64_t import_reservation = 0;  // KvImport::reservation, adopted on arrival
  std::optional<KvImport> kv_import;
};

// The engine's state of one sequence. Owned by the engine thread.
struct Sequence {
  enum class State { kWaiting, kRunning, kSwapped, kFinished };

  RequestId id = 0;
  std::uint64_t arrival = 0;  // admission order: lower runs first, is preempted last
  State state = State::kWaiting;
  std::vector<std::int32_t> tokens;  // prompt, then generated tokens
  std::int64_t prompt_len = 0;
  std::int64_t num_computed = 0;  // tokens whose KV is in the cache (device, or host if swapped)
  std::vector<kvstore::BlockId> blocks;       // device blocks, in token order
  std::vector<kvstore::BlockId> host_blocks;  // while swapped out
  std::vector<kvstore::BlockHash> hashes;     // chain hashes of full blocks computed so far
  std::int64_t published_blocks = 0;          // device blocks already indexed by hash
  SamplingParams params;
  std::uint64_t sample_seed = 0;  // params.seed, or the random one drawn for this request
  TokenCallback on_token;
  LogprobsCallback on_logprobs;
  FinishCallback on_finish;
  RequestOutput output;
  double arrival_time = 0;
  double first_scheduled_time = -1;
  double last_token_time = -1;
  bool hold_kv = false;
  std::uint64_t import_reservation = 0;  // KvImport::reservation, adopted on arrival

  std::int64_t generated() const { return static_cast<std::int64_t>(tokens.size()) - prompt_len; }
  std::int64_t remaining_to_compute() const {
    return static_cast<std::int64_t>(tokens.size()) - num_computed;
  }
};

}  // namespace kvfleet::worker
