#pragma once
// The OpenAI-compatible surface: parsing /v1/completions and /v1/chat/completions bodies into
// one typed request, the chat template of the built-in models, incremental detokenisation
// (complete UTF-8 characters only, stop strings held back until they cannot match), and the
// JSON of responses and SSE chunks, shaped as vLLM emits them.

#include <algorithm>
#include <cstdint>
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
};

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

// Response bodies.
nlohmann::json completion_response(const CompletionRequest& r, const std::string& id,
                                   std::int64_t created, const std::string& text,
                                   const std::string& finish_reason,
                                   const std::vector<std::int32_t>& tokens, const Usage& usage);
// One streamed chunk: `text` (may be empty), `finish_reason` (empty: null).
nlohmann::json stream_chunk(const CompletionRequest& r, const std::string& id, std::int64_t created,
                            const std::string& text, const std::string& finish_reason,
                            const std::vector<std::int32_t>& tokens, bool first);
nlohmann::json usage_chunk(const CompletionRequest& r, const std::string& id, std::int64_t created,
                           const Usage& usage);
nlohmann::json usage_json(const Usage& u);
std::string sse(const nlohmann::json& j);  // "data: {...}\n\n"
std::string json_text(const nlohmann::json& j);

}  // namespace kvfleet::coordinator
