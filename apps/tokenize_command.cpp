#include "apps/tokenize_command.h"

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "apps/exit_code.h"
#include "chat/chat_template.h"
#include "tokenizer/hf_tokenizer.h"

namespace kvfleet::apps {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// "1,2,3", "1 2 3" or "[1, 2, 3]" -> ids; anything else names the bad entry.
Result<std::vector<std::int32_t>> parse_ids(const std::string& text) {
  std::string s = text;
  for (char& c : s) {
    if (c == ',' || c == '[' || c == ']' || c == '\n' || c == '\t') c = ' ';
  }
  std::istringstream in(s);
  std::vector<std::int32_t> ids;
  std::string word;
  while (in >> word) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    if (end == word.c_str() || *end != '\0' || errno != 0 || v < 0 || v > 0x7fffffff) {
      return invalid_argument("--decode: '" + word + "' is not a token id (an integer in [0, " +
                              "2147483647])");
    }
    ids.push_back(static_cast<std::int32_t>(v));
  }
  if (ids.empty()) return invalid_argument("--decode: no token ids given");
  return ids;
}

Status tokenize(const TokenizeOptions& o, std::ostream& out) {
  const int modes = !o.text.empty() + !o.chat.empty() + !o.decode.empty();
  if (modes != 1) return invalid_argument("give exactly one of --text, --chat and --decode");
  auto tok = tokenizer::HfTokenizer::load(o.model);
  if (!tok.is_ok()) return tok.status().with_context("--model " + o.model);

  auto print_ids = [&](const std::vector<std::int32_t>& ids, json& j) {
    j["ids"] = ids;
    j["tokens"] = json::array();
    for (std::int32_t id : ids) j["tokens"].push_back(tok->token_string(id));
    if (!o.json) {
      for (size_t i = 0; i < ids.size(); ++i) out << (i ? " " : "") << ids[i];
      out << "\n";
    }
  };
  json j = json::object();
  if (!o.text.empty()) {
    auto ids = tok->encode(o.text, !o.no_special);
    if (!ids.is_ok()) return ids.status().with_context("--text");
    print_ids(*ids, j);
  } else if (!o.chat.empty()) {
    std::ifstream in(o.chat, std::ios::binary);
    if (!in) return not_found("--chat: cannot read '" + o.chat + "'");
    std::ostringstream buf;
    buf << in.rdbuf();
    ordered_json messages = ordered_json::parse(buf.str(), nullptr, false);
    if (messages.is_discarded()) return invalid_argument("--chat: '" + o.chat + "' is not JSON");
    if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];
    if (!messages.is_array() || messages.empty()) {
      return invalid_argument(
          "--chat: '" + o.chat +
          "' must hold a non-empty array of messages (or {\"messages\": [...]})");
    }
    if (tok->chat_template().empty()) {
      return invalid_argument("--model " + o.model + " has no chat template");
    }
    auto tmpl =
        chat::ChatTemplate::create(tok->chat_template(), tok->bos_token(), tok->eos_token());
    if (!tmpl.is_ok()) return tmpl.status().with_context("chat template of " + o.model);
    auto prompt = tmpl->render(messages, /*add_generation_prompt=*/true);
    if (!prompt.is_ok()) return prompt.status().with_context("--chat " + o.chat);
    // As the server does (and vLLM): the template wrote the special tokens already.
    auto ids = tok->encode(*prompt, /*add_special_tokens=*/false);
    if (!ids.is_ok()) return ids.status().with_context("--chat");
    j["prompt"] = *prompt;
    if (!o.json) out << *prompt << "\n";
    print_ids(*ids, j);
  } else {
    KVFLEET_ASSIGN_OR_RETURN(std::vector<std::int32_t> ids, parse_ids(o.decode));
    for (std::int32_t id : ids) {
      if (id >= tok->vocab_size()) {
        return invalid_argument("--decode: id " + std::to_string(id) +
                                " is outside the vocabulary (" + std::to_string(tok->vocab_size()) +
                                " tokens)");
      }
    }
    const std::string text = tok->decode(ids, o.no_special);
    j["ids"] = ids;
    j["text"] = text;
    if (!o.json) out << text << "\n";
  }
  if (o.json) out << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  return Status::ok();
}

}  // namespace

CLI::App* add_tokenize_command(CLI::App& root, TokenizeOptions& o) {
  CLI::App* cmd = root.add_subcommand(
      "tokenize", "Apply a Hugging Face tokenizer (and chat template) as the server does");
  cmd->add_option("--model", o.model, "model folder or tokenizer.json")->required();
  cmd->add_option("--text", o.text, "print the ids of TEXT (special tokens added, e.g. BOS)");
  cmd->add_option("--chat", o.chat,
                  "render a JSON file of messages with the chat template (generation prompt "
                  "added); print the prompt, then its ids");
  cmd->add_option("--decode", o.decode, "print the text of token ids (\"1,2,3\" or \"1 2 3\")");
  cmd->add_flag("--no-special-tokens", o.no_special,
                "--text: add no special tokens; --decode: leave special tokens out");
  cmd->add_flag("--json", o.json, "print JSON: ids and token strings, prompt, text");
  return cmd;
}

int run_tokenize(const TokenizeOptions& opts, std::ostream& out, std::ostream& err) {
  return finish_command("tokenize", tokenize(opts, out), err);
}

}  // namespace kvfleet::apps
