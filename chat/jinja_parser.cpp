// Preprocessing, lexer and parser: a line-by-line port of @huggingface/jinja 0.5.11 lexer.ts and
// parser.ts, with source positions for error messages and a bound on nesting.

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "chat/jinja_ast.h"
#include "chat/jinja_text.h"

namespace kvfleet::chat {
namespace {

constexpr int kMaxParseDepth = 200;

struct SyntaxError {
  std::string message;
  std::size_t pos;
};

// Text after preprocessing, with the original offset of every byte (and of the end).
struct MappedText {
  std::string text;
  std::vector<std::size_t> origin;  // [text.size() + 1]
};

// Keeps the bytes of `in` whose `keep` is true.
MappedText filter_bytes(const MappedText& in, const std::vector<bool>& keep) {
  MappedText out;
  for (std::size_t i = 0; i < in.text.size(); ++i) {
    if (keep[i]) {
      out.text += in.text[i];
      out.origin.push_back(in.origin[i]);
    }
  }
  out.origin.push_back(in.origin.back());
  return out;
}

bool is_line_start(const std::string& s, std::size_t i) {
  if (i == 0) return true;
  char prev = s[i - 1];
  if (prev == '\n' || prev == '\r') return true;
  // U+2028 and U+2029 also end a line for JavaScript's multiline ^.
  return i >= 3 && s.compare(i - 3, 2, "\xE2\x80") == 0 &&
         (s[i - 1] == '\xA8' || s[i - 1] == '\xA9');
}

MappedText preprocess(std::string_view source) {
  MappedText t;
  t.text.assign(source);
  for (std::size_t i = 0; i <= source.size(); ++i) t.origin.push_back(i);
  const auto& s0 = t.text;
  if (!s0.empty() && s0.back() == '\n') {
    std::vector<bool> keep(s0.size(), true);
    keep.back() = false;
    t = filter_bytes(t, keep);
  }
  {  // lstrip_blocks: /^[ \t]*({[#%-])/gm -> "$1"
    const auto& s = t.text;
    std::vector<bool> keep(s.size(), true);
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (!is_line_start(s, i)) continue;
      std::size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      if (j + 1 < s.size() && s[j] == '{' &&
          (s[j + 1] == '#' || s[j + 1] == '%' || s[j + 1] == '-')) {
        for (std::size_t k = i; k < j; ++k) keep[k] = false;
        i = j + 1;
      }
    }
    t = filter_bytes(t, keep);
  }
  {  // trim_blocks: /([#%-]})\n/g -> "$1"
    const auto& s = t.text;
    std::vector<bool> keep(s.size(), true);
    for (std::size_t i = 0; i + 2 < s.size(); ++i) {
      if ((s[i] == '#' || s[i] == '%' || s[i] == '-') && s[i + 1] == '}' && s[i + 2] == '\n') {
        keep[i + 2] = false;
        i += 2;
      }
    }
    t = filter_bytes(t, keep);
  }
  {  // /(\s*){%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs: drop the tag, and the whitespace
     // around it on a side that has a '-'.
    const auto& s = t.text;
    std::vector<bool> keep(s.size(), true);
    std::size_t cursor = 0;
    // Start of each run of whitespace, so the leading \s* can be found without backtracking.
    for (std::size_t q = s.find("{%", cursor); q != std::string::npos; q = s.find("{%", cursor)) {
      std::size_t j = q + 2;
      bool lstrip = j < s.size() && s[j] == '-';
      if (lstrip) ++j;
      while (std::size_t n = text::js_space_at(s, j)) j += n;
      if (s.compare(j, 3, "end") == 0) j += 3;
      if (s.compare(j, 10, "generation") != 0) {
        cursor = q + 1;
        continue;
      }
      j += 10;
      while (std::size_t n = text::js_space_at(s, j)) j += n;
      bool rstrip = j < s.size() && s[j] == '-';
      if (rstrip) ++j;
      if (s.compare(j, 2, "%}") != 0) {
        cursor = q + 1;
        continue;
      }
      j += 2;
      // The whitespace before the tag, back to the end of the previous match.
      std::size_t before = q;
      while (before > cursor) {
        std::size_t k = before - 1;
        while (k > cursor && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        if (text::js_space_at(s, k) != before - k) break;
        before = k;
      }
      std::size_t after = j;
      while (std::size_t n = text::js_space_at(s, after)) after += n;
      for (std::size_t k = before; k < after; ++k) {
        bool in_tag = k >= q && k < j;
        bool in_before = k < q;
        bool in_after = k >= j;
        if (in_tag || (in_before && lstrip) || (in_after && rstrip)) keep[k] = false;
      }
      cursor = after;
    }
    t = filter_bytes(t, keep);
  }
  return t;
}

bool is_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool is_integer(char c) {
  return c >= '0' && c <= '9';
}

class Lexer {
 public:
  explicit Lexer(MappedText src) : m_(std::move(src)), src_(m_.text) {}

  std::vector<Token> run() {
    while (cursor_ < src_.size()) {
      bool text_allowed = tokens_.empty() || last_type() == TokenType::kCloseStatement ||
                          last_type() == TokenType::kCloseExpression ||
                          last_type() == TokenType::kComment;
      if (text_allowed) {
        std::size_t start = cursor_;
        while (cursor_ < src_.size() && !(src_[cursor_] == '{' && cursor_ + 1 < src_.size() &&
                                          (src_[cursor_ + 1] == '%' || src_[cursor_ + 1] == '{' ||
                                           src_[cursor_ + 1] == '#'))) {
          ++cursor_;
        }
        if (cursor_ > start) {
          push(src_.substr(start, cursor_ - start), TokenType::kText, start);
          continue;
        }
      }
      if (at("{#")) {
        lex_comment();
        continue;
      }
      if (at("{%-")) {
        strip_trailing_whitespace();
        push("{%", TokenType::kOpenStatement, cursor_);
        cursor_ += 3;
        continue;
      }
      if (at("{{-")) {
        strip_trailing_whitespace();
        push("{{", TokenType::kOpenExpression, cursor_);
        curly_depth_ = 0;
        cursor_ += 3;
        continue;
      }
      skip_leading_whitespace();
      if (at("-%}")) {
        push("%}", TokenType::kCloseStatement, cursor_);
        cursor_ += 3;
        skip_leading_whitespace();
        continue;
      }
      if (at("-}}")) {
        push("}}", TokenType::kCloseExpression, cursor_);
        cursor_ += 3;
        skip_leading_whitespace();
        continue;
      }
      if (cursor_ >= src_.size()) break;
      char c = src_[cursor_];
      if (c == '-' || c == '+') {
        if (tokens_.empty() || last_type() == TokenType::kText) {
          fail(std::string("Unexpected character: ") + c);
        }
        TokenType lt = last_type();
        bool binary = lt == TokenType::kIdentifier || lt == TokenType::kNumericLiteral ||
                      lt == TokenType::kStringLiteral || lt == TokenType::kCloseParen ||
                      lt == TokenType::kCloseSquareBracket;
        if (!binary) {
          std::size_t start = cursor_;
          ++cursor_;
          std::string num = consume_while([this](std::size_t i) { return is_integer(src_[i]); });
          if (!num.empty() && cursor_ + 1 < src_.size() && src_[cursor_] == '.' &&
              is_integer(src_[cursor_ + 1])) {
            ++cursor_;
            num += "." + consume_while([this](std::size_t i) { return is_integer(src_[i]); });
          }
          push(std::string(1, c) + num,
               num.empty() ? TokenType::kUnaryOperator : TokenType::kNumericLiteral, start);
          continue;
        }
      }
      if (match_table()) continue;
      if (c == '\'' || c == '"') {
        std::size_t start = cursor_;
        ++cursor_;
        std::string str = consume_while([this, c](std::size_t i) { return src_[i] != c; });
        push(str, TokenType::kStringLiteral, start);
        ++cursor_;
        continue;
      }
      if (is_integer(c)) {
        std::size_t start = cursor_;
        std::string num = consume_while([this](std::size_t i) { return is_integer(src_[i]); });
        if ((tokens_.empty() || last_type() != TokenType::kDot) && cursor_ + 1 < src_.size() &&
            src_[cursor_] == '.' && is_integer(src_[cursor_ + 1])) {
          ++cursor_;
          num += "." + consume_while([this](std::size_t i) { return is_integer(src_[i]); });
        }
        push(num, TokenType::kNumericLiteral, start);
        continue;
      }
      if (is_word(c)) {
        std::size_t start = cursor_;
        std::string word = consume_while([this](std::size_t i) { return is_word(src_[i]); });
        push(word, TokenType::kIdentifier, start);
        continue;
      }
      std::size_t len = 0;
      text::decode_utf8(src_, cursor_, &len);
      fail("Unexpected character: " + src_.substr(cursor_, len));
    }
    return std::move(tokens_);
  }

 private:
  TokenType last_type() const { return tokens_.back().type; }
  bool at(std::string_view seq) const { return src_.compare(cursor_, seq.size(), seq) == 0; }
  void push(std::string value, TokenType type, std::size_t pos) {
    tokens_.push_back(Token{std::move(value), type, m_.origin[pos]});
  }
  [[noreturn]] void fail(std::string message) const {
    throw SyntaxError{std::move(message), m_.origin[std::min(cursor_, src_.size())]};
  }

  // consumeWhile with its escape handling (used for string literals; harmless elsewhere).
  template <typename Pred>
  std::string consume_while(Pred pred) {
    std::string out;
    std::uint32_t pending_high = 0;  // a \u high surrogate waiting for its low half
    auto flush_high = [&] {
      if (pending_high) text::append_utf8(out, 0xFFFD);
      pending_high = 0;
    };
    while (cursor_ < src_.size() && pred(cursor_)) {
      if (src_[cursor_] == '\\') {
        ++cursor_;
        if (cursor_ >= src_.size()) fail("Unexpected end of input");
        char escaped = src_[cursor_++];
        if (escaped == 'x' || escaped == 'u') {
          std::size_t length = escaped == 'x' ? 2 : 4;
          std::string hex = src_.substr(cursor_, length);
          bool ok = hex.size() == length;
          for (char h : hex) ok = ok && std::isxdigit(static_cast<unsigned char>(h));
          if (!ok) fail(std::string("Invalid hexadecimal escape sequence: \\") + escaped + hex);
          std::uint32_t unit = static_cast<std::uint32_t>(std::stoul(hex, nullptr, 16));
          cursor_ += length;
          if (unit >= 0xD800 && unit <= 0xDBFF) {
            flush_high();
            pending_high = unit;
          } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
            if (pending_high) {
              text::append_utf8(out, 0x10000 + ((pending_high - 0xD800) << 10) + (unit - 0xDC00));
              pending_high = 0;
            } else {
              text::append_utf8(out, 0xFFFD);
            }
          } else {
            flush_high();
            text::append_utf8(out, unit);
          }
          continue;
        }
        flush_high();
        switch (escaped) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'v': out += '\v'; break;
          case '\'': out += '\''; break;
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          default: fail(std::string("Unexpected escaped character: ") + escaped);
        }
        continue;
      }
      flush_high();
      out += src_[cursor_++];
      if (cursor_ >= src_.size()) fail("Unexpected end of input");
    }
    flush_high();
    return out;
  }

  void strip_trailing_whitespace() {
    if (!tokens_.empty() && last_type() == TokenType::kText) {
      tokens_.back().value = text::js_trim_end(tokens_.back().value);
      if (tokens_.back().value.empty()) tokens_.pop_back();
    }
  }
  void skip_leading_whitespace() {
    while (std::size_t n = text::js_space_at(src_, cursor_)) cursor_ += n;
  }

  void lex_comment() {
    std::size_t start = cursor_;
    cursor_ += 2;
    bool strip_before = cursor_ < src_.size() && src_[cursor_] == '-';
    if (strip_before) ++cursor_;
    std::string comment;
    while (!(cursor_ + 1 < src_.size() && src_[cursor_] == '#' && src_[cursor_ + 1] == '}')) {
      if (cursor_ + 2 >= src_.size()) {
        cursor_ = start;
        fail("Missing end of comment tag");
      }
      comment += src_[cursor_++];
    }
    bool strip_after = !comment.empty() && comment.back() == '-';
    if (strip_after) comment.pop_back();
    if (strip_before) strip_trailing_whitespace();
    push(comment, TokenType::kComment, start);
    cursor_ += 2;
    if (strip_after) skip_leading_whitespace();
  }

  bool match_table() {
    static const std::pair<const char*, TokenType> kTable[] = {
        {"{%", TokenType::kOpenStatement},
        {"%}", TokenType::kCloseStatement},
        {"{{", TokenType::kOpenExpression},
        {"}}", TokenType::kCloseExpression},
        {"(", TokenType::kOpenParen},
        {")", TokenType::kCloseParen},
        {"{", TokenType::kOpenCurlyBracket},
        {"}", TokenType::kCloseCurlyBracket},
        {"[", TokenType::kOpenSquareBracket},
        {"]", TokenType::kCloseSquareBracket},
        {",", TokenType::kComma},
        {".", TokenType::kDot},
        {":", TokenType::kColon},
        {"|", TokenType::kPipe},
        {"<=", TokenType::kComparisonBinaryOperator},
        {">=", TokenType::kComparisonBinaryOperator},
        {"==", TokenType::kComparisonBinaryOperator},
        {"!=", TokenType::kComparisonBinaryOperator},
        {"<", TokenType::kComparisonBinaryOperator},
        {">", TokenType::kComparisonBinaryOperator},
        {"+", TokenType::kAdditiveBinaryOperator},
        {"-", TokenType::kAdditiveBinaryOperator},
        {"~", TokenType::kAdditiveBinaryOperator},
        {"**", TokenType::kExponentiationBinaryOperator},
        {"*", TokenType::kMultiplicativeBinaryOperator},
        {"//", TokenType::kMultiplicativeBinaryOperator},
        {"/", TokenType::kMultiplicativeBinaryOperator},
        {"%", TokenType::kMultiplicativeBinaryOperator},
        {"=", TokenType::kEquals},
    };
    for (const auto& [seq, type] : kTable) {
      std::string_view sv(seq);
      if (sv == "}}" && curly_depth_ > 0) continue;
      if (!at(sv)) continue;
      push(std::string(sv), type, cursor_);
      if (type == TokenType::kOpenExpression) {
        curly_depth_ = 0;
      } else if (type == TokenType::kOpenCurlyBracket) {
        ++curly_depth_;
      } else if (type == TokenType::kCloseCurlyBracket) {
        --curly_depth_;
      }
      cursor_ += sv.size();
      return true;
    }
    return false;
  }

  MappedText m_;
  const std::string& src_;
  std::size_t cursor_ = 0;
  int curly_depth_ = 0;
  std::vector<Token> tokens_;
};

const char* token_type_name(TokenType t) {
  switch (t) {
    case TokenType::kText: return "Text";
    case TokenType::kNumericLiteral: return "NumericLiteral";
    case TokenType::kStringLiteral: return "StringLiteral";
    case TokenType::kIdentifier: return "Identifier";
    case TokenType::kEquals: return "Equals";
    case TokenType::kOpenParen: return "OpenParen";
    case TokenType::kCloseParen: return "CloseParen";
    case TokenType::kOpenStatement: return "OpenStatement";
    case TokenType::kCloseStatement: return "CloseStatement";
    case TokenType::kOpenExpression: return "OpenExpression";
    case TokenType::kCloseExpression: return "CloseExpression";
    case TokenType::kOpenSquareBracket: return "OpenSquareBracket";
    case TokenType::kCloseSquareBracket: return "CloseSquareBracket";
    case TokenType::kOpenCurlyBracket: return "OpenCurlyBracket";
    case TokenType::kCloseCurlyBracket: return "CloseCurlyBracket";
    case TokenType::kComma: return "Comma";
    case TokenType::kDot: return "Dot";
    case TokenType::kColon: return "Colon";
    case TokenType::kPipe: return "Pipe";
    case TokenType::kAdditiveBinaryOperator: return "AdditiveBinaryOperator";
    case TokenType::kMultiplicativeBinaryOperator: return "MultiplicativeBinaryOperator";
    case TokenType::kExponentiationBinaryOperator: return "ExponentiationBinaryOperator";
    case TokenType::kComparisonBinaryOperator: return "ComparisonBinaryOperator";
    case TokenType::kUnaryOperator: return "UnaryOperator";
    case TokenType::kComment: return "Comment";
  }
  return "?";
}

NodePtr make(NodeKind kind, std::size_t pos) {
  auto n = std::make_unique<Node>();
  n->kind = kind;
  n->pos = pos;
  return n;
}

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, std::size_t end) : tokens_(tokens), end_(end) {}

  NodePtr run() {
    NodePtr program = make(NodeKind::kProgram, 0);
    while (current_ < tokens_.size()) program->a.push_back(parse_any());
    return program;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser* p) : p_(p) {
      if (++p_->depth_ > kMaxParseDepth) p_->fail("template nesting is deeper than the limit");
    }
    ~DepthGuard() { --p_->depth_; }
    Parser* p_;
  };

  std::size_t here() const { return current_ < tokens_.size() ? tokens_[current_].pos : end_; }
  [[noreturn]] void fail(std::string message) const {
    throw SyntaxError{std::move(message), here()};
  }
  const Token& peek() const {
    if (current_ >= tokens_.size()) fail("Unexpected end of template");
    return tokens_[current_];
  }
  const Token& next() {
    const Token& t = peek();
    ++current_;
    return t;
  }
  const Token& expect(TokenType type, const std::string& error) {
    if (current_ >= tokens_.size()) fail(error + ", but the template ended");
    const Token& t = tokens_[current_];
    if (t.type != type) {
      fail(error + ", got " + token_type_name(t.type) + " '" + t.value + "'");
    }
    ++current_;
    return t;
  }
  void expect_identifier(const std::string& name) {
    if (!is_identifier({name})) fail("Expected " + name);
    ++current_;
  }
  bool is(std::initializer_list<TokenType> types) const {
    if (current_ + types.size() > tokens_.size()) return false;
    std::size_t i = current_;
    for (TokenType t : types) {
      if (tokens_[i++].type != t) return false;
    }
    return true;
  }
  bool is_statement(std::initializer_list<std::string_view> names) const {
    if (current_ + 1 >= tokens_.size()) return false;
    if (tokens_[current_].type != TokenType::kOpenStatement ||
        tokens_[current_ + 1].type != TokenType::kIdentifier) {
      return false;
    }
    for (auto n : names) {
      if (tokens_[current_ + 1].value == n) return true;
    }
    return false;
  }
  bool is_identifier(std::initializer_list<std::string_view> names) const {
    if (current_ + names.size() > tokens_.size()) return false;
    std::size_t i = current_;
    for (auto n : names) {
      if (tokens_[i].type != TokenType::kIdentifier || tokens_[i].value != n) return false;
      ++i;
    }
    return true;
  }
  // The body of a block up to one of `names`, failing clearly when the template ends first.
  void parse_until(std::initializer_list<std::string_view> names, std::vector<NodePtr>* body,
                   const char* closing) {
    while (!is_statement(names)) {
      if (current_ >= tokens_.size())
        fail(std::string("Unexpected end of template, expected ") + closing);
      body->push_back(parse_any());
    }
  }

  NodePtr parse_any() {
    DepthGuard guard(this);
    const Token& t = peek();
    switch (t.type) {
      case TokenType::kComment: {
        auto n = make(NodeKind::kComment, t.pos);
        ++current_;
        return n;
      }
      case TokenType::kText: {
        auto n = make(NodeKind::kStringLiteral, t.pos);
        n->str = t.value;
        ++current_;
        return n;
      }
      case TokenType::kOpenStatement: return parse_statement();
      case TokenType::kOpenExpression: {
        ++current_;
        NodePtr e = parse_expression();
        expect(TokenType::kCloseExpression, "Expected closing expression token '}}'");
        return e;
      }
      default: fail(std::string("Unexpected token type: ") + token_type_name(t.type));
    }
  }

  void expect_end(const char* name) {
    expect(TokenType::kOpenStatement, std::string("Expected {% ") + name + " %}");
    expect_identifier(name);
    expect(TokenType::kCloseStatement, "Expected '%}'");
  }

  NodePtr parse_statement() {
    std::size_t pos = peek().pos;
    expect(TokenType::kOpenStatement, "Expected opening statement token");
    const Token& name_token = peek();
    if (name_token.type != TokenType::kIdentifier) {
      fail(std::string("Unknown statement, got ") + token_type_name(name_token.type));
    }
    const std::string name = name_token.value;
    NodePtr result;
    if (name == "set") {
      ++current_;
      result = parse_set(pos);
    } else if (name == "if") {
      ++current_;
      result = parse_if(pos);
      expect_end("endif");
    } else if (name == "macro") {
      ++current_;
      result = make(NodeKind::kMacro, pos);
      NodePtr id = parse_primary();
      if (id->kind != NodeKind::kIdentifier) fail("Expected identifier following macro statement");
      result->str = id->str;
      result->a = parse_args(true);
      expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
      parse_until({"endmacro"}, &result->b, "{% endmacro %}");
      expect_end("endmacro");
    } else if (name == "for") {
      ++current_;
      result = parse_for(pos);
      expect_end("endfor");
    } else if (name == "call") {
      ++current_;
      result = make(NodeKind::kCallStatement, pos);
      if (is({TokenType::kOpenParen})) {
        result->flag = true;
        result->a = parse_args(true);
      }
      NodePtr callee = parse_primary();
      if (callee->kind != NodeKind::kIdentifier)
        fail("Expected identifier following call statement");
      auto call = make(NodeKind::kCall, callee->pos);
      call->x = std::move(callee);
      call->a = parse_args(false);
      result->x = std::move(call);
      expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
      parse_until({"endcall"}, &result->b, "{% endcall %}");
      expect_end("endcall");
    } else if (name == "break" || name == "continue") {
      ++current_;
      expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
      result = make(name == "break" ? NodeKind::kBreak : NodeKind::kContinue, pos);
    } else if (name == "filter") {
      ++current_;
      result = make(NodeKind::kFilterStatement, pos);
      NodePtr filter = parse_primary();
      if (filter->kind == NodeKind::kIdentifier && is({TokenType::kOpenParen})) {
        filter = parse_call(std::move(filter));
      }
      result->x = std::move(filter);
      expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
      parse_until({"endfilter"}, &result->a, "{% endfilter %}");
      expect_end("endfilter");
    } else {
      fail("Unknown statement type: " + name);
    }
    return result;
  }

  NodePtr parse_set(std::size_t pos) {
    auto n = make(NodeKind::kSet, pos);
    n->x = parse_expression_sequence(false);
    if (is({TokenType::kEquals})) {
      ++current_;
      n->y = parse_expression_sequence(false);
    } else {
      expect(TokenType::kCloseStatement, "Expected '%}'");
      parse_until({"endset"}, &n->a, "{% endset %}");
      expect(TokenType::kOpenStatement, "Expected {% endset %}");
      expect_identifier("endset");
    }
    expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
    return n;
  }

  NodePtr parse_if(std::size_t pos) {
    DepthGuard guard(this);
    auto n = make(NodeKind::kIf, pos);
    n->x = parse_expression();
    expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
    parse_until({"elif", "else", "endif"}, &n->a, "{% endif %}");
    if (is_statement({"elif"})) {
      std::size_t elif_pos = peek().pos;
      current_ += 2;
      n->b.push_back(parse_if(elif_pos));
    } else if (is_statement({"else"})) {
      current_ += 2;
      expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
      parse_until({"endif"}, &n->b, "{% endif %}");
    }
    return n;
  }

  NodePtr parse_for(std::size_t pos) {
    auto n = make(NodeKind::kFor, pos);
    n->x = parse_expression_sequence(true);
    if (n->x->kind != NodeKind::kIdentifier && n->x->kind != NodeKind::kTupleLiteral) {
      fail("Expected identifier/tuple for the loop variable");
    }
    if (!is_identifier({"in"})) fail("Expected `in` keyword following loop variable");
    ++current_;
    n->y = parse_expression();
    expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
    parse_until({"endfor", "else"}, &n->a, "{% endfor %}");
    if (is_statement({"else"})) {
      current_ += 2;
      expect(TokenType::kCloseStatement, "Expected closing statement token '%}'");
      parse_until({"endfor"}, &n->b, "{% endfor %}");
    }
    return n;
  }

  NodePtr parse_expression_sequence(bool primary) {
    std::size_t pos = here();
    std::vector<NodePtr> items;
    items.push_back(primary ? parse_primary() : parse_expression());
    bool is_tuple = is({TokenType::kComma});
    while (is_tuple) {
      ++current_;
      items.push_back(primary ? parse_primary() : parse_expression());
      if (!is({TokenType::kComma})) break;
    }
    if (!is_tuple) return std::move(items[0]);
    auto n = make(NodeKind::kTupleLiteral, pos);
    n->a = std::move(items);
    return n;
  }

  NodePtr parse_expression() {
    DepthGuard guard(this);
    return parse_if_expression();
  }

  NodePtr parse_if_expression() {
    NodePtr a = parse_or();
    if (is_identifier({"if"})) {
      std::size_t pos = peek().pos;
      ++current_;
      NodePtr test = parse_or();
      if (is_identifier({"else"})) {
        ++current_;
        DepthGuard guard(this);
        NodePtr false_expr = parse_if_expression();
        auto n = make(NodeKind::kTernary, pos);
        n->x = std::move(test);
        n->y = std::move(a);
        n->z = std::move(false_expr);
        return n;
      }
      auto n = make(NodeKind::kSelect, pos);
      n->x = std::move(a);
      n->y = std::move(test);
      return n;
    }
    return a;
  }

  NodePtr binary(const Token& op, NodePtr left, NodePtr right, std::string op_value) {
    auto n = make(NodeKind::kBinary, op.pos);
    n->str = std::move(op_value);
    n->x = std::move(left);
    n->y = std::move(right);
    return n;
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (is_identifier({"or"})) {
      const Token& op = next();
      left = binary(op, std::move(left), parse_and(), op.value);
    }
    return left;
  }
  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (is_identifier({"and"})) {
      const Token& op = next();
      left = binary(op, std::move(left), parse_not(), op.value);
    }
    return left;
  }
  NodePtr parse_not() {
    NodePtr right;
    while (is_identifier({"not"})) {
      DepthGuard guard(this);
      const Token& op = next();
      auto n = make(NodeKind::kUnary, op.pos);
      n->str = "not";
      n->x = parse_not();
      right = std::move(n);
    }
    return right ? std::move(right) : parse_comparison();
  }
  NodePtr parse_comparison() {
    NodePtr left = parse_additive();
    while (true) {
      if (is_identifier({"not", "in"})) {
        const Token& op = tokens_[current_];
        current_ += 2;
        left = binary(op, std::move(left), parse_additive(), "not in");
      } else if (is_identifier({"in"}) || is({TokenType::kComparisonBinaryOperator})) {
        const Token& op = next();
        left = binary(op, std::move(left), parse_additive(), op.value);
      } else {
        break;
      }
    }
    return left;
  }
  NodePtr parse_additive() {
    NodePtr left = parse_multiplicative();
    while (is({TokenType::kAdditiveBinaryOperator})) {
      const Token& op = next();
      left = binary(op, std::move(left), parse_multiplicative(), op.value);
    }
    return left;
  }
  NodePtr parse_multiplicative() {
    NodePtr left = parse_power();
    while (is({TokenType::kMultiplicativeBinaryOperator})) {
      const Token& op = next();
      left = binary(op, std::move(left), parse_power(), op.value);
    }
    return left;
  }
  NodePtr parse_power() {
    NodePtr left = parse_test();
    while (is({TokenType::kExponentiationBinaryOperator})) {
      const Token& op = next();
      left = binary(op, std::move(left), parse_test(), op.value);
    }
    return left;
  }
  NodePtr parse_test() {
    NodePtr operand = parse_filter();
    while (is_identifier({"is"})) {
      std::size_t pos = peek().pos;
      ++current_;
      bool negate = is_identifier({"not"});
      if (negate) ++current_;
      NodePtr test = parse_primary();
      if (test->kind != NodeKind::kIdentifier) fail("Expected identifier for the test");
      auto n = make(NodeKind::kTest, pos);
      n->x = std::move(operand);
      n->str = test->str;
      n->flag = negate;
      operand = std::move(n);
    }
    return operand;
  }
  NodePtr parse_filter() {
    NodePtr operand = parse_unary_sign();
    while (is({TokenType::kPipe})) {
      ++current_;
      std::size_t pos = here();
      NodePtr filter = parse_primary();
      if (filter->kind != NodeKind::kIdentifier) fail("Expected identifier for the filter");
      if (is({TokenType::kOpenParen})) filter = parse_call(std::move(filter));
      auto n = make(NodeKind::kFilter, pos);
      n->x = std::move(operand);
      n->y = std::move(filter);
      operand = std::move(n);
    }
    return operand;
  }
  NodePtr parse_unary_sign() {
    if (current_ < tokens_.size()) {
      const Token& t = tokens_[current_];
      if ((t.type == TokenType::kUnaryOperator || t.type == TokenType::kAdditiveBinaryOperator) &&
          (t.value == "-" || t.value == "+")) {
        DepthGuard guard(this);
        ++current_;
        auto n = make(NodeKind::kUnary, t.pos);
        n->str = t.value;
        n->x = parse_unary_sign();
        return n;
      }
    }
    return parse_call_member();
  }
  NodePtr parse_call_member() {
    NodePtr member = parse_member(parse_primary());
    if (is({TokenType::kOpenParen})) return parse_call(std::move(member));
    return member;
  }
  NodePtr parse_call(NodePtr callee) {
    DepthGuard guard(this);
    auto n = make(NodeKind::kCall, callee->pos);
    n->x = std::move(callee);
    n->a = parse_args(false);
    NodePtr expr = parse_member(std::move(n));
    if (is({TokenType::kOpenParen})) expr = parse_call(std::move(expr));
    return expr;
  }

  std::vector<NodePtr> parse_args(bool parameters) {
    expect(TokenType::kOpenParen, "Expected opening parenthesis for arguments list");
    std::vector<NodePtr> args;
    std::set<std::string> names;
    bool saw_keyword = false;
    bool saw_spread = false;
    while (!is({TokenType::kCloseParen})) {
      if (current_ >= tokens_.size()) fail("Expected closing parenthesis for arguments list");
      bool keyword_spread = is({TokenType::kExponentiationBinaryOperator});
      bool positional_spread =
          is({TokenType::kMultiplicativeBinaryOperator}) && tokens_[current_].value == "*";
      if (parameters && (keyword_spread || positional_spread)) {
        fail("Argument unpacking is not allowed in parameter declarations");
      }
      if (keyword_spread) {
        auto n = make(NodeKind::kKeywordSpread, next().pos);
        n->x = parse_expression();
        args.push_back(std::move(n));
        if (is({TokenType::kComma})) ++current_;
        if (!is({TokenType::kCloseParen})) {
          fail("Expected closing parenthesis: `**` must be applied to the final argument");
        }
        break;
      }
      NodePtr argument;
      if (positional_spread) {
        if (saw_spread) fail("Only one `*` argument unpacking is allowed");
        saw_spread = true;
        argument = make(NodeKind::kSpread, next().pos);
        argument->x = parse_expression();
      } else {
        argument = parse_expression();
        if (is({TokenType::kEquals})) {
          ++current_;
          if (argument->kind != NodeKind::kIdentifier) {
            fail(parameters ? "Expected identifier for parameter declaration"
                            : "Expected identifier for keyword argument");
          }
          auto kw = make(NodeKind::kKeywordArgument, argument->pos);
          kw->str = argument->str;
          kw->x = parse_expression();
          argument = std::move(kw);
        }
        if (parameters) {
          if (argument->kind != NodeKind::kIdentifier &&
              argument->kind != NodeKind::kKeywordArgument) {
            fail("Expected identifier for parameter declaration");
          }
          if (!names.insert(argument->str).second) {
            fail("Duplicate parameter name: " + argument->str);
          }
        }
        if (argument->kind == NodeKind::kKeywordArgument) {
          saw_keyword = true;
        } else if (saw_keyword) {
          fail(parameters ? "Non-default argument follows default argument"
                          : "Positional arguments must come before keyword arguments");
        } else if (saw_spread) {
          fail("Positional arguments must not follow `*` argument unpacking");
        }
      }
      args.push_back(std::move(argument));
      if (is({TokenType::kComma})) ++current_;
    }
    expect(TokenType::kCloseParen, "Expected closing parenthesis for arguments list");
    return args;
  }

  NodePtr parse_subscript() {
    std::size_t pos = here();
    std::vector<NodePtr> slices;
    bool is_slice = false;
    while (!is({TokenType::kCloseSquareBracket})) {
      if (current_ >= tokens_.size()) fail("Expected closing square bracket");
      if (is({TokenType::kColon})) {
        slices.push_back(nullptr);
        ++current_;
        is_slice = true;
      } else {
        slices.push_back(parse_expression());
        if (is({TokenType::kColon})) {
          ++current_;
          is_slice = true;
        }
      }
    }
    if (slices.empty()) fail("Expected at least one argument for member/slice expression");
    if (!is_slice) return std::move(slices[0]);
    if (slices.size() > 3) fail("Expected 0-3 arguments for slice expression");
    auto n = make(NodeKind::kSlice, pos);
    slices.resize(3);
    n->x = std::move(slices[0]);
    n->y = std::move(slices[1]);
    n->z = std::move(slices[2]);
    return n;
  }

  NodePtr parse_member(NodePtr object) {
    while (is({TokenType::kDot}) || is({TokenType::kOpenSquareBracket})) {
      const Token& op = next();
      bool computed = op.type == TokenType::kOpenSquareBracket;
      NodePtr property;
      if (computed) {
        DepthGuard guard(this);
        property = parse_subscript();
        expect(TokenType::kCloseSquareBracket, "Expected closing square bracket");
      } else {
        property = parse_primary();
        if (property->kind != NodeKind::kIdentifier &&
            property->kind != NodeKind::kIntegerLiteral) {
          fail("Expected identifier or integer following dot operator");
        }
      }
      auto n = make(NodeKind::kMember, op.pos);
      n->x = std::move(object);
      n->y = std::move(property);
      n->flag = computed;
      object = std::move(n);
    }
    return object;
  }

  NodePtr parse_primary() {
    DepthGuard guard(this);
    const Token& t = next();
    switch (t.type) {
      case TokenType::kNumericLiteral: {
        bool is_float = t.value.find('.') != std::string::npos;
        auto n = make(is_float ? NodeKind::kFloatLiteral : NodeKind::kIntegerLiteral, t.pos);
        n->number = std::strtod(t.value.c_str(), nullptr);
        return n;
      }
      case TokenType::kStringLiteral: {
        auto n = make(NodeKind::kStringLiteral, t.pos);
        n->str = t.value;
        while (is({TokenType::kStringLiteral})) n->str += next().value;
        return n;
      }
      case TokenType::kIdentifier: {
        auto n = make(NodeKind::kIdentifier, t.pos);
        n->str = t.value;
        return n;
      }
      case TokenType::kOpenParen: {
        NodePtr e = parse_expression_sequence(false);
        expect(TokenType::kCloseParen, "Expected closing parenthesis");
        return e;
      }
      case TokenType::kOpenSquareBracket: {
        auto n = make(NodeKind::kArrayLiteral, t.pos);
        while (!is({TokenType::kCloseSquareBracket})) {
          if (current_ >= tokens_.size()) fail("Expected closing square bracket");
          n->a.push_back(parse_expression());
          if (is({TokenType::kComma})) ++current_;
        }
        ++current_;
        return n;
      }
      case TokenType::kOpenCurlyBracket: {
        auto n = make(NodeKind::kObjectLiteral, t.pos);
        while (!is({TokenType::kCloseCurlyBracket})) {
          if (current_ >= tokens_.size()) fail("Expected closing curly bracket");
          NodePtr key = parse_expression();
          expect(TokenType::kColon, "Expected colon between key and value in object literal");
          NodePtr value = parse_expression();
          n->pairs.emplace_back(std::move(key), std::move(value));
          if (is({TokenType::kComma})) ++current_;
        }
        ++current_;
        return n;
      }
      default:
        --current_;
        fail(std::string("Unexpected token: ") + token_type_name(t.type) + " '" + t.value + "'");
    }
  }

  const std::vector<Token>& tokens_;
  std::size_t end_;
  std::size_t current_ = 0;
  int depth_ = 0;
};

}  // namespace

bool tokenize(std::string_view source, std::vector<Token>* tokens, SyntaxErrorInfo* error) {
  try {
    Lexer lexer(preprocess(source));
    *tokens = lexer.run();
    return true;
  } catch (const SyntaxError& e) {
    *error = SyntaxErrorInfo{e.message, e.pos};
    return false;
  }
}

bool parse_tokens(const std::vector<Token>& tokens, std::size_t source_size, NodePtr* program,
                  SyntaxErrorInfo* error) {
  try {
    Parser parser(tokens, source_size);
    *program = parser.run();
    return true;
  } catch (const SyntaxError& e) {
    *error = SyntaxErrorInfo{e.message, e.pos};
    return false;
  }
}

}  // namespace kvfleet::chat
