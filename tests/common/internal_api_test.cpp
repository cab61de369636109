// The internal API's messages: strict decoding, round trips, the cluster secret and the KV
// hand-off's MAC.
#include "common/internal_api.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <functional>

#include "common/cluster_secret.h"
#include "tests/test_util.h"

namespace kvfleet {
namespace {

namespace api = internal_api;
using nlohmann::json;

TEST(InternalApi, IntegersMustBeIntegersInTheirFieldsRange) {
  const char* base = R"({"worker_id":"w","running":RUN})";
  auto hb = [&](const std::string& v) {
    std::string t = base;
    t.replace(t.find("RUN"), 3, v);
    return api::decode_text<api::Heartbeat>(t, "heartbeat", api::decode_Heartbeat);
  };
  EXPECT_EQ(hb("3")->load.running, 3);
  for (const char* bad : {"1.5", "18446744073709551616", "18446744073709551615", "\"3\"", "-1"}) {
    auto r = hb(bad);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_NE(r.status().message().find("running"), std::string::npos) << r.status().message();
  }
  // Token ids are int32: 2^32 + 65 does not wrap to 65.
  auto g = api::decode_text<api::GenerateRequest>(R"({"tokens":[1,4294967361]})", "generate",
                                                  api::decode_GenerateRequest);
  ASSERT_FALSE(g.is_ok());
  EXPECT_NE(g.status().message().find("tokens"), std::string::npos);
  // A seed takes the whole unsigned range.
  auto s = api::decode_text<api::GenerateRequest>(
      R"({"tokens":[1],"params":{"seed":18446744073709551615}})", "generate",
      api::decode_GenerateRequest);
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  EXPECT_EQ(*s->params.seed, 18446744073709551615ull);
}

TEST(InternalApi, ABodyIsExactlyOneJsonObject) {
  const std::string good = R"({"lease":"x"})";
  EXPECT_TRUE(api::decode_text<api::Release>(good, "release", api::decode_Release).is_ok());
  for (const std::string& bad : {good + std::string(1, '\0') + "garbage", good + " {}",
                                 std::string("[1]"), std::string("{"), std::string("")}) {
    EXPECT_FALSE(api::decode_text<api::Release>(bad, "release", api::decode_Release).is_ok())
        << bad;
  }
  EXPECT_FALSE(api::decode_text<api::Release>(R"({"lease":5})", "r", api::decode_Release).is_ok());
}

TEST(InternalApi, EveryMessageRoundTrips) {
  api::Registration r;
  r.worker_id = "w";
  r.url = "http://127.0.0.1:5";
  r.role = "prefill";
  r.model = "tiny";
  r.vocab_size = 259;
  r.eos_token_id = 2;
  r.kv_blocks = 10;
  r.block_tokens = 16;
  r.block_bytes = 4096;
  r.prefix_hash_salt = ~0ull;
  r.load = api::WorkerLoad{};
  r.load->prefix_hashes = {1, ~0ull};
  auto r2 = api::decode_text<api::Registration>(api::encode(r), "reg", api::decode_Registration);
  ASSERT_TRUE(r2.is_ok()) << r2.status().to_string();
  EXPECT_EQ(api::encode(*r2), api::encode(r));
  EXPECT_FALSE(r2->bos_token_id.has_value());

  api::FinishLine f;
  f.finish = "length";
  f.timings.queue_seconds = 0.25;
  f.timings.prompt_tokens = 7;
  f.kv = api::KvHandoff{};
  f.kv->agent = "a";
  f.kv->address = "addr";
  f.kv->region = "{}";
  f.kv->blocks = {3, 4};
  f.kv->block_bytes = 64;
  f.kv->tokens = 20;
  f.kv->lease = random_hex(16);
  f.kv->checksums = {0xfedcba9876543210ull, 7};  // above 2^53 too
  auto f2 = api::decode_text<api::FinishLine>(api::encode(f), "fin", api::decode_FinishLine);
  ASSERT_TRUE(f2.is_ok()) << f2.status().to_string();
  EXPECT_EQ(api::encode(*f2), api::encode(f));
  EXPECT_EQ(f2->kv->checksums, f.kv->checksums);
  // Checksums: one per block, each 16 hex digits.
  for (const char* bad : {R"(["fedcba9876543210"])", R"(["fedcba987654321"])",
                          R"(["fedcba987654321g","0000000000000007"])", R"([1,2])", R"("x")"}) {
    json j = json::parse(api::encode(*f.kv));
    j["checksums"] = json::parse(bad);
    EXPECT_FALSE(api::decode_KvHandoff(j).is_ok()) << bad;
  }

  api::KvTransferLine k{0.5, 1ull << 40, 3};
  auto k2 = api::decode_KvTransferLine(json::parse(api::encode(k)));
  ASSERT_TRUE(k2.is_ok());
  EXPECT_EQ(k2->bytes, 1ull << 40);
}

TEST(InternalApi, SamplingExtrasAndLogprobLinesRoundTripAndDecodeStrictly) {
  api::GenerateRequest g;
  g.tokens = {1, 2};
  g.params.presence_penalty = -1.5;
  g.params.frequency_penalty = 0.5;
  g.params.repetition_penalty = 1.25;
  g.params.logit_bias = {{65, 100.0}, {7, -3.5}};
  g.params.logprobs = 20;
  auto g2 = api::decode_text<api::GenerateRequest>(api::encode(g), "generate",
                                                   api::decode_GenerateRequest);
  ASSERT_TRUE(g2.is_ok()) << g2.status().to_string();
  EXPECT_EQ(api::encode(*g2), api::encode(g));
  EXPECT_EQ(g2->params.logit_bias, g.params.logit_bias);
  EXPECT_EQ(*g2->params.logprobs, 20);

  api::TokenLine t;
  t.token = 5;
  t.logprob = -0.75;
  t.top = {{5, -0.75}, {9, -1.0}};
  auto t2 = api::decode_TokenLine(json::parse(api::encode(t)));
  ASSERT_TRUE(t2.is_ok()) << t2.status().to_string();
  EXPECT_EQ(api::encode(*t2), api::encode(t));
  // A plain token line stays {"token": t}.
  EXPECT_EQ(api::encode(api::TokenLine{3, std::nullopt, {}}), R"({"token":3})");

  // Strict: the error names the field (and the element).
  const std::pair<const char*, const char*> bad[] = {
      {R"({"tokens":[1],"params":{"logit_bias":[{"token":4294967361,"bias":1}]}})", "logit_bias"},
      {R"({"tokens":[1],"params":{"logit_bias":[{"token":1}]}})", "bias"},
      {R"({"tokens":[1],"params":{"logit_bias":{"1":2}}})", "logit_bias"},
      {R"({"tokens":[1],"params":{"logprobs":1.5}})", "logprobs"},
      {R"({"tokens":[1],"params":{"presence_penalty":"high"}})", "presence_penalty"},
  };
  for (const auto& [body, field] : bad) {
    auto r = api::decode_text<api::GenerateRequest>(body, "generate", api::decode_GenerateRequest);
    ASSERT_FALSE(r.is_ok()) << body;
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().message();
  }
  EXPECT_FALSE(api::decode_TokenLine(json::parse(R"({"token":1,"top":[{"token":2}]})")).is_ok());
  EXPECT_FALSE(api::decode_TokenLine(json::parse(R"({"token":1,"logprob":"x"})")).is_ok());
}

TEST(InternalApi, TheHandoffMacCoversEveryFieldAndNeedsTheSecret) {
  const ClusterSecret key = ClusterSecret::generate();
  const ClusterSecret other = ClusterSecret::generate();
  api::KvHandoff h;
  h.agent = "prefill-1";
  h.address = "{}";
  h.region = R"({"addr":4096})";
  h.blocks = {1, 2, 3};
  h.block_bytes = 1024;
  h.tokens = 40;
  h.lease = random_hex(16);
  h.worker_url = "http://127.0.0.1:9";
  h.checksums = {1, 2, 3};
  EXPECT_EQ(h.verify(&key).code(), StatusCode::kPermissionDenied);  // unsigned
  EXPECT_TRUE(h.verify(nullptr).is_ok());                           // a cluster without a secret
  h.sign(key);
  EXPECT_TRUE(h.verify(&key).is_ok());
  EXPECT_FALSE(h.verify(&other).is_ok());
  std::vector<std::function<void(api::KvHandoff&)>> edits = {
      [](api::KvHandoff& x) { x.agent += "x"; },
      [](api::KvHandoff& x) { x.address += " "; },
      [](api::KvHandoff& x) { x.region = R"({"addr":4097})"; },
      [](api::KvHandoff& x) { x.blocks.push_back(4); },
      [](api::KvHandoff& x) { x.blocks[0] = 11; },
      [](api::KvHandoff& x) { x.block_bytes *= 2; },
      [](api::KvHandoff& x) { x.tokens += 1; },
      [](api::KvHandoff& x) { x.lease[0] ^= 1; },
      [](api::KvHandoff& x) { x.worker_url += "/"; },
      [](api::KvHandoff& x) { x.checksums[2] ^= 1; },
      [](api::KvHandoff& x) { x.modelled = true; }};
  for (size_t i = 0; i < edits.size(); ++i) {
    api::KvHandoff e = h;
    edits[i](e);
    EXPECT_FALSE(e.verify(&key).is_ok()) << "edit " << i;
  }
  // Through the wire and back, it still verifies.
  auto back = api::decode_KvHandoff(json::parse(api::encode(h)));
  ASSERT_TRUE(back.is_ok());
  EXPECT_TRUE(back->verify(&key).is_ok());
}

TEST(ClusterSecretTest, FilesMustBePrivateAndLongEnough) {
  test::TempDir dir;
  const ClusterSecret s = ClusterSecret::generate();
  EXPECT_EQ(s.text().size(), 64u);
  EXPECT_NE(s.text(), ClusterSecret::generate().text());
  const std::string path = dir.path() + "/secret";
  ASSERT_TRUE(s.write_file(path).is_ok());
  EXPECT_FALSE(s.write_file(path).is_ok());  // never overwrites
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = ClusterSecret::load_file(path);
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  EXPECT_EQ(loaded->text(), s.text());
  EXPECT_EQ(loaded->mac("m"), s.mac("m"));
  ::chmod(path.c_str(), 0644);
  auto open = ClusterSecret::load_file(path);
  ASSERT_FALSE(open.is_ok());
  EXPECT_NE(open.status().message().find("chmod 600"), std::string::npos);
  EXPECT_FALSE(ClusterSecret::from_text("short", "test").is_ok());
  EXPECT_FALSE(ClusterSecret::load_file(dir.path() + "/missing").is_ok());
  // HMAC-SHA256 test vector (RFC 4231, test case 1).
  auto rfc = ClusterSecret::from_text(std::string(20, '\x0b'), "t");
  ASSERT_TRUE(rfc.is_ok());
  EXPECT_EQ(rfc->mac("Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_TRUE(rfc->verify("Hi There", rfc->mac("Hi There")));
  EXPECT_FALSE(rfc->verify("Hi there", rfc->mac("Hi There")));
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.3.2.1"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("10.0.0.1"));
}

}  // namespace
}  // namespace kvfleet
