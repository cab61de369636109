#pragma once
// The messages of the cluster's internal API, one typed struct each with one encode and one
// decode: a worker's registration, heartbeat and deregistration (to the coordinator), the
// coordinator's generate call and the stream lines a worker answers with, the KV hand-off a
// prefill worker gives out, and the release of its lease. JSON on the wire.
//
// Decoding is strict: integers must be JSON integers in the field's range (1.5, 2^64 and -1 for
// an unsigned field are refused), strings strings, and the error names the field. The HTTP
// signature that authenticates these messages is in net/auth.h; the hand-off's own MAC is here.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvfleet {

class ClusterSecret;

namespace internal_api {

// What a worker holds and runs; routing reads it.
struct WorkerLoad {
  std::int64_t running = 0, waiting = 0, swapped = 0;
  std::int64_t free_blocks = 0, total_blocks = 0, host_free_blocks = 0, held_blocks = 0;
  std::vector<std::uint64_t> prefix_hashes;  // a summary of the cached prefixes
  // The longest engine step since the last report: the coordinator scales the time it waits
  // for a sign of progress with it.
  double step_seconds = 0;
};

// POST /internal/register (coordinator).
struct Registration {
  std::string worker_id, url, role, model;
  std::int64_t max_model_len = 0;
  std::int64_t vocab_size = 0;
  std::optional<std::int64_t> bos_token_id, eos_token_id;
  std::int64_t kv_blocks = 0, block_tokens = 0, block_bytes = 0;
  std::string transfer;  // the transfer backend, or "modelled"
  std::string backend = "cpu", backend_detail;
  std::uint64_t prefix_hash_salt = 0;
  std::int64_t pid = 0;
  std::optional<WorkerLoad> load;  // its load now; absent: an empty worker
  // A model served from a Hugging Face folder: the identity of its tokenizer files
  // (hfmodel::ModelFolder::tokenizer_id); empty for the byte tokenizer of built-in models.
  std::string tokenizer_id;
};
struct RegistrationReply {
  double lease_seconds = 0;
};

// POST /internal/heartbeat (coordinator).
struct Heartbeat {
  std::string worker_id;
  WorkerLoad load;
};

// POST /internal/deregister (coordinator).
struct Deregistration {
  std::string worker_id;
};
struct DeregistrationReply {
  bool removed = false;
};

// A prefill worker's KV for one request, held for the decode worker under a lease. Signed by the
// prefill worker with the cluster secret (`mac`): a decode worker imports only hand-offs whose
// MAC verifies, so nobody without the secret can point a read at other memory.
struct KvHandoff {
  std::string agent;      // the prefill worker's transfer agent
  std::string address;    // its connection blob
  std::string region;     // its KV region's descriptor (transfer::RemoteRegion, serialized)
  bool modelled = false;  // a sim worker's KV: no bytes, the hand-off's time is modelled
  std::vector<std::int32_t> blocks;
  std::uint64_t block_bytes = 0;
  std::int64_t tokens = 0;
  std::string lease;       // random, unguessable
  std::string worker_url;  // where to release the lease
  // Real KV: the checksum (common/checksum.h) of each block's bytes, in `blocks` order, taken
  // by the prefill worker when it handed the blocks off; the reader verifies every block it
  // pulled before the blocks join a sequence. Empty for modelled KV.
  std::vector<std::uint64_t> checksums;
  std::string mac;  // hex HMAC-SHA256 over every field above; empty without a secret

  // The bytes the MAC covers.
  std::string signed_text() const;
  void sign(const ClusterSecret& secret);
  // OK when the MAC verifies; without a secret (a loopback cluster without one), always OK.
  Status verify(const ClusterSecret* secret) const;
};

struct SamplingParams {
  std::int64_t max_tokens = 16, min_tokens = 0;
  double temperature = 0, top_p = 1;
  std::int64_t top_k = 0;
  std::optional<std::uint64_t> seed;
  bool ignore_eos = false;
  std::vector<std::int32_t> stop_token_ids;
  double presence_penalty = 0, frequency_penalty = 0, repetition_penalty = 1;
  // On the wire: [{"token": id, "bias": b}, ...].
  std::vector<std::pair<std::int32_t, double>> logit_bias;
  // Absent: no logprobs. N: each token line carries its logprob and N alternatives.
  std::optional<std::int64_t> logprobs;
};

// POST /internal/generate (worker).
struct GenerateRequest {
  std::vector<std::int32_t> tokens;        // the prompt, then tokens generated before (re-runs)
  std::optional<std::int64_t> prompt_len;  // absent: all of `tokens`
  std::string mode = "full";               // full | prefill | decode
  SamplingParams params;
  std::optional<KvHandoff> kv;  // decode: where the prompt's KV is
};

// Per-request timings a worker reports when a run finishes.
struct RunTimings {
  double queue_seconds = 0, prefill_seconds = 0, time_to_first_token = 0;
  double inter_token_seconds_sum = 0;
  std::int64_t prompt_tokens = 0, generated_tokens = 0, prefix_hit_tokens = 0;
  std::int64_t swap_out_count = 0, swap_in_count = 0;
  double swap_out_seconds = 0, swap_in_seconds = 0;
  std::int64_t recompute_preemptions = 0;
};

// The NDJSON lines of a generate stream: a token, the KV import's cost (decode runs, first), and
// the finish (with a hand-off on prefill runs). While nothing else is sent (queued, prefilling,
// waiting for room or for KV) the worker sends a keep-alive at least every 0.5 s: a stream
// silent for longer is a frozen worker, and a reader that went away is noticed by the next
// write. Failures after the stream began are an error line, {"error": {"message", "code"}},
// with the status the answer would have had.
struct TopLogprob {
  std::int32_t token = 0;
  double logprob = 0;
};
struct TokenLine {
  std::int32_t token = 0;
  // With SamplingParams::logprobs: the token's logprob and the alternatives, best first
  // (on the wire "logprob" and "top": [{"token", "logprob"}, ...]).
  std::optional<double> logprob;
  std::vector<TopLogprob> top;
};
struct AliveLine {
  bool alive = true;
};
struct KvTransferLine {
  double seconds = 0;
  std::uint64_t bytes = 0;
  std::int64_t operations = 0;
};
struct FinishLine {
  std::string finish;  // stop | length | abort | error
  std::string error;
  std::string worker_id;
  RunTimings timings;
  std::optional<KvHandoff> kv;
};

// POST /internal/release (worker).
struct Release {
  std::string lease;
};
struct ReleaseReply {
  bool released = false;
};

// One encode and one decode per message. decode_* of text refuses anything but one JSON object.
#define KVFLEET_INTERNAL_MESSAGE(T)              \
  nlohmann::json to_json(const T& m);            \
  Result<T> decode_##T(const nlohmann::json& j); \
  std::string encode(const T& m);
KVFLEET_INTERNAL_MESSAGE(WorkerLoad)
KVFLEET_INTERNAL_MESSAGE(Registration)
KVFLEET_INTERNAL_MESSAGE(RegistrationReply)
KVFLEET_INTERNAL_MESSAGE(Heartbeat)
KVFLEET_INTERNAL_MESSAGE(Deregistration)
KVFLEET_INTERNAL_MESSAGE(DeregistrationReply)
KVFLEET_INTERNAL_MESSAGE(KvHandoff)
KVFLEET_INTERNAL_MESSAGE(SamplingParams)
KVFLEET_INTERNAL_MESSAGE(GenerateRequest)
KVFLEET_INTERNAL_MESSAGE(RunTimings)
KVFLEET_INTERNAL_MESSAGE(TokenLine)
KVFLEET_INTERNAL_MESSAGE(AliveLine)
KVFLEET_INTERNAL_MESSAGE(KvTransferLine)
KVFLEET_INTERNAL_MESSAGE(FinishLine)
KVFLEET_INTERNAL_MESSAGE(Release)
KVFLEET_INTERNAL_MESSAGE(ReleaseReply)
#undef KVFLEET_INTERNAL_MESSAGE

// Parses a whole body (or stream line) as one JSON object: trailing bytes, NUL included, are an
// error.
Result<nlohmann::json> parse_object(std::string_view text, std::string_view what);

// Decodes text into T: parse_object then decode_T, errors prefixed with `what`.
template <typename T, typename F>
Result<T> decode_text(std::string_view text, std::string_view what, F decode) {
  KVFLEET_ASSIGN_OR_RETURN(nlohmann::json j, parse_object(text, what));
  auto r = decode(j);
  if (!r.is_ok()) return r.status().with_context(std::string(what));
  return r;
}

}  // namespace internal_api
}  // namespace kvfleet
