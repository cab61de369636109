// ChatTemplate: message validation, context variables, and the loaders for tokenizer_config.json
// and chat_template.jinja.

#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace kvfleet::chat {
namespace {

using Json = nlohmann::ordered_json;

const char* kSimple =
    "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}{% if tools %}[{{ tools|length }}]{% "
    "endif %}"
    "{{ extra_var }}";

ChatTemplate make(const char* source = kSimple, Json extra = Json::object()) {
  auto t = ChatTemplate::create(source, "<s>", "</s>", std::move(extra));
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
  return std::move(t).value();
}

TEST(ChatTemplateTest, RendersMessagesAndVariables) {
  ChatTemplate t = make(kSimple, {{"extra_var", "!"}});
  Json messages =
      Json::parse(R"([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])");
  auto r = t.render(messages, true);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value(), "<s><system>s<user>u<assistant>!");
  // A kwarg overrides the extra context for one call.
  auto r2 =
      t.render(messages, false, Json::parse(R"([{"type": "function"}])"), {{"extra_var", "?"}});
  ASSERT_TRUE(r2.is_ok()) << r2.status().to_string();
  EXPECT_EQ(r2.value(), "<s><system>s<user>u[1]?");
}

TEST(ChatTemplateTest, ContentPartsAreJoinedWithNewlines) {
  Json messages = Json::parse(
      R"([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])");
  auto r = make().render(messages, false);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value(), "<s><user>a\nb");
}

TEST(ChatTemplateTest, InvalidMessagesAreRefusedByName) {
  ChatTemplate t = make();
  auto bad_role = t.render(
      Json::parse(R"([{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}])"),
      false);
  ASSERT_FALSE(bad_role.is_ok());
  EXPECT_EQ(bad_role.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_role.status().message().find("messages[1] has unknown role 'robot'"),
            std::string::npos)
      << bad_role.status().message();

  auto image = t.render(
      Json::parse(R"([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])"),
      false);
  ASSERT_FALSE(image.is_ok());
  EXPECT_NE(image.status().message().find("type 'image_url'"), std::string::npos);

  EXPECT_FALSE(t.render(Json::parse(R"([{"content": "x"}])"), false).is_ok());
  EXPECT_FALSE(t.render(Json::parse(R"([{"role": "user", "content": 5}])"), false).is_ok());
  EXPECT_FALSE(t.render(Json::parse(R"({"role": "user"})"), false).is_ok());
  EXPECT_FALSE(t.render(Json::array(), false, nullptr, {{"messages", 1}}).is_ok());
}

TEST(ChatTemplateTest, TemplateErrorsComeBackAsStatus) {
  auto bad = ChatTemplate::create("{% if %}", "", "");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("chat template: syntax error at line 1"), std::string::npos)
      << bad.status().message();
  ChatTemplate raising = make("{{ raise_exception('only user messages') }}");
  auto r = raising.render(Json::parse(R"([{"role": "user", "content": "x"}])"), false);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(), "template raised an exception: only user messages");
}

TEST(ChatTemplateTest, ConfigFieldStringOrNamedList) {
  EXPECT_EQ(chat_template_from_config(Json{{"chat_template", "T"}}).value(), "T");
  Json list = {{"chat_template", Json::array({{{"name", "tool_use"}, {"template", "A"}},
                                              {{"name", "default"}, {"template", "B"}}})}};
  EXPECT_EQ(chat_template_from_config(list).value(), "B");
  EXPECT_EQ(chat_template_from_config(list, "tool_use").value(), "A");
  auto missing = chat_template_from_config(list, "rag");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("has: tool_use, default"), std::string::npos);
  EXPECT_EQ(chat_template_from_config(Json::object()).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(chat_template_from_config(Json{{"chat_template", 3}}).is_ok());

  EXPECT_EQ(special_token_from_config(Json{{"bos_token", "<s>"}}, "bos_token"), "<s>");
  EXPECT_EQ(special_token_from_config(Json{{"bos_token", {{"content", "<b>"}, {"lstrip", false}}}},
                                      "bos_token"),
            "<b>");
  EXPECT_EQ(special_token_from_config(Json{{"bos_token", nullptr}}, "bos_token"), "");
}

TEST(ChatTemplateTest, LoadsFromModelFolder) {
  test::TempDir dir;
  std::filesystem::path p(dir.path());
  std::ofstream(p / "tokenizer_config.json")
      << R"({"bos_token": "<B>", "eos_token": {"content": "<E>"}, "chat_template": "cfg{{ bos_token }}{{ eos_token }}"})";
  Json messages = Json::array();
  auto from_config = load_chat_template(p);
  ASSERT_TRUE(from_config.is_ok()) << from_config.status().to_string();
  EXPECT_EQ(from_config->render(messages, false).value(), "cfg<B><E>");

  std::ofstream(p / "chat_template.jinja") << "file{{ bos_token }}\n";
  auto from_file = load_chat_template(p);
  ASSERT_TRUE(from_file.is_ok()) << from_file.status().to_string();
  EXPECT_EQ(from_file->render(messages, false).value(), "file<B>");

  test::TempDir empty;
  auto none = load_chat_template(empty.path());
  ASSERT_FALSE(none.is_ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvfleet::chat
