#pragma once
// A model's chat template: turns an OpenAI-style list of messages into the prompt text the model
// was trained on, as transformers' apply_chat_template (and @huggingface/jinja) would.
//
// Contract: render() never throws; a conversation the template rejects (raise_exception), an
// invalid message or a template error comes back as a Status naming it. A ChatTemplate is
// immutable after create(), so one instance may render from many threads at once.

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "chat/jinja.h"
#include "common/status.h"

namespace kvfleet::chat {

class ChatTemplate {
 public:
  // Parses `source`. `extra_context` (a JSON object, may be empty) adds top-level template
  // variables to every render, e.g. {"enable_thinking": false}.
  static Result<ChatTemplate> create(
      std::string_view source, std::string bos_token, std::string eos_token,
      nlohmann::ordered_json extra_context = nlohmann::ordered_json::object());

  // Renders `messages` (a JSON array of {role, content, ...}). Each message is checked: role is
  // one of system/user/assistant/tool, content is a string, a list of text parts (joined with
  // "\n", as vLLM does for text-only models) or null/absent. `tools` is passed as `tools` when
  // it is not null; `kwargs` (a JSON object) adds variables for this call only.
  // The template sees: messages, add_generation_prompt, bos_token, eos_token, [tools],
  // extra_context..., kwargs... . Object key order is kept, so parse request bodies with
  // nlohmann::ordered_json to get tool schemas printed in the client's order.
  Result<std::string> render(
      const nlohmann::ordered_json& messages, bool add_generation_prompt,
      const nlohmann::ordered_json& tools = nullptr,
      const nlohmann::ordered_json& kwargs = nlohmann::ordered_json::object()) const;

  // Limits and clock for every render (see JinjaRenderOptions); set before sharing the object.
  void set_render_options(JinjaRenderOptions options) { options_ = std::move(options); }

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  ChatTemplate(JinjaTemplate t, std::string bos, std::string eos, nlohmann::ordered_json extra)
      : template_(std::move(t)),
        bos_token_(std::move(bos)),
        eos_token_(std::move(eos)),
        extra_context_(std::move(extra)) {}

  JinjaTemplate template_;
  std::string bos_token_;
  std::string eos_token_;
  nlohmann::ordered_json extra_context_;
  JinjaRenderOptions options_;
};

// The template text in a tokenizer_config.json's `chat_template` field: a string, or a list of
// {name, template} from which `name` is picked. kNotFound when the field or the name is absent.
Result<std::string> chat_template_from_config(const nlohmann::ordered_json& tokenizer_config,
                                              std::string_view name = "default");

// A special token from tokenizer_config.json: a string, an AddedToken object ({content: ...}),
// or null/absent (empty string).
std::string special_token_from_config(const nlohmann::ordered_json& tokenizer_config,
                                      std::string_view field);

// The chat template of a model folder: chat_template.jinja when present (it takes precedence, as
// in transformers), else tokenizer_config.json's chat_template; bos/eos tokens from
// tokenizer_config.json when it exists.
Result<ChatTemplate> load_chat_template(const std::filesystem::path& model_dir);

}  // namespace kvfleet::chat
