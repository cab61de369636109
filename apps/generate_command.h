#pragma once
// `kvfleet generate`: runs the engine in-process on one or more requests.

#include <cstdint>
#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct GenerateOptions {
  std::string model = "tiny";
  std::string weights;  // safetensors file or folder; empty: seeded random weights
  std::string backend = "cpu";
  std::string prompt;              // text (byte tokenizer, BOS prepended)
  std::int64_t prompt_tokens = 0;  // or: this many random byte tokens per request
  std::int64_t max_tokens = 16;
  std::uint64_t seed = 0;  // weights and random prompts
  std::int64_t requests = 1;
  std::int64_t kv_blocks = 0;  // 0: enough for every request at once
  std::int64_t block_tokens = 16;
  std::string host_kv_bytes = "256MiB";
  std::string kv_dtype = "fp32";
  std::int64_t max_batch_tokens = 512;
  double temperature = 0.0;
  bool ignore_eos = true;
  bool json = false;
};

CLI::App* add_generate_command(CLI::App& root, GenerateOptions& opts);
int run_generate(const GenerateOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
