#pragma once
// The OpenAI-compatible surface: parsing /v1/completions and /v1/chat/completions bodies into
// one typed request, the chat template of the built-in models, incremental detokenisation
// (complete UTF-8 characters only, stop strings held back until they cannot match), and the
// JSON of responses and SSE chunks, shaped as vLLM emits them.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/tokenizer.h"

namespace kvfleet::coordinator {

struct ApiError {
  int status = 400;
  std::string message;
  std::string param;
};

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::string prompt_text;            // when given as text (or chat, after the template)
  std::vector<std::int32_t> prompt;   // token ids (filled by tokenize())
  bool prompt_is_tokens = false;
  std::optional<std::int64_t> max_tokens;
  std::int64_t min_tokens = 0;
  double temperature = 1.0;
  double top_p = 1.0;
  std::int64_t top_k = 0;
  std::optional<std::uint64_t> seed;
  bool ignore_eos = false;
  std::vector<std::string> stop;
  std::vector<std::int32_t> stop_token_ids;
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;  // extension (as vLLM's): token ids in choices
  std::int64_t n = 1;             // choices, sharing the prompt
  double presence_penalty = 0, frequency_penalty = 0, repetition_penalty = 1;
  std::vector<std::pair<std::int32_t, double>> logit_bias;
  // Alternatives per token when logprobs are asked for (completions: `logprobs`; chat:
  // `top_logprobs` with `logprobs: true`); unset: no logprobs.
  std::optional<std::int64_t> logprobs;
  bool echo = false;  // completions: the prompt's text before the choice's text
};

// One generated token's logprobs as a worker reported them (raw model output, see
// worker/sampler.h): the token's and its alternatives, best first.
struct TokenLogprobs {
  std::int32_t token = 0;
  double logprob = 0;
  std::vector<std::pair<std::int32_t, double>> top;
};

// The bytes of one token, from whichever tokenizer serves the model. Logprobs show tokens
// through this alone, so another tokenizer needs only its own overload of token_bytes_fn.
using TokenBytesFn = std::function<std::string(std::int32_t)>;
TokenBytesFn token_bytes_fn(const ByteTokenizer& tokenizer);

// One choice of a response.
struct Choice {
  std::string text;
  std::string finish_reason;
  std::vector<std::int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;  // one per token when asked for
};

// The `logprobs` object of a choice or chunk (null unless asked for). Completions: `tokens`,
// `token_logprobs`, `top_logprobs` (the token and its alternatives, by token text) and
// `text_offset` (from `text_offset`); chat: {"content": [{token, logprob, bytes,
// top_logprobs}]}.
nlohmann::json logprobs_json(const CompletionRequest& r, const std::vector<TokenLogprobs>& lps,
                             const TokenBytesFn& bytes, std::int64_t text_offset);

// vLLM's system fingerprint is null; kvfleet names the model and the cluster's backend, so a
// client can tell a change of what serves it.
std::string system_fingerprint(std::string_view model, std::string_view backend);

// Parses and checks a body; `chat` selects the chat schema. Errors name the field.
Result<CompletionRequest> parse_completion_request(std::string_view body, bool chat, ApiError& error);
// The chat template of kvfleet's byte-level models.
std::string apply_chat_template(const nlohmann::json& messages);

// Bytes in, valid UTF-8 out: complete characters only; invalid bytes become U+FFFD.
class Utf8Decoder {
 public:
  std::string feed(std::string_view bytes);
  std::string flush();  // an incomplete tail becomes U+FFFD

 private:
  std::string pending_;
};

// The text of one output stream, token by token: each piece is whole UTF-8 characters, and the
// pieces add up to the decoding of all the tokens. One per stream; not thread-safe.
class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  virtual std::string add(std::int32_t token) = 0;
  virtual std::string finish() = 0;  // what is still held back, at the end
};
// The byte tokenizer's: token bytes through a Utf8Decoder (invalid bytes become U+FFFD).
std::unique_ptr<TokenDecoder> byte_token_decoder(const ByteTokenizer& tokenizer);

// Detokenises one output stream, applying stop strings. append() returns the text that may be
// sent now; once a stop string matched, stopped() is true and nothing more is returned.
class OutputText {
 public:
  OutputText(std::unique_ptr<TokenDecoder> decoder, std::vector<std::string> stop)
      : decoder_(std::move(decoder)), stop_(std::move(stop)) {
    for (const auto& s : stop_) hold_ = std::max(hold_, s.empty() ? 0 : s.size() - 1);
  }
  OutputText(const ByteTokenizer& tokenizer, std::vector<std::string> stop)
      : OutputText(byte_token_decoder(tokenizer), std::move(stop)) {}
  std::string append(std::int32_t token);
  std::string finish();  // the held-back rest (unless stopped)
  bool stopped() const { return stopped_; }
  const std::string& text() const { return sent_; }  // everything returned so far

 private:
  std::string take(bool final);
  std::unique_ptr<TokenDecoder> decoder_;
  std::vector<std::string> stop_;
  std::size_t hold_ = 0;
  std::string text_;  // decoded, not yet returned
  std::string sent_;
  bool stopped_ = false;
};

struct Usage {
  std::int64_t prompt_tokens = 0, completion_tokens = 0;
};

// The identity every response and chunk of one request carries.
struct ResponseHead {
  std::string id;
  std::int64_t created = 0;
  std::string fingerprint;  // system_fingerprint
};

// Response bodies. `logprobs` per choice: logprobs_json's (null when not asked for).
nlohmann::json completion_response(const CompletionRequest& r, const ResponseHead& head,
                                   const std::vector<Choice>& choices,
                                   const std::vector<nlohmann::json>& logprobs, const Usage& usage);
// One streamed chunk of choice `index`: `text` (may be empty), `finish_reason` (empty: null),
// `logprobs` (null when not asked for).
nlohmann::json stream_chunk(const CompletionRequest& r, const ResponseHead& head,
                            std::int64_t index, const std::string& text,
                            const std::string& finish_reason,
                            const std::vector<std::int32_t>& tokens, bool first,
                            nlohmann::json logprobs = nullptr);
nlohmann::json usage_chunk(const CompletionRequest& r, const ResponseHead& head,
                           const Usage& usage);
nlohmann::json usage_json(const Usage& u);
std::string sse(const nlohmann::json& j);  // "data: {...}\n\n"
std::string json_text(const nlohmann::json& j);

}  // namespace kvfleet::coordinator
