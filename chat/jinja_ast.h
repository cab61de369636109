#pragma once
// Tokens and the syntax tree of a Jinja template (internal to chat/). The shapes follow
// @huggingface/jinja's lexer.ts and ast.ts so the evaluator can mirror its runtime.ts.

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace kvfleet::chat {

enum class TokenType {
  kText,
  kNumericLiteral,
  kStringLiteral,
  kIdentifier,
  kEquals,
  kOpenParen,
  kCloseParen,
  kOpenStatement,
  kCloseStatement,
  kOpenExpression,
  kCloseExpression,
  kOpenSquareBracket,
  kCloseSquareBracket,
  kOpenCurlyBracket,
  kCloseCurlyBracket,
  kComma,
  kDot,
  kColon,
  kPipe,
  kAdditiveBinaryOperator,
  kMultiplicativeBinaryOperator,
  kExponentiationBinaryOperator,
  kComparisonBinaryOperator,
  kUnaryOperator,
  kComment,
};

struct Token {
  std::string value;
  TokenType type;
  std::size_t pos;  // byte offset in the original template
};

enum class NodeKind {
  kProgram,          // a: body
  kStringLiteral,    // str (also template text)
  kIntegerLiteral,   // number
  kFloatLiteral,     // number
  kIdentifier,       // str
  kArrayLiteral,     // a
  kTupleLiteral,     // a
  kObjectLiteral,    // pairs
  kComment,          //
  kIf,               // x: test, a: body, b: alternate
  kFor,              // x: loop variable, y: iterable, a: body, b: else block
  kSet,              // x: assignee, y: value (null for a block set), a: body
  kMacro,            // str: name, a: parameters, b: body
  kCallStatement,    // x: call expression, a: caller parameters, b: body
  kFilterStatement,  // x: filter (identifier or call), a: body
  kBreak,
  kContinue,
  kMember,           // x: object, y: property, flag: computed
  kCall,             // x: callee, a: arguments
  kBinary,           // str: operator, x, y
  kUnary,            // str: operator, x
  kFilter,           // x: operand, y: filter (identifier or call)
  kTest,             // x: operand, str: test name, flag: negated
  kSelect,           // x: value, y: condition (`a if c` without else)
  kTernary,          // x: condition, y: if true, z: if false
  kSlice,            // x: start, y: stop, z: step (each may be null)
  kKeywordArgument,  // str: name, x: value
  kSpread,           // x
  kKeywordSpread,    // x
};

struct Node;
using NodePtr = std::unique_ptr<Node>;

struct Node {
  NodeKind kind;
  std::size_t pos = 0;  // byte offset in the original template
  std::string str;
  double number = 0;
  bool flag = false;
  NodePtr x, y, z;
  std::vector<NodePtr> a, b;
  std::vector<std::pair<NodePtr, NodePtr>> pairs;
};

// A syntax error: message and byte offset in the original template.
struct SyntaxErrorInfo {
  std::string message;
  std::size_t pos;
};

// Runs the reference's preprocessing (trailing newline, lstrip_blocks, trim_blocks, the
// transformers `generation` tag) and lexer. Token positions refer to the original text.
bool tokenize(std::string_view source, std::vector<Token>* tokens, SyntaxErrorInfo* error);

// Parses tokens into a kProgram node. `source_size` positions an error at the end of the text.
bool parse_tokens(const std::vector<Token>& tokens, std::size_t source_size, NodePtr* program,
                  SyntaxErrorInfo* error);

}  // namespace kvfleet::chat
