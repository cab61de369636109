#include "chat/chat_template.h"

#include <fstream>
#include <sstream>
#include <utility>

namespace kvfleet::chat {
namespace {

using Json = nlohmann::ordered_json;

// vLLM's text-only handling: a list of parts becomes its text parts joined with "\n".
Result<Json> normalize_message(const Json& message, std::size_t index) {
  std::string where = "messages[" + std::to_string(index) + "]";
  if (!message.is_object()) return invalid_argument(where + " is not an object");
  auto role = message.find("role");
  if (role == message.end() || !role->is_string()) {
    return invalid_argument(where + " has no string 'role'");
  }
  const std::string& r = role->get_ref<const std::string&>();
  if (r != "system" && r != "user" && r != "assistant" && r != "tool") {
    return invalid_argument(where + " has unknown role '" + r +
                            "' (expected system, user, assistant or tool)");
  }
  Json out = message;
  auto content = message.find("content");
  if (content == message.end() || content->is_null() || content->is_string()) return out;
  if (!content->is_array()) {
    return invalid_argument(where + ".content must be a string, a list of parts or null");
  }
  std::string text;
  for (std::size_t i = 0; i < content->size(); ++i) {
    const Json& part = (*content)[i];
    std::string part_where = where + ".content[" + std::to_string(i) + "]";
    if (!part.is_object()) return invalid_argument(part_where + " is not an object");
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      return invalid_argument(part_where + " has no string 'type'");
    }
    if (*type != "text") {
      return invalid_argument(part_where + " has type '" + type->get<std::string>() +
                              "'; only text parts are supported (text-only model)");
    }
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) {
      return invalid_argument(part_where + " has no string 'text'");
    }
    if (i > 0) text += "\n";
    text += t->get_ref<const std::string&>();
  }
  out["content"] = text;
  return out;
}

Result<std::string> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return io_error("cannot read '" + path.string() + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<ChatTemplate> ChatTemplate::create(std::string_view source, std::string bos_token,
                                          std::string eos_token, Json extra_context) {
  if (!extra_context.is_object()) {
    return invalid_argument("chat template extra context must be a JSON object");
  }
  auto parsed = JinjaTemplate::parse(source);
  if (!parsed.is_ok()) return parsed.status().with_context("chat template");
  return ChatTemplate(std::move(parsed).value(), std::move(bos_token), std::move(eos_token),
                      std::move(extra_context));
}

Result<std::string> ChatTemplate::render(const Json& messages, bool add_generation_prompt,
                                         const Json& tools, const Json& kwargs) const {
  if (!messages.is_array()) return invalid_argument("messages must be a JSON array");
  if (!kwargs.is_object()) return invalid_argument("chat template kwargs must be a JSON object");
  Json normalized = Json::array();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    KVFLEET_ASSIGN_OR_RETURN(Json m, normalize_message(messages[i], i));
    normalized.push_back(std::move(m));
  }
  Json context = Json::object();
  context["messages"] = std::move(normalized);
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token_;
  context["eos_token"] = eos_token_;
  if (!tools.is_null()) context["tools"] = tools;
  for (const Json* extra : {&extra_context_, &kwargs}) {
    for (const auto& [key, value] : extra->items()) {
      if (key == "messages" || key == "add_generation_prompt" || key == "bos_token" ||
          key == "eos_token" || key == "tools") {
        return invalid_argument("chat template variable '" + key + "' cannot be overridden");
      }
      context[key] = value;
    }
  }
  return template_.render(context, options_);
}

Result<std::string> chat_template_from_config(const Json& tokenizer_config, std::string_view name) {
  if (!tokenizer_config.is_object()) return invalid_argument("tokenizer config is not an object");
  auto field = tokenizer_config.find("chat_template");
  if (field == tokenizer_config.end() || field->is_null()) {
    return not_found("tokenizer config has no chat_template");
  }
  if (field->is_string()) return field->get<std::string>();
  if (!field->is_array()) {
    return invalid_argument("chat_template must be a string or a list of {name, template}");
  }
  std::string names;
  for (const Json& entry : *field) {
    if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
        !entry["name"].is_string() || !entry["template"].is_string()) {
      return invalid_argument("chat_template list entries must be {name, template} strings");
    }
    if (entry["name"] == name) return entry["template"].get<std::string>();
    names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
  }
  return not_found("chat_template has no template named '" + std::string(name) +
                   "' (has: " + names + ")");
}

std::string special_token_from_config(const Json& tokenizer_config, std::string_view field) {
  if (!tokenizer_config.is_object()) return "";
  auto it = tokenizer_config.find(std::string(field));
  if (it == tokenizer_config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return "";
}

Result<ChatTemplate> load_chat_template(const std::filesystem::path& model_dir) {
  Json config = Json::object();
  auto config_path = model_dir / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    KVFLEET_ASSIGN_OR_RETURN(std::string text, read_file(config_path));
    config = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) {
      return invalid_argument("'" + config_path.string() + "' is not valid JSON");
    }
  }
  std::string source;
  auto jinja_path = model_dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path, ec)) {
    KVFLEET_ASSIGN_OR_RETURN(source, read_file(jinja_path));
  } else {
    auto from_config = chat_template_from_config(config);
    if (!from_config.is_ok()) {
      return from_config.status().with_context("model folder '" + model_dir.string() + "'");
    }
    source = std::move(from_config).value();
  }
  auto result = ChatTemplate::create(source, special_token_from_config(config, "bos_token"),
                                     special_token_from_config(config, "eos_token"));
  if (!result.is_ok())
    return result.status().with_context("model folder '" + model_dir.string() + "'");
  return result;
}

}  // namespace kvfleet::chat
