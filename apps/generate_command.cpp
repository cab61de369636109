#include "apps/generate_command.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <ostream>
#include <random>

#include "apps/exit_code.h"
#include "common/tokenizer.h"
#include "common/units.h"
#include "hfmodel/model_folder.h"
#include "worker/engine.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;
using namespace kvfleet::worker;

double mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

// Text of tokens: the byte tokenizer's, or a model folder's (without special tokens).
using DecodeFn = std::function<std::string(const std::vector<std::int32_t>&)>;

json output_to_json(const RequestOutput& o, const DecodeFn& decode) {
  const RequestTimings& t = o.timings;
  return {{"id", o.id},
          {"prompt_tokens", t.prompt_tokens},
          {"tokens", o.tokens},
          {"text", decode(o.tokens)},
          {"finish_reason", finish_reason_name(o.finish)},
          {"queue_seconds", t.queue_seconds},
          {"prefill_seconds", t.prefill_seconds},
          {"time_to_first_token_seconds", t.time_to_first_token},
          {"inter_token_seconds_mean", mean(t.inter_token_seconds)},
          {"decode_step_seconds_mean", mean(t.decode_step_seconds)},
          {"prefix_hit_tokens", t.prefix_hit_tokens},
          {"host_prefix_hit_tokens", t.host_prefix_hit_tokens},
          {"swap_out_count", t.swap_out_count},
          {"swap_in_count", t.swap_in_count},
          {"swap_out_seconds", t.swap_out_seconds},
          {"swap_in_seconds", t.swap_in_seconds},
          {"swap_out_bytes", t.swap_out_bytes},
          {"swap_in_bytes", t.swap_in_bytes},
          {"recompute_preemptions", t.recompute_preemptions}};
}

Status generate(const GenerateOptions& o, std::ostream& out, std::ostream& err) {
  if (o.prompt.empty() == (o.prompt_tokens <= 0)) {
    return invalid_argument("give exactly one of --prompt TEXT and --prompt-tokens N");
  }
  if (o.requests < 1) return invalid_argument("--requests must be at least 1");
  if (o.max_tokens < 1) return invalid_argument("--max-tokens must be at least 1");
  if (o.block_tokens < 1 || o.block_tokens > 4096) {
    return invalid_argument("--block-tokens must be in [1, 4096]");
  }
  if (o.kv_blocks < 0 || o.kv_blocks > (1 << 24)) {
    return invalid_argument("--kv-blocks must be in [1, 16777216]");
  }
  auto host_bytes = parse_quantity(o.host_kv_bytes, Quantity::kBytes);
  if (!host_bytes.is_ok()) return host_bytes.status().with_context("--host-kv-bytes");
  auto kv_dtype = parse_dtype(o.kv_dtype);
  if (!kv_dtype.is_ok()) return kv_dtype.status().with_context("--kv-dtype");
  // A Hugging Face folder brings its config, weights and tokenizer; otherwise a built-in name
  // or a config file with the byte tokenizer.
  ModelSpec spec;
  std::string weights = o.weights;
  std::function<Result<std::vector<std::int32_t>>(const std::string&)> encode;
  DecodeFn decode;
  if (hfmodel::is_model_folder(o.model)) {
    hfmodel::LoadFolderOptions fo;
    fo.weights = o.weights.empty() && o.backend != "sim";
    KVFLEET_ASSIGN_OR_RETURN(hfmodel::ModelFolder folder, hfmodel::load_model_folder(o.model, fo));
    spec = folder.spec;
    if (fo.weights) weights = o.model;
    encode = [tok = folder.tokenizer](const std::string& text) {
      return tok.encode(text, /*add_special_tokens=*/true);
    };
    decode = [tok = folder.tokenizer](const std::vector<std::int32_t>& ids) {
      return tok.decode(ids, /*skip_special_tokens=*/true);
    };
  } else {
    KVFLEET_ASSIGN_OR_RETURN(spec, load_model_spec(o.model));
    KVFLEET_ASSIGN_OR_RETURN(ByteTokenizer tok, ByteTokenizer::for_model(spec));
    encode = [tok](const std::string& text) -> Result<std::vector<std::int32_t>> {
      return tok.encode(text, /*add_bos=*/true);
    };
    decode = [tok](const std::vector<std::int32_t>& ids) { return tok.decode(ids); };
  }

  // Prompts: the text for every request, or seeded random bytes per request.
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::int64_t i = 0; i < o.requests; ++i) {
    if (!o.prompt.empty()) {
      auto ids = encode(o.prompt);
      if (!ids.is_ok()) return ids.status().with_context("--prompt");
      prompts.push_back(std::move(ids).value());
    } else {
      std::mt19937_64 rng(o.seed * 1000003 + static_cast<std::uint64_t>(i));
      std::vector<std::int32_t> p(static_cast<size_t>(o.prompt_tokens));
      for (auto& t : p) t = static_cast<std::int32_t>(rng() % 256);
      prompts.push_back(std::move(p));
    }
  }
  std::int64_t blocks = o.kv_blocks;
  if (blocks == 0) {
    for (const auto& p : prompts) {
      blocks += (static_cast<std::int64_t>(p.size()) + o.max_tokens + o.block_tokens - 1) /
                o.block_tokens;
    }
  }

  BackendOptions bo;
  bo.spec = spec;
  bo.weights_path = weights;
  bo.seed = o.seed;
  bo.num_blocks = static_cast<std::int32_t>(blocks);
  bo.block_tokens = o.block_tokens;
  bo.kv_dtype = *kv_dtype;
  KVFLEET_ASSIGN_OR_RETURN(auto backend, create_backend(o.backend, bo));
  EngineConfig ec;
  ec.scheduler.max_batch_tokens = o.max_batch_tokens;
  ec.host_kv_bytes = static_cast<std::size_t>(*host_bytes);
  KVFLEET_ASSIGN_OR_RETURN(auto engine, Engine::create(ec, std::move(backend)));

  std::mutex mu;
  std::map<RequestId, RequestOutput> outputs;
  std::vector<RequestId> ids;
  for (auto& p : prompts) {
    Request r;
    r.prompt = p;
    r.params.max_tokens = o.max_tokens;
    r.params.temperature = o.temperature;
    r.params.seed = o.seed;
    r.params.ignore_eos = o.ignore_eos;
    r.on_finish = [&](const RequestOutput& out_) {
      std::lock_guard<std::mutex> lock(mu);
      outputs[out_.id] = out_;
    };
    auto id = engine->submit(std::move(r));
    if (!id.is_ok()) return id.status().with_context("request " + std::to_string(ids.size()));
    ids.push_back(*id);
  }
  const bool progress = isatty(STDERR_FILENO) && o.requests > 1;
  while (!engine->wait_idle(std::chrono::milliseconds(500))) {
    if (progress) {
      std::lock_guard<std::mutex> lock(mu);
      const auto s = engine->stats();
      err << "\rfinished " << outputs.size() << "/" << ids.size() << ", running " << s.running
          << ", swapped " << s.swapped << ", tokens " << s.generated_tokens_total << std::flush;
    }
  }
  if (progress) err << "\n";
  const EngineStats stats = engine->stats();
  engine->stop();

  if (o.json) {
    json j;
    j["model"] = spec.name;
    j["backend"] = o.backend;
    j["kv_blocks"] = blocks;
    j["block_tokens"] = o.block_tokens;
    j["requests"] = json::array();
    for (RequestId id : ids) j["requests"].push_back(output_to_json(outputs.at(id), decode));
    j["engine"] = {{"steps", stats.steps},
                   {"generated_tokens", stats.generated_tokens_total},
                   {"prompt_tokens_computed", stats.prompt_tokens_total},
                   {"prefix_hit_tokens", stats.prefix_hit_tokens_total},
                   {"swap_outs", stats.swap_outs_total},
                   {"swap_ins", stats.swap_ins_total},
                   {"recompute_preemptions", stats.recompute_preemptions_total},
                   {"host_spilled_bytes", stats.host.spilled_bytes_total},
                   {"host_restored_bytes", stats.host.restored_bytes_total}};
    // Generated bytes need not be valid UTF-8: invalid sequences become U+FFFD in "text".
    out << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return Status::ok();
  }
  for (RequestId id : ids) {
    const RequestOutput& r = outputs.at(id);
    out << "request " << id << " (" << finish_reason_name(r.finish) << ", " << r.tokens.size()
        << " tokens, TTFT " << format_seconds(r.timings.time_to_first_token) << ", swaps "
        << r.timings.swap_out_count << "): ";
    for (size_t i = 0; i < r.tokens.size(); ++i) out << (i ? " " : "") << r.tokens[i];
    out << "\n";
  }
  return Status::ok();
}

}  // namespace

CLI::App* add_generate_command(CLI::App& root, GenerateOptions& o) {
  CLI::App* cmd = root.add_subcommand("generate", "Run the engine in-process on some requests");
  cmd->add_option("--model", o.model,
                  "Built-in model (tiny, small), a config.json, or a Hugging Face model folder")
      ->capture_default_str();
  cmd->add_option("--weights", o.weights, "safetensors file or folder (default: seeded random)");
  cmd->add_option("--backend", o.backend, "Engine backend")->capture_default_str();
  cmd->add_option("--prompt", o.prompt,
                  "Prompt text (the folder's tokenizer, or the byte tokenizer)");
  cmd->add_option("--prompt-tokens", o.prompt_tokens, "Random prompt of N tokens per request");
  cmd->add_option("--max-tokens", o.max_tokens, "Tokens to generate per request")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed for weights, prompts and sampling")
      ->capture_default_str();
  cmd->add_option("--requests", o.requests, "Concurrent requests")->capture_default_str();
  cmd->add_option("--kv-blocks", o.kv_blocks, "Device KV blocks (0: enough for all requests)")
      ->capture_default_str();
  cmd->add_option("--block-tokens", o.block_tokens, "Tokens per KV block")->capture_default_str();
  cmd->add_option("--host-kv-bytes", o.host_kv_bytes, "Host KV store size (0: none)")
      ->capture_default_str();
  cmd->add_option("--kv-dtype", o.kv_dtype, "KV cache dtype: fp32, fp16, bf16")
      ->capture_default_str();
  cmd->add_option("--max-batch-tokens", o.max_batch_tokens, "Token budget per engine step")
      ->capture_default_str();
  cmd->add_option("--temperature", o.temperature, "0: greedy")->capture_default_str();
  cmd->add_flag("--json", o.json, "Print JSON with per-request timings");
  return cmd;
}

int run_generate(const GenerateOptions& opts, std::ostream& out, std::ostream& err) {
  return finish_command("generate", generate(opts, out, err), err);
}

}  // namespace kvfleet::apps
