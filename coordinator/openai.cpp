#include "coordinator/openai.h"

#include <algorithm>
#include <limits>

#include "common/json_text.h"

namespace kvfleet::coordinator {
namespace {

using nlohmann::json;

Status fail(ApiError& e, int status, std::string param, std::string message) {
  e.status = status;
  e.param = std::move(param);
  e.message = std::move(message);
  return invalid_argument(e.message);
}

constexpr std::int64_t kMaxInt32 = std::numeric_limits<std::int32_t>::max();

// A token id: an integer in [0, 2^31 - 1] (the vocabulary check needs the model: admission).
bool token_id(const json& v, std::int32_t& out) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(kMaxInt32)) return false;
    out = static_cast<std::int32_t>(u);
    return true;
  }
  if (!v.is_number_integer()) return false;
  const auto i = v.get<std::int64_t>();
  if (i < 0 || i > kMaxInt32) return false;
  out = static_cast<std::int32_t>(i);
  return true;
}

// Token ids of `field`; the first bad one is an error naming the field and the value.
Status token_ids(const json& arr, const char* field, std::vector<std::int32_t>& out, ApiError& e) {
  for (const json& t : arr) {
    std::int32_t id = 0;
    if (!token_id(t, id)) {
      return fail(e, 400, field,
                  std::string("'") + field + "' token ids must be integers in [0, " +
                      std::to_string(kMaxInt32) + "]; got " + t.dump());
    }
    out.push_back(id);
  }
  return Status();
}

constexpr std::int64_t kMaxChoices = 128;  // OpenAI's limit on n
constexpr std::uint64_t kMaxLogprobs = 20;

// Parameters vLLM accepts that kvfleet does not implement: a 400 naming the parameter when
// one asks for something (null, and values that ask for the default, pass), never a silent 200.
// Unknown parameters are ignored, as vLLM does (it logs and ignores extra fields).
Status check_unsupported(const json& j, bool chat, ApiError& e) {
  auto given = [&](const char* k) { return j.contains(k) && !j[k].is_null(); };
  auto refuse = [&](const char* k, const std::string& why) {
    return fail(
        e, 400, k,
        std::string("'") + k + "' is not supported by kvfleet" + (why.empty() ? "" : ": " + why));
  };
  auto non_empty = [&](const char* k) {
    if (!given(k)) return false;
    const json& v = j[k];
    return !((v.is_array() || v.is_object() || v.is_string()) && v.empty());
  };
  for (const char* k : {"tools", "functions"}) {
    if (non_empty(k)) return refuse(k, "kvfleet has no tool calling");
  }
  for (const char* k : {"tool_choice", "function_call"}) {
    if (given(k) && !(j[k].is_string() && j[k].get<std::string>() == "none")) {
      return refuse(k, "kvfleet has no tool calling (only \"none\" is accepted)");
    }
  }
  if (given("response_format") &&
      !(j["response_format"].is_object() && j["response_format"].value("type", "") == "text")) {
    return refuse("response_format", "no structured output (only {\"type\": \"text\"})");
  }
  for (const char* k :
       {"guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
        "guided_whitespace_pattern", "structured_outputs", "prompt_logprobs",
        "truncate_prompt_tokens", "logits_processors", "prediction", "audio", "reasoning_effort",
        "chat_template", "documents", "mm_processor_kwargs", "web_search_options", "suffix"}) {
    if (given(k)) return refuse(k, "");
  }
  for (const char* k : {"allowed_token_ids", "bad_words", "chat_template_kwargs"}) {
    if (non_empty(k)) return refuse(k, "");
  }
  if (given("min_p") && !(j["min_p"].is_number() && j["min_p"].get<double>() == 0)) {
    return refuse("min_p", "only 0");
  }
  if (given("length_penalty") &&
      !(j["length_penalty"].is_number() && j["length_penalty"].get<double>() == 1)) {
    return refuse("length_penalty", "no beam search");
  }
  auto refuse_unless = [&](const char* k, bool accepted, const char* why) -> Status {
    if (given(k) && !(j[k].is_boolean() && j[k].get<bool>() == accepted)) return refuse(k, why);
    return Status();
  };
  KVFLEET_RETURN_IF_ERROR(refuse_unless("use_beam_search", false, "no beam search"));
  KVFLEET_RETURN_IF_ERROR(
      refuse_unless("include_stop_str_in_output", false, "the stop string is always left out"));
  KVFLEET_RETURN_IF_ERROR(
      refuse_unless("skip_special_tokens", true, "special tokens are always left out of the text"));
  if (given("priority") &&
      !(j["priority"].is_number_integer() && j["priority"].get<std::int64_t>() == 0)) {
    return refuse("priority", "requests are served first come, first served");
  }
  if (given("modalities") && !(j["modalities"].is_array() && j["modalities"].size() == 1 &&
                               j["modalities"][0] == "text")) {
    return refuse("modalities", "text only");
  }
  if (given("stream_options") && j["stream_options"].is_object()) {
    for (const auto& [k, v] : j["stream_options"].items()) {
      if (k == "include_usage" || v.is_null()) continue;
      if (k == "continuous_usage_stats" && v.is_boolean() && !v.get<bool>()) continue;
      return fail(e, 400, "stream_options",
                  "'stream_options." + k + "' is not supported by kvfleet (only include_usage)");
    }
  }
  if (chat) {
    KVFLEET_RETURN_IF_ERROR(refuse_unless("echo", false, "chat echo is not implemented"));
    KVFLEET_RETURN_IF_ERROR(refuse_unless("continue_final_message", false, ""));
    KVFLEET_RETURN_IF_ERROR(
        refuse_unless("add_generation_prompt", true, "the built-in template always adds it"));
  }
  return Status();
}

}  // namespace

std::string json_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }
std::string sse(const json& j) { return "data: " + json_text(j) + "\n\n"; }

std::string apply_chat_template(const json& messages) {
  std::string out;
  for (const json& m : messages) {
    std::string content;
    const json& c = m["content"];
    if (c.is_string()) {
      content = c.get<std::string>();
    } else if (c.is_array()) {
      for (const json& part : c) {
        if (part.is_object() && part.value("type", "") == "text" && part.contains("text") &&
            part["text"].is_string()) {
          content += part["text"].get<std::string>();
        }
      }
    }
    out += "<|" + m["role"].get<std::string>() + "|>\n" + content + "\n";
  }
  out += "<|assistant|>\n";
  return out;
}

Result<CompletionRequest> parse_completion_request(std::string_view body, bool chat, ApiError& e) {
  // A NUL can never be part of a JSON text (inside strings it must be escaped): a body with one
  // (`{...}\0garbage`) is not one JSON value. Prompts that are not UTF-8 are refused here too.
  auto body_json = parse_json_text(body);
  if (!body_json.is_ok()) {
    return fail(e, 400, "", "the request body is not valid JSON: " + body_json.status().message());
  }
  json j = std::move(body_json).value();
  if (!j.is_object()) return fail(e, 400, "", "the request body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (!j.contains("model") || !j["model"].is_string()) {
    return fail(e, 400, "model", "'model' is required and must be a string");
  }
  r.model = j["model"].get<std::string>();

  if (chat) {
    if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty()) {
      return fail(e, 400, "messages", "'messages' must be a non-empty array");
    }
    for (const json& m : j["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
          !(m["content"].is_string() || m["content"].is_array())) {
        return fail(e, 400, "messages",
                    "each message needs a string 'role' and a string or array 'content'");
      }
      const std::string role = m["role"].get<std::string>();
      if (role == "tool" || role == "function") {
        return fail(e, 400, "messages",
                    "'messages' with role '" + role +
                        "' need tool calling, which kvfleet does not support");
      }
      if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
        return fail(e, 400, "messages",
                    "'messages' has an unknown role '" + role +
                        "': expected system, developer, user or assistant");
      }
    }
    r.prompt_text = apply_chat_template(j["messages"]);
  } else {
    if (!j.contains("prompt")) return fail(e, 400, "prompt", "'prompt' is required");
    const json& p = j["prompt"];
    auto numbers = [](const json& a) {
      return a.is_array() && !a.empty() &&
             std::all_of(a.begin(), a.end(), [](const json& x) { return x.is_number(); });
    };
    if (p.is_string()) {
      r.prompt_text = p.get<std::string>();
    } else if (numbers(p)) {
      r.prompt_is_tokens = true;
      KVFLEET_RETURN_IF_ERROR(token_ids(p, "prompt", r.prompt, e));
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt_text = p[0].get<std::string>();
    } else if (p.is_array() && p.size() == 1 && numbers(p[0])) {
      r.prompt_is_tokens = true;
      KVFLEET_RETURN_IF_ERROR(token_ids(p[0], "prompt", r.prompt, e));
    } else if (p.is_array() && p.size() > 1 && std::all_of(p.begin(), p.end(), [](const json& x) {
                 return x.is_string() || x.is_array();
               })) {
      return fail(e, 400, "prompt", "batched prompts are not supported: send one prompt per request");
    } else {
      return fail(e, 400, "prompt", "'prompt' must be a string or a non-empty array of token ids");
    }
    if (!r.prompt_is_tokens && r.prompt_text.empty()) {
      return fail(e, 400, "prompt", "'prompt' is empty");
    }
  }

  // Integers are JSON integers (1.5 and 2.0 are not) that fit int64: nlohmann keeps integers
  // up to 2^64 - 1 as unsigned, which get<std::int64_t>() would wrap to negative numbers.
  auto number = [&](const char* name, auto& out, bool integer) -> Status {
    if (!j.contains(name) || j[name].is_null()) return Status();
    const json& v = j[name];
    if (integer ? !v.is_number_integer() : !v.is_number()) {
      return fail(e, 400, name, std::string("'") + name + "' must be " + (integer ? "an integer" : "a number"));
    }
    if (integer && v.is_number_unsigned() &&
        v.get<std::uint64_t>() >
            static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return fail(e, 400, name, std::string("'") + name + "' is too large: " + v.dump());
    }
    out = v.get<std::remove_reference_t<decltype(out)>>();
    return Status();
  };
  auto boolean = [&](const json& obj, const char* name, bool& out) -> Status {
    if (!obj.contains(name) || obj[name].is_null()) return Status();
    if (!obj[name].is_boolean()) return fail(e, 400, name, std::string("'") + name + "' must be a boolean");
    out = obj[name].get<bool>();
    return Status();
  };
  const char* max_name = chat && j.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  std::int64_t max_tokens = 0;
  bool has_max = j.contains(max_name) && !j[max_name].is_null();
  KVFLEET_RETURN_IF_ERROR(number(max_name, max_tokens, true));
  if (has_max) {
    if (max_tokens <= 0) return fail(e, 400, max_name, std::string("'") + max_name + "' must be at least 1");
    r.max_tokens = max_tokens;
  }
  KVFLEET_RETURN_IF_ERROR(number("min_tokens", r.min_tokens, true));
  KVFLEET_RETURN_IF_ERROR(number("temperature", r.temperature, false));
  KVFLEET_RETURN_IF_ERROR(number("top_p", r.top_p, false));
  KVFLEET_RETURN_IF_ERROR(number("top_k", r.top_k, true));
  if (j.contains("seed") && !j["seed"].is_null()) {
    // Any integer from -2^63 to 2^64 - 1; negative seeds keep their two's complement bits.
    const json& s = j["seed"];
    if (!s.is_number_integer()) return fail(e, 400, "seed", "'seed' must be an integer");
    r.seed = s.is_number_unsigned() ? s.get<std::uint64_t>()
                                    : static_cast<std::uint64_t>(s.get<std::int64_t>());
  }
  if (r.temperature < 0 || r.temperature > 100) {
    return fail(e, 400, "temperature", "'temperature' must be in [0, 100]");
  }
  if (!(r.top_p > 0 && r.top_p <= 1)) return fail(e, 400, "top_p", "'top_p' must be in (0, 1]");
  if (r.top_k < -1) return fail(e, 400, "top_k", "'top_k' must be -1, 0 or positive");
  if (r.top_k == -1) r.top_k = 0;
  if (r.min_tokens < 0) return fail(e, 400, "min_tokens", "'min_tokens' must be >= 0");
  if (r.max_tokens && r.min_tokens > *r.max_tokens) {
    return fail(e, 400, "min_tokens", "'min_tokens' must not exceed 'max_tokens'");
  }
  KVFLEET_RETURN_IF_ERROR(boolean(j, "ignore_eos", r.ignore_eos));
  KVFLEET_RETURN_IF_ERROR(boolean(j, "stream", r.stream));
  KVFLEET_RETURN_IF_ERROR(boolean(j, "return_token_ids", r.return_token_ids));
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    if (!j["stream_options"].is_object()) {
      return fail(e, 400, "stream_options", "'stream_options' must be an object");
    }
    KVFLEET_RETURN_IF_ERROR(boolean(j["stream_options"], "include_usage", r.include_usage));
  }
  KVFLEET_RETURN_IF_ERROR(check_unsupported(j, chat, e));
  if (j.contains("n") && !j["n"].is_null()) {
    const json& n = j["n"];
    const bool ok = n.is_number_integer() &&
                    !(n.is_number_unsigned()
                          ? n.get<std::uint64_t>() > kMaxChoices
                          : n.get<std::int64_t>() < 1 || n.get<std::int64_t>() > kMaxChoices);
    if (!ok) {
      return fail(
          e, 400, "n",
          "'n' must be an integer in [1, " + std::to_string(kMaxChoices) + "]; got " + n.dump());
    }
    r.n = n.get<std::int64_t>();
    if (r.n < 1) return fail(e, 400, "n", "'n' must be at least 1");
  }
  if (j.contains("best_of") && !j["best_of"].is_null()) {
    const json& b = j["best_of"];
    if (!b.is_number_integer()) return fail(e, 400, "best_of", "'best_of' must be an integer");
    if (!(b.is_number_unsigned() ? b.get<std::uint64_t>() == static_cast<std::uint64_t>(r.n)
                                 : b.get<std::int64_t>() == r.n)) {
      return fail(e, 400, "best_of",
                  "'best_of' other than n is not supported (kvfleet returns every choice it "
                  "generates); got " +
                      b.dump() + " with n = " + std::to_string(r.n));
    }
  }
  KVFLEET_RETURN_IF_ERROR(number("presence_penalty", r.presence_penalty, false));
  KVFLEET_RETURN_IF_ERROR(number("frequency_penalty", r.frequency_penalty, false));
  KVFLEET_RETURN_IF_ERROR(number("repetition_penalty", r.repetition_penalty, false));
  if (!(r.presence_penalty >= -2 && r.presence_penalty <= 2)) {
    return fail(e, 400, "presence_penalty", "'presence_penalty' must be in [-2, 2]");
  }
  if (!(r.frequency_penalty >= -2 && r.frequency_penalty <= 2)) {
    return fail(e, 400, "frequency_penalty", "'frequency_penalty' must be in [-2, 2]");
  }
  if (!(r.repetition_penalty > 0 && r.repetition_penalty <= 1e6)) {
    return fail(e, 400, "repetition_penalty", "'repetition_penalty' must be > 0");
  }
  if (j.contains("logit_bias") && !j["logit_bias"].is_null()) {
    const json& b = j["logit_bias"];
    if (!b.is_object()) {
      return fail(e, 400, "logit_bias", "'logit_bias' must be an object of token id -> bias");
    }
    for (const auto& [key, value] : b.items()) {
      std::int32_t id = 0;
      const json parsed = json::parse(key, nullptr, false);
      if (parsed.is_discarded() || !token_id(parsed, id) || parsed.dump() != key) {
        return fail(e, 400, "logit_bias",
                    "'logit_bias' keys must be token ids (decimal integers in [0, " +
                        std::to_string(kMaxInt32) + "]); got \"" + key + "\"");
      }
      if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100)) {
        return fail(e, 400, "logit_bias",
                    "'logit_bias' values must be numbers in [-100, 100]; got " + value.dump() +
                        " for token " + key);
      }
      r.logit_bias.emplace_back(id, value.get<double>());
    }
  }
  // Logprobs: completions take `logprobs` as the number of alternatives; chat takes a boolean
  // plus `top_logprobs`. vLLM's limit (max_logprobs) is 20.
  auto alternatives = [&](const char* name, const json& l) -> Status {
    const bool ok = l.is_number_integer() &&
                    (l.is_number_unsigned()
                         ? l.get<std::uint64_t>() <= kMaxLogprobs
                         : l.get<std::int64_t>() >= 0 &&
                               l.get<std::int64_t>() <= static_cast<std::int64_t>(kMaxLogprobs));
    if (!ok) {
      return fail(e, 400, name,
                  std::string("'") + name + "' must be an integer in [0, " +
                      std::to_string(kMaxLogprobs) + "]; got " + l.dump());
    }
    r.logprobs = l.get<std::int64_t>();
    return Status();
  };
  const bool has_top = j.contains("top_logprobs") && !j["top_logprobs"].is_null();
  if (chat) {
    bool want = false;
    KVFLEET_RETURN_IF_ERROR(boolean(j, "logprobs", want));
    if (has_top && !want) {
      return fail(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
    }
    if (want) r.logprobs = 0;
    if (has_top) KVFLEET_RETURN_IF_ERROR(alternatives("top_logprobs", j["top_logprobs"]));
  } else {
    if (j.contains("logprobs") && !j["logprobs"].is_null()) {
      KVFLEET_RETURN_IF_ERROR(alternatives("logprobs", j["logprobs"]));
    }
    KVFLEET_RETURN_IF_ERROR(boolean(j, "echo", r.echo));
    if (r.echo && r.logprobs) {
      return fail(e, 400, "echo",
                  "'echo' with 'logprobs' would need the prompt's logprobs, which kvfleet does "
                  "not compute: send one or the other");
    }
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && std::all_of(s.begin(), s.end(), [](const json& x) { return x.is_string(); })) {
      for (const json& x : s) r.stop.push_back(x.get<std::string>());
    } else {
      return fail(e, 400, "stop", "'stop' must be a string or an array of strings");
    }
    r.stop.erase(std::remove(r.stop.begin(), r.stop.end(), std::string()), r.stop.end());
  }
  if (j.contains("stop_token_ids") && !j["stop_token_ids"].is_null()) {
    const json& s = j["stop_token_ids"];
    if (!s.is_array()) {
      return fail(e, 400, "stop_token_ids", "'stop_token_ids' must be an array of token ids");
    }
    KVFLEET_RETURN_IF_ERROR(token_ids(s, "stop_token_ids", r.stop_token_ids, e));
  }
  return r;
}

std::string Utf8Decoder::feed(std::string_view bytes) {
  std::string out;
  pending_.append(bytes);
  size_t i = 0;
  const std::string& p = pending_;
  while (i < p.size()) {
    const auto c = static_cast<unsigned char>(p[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || (len == 2 && c < 0xC2) || (len == 4 && c > 0xF4)) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    if (i + len > p.size()) {
      // Possibly incomplete: keep it if the bytes so far are continuations.
      bool ok = true;
      for (size_t k = i + 1; k < p.size(); ++k) ok &= (static_cast<unsigned char>(p[k]) & 0xC0) == 0x80;
      if (ok) break;
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    bool ok = true;
    for (size_t k = 1; k < len; ++k) ok &= (static_cast<unsigned char>(p[i + k]) & 0xC0) == 0x80;
    if (ok && len == 3) {
      const auto c1 = static_cast<unsigned char>(p[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);  // overlong, surrogates
    }
    if (ok && len == 4) {
      const auto c1 = static_cast<unsigned char>(p[i + 1]);
      ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    if (!ok) {
      out += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    out.append(p, i, len);
    i += len;
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Decoder::flush() {
  std::string out = pending_.empty() ? "" : "\xEF\xBF\xBD";
  pending_.clear();
  return out;
}

namespace {
class ByteTokenDecoder final : public TokenDecoder {
 public:
  explicit ByteTokenDecoder(const ByteTokenizer& tok) : tok_(tok) {}
  std::string add(std::int32_t token) override { return utf8_.feed(tok_.decode_token(token)); }
  std::string finish() override { return utf8_.flush(); }

 private:
  ByteTokenizer tok_;
  Utf8Decoder utf8_;
};
}  // namespace

std::unique_ptr<TokenDecoder> byte_token_decoder(const ByteTokenizer& tokenizer) {
  return std::make_unique<ByteTokenDecoder>(tokenizer);
}

std::string OutputText::append(std::int32_t token) {
  if (stopped_) return {};
  text_ += decoder_->add(token);
  return take(false);
}

std::string OutputText::finish() {
  if (stopped_) return {};
  text_ += decoder_->finish();
  return take(true);
}

std::string OutputText::take(bool final) {
  // A stop string may start in the already-sent tail; search from there.
  const std::size_t tail = std::min(sent_.size(), hold_);
  const std::string window = sent_.substr(sent_.size() - tail) + text_;
  std::size_t best = std::string::npos;
  for (const std::string& s : stop_) best = std::min(best, window.find(s));
  if (best != std::string::npos) {
    stopped_ = true;
    // Sent text never contains a whole stop string, so the match ends inside text_.
    const std::size_t keep = best >= tail ? best - tail : 0;
    std::string out = text_.substr(0, keep);
    sent_ += out;
    text_.clear();
    return out;
  }
  std::size_t n = text_.size();
  if (!final && hold_ > 0) {
    n = text_.size() > hold_ ? text_.size() - hold_ : 0;
    while (n > 0 && (static_cast<unsigned char>(text_[n]) & 0xC0) == 0x80) --n;  // char boundary
  }
  std::string out = text_.substr(0, n);
  text_.erase(0, n);
  sent_ += out;
  return out;
}

TokenBytesFn token_bytes_fn(const ByteTokenizer& tokenizer) {
  return [&tokenizer](std::int32_t id) { return tokenizer.decode_token(id); };
}

namespace {
// A token's text in a logprobs entry: its bytes as UTF-8, invalid bytes as U+FFFD (the raw
// bytes are in `bytes`, chat format).
std::string token_text(const std::string& bytes) {
  Utf8Decoder d;
  std::string out = d.feed(bytes);
  return out + d.flush();  // after feed: the order of operands of + is unspecified
}
json byte_list(const std::string& bytes) {
  json out = json::array();
  for (char c : bytes) out.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

json logprobs_json(const CompletionRequest& r, const std::vector<TokenLogprobs>& lps,
                   const TokenBytesFn& bytes, std::int64_t text_offset) {
  if (!r.logprobs) return nullptr;
  if (r.chat) {
    json content = json::array();
    for (const TokenLogprobs& t : lps) {
      const std::string b = bytes(t.token);
      json e{{"token", token_text(b)}, {"logprob", t.logprob}, {"bytes", byte_list(b)}};
      json top = json::array();
      for (const auto& [id, lp] : t.top) {
        const std::string tb = bytes(id);
        top.push_back({{"token", token_text(tb)}, {"logprob", lp}, {"bytes", byte_list(tb)}});
      }
      e["top_logprobs"] = top;
      content.push_back(e);
    }
    return json{{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(),
       offsets = json::array();
  for (const TokenLogprobs& t : lps) {
    const std::string text = token_text(bytes(t.token));
    tokens.push_back(text);
    token_logprobs.push_back(t.logprob);
    // As vLLM: the sampled token and the alternatives, by text.
    json top = json::object();
    top[text] = t.logprob;
    for (const auto& [id, lp] : t.top) {
      const std::string alt = token_text(bytes(id));
      if (!top.contains(alt)) top[alt] = lp;
    }
    top_logprobs.push_back(top);
    offsets.push_back(text_offset);
    text_offset += static_cast<std::int64_t>(text.size());
  }
  return json{{"tokens", tokens},
              {"token_logprobs", token_logprobs},
              {"top_logprobs", top_logprobs},
              {"text_offset", offsets}};
}

std::string system_fingerprint(std::string_view model, std::string_view backend) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (std::string_view part : {model, std::string_view("\n"), backend}) {
    for (char c : part) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  }
  static const char* hex = "0123456789abcdef";
  std::string s = "fp_";
  for (int i = 0; i < 10; ++i, h >>= 4) s += hex[h & 15];
  return s;
}

json usage_json(const Usage& u) {
  json j;
  j["prompt_tokens"] = u.prompt_tokens;
  j["completion_tokens"] = u.completion_tokens;
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  return j;
}

namespace {
json head_json(const CompletionRequest& r, const ResponseHead& head, const char* object) {
  json j;
  j["id"] = head.id;
  j["object"] = object;
  j["created"] = head.created;
  j["model"] = r.model;
  j["system_fingerprint"] = head.fingerprint;
  return j;
}
}  // namespace

json completion_response(const CompletionRequest& r, const ResponseHead& head,
                         const std::vector<Choice>& choices, const std::vector<json>& logprobs,
                         const Usage& usage) {
  json out = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json choice;
    choice["index"] = i;
    if (r.chat) {
      json msg;
      msg["role"] = "assistant";
      msg["content"] = c.text;
      choice["message"] = msg;
    } else {
      choice["text"] = c.text;
    }
    choice["logprobs"] = i < logprobs.size() ? logprobs[i] : json(nullptr);
    choice["finish_reason"] = c.finish_reason;
    if (r.return_token_ids) choice["token_ids"] = c.tokens;
    out.push_back(choice);
  }
  json j = head_json(r, head, r.chat ? "chat.completion" : "text_completion");
  j["choices"] = out;
  j["usage"] = usage_json(usage);
  return j;
}

json stream_chunk(const CompletionRequest& r, const ResponseHead& head, std::int64_t index,
                  const std::string& text, const std::string& finish_reason,
                  const std::vector<std::int32_t>& tokens, bool first, json logprobs) {
  json choice;
  choice["index"] = index;
  if (r.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = std::move(logprobs);
  choice["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  if (r.return_token_ids) choice["token_ids"] = tokens;
  json j = head_json(r, head, r.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array({choice});
  if (r.include_usage) j["usage"] = nullptr;
  return j;
}

json usage_chunk(const CompletionRequest& r, const ResponseHead& head, const Usage& usage) {
  json j = head_json(r, head, r.chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  return j;
}

}  // namespace kvfleet::coordinator
