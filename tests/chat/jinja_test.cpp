// The interpreter on hand-written templates: one test per feature, expected text written out
// (checked against @huggingface/jinja 0.5.11 where the output is not obvious).

#include "chat/jinja.h"

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "chat/jinja_text.h"
#include "tests/test_util.h"

namespace kvfleet::chat {
namespace {

using Json = nlohmann::ordered_json;

Result<std::string> try_render(const std::string& source, const std::string& context = "{}",
                               JinjaRenderOptions options = {}) {
  auto t = JinjaTemplate::parse(source);
  if (!t.is_ok()) return t.status();
  return t->render(Json::parse(context), options);
}

std::string render(const std::string& source, const std::string& context = "{}") {
  auto r = try_render(source, context);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? r.value() : "<error>";
}

std::string error_of(const std::string& source, const std::string& context = "{}",
                     JinjaRenderOptions options = {}) {
  auto r = try_render(source, context, options);
  EXPECT_FALSE(r.is_ok()) << "rendered: " << (r.is_ok() ? r.value() : "");
  return r.is_ok() ? "" : r.status().message();
}

TEST(JinjaTest, TextExpressionsAndComments) {
  EXPECT_EQ(render("Hello {{ name }}!{# note #}", R"({"name":"world"})"), "Hello world!");
  EXPECT_EQ(render("{{ 'a' + \"b\" }}{{ 'c' 'd' }}"), "abcd");
  EXPECT_EQ(render("{{ missing }}|{{ none }}|{{ true }}|{{ false }}"), "||true|false");
  EXPECT_EQ(render("{{ 'it\\'s \\n \\u00e9' }}"), "it's \n \xC3\xA9");
  EXPECT_EQ(render("{{ {'a': 1, 'b': [1, 2.5, 'x', none]} }}"),
            "{\"a\": 1, \"b\": [1, 2.5, \"x\", null]}");
}

TEST(JinjaTest, NumbersPrintAsTheReferenceDoes) {
  EXPECT_EQ(render("{{ 1 }} {{ 1.0 }} {{ 2.5 }} {{ 7 / 2 }} {{ 6 / 2 }} {{ 7 // 2 }} {{ -7 % 3 }}"),
            "1 1.0 2.5 3.5 3.0 3 -1");
  EXPECT_EQ(render("{{ 2 ** 10 }} {{ 1.5 * 2 }} {{ 10 - 3 * 2 }} {{ (10 - 3) * 2 }}"),
            "1024 3.0 4 14");
  EXPECT_EQ(render("{{ 'n=' ~ 1.0 }} {{ 'n=' + 2 }}"), "n=1 n=2");
  EXPECT_EQ(text::js_number(1e21), "1e+21");
  EXPECT_EQ(text::js_number(0.000001), "0.000001");
  EXPECT_EQ(text::js_number(1e-7), "1e-7");
  EXPECT_EQ(text::js_number(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(text::js_float(-0.0), "-0.0");
}

TEST(JinjaTest, WhitespaceControl) {
  EXPECT_EQ(render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(render("a\n  {%- if true -%}\n  b\n  {%- endif -%}\n  c"), "abc");
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it goes.
  EXPECT_EQ(render("x\n  {% if true %}\n  y\n  {% endif %}\nz"), "x\n  y\nz");
  EXPECT_EQ(render("{# c #}\nline"), "line");
  EXPECT_EQ(render("  {{ 'expr' }}\n"), "  expr");  // only the final newline of the text goes
  EXPECT_EQ(render("a {#- c -#} b"), "ab");
}

TEST(JinjaTest, IfElifElse) {
  const std::string t = "{% if x > 2 %}big{% elif x > 0 %}small{% else %}none{% endif %}";
  EXPECT_EQ(render(t, R"({"x": 5})"), "big");
  EXPECT_EQ(render(t, R"({"x": 1})"), "small");
  EXPECT_EQ(render(t, R"({"x": 0})"), "none");
  EXPECT_EQ(render("{{ 'y' if x else 'n' }}{{ 'only' if x }}", R"({"x": []})"), "n");
}

TEST(JinjaTest, ForLoopVariables) {
  EXPECT_EQ(render("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}"
                   "{{ loop.last }}{{ loop.length }}{{ loop.revindex }}|{% endfor %}",
                   R"({"xs": ["a", "b"]})"),
            "10truefalse22|21falsetrue21|");
  EXPECT_EQ(render("{% for x in xs %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }};{% endfor %}",
                   R"({"xs": [1, 2, 3]})"),
            "<1>2;1<2>3;2<3>;");
  EXPECT_EQ(render("{% for x in xs %}{{ x }}{% else %}empty{% endfor %}", R"({"xs": []})"),
            "empty");
  EXPECT_EQ(render("{% for x in xs if x is odd %}{{ x }}{{ loop.index }} {% endfor %}",
                   R"({"xs": [1, 2, 3, 4, 5]})"),
            "11 32 53 ");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
                   R"({"d": {"b": 1, "a": 2}})"),
            "b=1;a=2;");
  EXPECT_EQ(render("{% for k in d %}{{ k }}{% endfor %}", R"({"d": {"b": 1, "a": 2}})"), "ba");
  EXPECT_EQ(render("{% for x in range(5) %}{% if x == 1 %}{% continue %}{% endif %}"
                   "{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "02");
  // A loop has its own scope; `set` inside does not leak.
  EXPECT_EQ(render("{% set y = 1 %}{% for x in [1] %}{% set y = 2 %}{% endfor %}{{ y }}"), "1");
}

TEST(JinjaTest, SetBlockSetTupleAndNamespace) {
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(render("{% set s %}in {{ 'block' }}{% endset %}[{{ s }}]"), "[in block]");
  EXPECT_EQ(render("{% set ns = namespace(found=false, n=0) %}{% for x in [1, 2, 3] %}"
                   "{% set ns.n = ns.n + x %}{% if x == 2 %}{% set ns.found = true %}{% endif %}"
                   "{% endfor %}{{ ns.found }} {{ ns.n }}"),
            "true 6");
  EXPECT_NE(error_of("{% set d = {} %}{% set d.x = 1 %}").find("non-namespace"), std::string::npos);
}

TEST(JinjaTest, MacrosAndCall) {
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                   "{{ greet('a') }} {{ greet('b', punct='?') }} {{ greet(name='c') }}"),
            "Hi a! Hi b? Hi c!");
  EXPECT_EQ(render("{% macro wrap() %}<{{ caller() }}>{% endmacro %}"
                   "{% call wrap() %}inner{% endcall %}"),
            "<inner>");
  EXPECT_EQ(render("{% macro f() %}{{ varargs|length }}{{ kwargs['k'] }}{% endmacro %}"
                   "{{ f(1, 2, k='v') }}"),
            "2v");
  EXPECT_NE(error_of("{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}").find("takes not more than 1"),
            std::string::npos);
}

TEST(JinjaTest, Tests) {
  const std::string ctx =
      R"({"s": "x", "n": 1, "f": 1.5, "l": [1], "d": {"a": 1}, "z": null, "t": true})";
  EXPECT_EQ(render("{{ s is string }}{{ n is number }}{{ f is number }}{{ n is integer }}"
                   "{{ f is integer }}{{ l is iterable }}{{ s is iterable }}{{ d is iterable }}",
                   ctx),
            "truetruetruetruefalsetruetruefalse");
  EXPECT_EQ(render("{{ d is mapping }}{{ l is mapping }}{{ l is sequence }}{{ d is sequence }}"
                   "{{ z is none }}{{ q is defined }}{{ s is defined }}{{ q is undefined }}",
                   ctx),
            "truefalsetruetruetruefalsetruetrue");
  EXPECT_EQ(render("{{ t is true }}{{ t is false }}{{ t is boolean }}{{ n is boolean }}"
                   "{{ z is not none }}{{ 3 is odd }}{{ 3 is even }}",
                   ctx),
            "truefalsetruefalsefalsetruefalse");
  EXPECT_NE(error_of("{{ 1 is prime }}").find("Unknown test: prime"), std::string::npos);
}

TEST(JinjaTest, Operators) {
  EXPECT_EQ(render("{{ 'a' in 'cat' }}{{ 'z' not in 'cat' }}{{ 2 in [1, 2] }}{{ 'k' in d }}"
                   "{{ 'x' in missing }}",
                   R"({"d": {"k": 1}})"),
            "truetruetruetruefalse");
  EXPECT_EQ(render("{{ 1 == 1.0 }}{{ 'a' != 'b' }}{{ 1 < 2 }}{{ 2 >= 3 }}{{ not 0 }}"),
            "truetruetruefalsetrue");
  EXPECT_EQ(render("{{ 0 or 'x' }}{{ 1 and 'y' }}{{ [] or 'empty' }}{{ none == missing }}"),
            "xyemptytrue");
  EXPECT_EQ(render("{{ [1] + [2] }}{{ -x }}{{ +3 }}", R"({"x": 2})"), "[1, 2]-23");
  EXPECT_NE(error_of("{{ missing + 1 }}").find("undefined"), std::string::npos);
}

TEST(JinjaTest, SlicingAndAccess) {
  const std::string ctx = R"({"l": [1, 2, 3, 4], "s": "héllo", "m": {"role": "user"}})";
  EXPECT_EQ(render("{{ l[::-1] }}{{ l[1:] }}{{ l[:2] }}{{ l[1:3] }}{{ l[::2] }}{{ l[-1] }}", ctx),
            "[4, 3, 2, 1][2, 3, 4][1, 2][2, 3][1, 3]4");
  EXPECT_EQ(render("{{ s[::-1] }}{{ s[1:3] }}{{ s[1] }}", ctx), "olléhélé");
  EXPECT_EQ(render("{{ m.role }}{{ m['role'] }}{{ m.nope }}{{ l.0 }}{{ l|length }}", ctx),
            "useruser14");
}

TEST(JinjaTest, StringMethods) {
  EXPECT_EQ(render("{{ '  a b  '.strip() }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|"
                   "{{ '\\nx\\n'.strip('\\n') }}"),
            "a b|a|a|x");
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a,b,c'.split(',', 1) }}"),
            "[\"a\", \"b\", \"\", \"c\"][\"a\", \"b\"][\"a\", \"b,c\"]");
  EXPECT_EQ(render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'bc')) }}"), "truetrue");
  EXPECT_EQ(render("{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}{{ 'hello world-x'.title() }}"
                   "{{ 'aaa'.replace('a', 'b', 2) }}"),
            "ABabHello World-Xbba");
  EXPECT_EQ(render("{{ d.get('a') }}{{ d.get('z', 'dflt') }}{{ d.get('z') }}{{ d.keys() }}"
                   "{{ d.values() }}{{ d.items() }}",
                   R"({"d": {"a": 1}})"),
            "1dflt[\"a\"][1][[\"a\", 1]]");
}

TEST(JinjaTest, Filters) {
  EXPECT_EQ(render("{{ '  x  '|trim }}{{ 'ab'|upper }}{{ 'AB'|lower }}{{ 'ab cd'|title }}"
                   "{{ 'ab'|capitalize }}{{ 'aXa'|replace('a', 'b') }}"),
            "xABabAb CdAbbXb");
  EXPECT_EQ(render("{{ l|length }}{{ l|first }}{{ l|last }}{{ l|join(', ') }}{{ l|join }}"
                   "{{ [3, 1, 3]|unique|list }}",
                   R"({"l": [1, 2, 3]})"),
            "3131, 2, 3123[3, 1]");
  EXPECT_EQ(render("{{ x|default('d') }}{{ ''|default('e', true) }}{{ 'v'|default('f') }}"), "dev");
  EXPECT_EQ(render("{{ '42'|int + 1 }}{{ 'x'|int }}{{ '2.5'|float }}{{ 3|string }}{{ 3.7|int }}"),
            "4302.533");
  EXPECT_EQ(render("{% for k, v in d|items %}{{ k }}{{ v }}{% endfor %}", R"({"d": {"a": 1}})"),
            "a1");
  EXPECT_EQ(render("{{ ms|map(attribute='role')|join(',') }}",
                   R"({"ms": [{"role": "a"}, {"role": "b"}]})"),
            "a,b");
  EXPECT_EQ(render("{{ ms|selectattr('ok')|map(attribute='n')|join }}"
                   "{{ ms|rejectattr('ok')|map(attribute='n')|join }}"
                   "{{ ms|selectattr('n', 'equalto', 'b')|map(attribute='n')|join }}"
                   "{{ [1, 2, 3, 4]|select('odd')|join }}",
                   R"({"ms": [{"n": "a", "ok": true}, {"n": "b", "ok": false}]})"),
            "abb13");
  EXPECT_EQ(
      render("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\nb'|indent }}"),
      "a\n  b\n\n  c|  a\n  b|a\n    b");
  EXPECT_EQ(render("{{ '<a href=\"x\">&\\'</a>'|e }}{{ '<b>'|escape }}{{ '<i>'|safe }}"),
            "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;&lt;b&gt;<i>");
  EXPECT_NE(error_of("{{ 'x'|nosuchfilter }}").find("Unknown StringValue filter: nosuchfilter"),
            std::string::npos);
}

TEST(JinjaTest, ToJson) {
  const std::string ctx =
      R"({"v": {"name": "f", "args": {"b": [1, 2.5], "a": "q\"<é>\n"}, "e": {}, "l": []}})";
  EXPECT_EQ(render("{{ v|tojson }}", ctx),
            R"({"name": "f", "args": {"b": [1, 2.5], "a": "q\"<é>\n"}, "e": {}, "l": []})");
  EXPECT_EQ(render("{{ v|tojson(indent=2) }}", ctx),
            "{\n  \"name\": \"f\",\n  \"args\": {\n    \"b\": [\n      1,\n      2.5\n    ],\n"
            "    \"a\": \"q\\\"<é>\\n\"\n  },\n  \"e\": {},\n  \"l\": []\n}");
  EXPECT_EQ(render("{{ v.args|tojson(sort_keys=true) }}", ctx),
            R"({"a": "q\"<é>\n", "b": [1, 2.5]})");
  EXPECT_EQ(render("{{ v.args.a|tojson(ensure_ascii=true) }}", ctx), R"("q\"<\u00e9>\n")");
  EXPECT_EQ(render("{{ v.l|tojson(separators=(',', ':')) }}{{ {'a': [1, "
                   "2]}|tojson(separators=(',', ':')) }}",
                   ctx),
            R"([]{"a":[1,2]})");
  // Integer-like keys come first, as JavaScript orders an object's properties.
  EXPECT_EQ(render("{{ d|tojson }}", R"({"d": {"b": 1, "10": 2, "a": 3, "2": 4}})"),
            R"({"2": 4, "10": 2, "b": 1, "a": 3})");
  EXPECT_EQ(render("{{ 1.0|tojson }}{{ x|tojson }}", R"({"x": 1.0})"), "11");
}

TEST(JinjaTest, RaiseException) {
  auto r = try_render("{{ raise_exception('Roles must alternate') }}");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "template raised an exception: Roles must alternate");
}

TEST(JinjaTest, StrftimeNowUsesTheInjectedClock) {
  JinjaRenderOptions options;
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 5;
  tm.tm_hour = 9;
  tm.tm_min = 3;
  tm.tm_isdst = -1;
  auto when = std::chrono::system_clock::from_time_t(std::mktime(&tm));  // local time
  options.now = [when] { return when; };
  auto r = try_render("{{ strftime_now('%d %b %Y %H:%M %B %%') }}", "{}", options);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value(), "05 Jul 2024 09:03 July %");
}

TEST(JinjaTest, SyntaxErrorsNamePosition) {
  auto r = JinjaTemplate::parse("line one\n{% if x %}\n  {{ x + }}\n{% endif %}");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("syntax error at line 3, column 10"), std::string::npos)
      << r.status().message();

  auto unclosed = JinjaTemplate::parse("{% for x in y %}{{ x }}");
  ASSERT_FALSE(unclosed.is_ok());
  EXPECT_NE(unclosed.status().message().find("expected {% endfor %}"), std::string::npos)
      << unclosed.status().message();

  auto unknown = JinjaTemplate::parse("a\n {% frobnicate %}");
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_NE(unknown.status().message().find("line 2, column 5: Unknown statement type: frobnicate"),
            std::string::npos)
      << unknown.status().message();

  auto bad_char = JinjaTemplate::parse("{{ a $ b }}");
  ASSERT_FALSE(bad_char.is_ok());
  EXPECT_NE(bad_char.status().message().find("column 6: Unexpected character: $"),
            std::string::npos)
      << bad_char.status().message();

  EXPECT_FALSE(JinjaTemplate::parse("{{ 'unterminated }}").is_ok());
  EXPECT_FALSE(JinjaTemplate::parse("{# never closed").is_ok());
  EXPECT_FALSE(JinjaTemplate::parse("bad utf8 \xFF").is_ok());
}

TEST(JinjaTest, RuntimeErrorsNameProblemAndPosition) {
  std::string m = error_of("ok\n{{ nope() }}");
  EXPECT_NE(m.find("line 2"), std::string::npos) << m;
  EXPECT_NE(m.find("Cannot call something that is not a function: got UndefinedValue"),
            std::string::npos)
      << m;
  EXPECT_NE(error_of("{{ 'x'|frob }}").find("Unknown StringValue filter: frob"), std::string::npos);
  EXPECT_NE(error_of("{% for x in 3 %}{% endfor %}").find("Expected iterable"), std::string::npos);
  EXPECT_NE(error_of("{{ x }}", R"({"true": 1})").find("already declared"), std::string::npos);
}

TEST(JinjaTest, LimitsStopHostileTemplates) {
  JinjaRenderOptions options;
  options.limits.max_depth = 50;
  auto r = try_render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{}", options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("nesting exceeds"), std::string::npos)
      << r.status().message();

  options = {};
  options.limits.max_output_bytes = 1000;
  r = try_render("{% for i in range(100) %}0123456789abcdef{% endfor %}", "{}", options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);

  r = try_render(
      "{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
      "{% endfor %}",
      "{}", options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);

  options = {};
  options.limits.max_steps = 10000;
  r = try_render("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                 "{}", options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("steps"), std::string::npos);

  // A value nested 200000 levels deep (far past what recursion on an 8 MiB stack survives) is
  // freed without recursing once per level.
  options = {};
  r = try_render(
      "{% set ns = namespace(v=[]) %}{% for i in range(200000) %}{% set ns.v = [ns.v] %}"
      "{% endfor %}{{ 'built' }}",
      "{}", options);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value(), "built");

  // A namespace that holds itself: printing it hits the depth limit, and the cycle is freed
  // (LeakSanitizer in the sanitizer build checks the latter).
  r = try_render("{% set ns = namespace() %}{% set ns.self = ns %}{{ ns }}", "{}", options);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);

  // Deep nesting in the source is a syntax error, not a stack overflow.
  auto deep =
      JinjaTemplate::parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}");
  ASSERT_FALSE(deep.is_ok());
  EXPECT_NE(deep.status().message().find("nesting"), std::string::npos);
}

// Random byte soup made of template syntax must parse or fail with a Status, never crash, and
// whatever parses must render or fail within the limits.
TEST(JinjaTest, RandomTemplatesNeverCrash) {
  const std::uint64_t seed = test::test_seed();
  std::cout << "random templates: seed " << seed << " (KVFLEET_TEST_SEED replays it)\n";
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  const std::vector<std::string> atoms = {"{{",     "}}",
                                          "{%",     "%}",
                                          "{#",     "#}",
                                          "{%-",    "-%}",
                                          "(",      ")",
                                          "[",      "]",
                                          "{",      "}",
                                          ",",      ".",
                                          ":",      "|",
                                          "=",      "==",
                                          "+",      "-",
                                          "*",      "**",
                                          "/",      "//",
                                          "%",      "~",
                                          "'s'",    "\"q\"",
                                          "1",      "2.5",
                                          " ",      "\n",
                                          "x",      "messages",
                                          "loop",   "if",
                                          "for",    "in",
                                          "set",    "endif",
                                          "endfor", "else",
                                          "not",    "and",
                                          "or",     "is",
                                          "macro",  "endmacro",
                                          "call",   "caller",
                                          "range",  "tojson",
                                          "items",  "namespace",
                                          "ns",     "raise_exception",
                                          "é",      "🎉",
                                          "\\",     "'"};
  JinjaRenderOptions options;
  options.limits.max_steps = 100000;
  options.limits.max_output_bytes = 1 << 16;
  int parsed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string source;
    int n = static_cast<int>(rng() % 30);
    for (int k = 0; k < n; ++k) source += atoms[rng() % atoms.size()];
    auto t = JinjaTemplate::parse(source);
    if (!t.is_ok()) {
      EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << source;
      continue;
    }
    ++parsed;
    auto r = t->render(
        Json{{"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}, {"x", 3}},
        options);
    if (!r.is_ok()) {
      EXPECT_TRUE(r.status().code() == StatusCode::kInvalidArgument ||
                  r.status().code() == StatusCode::kResourceExhausted)
          << source << " -> " << r.status().to_string();
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace kvfleet::chat
