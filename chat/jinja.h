#pragma once
// A Jinja interpreter for chat templates that renders byte-identically to @huggingface/jinja
// (0.5.11), the implementation transformers.js and the Hugging Face Hub use. See chat/README.md
// for the supported subset and where this deliberately differs.
//
// Contract: parse() and render() never abort and never throw; every problem in the template, the
// context or a limit comes back as a Status naming it. A parsed JinjaTemplate is immutable, so one
// may be rendered from many threads at once.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvfleet::chat {

// Bounds that keep a hostile template from hanging or exhausting memory. Exceeding one is a
// kResourceExhausted Status naming the limit.
struct JinjaLimits {
  std::size_t max_output_bytes = 16u << 20;  // the rendered text and any string or list built
  int max_depth = 400;                       // nested evaluation (macro recursion, deep data)
  std::uint64_t max_steps = 20'000'000;      // evaluated nodes in one render
};

struct JinjaRenderOptions {
  JinjaLimits limits;
  // The clock behind strftime_now(); the system clock when empty. Times format in local time,
  // as the reference (a JavaScript Date) does.
  std::function<std::chrono::system_clock::time_point()> now;
};

struct JinjaProgram;  // the parsed AST (jinja.cpp)

class JinjaTemplate {
 public:
  // Lexes and parses with trim_blocks and lstrip_blocks on, as transformers does. A syntax error
  // is kInvalidArgument "syntax error at line L, column C: ..." (1-based; the column counts
  // characters in the original template text).
  static Result<JinjaTemplate> parse(std::string_view source);

  // Renders with the top-level variables of `context` (a JSON object; insertion order of object
  // keys is kept, as JavaScript does for JSON.parse). raise_exception(msg) in the template becomes
  // kInvalidArgument "template raised an exception: msg"; other template errors are
  // kInvalidArgument "template error at line L, column C: ...".
  Result<std::string> render(const nlohmann::ordered_json& context,
                             const JinjaRenderOptions& options = {}) const;

 private:
  explicit JinjaTemplate(std::shared_ptr<const JinjaProgram> program)
      : program_(std::move(program)) {}
  std::shared_ptr<const JinjaProgram> program_;
};

}  // namespace kvfleet::chat
