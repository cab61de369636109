#include "coordinator/admission.h"

#include <algorithm>

namespace kvfleet::coordinator {
namespace {

Admission reject(int status, std::string type, std::string message, int retry_after = 0) {
  Admission a;
  a.status = status;
  a.error_type = std::move(type);
  a.message = std::move(message);
  a.retry_after_seconds = retry_after;
  return a;
}

std::string served_models(const Registry& registry) {
  std::string s;
  for (const std::string& m : registry.models()) s += (s.empty() ? "" : ", ") + m;
  return s.empty() ? "none yet" : s;
}

}  // namespace

Admission admit(const Registry& registry, const RouterConfig& router, const AdmissionConfig& config,
                std::int64_t inflight, const AdmissionRequest& r) {
  if (r.vocab_size <= 0) {
    return reject(
        404, "model_not_found",
        "The model `" + r.model + "` does not exist (served: " + served_models(registry) + ")");
  }
  for (std::int32_t t : r.prompt) {
    if (t < 0 || t >= r.vocab_size) {
      return reject(400, "invalid_request",
                    "prompt token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                        std::to_string(r.vocab_size) + ")");
    }
  }
  const std::int64_t context = registry.max_model_len(r.model);
  const auto len = static_cast<std::int64_t>(r.prompt.size());
  if (context > 0 && len >= context) {
    return reject(400, "invalid_request",
                  "This model's maximum context length is " + std::to_string(context) +
                      " tokens; the prompt has " + std::to_string(len) + " tokens");
  }
  const std::int64_t max_tokens =
      r.max_tokens.value_or(r.chat ? (context > 0 ? context - len : 256) : 16);
  // As vLLM: prompt + max_tokens over the context is a 400. Written as a difference: a client's
  // max_tokens may be as large as 2^63 - 1, and the sum would overflow (len < context here).
  if (context > 0 && max_tokens > context - len) {
    return reject(400, "invalid_request",
                  "This model's maximum context length is " + std::to_string(context) +
                      " tokens; the prompt (" + std::to_string(len) + ") + max_tokens (" +
                      std::to_string(max_tokens) + ") exceeds it");
  }
  if (inflight >= config.max_inflight) {
    return reject(429, "overloaded",
                  "the server is at capacity (" + std::to_string(config.max_inflight) +
                      " requests in flight); retry later",
                  1);
  }
  if (!can_serve(registry, r.model, router.mode)) {
    return reject(503, "no_worker",
                  "no " + std::string(serve_mode_name(router.mode)) +
                      " worker pool can serve model `" + r.model + "` right now",
                  2);
  }
  Admission a;
  a.accepted = true;
  a.max_tokens = max_tokens;
  a.min_tokens = std::min(r.min_tokens, max_tokens);
  return a;
}

}  // namespace kvfleet::coordinator
