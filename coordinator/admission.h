#pragma once
// Admission policy: whether the coordinator takes a parsed completion request, and with which
// effective max_tokens / min_tokens. Pure: a function of the registry, the routing and admission
// configuration, the number of requests in flight and the request; no I/O, no clock. The HTTP
// server and the simulator both call it.
//
// Checks, in this order (the first that fails decides):
//  1. the model is known (some worker registered it):                    404 model_not_found
//  2. every prompt token id is inside the model's vocabulary:             400 invalid_request
//  3. the prompt is shorter than the context (the smallest max_model_len
//     of the model's workers; no limit when none reports one):            400 invalid_request
//  4. max_tokens defaults (completions: 16; chat: the rest of the context, 256 without one) and
//     prompt + max_tokens fits the context:                               400 invalid_request
//  5. min_tokens is clamped to max_tokens (accepted, not an error);
//  6. fewer than max_inflight requests are in flight:                     429 overloaded,
//  Retry-After 1
//  7. some pool can serve the model in the routing mode (router.h):       503 no_worker,
//  Retry-After 2
// Messages name the numbers involved. Draining and malformed bodies are the server's business:
// it answers them before admission.

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "coordinator/registry.h"
#include "coordinator/router.h"

namespace kvfleet::coordinator {

struct AdmissionConfig {
  std::int64_t max_inflight = 256;  // requests being served; beyond: 429
};

struct AdmissionRequest {
  std::string model;
  bool chat = false;                     // /v1/chat/completions (changes the max_tokens default)
  std::span<const std::int32_t> prompt;  // token ids, as the coordinator tokenized them
  // The vocabulary of the model's tokenizer (from the workers' registration); 0: no tokenizer
  // for the model, i.e. the model is unknown.
  std::int64_t vocab_size = 0;
  std::optional<std::int64_t> max_tokens;  // as the client sent it (checked >= 1 by the parser)
  std::int64_t min_tokens = 0;             // as the client sent it (checked >= 0 by the parser)
};

struct Admission {
  bool accepted = false;
  int status = 200;  // when rejected: 400, 404, 429 or 503
  std::string
      error_type;       // when rejected: invalid_request | model_not_found | overloaded | no_worker
  std::string message;  // when rejected: for the client, naming the numbers
  int retry_after_seconds = 0;  // when rejected: the Retry-After header's value; 0: none
  std::int64_t max_tokens = 0;  // when accepted: the effective limit (the default applied)
  std::int64_t min_tokens = 0;  // when accepted: clamped to max_tokens
};

Admission admit(const Registry& registry, const RouterConfig& router, const AdmissionConfig& config,
                std::int64_t inflight, const AdmissionRequest& request);

}  // namespace kvfleet::coordinator
