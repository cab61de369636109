#include "worker/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "tests/test_util.h"
#include "worker/safetensors.h"
#include "common/tokenizer.h"

namespace kvfleet::worker {
namespace {

ModelSpec tiny() {
  return *load_model_spec("tiny");
}

// Runs a prompt through the model in chunks of `chunk` tokens, returning every position's logits.
std::vector<float> run_chunked(const Model& m, const std::vector<std::int32_t>& prompt,
                               std::int64_t chunk, DType kv_dtype = DType::kFp32) {
  const auto layout = m.kv_layout(16, kv_dtype);
  const std::int64_t blocks = layout.blocks_for_tokens(static_cast<std::int64_t>(prompt.size()));
  std::vector<std::byte> pool(static_cast<size_t>(blocks + 5) * layout.block_bytes());
  std::vector<std::int32_t> table(static_cast<size_t>(blocks));
  // A non-trivial table: blocks in reverse order, skipping block 0.
  for (std::int64_t i = 0; i < blocks; ++i)
    table[static_cast<size_t>(i)] = static_cast<std::int32_t>(blocks + 4 - i);
  Workspace ws;
  std::vector<float> logits;
  for (std::int64_t pos = 0; pos < static_cast<std::int64_t>(prompt.size()); pos += chunk) {
    const std::int64_t n =
        std::min<std::int64_t>(chunk, static_cast<std::int64_t>(prompt.size()) - pos);
    SeqChunk c{std::span(prompt).subspan(static_cast<size_t>(pos), static_cast<size_t>(n)), pos,
               table, LogitsWanted::kAll};
    m.forward(std::span(&c, 1), layout, pool.data(), ws, logits);
  }
  return logits;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    mag = std::max(mag, std::abs(static_cast<double>(b[i])));
  }
  return diff / mag;
}

std::vector<std::int32_t> random_prompt(std::mt19937_64& rng, size_t n) {
  std::vector<std::int32_t> p(n);
  for (auto& t : p) t = static_cast<std::int32_t>(rng() % 256);
  return p;
}

TEST(Model, ChunkedPrefillGivesOnePassLogits) {
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto m = Model::random(tiny(), seed);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  const auto prompt = random_prompt(rng, 101);
  const auto one_pass = run_chunked(**m, prompt, 1000);
  ASSERT_EQ(one_pass.size(), 101u * 259);
  for (std::int64_t chunk : {1, 7, 16, 33}) {
    EXPECT_LE(max_rel_diff(run_chunked(**m, prompt, chunk), one_pass), 1e-5) << "chunk " << chunk;
  }
}

TEST(Model, BatchedSequencesMatchSeparateRuns) {
  const auto seed = test::test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto m = *Model::random(tiny(), 7);
  const auto a = random_prompt(rng, 40), b = random_prompt(rng, 23);
  const auto layout = m->kv_layout(8, DType::kFp32);
  std::vector<std::byte> pool(20 * layout.block_bytes());
  std::vector<std::int32_t> ta = {0, 1, 2, 3, 4}, tb = {10, 11, 12};
  SeqChunk chunks[2] = {{a, 0, ta, LogitsWanted::kLast}, {b, 0, tb, LogitsWanted::kLast}};
  Workspace ws;
  std::vector<float> both;
  m->forward(chunks, layout, pool.data(), ws, both);
  ASSERT_EQ(both.size(), 2u * 259);
  const auto ra = run_chunked(*m, a, 1000), rb = run_chunked(*m, b, 1000);
  const std::vector<float> last_a(ra.end() - 259, ra.end()), last_b(rb.end() - 259, rb.end());
  EXPECT_LE(max_rel_diff(std::vector<float>(both.begin(), both.begin() + 259), last_a), 1e-5);
  EXPECT_LE(max_rel_diff(std::vector<float>(both.begin() + 259, both.end()), last_b), 1e-5);
}

TEST(Model, SeededWeightsAreDeterministic) {
  auto a = *Model::random(tiny(), 42), b = *Model::random(tiny(), 42),
       c = *Model::random(tiny(), 43);
  const std::vector<std::int32_t> p = {256, 72, 105};
  EXPECT_EQ(run_chunked(*a, p, 8), run_chunked(*b, p, 8));
  EXPECT_NE(run_chunked(*a, p, 8), run_chunked(*c, p, 8));
}

TEST(Model, HalfPrecisionKvStaysClose) {
  std::mt19937_64 rng(test::test_seed());
  auto m = *Model::random(tiny(), 3);
  const auto prompt = random_prompt(rng, 50);
  const auto ref = run_chunked(*m, prompt, 50);
  EXPECT_LE(max_rel_diff(run_chunked(*m, prompt, 13, DType::kFp16), ref), 2e-2);
  EXPECT_LE(max_rel_diff(run_chunked(*m, prompt, 13, DType::kBf16), ref), 5e-2);
}

TEST(Safetensors, WrittenWeightsLoadBackToTheSameOutputs) {
  test::TempDir dir;
  auto m = *Model::random(tiny(), 11);
  const std::string path = dir.path() + "/model.safetensors";
  ASSERT_TRUE(m->save(path).is_ok());
  auto loaded = Model::load(tiny(), path);
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  const std::vector<std::int32_t> p = {256, 1, 2, 3, 200, 100};
  EXPECT_EQ(run_chunked(*m, p, 4), run_chunked(**loaded, p, 4));
  // A folder of shards works too.
  auto folder = Model::load(tiny(), dir.path());
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  EXPECT_EQ((*folder)->parameter_count(), m->parameter_count());
}

class BadSafetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = *Model::random(tiny(), 1);
    good_ = dir_.path() + "/good.safetensors";
    ASSERT_TRUE(m->save(good_).is_ok());
    std::ifstream in(good_, std::ios::binary);
    bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::string write(const std::string& name, const std::string& data) {
    const std::string p = dir_.path() + "/" + name;
    std::ofstream(p, std::ios::binary) << data;
    return p;
  }
  void expect_error(const std::string& path, const std::string& fragment) {
    auto r = Model::load(tiny(), path);
    ASSERT_FALSE(r.is_ok()) << path;
    EXPECT_NE(r.status().message().find(fragment), std::string::npos)
        << r.status().message() << " (wanted '" << fragment << "')";
  }
  test::TempDir dir_;
  std::string good_;
  std::string bytes_;
};

TEST_F(BadSafetensors, TruncatedFiles) {
  expect_error(write("t1.safetensors", bytes_.substr(0, 5)), "truncated");
  expect_error(write("t2.safetensors", bytes_.substr(0, 100)), "truncated");
  expect_error(write("t3.safetensors", bytes_.substr(0, bytes_.size() - 10)), "truncated");
  expect_error(dir_.path() + "/missing.safetensors", "missing.safetensors");
}

TEST_F(BadSafetensors, WrongShapeOrMissingTensor) {
  // Same data, but a header claiming another model's shapes: a config/weights mismatch.
  ModelSpec other = tiny();
  other.intermediate_size = 512;
  auto r = Model::load(other, good_);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("has shape [688, 256], the model needs [512, 256]"),
            std::string::npos)
      << r.status().message();
  ModelSpec deeper = tiny();
  deeper.num_layers = 5;
  auto d = Model::load(deeper, good_);
  ASSERT_FALSE(d.is_ok());
  EXPECT_NE(d.status().message().find("no tensor 'model.layers.4"), std::string::npos);
}

TEST_F(BadSafetensors, CorruptHeaders) {
  auto with_header = [&](const std::string& json_text) {
    std::string out(8, '\0');
    const std::uint64_t n = json_text.size();
    for (int i = 0; i < 8; ++i)
      out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + json_text + std::string(64, '\0');
  };
  expect_error(write("h1.safetensors", with_header("not json")), "not a JSON object");
  expect_error(
      write("h2.safetensors",
            with_header(R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}})")),
      "needs 16 bytes");
  expect_error(
      write("h3.safetensors",
            with_header(R"({"x": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}})")),
      "outside the file");
  expect_error(
      write("h4.safetensors",
            with_header(R"({"x": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}})")),
      "unknown dtype 'Q9'");
  expect_error(write("h5.safetensors", with_header(R"({"x": {"dtype": "F32"}})")),
               "needs dtype, shape and two data_offsets");
}

TEST(ModelSupport, ConfigsTheEngineCannotRunAreClearErrors) {
  auto expect = [](const ModelSpec& s, const std::string& fragment) {
    auto r = Model::random(s, 1);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find(fragment), std::string::npos) << r.status().message();
  };
  expect(*load_model_spec("mixtral-8x7b"), "model_type 'mixtral' cannot run on the cpu engine");
  expect(*load_model_spec("deepseek-v2-lite"), "cannot run on the cpu engine");
  ModelSpec small_vocab = tiny();
  small_vocab.vocab_size = 100;
  expect(small_vocab, "vocab_size 100");
  ModelSpec yarn = tiny();
  yarn.rope_scaling = RopeScaling{"yarn", 4.0, 1, 4, 4096};
  expect(yarn, "rope_scaling type 'yarn'");
  ModelSpec huge = *load_model_spec("llama-3.1-405b");
  expect(huge, "too large");
}

TEST(Tokenizer, BytesRoundTrip) {
  auto t = ByteTokenizer::for_model(tiny());
  ASSERT_TRUE(t.is_ok());
  const std::string text = "héllo, kvfleet\n";
  auto ids = t->encode(text, true);
  EXPECT_EQ(ids.front(), 256);
  EXPECT_EQ(ids.size(), text.size() + 1);
  EXPECT_EQ(t->decode(ids), text);
}

}  // namespace
}  // namespace kvfleet::worker
