// Pure parts of the coordinator: request parsing, detokenisation with stop strings, the
// registry's leases and the routing policy.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <tuple>

#include "common/model_spec.h"
#include "coordinator/openai.h"
#include "coordinator/registry.h"
#include "coordinator/router.h"
#include "kvstore/prefix_hash.h"

namespace kvfleet::coordinator {
namespace {

ByteTokenizer tokenizer() { return *ByteTokenizer::for_model(*load_model_spec("tiny")); }

TEST(OpenAiParse, AcceptsTheUsualShapes) {
  ApiError e;
  auto r = parse_completion_request(
      R"({"model":"tiny","prompt":"hi","max_tokens":5,"stream":true,
          "stream_options":{"include_usage":true},"stop":["a","b"],"seed":3,"temperature":0})",
      false, e);
  ASSERT_TRUE(r.is_ok()) << e.message;
  EXPECT_EQ(r->prompt_text, "hi");
  EXPECT_EQ(*r->max_tokens, 5);
  EXPECT_TRUE(r->stream && r->include_usage);
  EXPECT_EQ(r->stop.size(), 2u);
  auto ids = parse_completion_request(R"({"model":"tiny","prompt":[[1,2,3]]})", false, e);
  ASSERT_TRUE(ids.is_ok());
  EXPECT_TRUE(ids->prompt_is_tokens);
  EXPECT_EQ(ids->prompt, (std::vector<std::int32_t>{1, 2, 3}));
  auto chat = parse_completion_request(
      R"({"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":"yo"}]}]})",
      true, e);
  ASSERT_TRUE(chat.is_ok());
  EXPECT_EQ(chat->prompt_text, "<|user|>\nyo\n<|assistant|>\n");
}

TEST(OpenAiParse, RejectsWithTheFieldNamed) {
  const std::pair<const char*, const char*> bad[] = {
      {R"({"prompt":"x"})", "model"},
      {R"({"model":"m","prompt":"x","max_tokens":0})", "max_tokens"},
      {R"({"model":"m","prompt":"x","top_p":0})", "top_p"},
      {R"({"model":"m","prompt":"x","n":0})", "n"},
      {R"({"model":"m","prompt":["a","b"]})", "prompt"},
      {R"({"model":"m","prompt":"x","stop":[1]})", "stop"},
      {R"({"model":"m","prompt":"x","min_tokens":9,"max_tokens":2})", "min_tokens"},
  };
  for (const auto& [body, param] : bad) {
    ApiError e;
    EXPECT_FALSE(parse_completion_request(body, false, e).is_ok()) << body;
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, param) << body;
  }
}

TEST(OpenAiParse, IntegersOutsideTheirRangeOrOfTheWrongTypeAre400s) {
  // {body, chat, the field the error names, a piece of its message}
  const std::tuple<std::string, bool, const char*, const char*> bad[] = {
      // 4294967361 = 2^32 + 65 used to wrap to token 65.
      {R"({"model":"m","prompt":[4294967361]})", false, "prompt",
       "[0, 2147483647]; got 4294967361"},
      {R"({"model":"m","prompt":[[1,2147483648]]})", false, "prompt", "got 2147483648"},
      {R"({"model":"m","prompt":[1,-1]})", false, "prompt", "got -1"},
      {R"({"model":"m","prompt":[18446744073709551615]})", false, "prompt",
       "got 18446744073709551615"},
      {R"({"model":"m","prompt":[1,2.5]})", false, "prompt", "token ids"},
      {R"({"model":"m","prompt":"x","stop_token_ids":[4294967296]})", false, "stop_token_ids",
       "got 4294967296"},
      {R"({"model":"m","prompt":"x","stop_token_ids":[1.5]})", false, "stop_token_ids", "got 1.5"},
      {R"({"model":"m","prompt":"x","max_tokens":1.5})", false, "max_tokens", "an integer"},
      {R"({"model":"m","prompt":"x","max_tokens":18446744073709551615})", false, "max_tokens",
       "too large"},
      {R"({"model":"m","prompt":"x","min_tokens":9223372036854775808})", false, "min_tokens",
       "too large"},
      {R"({"model":"m","prompt":"x","min_tokens":2.5})", false, "min_tokens", "an integer"},
      // 2^64 - 1 used to wrap to -1, which means "top_k disabled".
      {R"({"model":"m","prompt":"x","top_k":18446744073709551615})", false, "top_k", "too large"},
      {R"({"model":"m","prompt":"x","top_k":1.5})", false, "top_k", "an integer"},
      {R"({"model":"m","prompt":"x","seed":1.5})", false, "seed", "an integer"},
      {R"({"model":"m","prompt":"x","n":1.5})", false, "n", "an integer"},
      {R"({"model":"m","prompt":"x","n":18446744073709551615})", false, "n", "in [1, 128]"},
      {R"({"model":"m","prompt":"x","n":129})", false, "n", "in [1, 128]"},
      {R"({"model":"m","prompt":"x","logprobs":21})", false, "logprobs", "[0, 20]"},
      {R"({"model":"m","prompt":"x","logprobs":1.5})", false, "logprobs", "integer"},
      {R"({"model":"m","prompt":"x","logprobs":-1})", false, "logprobs", "integer"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":3})", true, "logprobs",
       "boolean"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,
           "top_logprobs":0.5})",
       true, "top_logprobs", "integer"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2})", true,
       "top_logprobs", "needs 'logprobs'"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":2.0})",
       true, "max_completion_tokens", "an integer"},
  };
  for (const auto& [body, chat, param, needle] : bad) {
    ApiError e;
    EXPECT_FALSE(parse_completion_request(body, chat, e).is_ok()) << body;
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body;
    EXPECT_NE(e.message.find(needle), std::string::npos) << body << ": " << e.message;
  }
}

TEST(OpenAiParse, IntegersAtTheEdgesOfTheirRangesAreKept) {
  ApiError e;
  auto r = parse_completion_request(
      R"({"model":"m","prompt":[0,2147483647],"stop_token_ids":[2147483647],
          "max_tokens":9223372036854775807,"seed":18446744073709551615,"n":1,"logprobs":0})",
      false, e);
  ASSERT_TRUE(r.is_ok()) << e.message;
  EXPECT_EQ(r->prompt, (std::vector<std::int32_t>{0, 2147483647}));
  EXPECT_EQ(r->stop_token_ids, (std::vector<std::int32_t>{2147483647}));
  EXPECT_EQ(*r->max_tokens, std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(*r->seed, std::numeric_limits<std::uint64_t>::max());
  auto negative_seed =
      parse_completion_request(R"({"model":"m","prompt":"x","seed":-1})", false, e);
  ASSERT_TRUE(negative_seed.is_ok()) << e.message;
  EXPECT_EQ(*negative_seed->seed, std::numeric_limits<std::uint64_t>::max());
}

TEST(OpenAiParse, SamplingParametersOfVllmAreParsed) {
  ApiError e;
  auto r = parse_completion_request(
      R"({"model":"m","prompt":"x","n":3,"best_of":3,"presence_penalty":-2,"frequency_penalty":2,
          "repetition_penalty":1.3,"logit_bias":{"65":100,"7":-100.0},"logprobs":5,"echo":false,
          "tools":[],"tool_choice":"none","response_format":{"type":"text"},"min_p":0,
          "unknown_extension":{"ignored":true}})",
      false, e);
  ASSERT_TRUE(r.is_ok()) << e.message;
  EXPECT_EQ(r->n, 3);
  EXPECT_EQ(r->presence_penalty, -2);
  EXPECT_EQ(r->frequency_penalty, 2);
  EXPECT_EQ(r->repetition_penalty, 1.3);
  EXPECT_EQ(r->logit_bias.size(), 2u);
  EXPECT_EQ(*r->logprobs, 5);
  auto chat = parse_completion_request(
      R"({"model":"m","messages":[{"role":"system","content":"s"},{"role":"developer","content":"d"},
          {"role":"user","content":"u"},{"role":"assistant","content":"a"}],
          "logprobs":true,"top_logprobs":2})",
      true, e);
  ASSERT_TRUE(chat.is_ok()) << e.message;
  EXPECT_EQ(*chat->logprobs, 2);
  auto chat_no_top = parse_completion_request(
      R"({"model":"m","messages":[{"role":"user","content":"u"}],"logprobs":true})", true, e);
  ASSERT_TRUE(chat_no_top.is_ok()) << e.message;
  EXPECT_EQ(*chat_no_top->logprobs, 0);
  auto echo = parse_completion_request(R"({"model":"m","prompt":"x","echo":true})", false, e);
  ASSERT_TRUE(echo.is_ok()) << e.message;
  EXPECT_TRUE(echo->echo);
}

TEST(OpenAiParse, UnsupportedParametersAndUnknownRolesAre400sNamingThem) {
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  // {body after "model", chat, the parameter named}
  const std::tuple<std::string, bool, const char*> bad[] = {
      {R"("prompt":"x","suffix":"end")", false, "suffix"},
      {R"("prompt":"x","best_of":2)", false, "best_of"},
      {R"("prompt":"x","echo":true,"logprobs":1)", false, "echo"},
      {R"("prompt":"x","presence_penalty":2.5)", false, "presence_penalty"},
      {R"("prompt":"x","frequency_penalty":-3)", false, "frequency_penalty"},
      {R"("prompt":"x","repetition_penalty":0)", false, "repetition_penalty"},
      {R"("prompt":"x","logit_bias":{"x":1})", false, "logit_bias"},
      {R"("prompt":"x","logit_bias":{"01":1})", false, "logit_bias"},
      {R"("prompt":"x","logit_bias":{"5":101})", false, "logit_bias"},
      {R"("prompt":"x","logit_bias":[1])", false, "logit_bias"},
      {R"("prompt":"x","prompt_logprobs":1)", false, "prompt_logprobs"},
      {R"("prompt":"x","min_p":0.1)", false, "min_p"},
      {R"("prompt":"x","use_beam_search":true)", false, "use_beam_search"},
      {R"("prompt":"x","guided_json":{})", false, "guided_json"},
      {R"("prompt":"x","stream_options":{"continuous_usage_stats":true})", false, "stream_options"},
      {msgs + R"(,"tools":[{"type":"function","function":{"name":"f"}}])", true, "tools"},
      {msgs + R"(,"tool_choice":"auto")", true, "tool_choice"},
      {msgs + R"(,"functions":[{"name":"f"}])", true, "functions"},
      {msgs + R"(,"response_format":{"type":"json_object"})", true, "response_format"},
      {msgs + R"(,"echo":true)", true, "echo"},
      {msgs + R"(,"add_generation_prompt":false)", true, "add_generation_prompt"},
      {R"("messages":[{"role":"wizard","content":"x"}])", true, "messages"},
      {R"("messages":[{"role":"tool","content":"x","tool_call_id":"1"}])", true, "messages"},
  };
  for (const auto& [rest, chat, param] : bad) {
    const std::string body = R"({"model":"m",)" + rest + "}";
    ApiError e;
    EXPECT_FALSE(parse_completion_request(body, chat, e).is_ok()) << body;
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body << ": " << e.message;
    EXPECT_NE(e.message.find(param), std::string::npos) << body << ": " << e.message;
  }
}

TEST(OpenAiResponse, LogprobsInTheCompletionsAndChatFormats) {
  const ByteTokenizer tok = tokenizer();
  const TokenBytesFn bytes = token_bytes_fn(tok);
  std::vector<TokenLogprobs> lps(2);
  lps[0] = {'h', -0.5, {{'h', -0.5}, {'j', -1.5}}};
  lps[1] = {0xC3, -2.0, {{'i', -0.25}}};  // a lone lead byte: U+FFFD in text, 195 in bytes
  ApiError e;
  CompletionRequest r =
      *parse_completion_request(R"({"model":"m","prompt":"x","logprobs":1})", false, e);
  const nlohmann::json c = logprobs_json(r, lps, bytes, 3);
  EXPECT_EQ(c["tokens"], nlohmann::json({"h", "\xEF\xBF\xBD"}));
  EXPECT_EQ(c["token_logprobs"], nlohmann::json({-0.5, -2.0}));
  EXPECT_EQ(c["text_offset"], nlohmann::json({3, 4}));
  EXPECT_EQ(c["top_logprobs"][0], nlohmann::json({{"h", -0.5}, {"j", -1.5}}));
  EXPECT_EQ(c["top_logprobs"][1], nlohmann::json({{"\xEF\xBF\xBD", -2.0}, {"i", -0.25}}));

  CompletionRequest chat = *parse_completion_request(
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":1})",
      true, e);
  const nlohmann::json m = logprobs_json(chat, lps, bytes, 0);
  ASSERT_EQ(m["content"].size(), 2u);
  EXPECT_EQ(m["content"][0]["token"], "h");
  EXPECT_EQ(m["content"][0]["bytes"], nlohmann::json::array({104}));
  EXPECT_EQ(m["content"][1]["bytes"], nlohmann::json::array({195}));
  EXPECT_EQ(m["content"][1]["top_logprobs"][0],
            nlohmann::json(
                {{"token", "i"}, {"logprob", -0.25}, {"bytes", nlohmann::json::array({105})}}));

  CompletionRequest none = *parse_completion_request(R"({"model":"m","prompt":"x"})", false, e);
  EXPECT_TRUE(logprobs_json(none, lps, bytes, 0).is_null());
  EXPECT_EQ(system_fingerprint("tiny", "cpu"), system_fingerprint("tiny", "cpu"));
  EXPECT_NE(system_fingerprint("tiny", "cpu"), system_fingerprint("tiny", "sim"));
}

TEST(OpenAiParse, TheBodyMustBeExactlyOneJsonValue) {
  using namespace std::string_literals;
  const std::string bad[] = {
      // nlohmann's lexer reads a NUL as the end of the input: these parsed as their first part.
      "{\"model\":\"m\",\"prompt\":\"x\"}\0garbage"s, "{\"model\":\"m\",\"prompt\":\"x\"}\0"s,
      "{\"model\":\"m\",\"prompt\":\"x\0y\"}"s,       R"({"model":"m","prompt":"x"} {"model":"m"})",
      R"({"model":"m","prompt":"x"} garbage)",
  };
  for (const std::string& body : bad) {
    ApiError e;
    EXPECT_FALSE(parse_completion_request(body, false, e).is_ok()) << body;
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(e.message.find("not valid JSON"), std::string::npos) << e.message;
  }
  // Prompts that are not UTF-8: the error says why and where, in ASCII (never the raw bytes).
  const std::pair<std::string, std::string> not_utf8[] = {
      {"{\"model\":\"m\",\"prompt\":\"caf\xff\xfe\"}"s, "ill-formed UTF-8 byte at byte offset 26"},
      {R"({"model":"m","prompt":"a\ud800b"})"s, "surrogate"},
      {R"({"model":"m","prompt":"\udc00"})"s, "surrogate"},
  };
  for (const auto& [body, reason] : not_utf8) {
    ApiError e;
    EXPECT_FALSE(parse_completion_request(body, false, e).is_ok());
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(e.message.find(reason), std::string::npos) << e.message;
    for (char c : e.message) EXPECT_LT(static_cast<unsigned char>(c), 0x80) << e.message;
  }
  ApiError e;
  EXPECT_TRUE(
      parse_completion_request("  {\"model\":\"m\",\"prompt\":\"x\\u0000\"}\n ", false, e).is_ok())
      << e.message;  // an escaped NUL inside a string is fine
}

TEST(Utf8, SplitsOnlyAtCharacterBoundariesAndReplacesInvalidBytes) {
  Utf8Decoder d;
  EXPECT_EQ(d.feed("\xE2"), "");
  EXPECT_EQ(d.feed("\x82"), "");
  EXPECT_EQ(d.feed("\xAC"), "\xE2\x82\xAC");  // the euro sign, once complete
  EXPECT_EQ(d.feed("\xFF" "a"), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(d.feed("\xC3"), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");
}

TEST(OutputTextTest, StopStringsAreHeldBackAndCut) {
  const ByteTokenizer tok = tokenizer();
  OutputText t(tok, {"END"});
  std::string out;
  for (char c : std::string("abcEN")) out += t.append(static_cast<unsigned char>(c));
  EXPECT_EQ(out, "abc");  // "EN" may start the stop string
  out += t.append('D');
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(out, "abc");
  OutputText u(tok, {"END"});
  std::string v;
  for (char c : std::string("xENx")) v += u.append(static_cast<unsigned char>(c));
  v += u.finish();
  EXPECT_FALSE(u.stopped());
  EXPECT_EQ(v, "xENx");
}

WorkerInfo worker(const std::string& id, const std::string& role, std::int64_t free_blocks = 100) {
  WorkerInfo w;
  w.id = id;
  w.url = "http://127.0.0.1:1";
  w.role = role;
  w.model = "tiny";
  w.kv_blocks = 100;
  w.block_tokens = 4;
  w.block_bytes = 1024;
  w.max_model_len = 4096;
  w.prefix_hash_salt = 7;
  w.load.free_blocks = free_blocks;
  w.load.total_blocks = 100;
  return w;
}

TEST(RegistryTest, LeasesExpireAndHeartbeatsRenewThem) {
  Registry reg(2.0);
  ASSERT_TRUE(reg.add(worker("a", "both"), 0).is_ok());
  ASSERT_TRUE(reg.add(worker("b", "both"), 0).is_ok());
  EXPECT_FALSE(reg.add(worker("c", "chef"), 0).is_ok());
  EXPECT_TRUE(reg.heartbeat("a", {}, 1.5));
  EXPECT_FALSE(reg.heartbeat("zzz", {}, 1.5));
  EXPECT_EQ(reg.expire(2.5), std::vector<std::string>{"b"});
  EXPECT_TRUE(reg.expire(3.4).empty());
  EXPECT_EQ(reg.expire(3.6), std::vector<std::string>{"a"});
}

TEST(RegistryTest, ALiveWorkersIdAndItsModelsTokenizerAndContextCannotBeChanged) {
  Registry reg(2.0);
  ASSERT_TRUE(reg.add(worker("a", "both"), 0).is_ok());
  // Same id from another address while the lease lives: refused; after it ran out: taken over.
  WorkerInfo thief = worker("a", "both");
  thief.url = "http://127.0.0.1:2";
  EXPECT_EQ(reg.add(thief, 1).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.find("a")->url, "http://127.0.0.1:1");
  EXPECT_TRUE(reg.add(worker("a", "both"), 1).is_ok());  // the same worker re-registering
  // Another worker of the model must agree on vocabulary, special tokens and context.
  for (auto change : std::vector<std::function<void(WorkerInfo&)>>{
           [](WorkerInfo& w) { w.vocab_size += 1; }, [](WorkerInfo& w) { w.eos_token_id = 3; },
           [](WorkerInfo& w) { w.bos_token_id = 4; }, [](WorkerInfo& w) { w.max_model_len = 8; }}) {
    WorkerInfo b = worker("b", "both");
    change(b);
    const Status st = reg.check_model_agreement(b, 1);
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.to_string();
  }
  EXPECT_EQ(reg.max_model_len("tiny"), 4096);
  // Another model is independent; once "a" is gone, a new tokenizer may serve.
  WorkerInfo other = worker("c", "both");
  other.model = "other";
  other.max_model_len = 8;
  EXPECT_TRUE(reg.check_model_agreement(other, 1).is_ok());
  EXPECT_TRUE(reg.check_model_agreement(worker("a", "both"), 1).is_ok());  // itself
  reg.expire(10);
  WorkerInfo fresh = worker("d", "both");
  fresh.max_model_len = 8;
  EXPECT_TRUE(reg.check_model_agreement(fresh, 10).is_ok());
}

TEST(RouterTest, PrefillByPrefixOverlapDecodeByFreeBlocksAutoPrefillsShortPromptsLocally) {
  Registry reg(10);
  std::vector<std::int32_t> prompt(400);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<std::int32_t>(i % 251);
  WorkerInfo p1 = worker("p1", "prefill"), p2 = worker("p2", "prefill");
  p1.load.waiting = 0;
  p2.load.waiting = 5;  // busier, but it holds the prompt's first 10 blocks
  for (auto h : kvstore::full_block_hashes(7, std::span(prompt).first(40), 4)) p2.load.prefix_hashes.insert(h);
  ASSERT_TRUE(reg.add(p1, 0).is_ok() && reg.add(p2, 0).is_ok());
  reg.find("p2")->load = p2.load;  // add() keeps the load; set it as a heartbeat would
  ASSERT_TRUE(reg.add(worker("d1", "decode", 10), 0).is_ok());
  ASSERT_TRUE(reg.add(worker("d2", "decode", 90), 0).is_ok());
  reg.find("d1")->load.free_blocks = 10;
  reg.find("d2")->load.free_blocks = 90;

  RouterConfig cfg;
  cfg.mode = ServeMode::kDisaggregated;
  RouteRequest rr{"tiny", &prompt, 16, {}};
  Route r = route(reg, rr, cfg);
  ASSERT_EQ(r.kind, Route::Kind::kDisaggregated) << r.reason;
  EXPECT_EQ(r.prefill, "p2");
  EXPECT_EQ(r.cached_blocks, 10);
  EXPECT_EQ(r.worker, "d2");
  rr.exclude = {"p2", "d2"};
  r = route(reg, rr, cfg);
  EXPECT_EQ(r.prefill, "p1");
  EXPECT_EQ(r.worker, "d1");

  cfg.mode = ServeMode::kAuto;
  std::vector<std::int32_t> short_prompt(prompt.begin(), prompt.begin() + 50);
  RouteRequest small{"tiny", &short_prompt, 16, {}};
  r = route(reg, small, cfg);
  EXPECT_EQ(r.kind, Route::Kind::kColocated);  // 50 uncached tokens: prefilled where it decodes
  EXPECT_EQ(r.worker, "d2");
  RouteRequest big{"tiny", &prompt, 16, {}};
  EXPECT_EQ(route(reg, big, cfg).kind, Route::Kind::kDisaggregated);

  cfg.mode = ServeMode::kColocated;
  r = route(reg, big, cfg);
  EXPECT_EQ(r.kind, Route::Kind::kNone);
  EXPECT_NE(r.reason.find("tiny"), std::string::npos);
  EXPECT_FALSE(can_serve(reg, "tiny", ServeMode::kColocated));
  EXPECT_TRUE(can_serve(reg, "tiny", ServeMode::kDisaggregated));
}

}  // namespace
}  // namespace kvfleet::coordinator
