// The evaluator: a port of @huggingface/jinja 0.5.11 runtime.ts. Values carry JavaScript
// semantics where the output depends on them (numbers are doubles, `==` is JavaScript's loose
// equality, strings print as JavaScript prints them); comments mark each deliberate quirk.

#include "chat/jinja.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "chat/jinja_ast.h"
#include "chat/jinja_text.h"

namespace kvfleet::chat {

struct JinjaProgram {
  NodePtr root;
  std::string source;  // for error positions
};

namespace {

// ---------------------------------------------------------------------------------------------
// Values

enum class Kind : std::uint8_t {
  kUndefined,
  kNull,
  kBool,
  kInt,
  kFloat,
  kString,
  kArray,
  kObject,
  kNamespace,
  kFunction,
};

struct ObjectData;
struct Value;
struct Env;
class Interpreter;
using EnvPtr = std::shared_ptr<Env>;
using ArrayData = std::vector<Value>;
// Arguments as the reference passes them: positional values, then (when there are any) one
// keyword-arguments object (a Value with is_kwargs).
using Args = std::vector<Value>;
using NativeFn = std::function<Value(Interpreter&, Args&, const EnvPtr& caller)>;

struct Value {
  Kind kind = Kind::kUndefined;
  bool boolean = false;
  bool is_tuple = false;   // TupleValue: an array that tojson and `is iterable` refuse
  bool is_kwargs = false;  // KeywordArgumentsValue: an object that tojson refuses
  double number = 0;
  std::string str;
  std::shared_ptr<ArrayData> array;
  std::shared_ptr<ObjectData> object;  // objects and namespaces
  std::shared_ptr<NativeFn> fn;

  bool is_nullish() const { return kind == Kind::kUndefined || kind == Kind::kNull; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  bool is_object() const { return kind == Kind::kObject; }
  // ObjectValue or NamespaceValue: has attributes.
  bool is_container() const { return kind == Kind::kObject || kind == Kind::kNamespace; }
};

// A JavaScript Map<string, Value>: insertion-ordered, set() keeps an existing key's position.
struct ObjectData {
  std::vector<std::pair<std::string, Value>> entries;
  std::unordered_map<std::string, std::size_t> index;

  const Value* find(const std::string& key) const {
    auto it = index.find(key);
    return it == index.end() ? nullptr : &entries[it->second].second;
  }
  void set(const std::string& key, Value v) {
    auto it = index.find(key);
    if (it != index.end()) {
      entries[it->second].second = std::move(v);
      return;
    }
    index.emplace(key, entries.size());
    entries.emplace_back(key, std::move(v));
  }
  void erase(const std::string& key) {
    auto it = index.find(key);
    if (it == index.end()) return;
    entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(it->second));
    index.clear();
    for (std::size_t i = 0; i < entries.size(); ++i) index.emplace(entries[i].first, i);
  }
  std::size_t size() const { return entries.size(); }
};

// Lists and dicts are freed through a queue rather than recursively: a template can build a
// value nested hundreds of thousands of levels deep in a loop, and freeing it must not overflow the
// stack.
class DeferredFree {
 public:
  template <typename T>
  static void free(T* p) {
    Queue& q = queue();
    q.items.push_back([p] { delete p; });
    if (q.draining) return;
    q.draining = true;
    while (!q.items.empty()) {
      auto next = std::move(q.items.back());
      q.items.pop_back();
      next();  // may queue the children it frees
    }
    q.draining = false;
  }

 private:
  struct Queue {
    std::vector<std::function<void()>> items;
    bool draining = false;
  };
  static Queue& queue() {
    thread_local Queue q;
    return q;
  }
};

Value undefined_value() {
  return Value{};
}
Value null_value() {
  Value v;
  v.kind = Kind::kNull;
  return v;
}
Value bool_value(bool b) {
  Value v;
  v.kind = Kind::kBool;
  v.boolean = b;
  return v;
}
Value int_value(double d) {
  Value v;
  v.kind = Kind::kInt;
  v.number = d;
  return v;
}
Value float_value(double d) {
  Value v;
  v.kind = Kind::kFloat;
  v.number = d;
  return v;
}
Value string_value(std::string s) {
  Value v;
  v.kind = Kind::kString;
  v.str = std::move(s);
  return v;
}
Value array_value(ArrayData items, bool tuple = false) {
  Value v;
  v.kind = Kind::kArray;
  v.array = std::shared_ptr<ArrayData>(new ArrayData(std::move(items)),
                                       [](ArrayData* p) { DeferredFree::free(p); });
  v.is_tuple = tuple;
  return v;
}
Value object_value(ObjectData data, Kind kind = Kind::kObject) {
  Value v;
  v.kind = kind;
  v.object = std::shared_ptr<ObjectData>(new ObjectData(std::move(data)),
                                         [](ObjectData* p) { DeferredFree::free(p); });
  return v;
}
Value function_value(NativeFn fn) {
  Value v;
  v.kind = Kind::kFunction;
  v.fn = std::make_shared<NativeFn>(std::move(fn));
  return v;
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "UndefinedValue";
    case Kind::kNull: return "NullValue";
    case Kind::kBool: return "BooleanValue";
    case Kind::kInt: return "IntegerValue";
    case Kind::kFloat: return "FloatValue";
    case Kind::kString: return "StringValue";
    case Kind::kArray: return v.is_tuple ? "TupleValue" : "ArrayValue";
    case Kind::kObject: return v.is_kwargs ? "KeywordArgumentsValue" : "ObjectValue";
    case Kind::kNamespace: return "NamespaceValue";
    case Kind::kFunction: return "FunctionValue";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNull: return false;
    case Kind::kBool: return v.boolean;
    case Kind::kInt:
    case Kind::kFloat: return v.number != 0 && !std::isnan(v.number);
    case Kind::kString: return !v.str.empty();
    case Kind::kArray: return !v.array->empty();
    case Kind::kObject: return v.object->size() > 0;
    case Kind::kNamespace:  // a JavaScript Map is always truthy
    case Kind::kFunction: return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Errors and control flow

constexpr std::size_t kNoPos = std::numeric_limits<std::size_t>::max();

struct TemplateError {
  StatusCode code = StatusCode::kInvalidArgument;
  std::string message;
  bool raised = false;  // raise_exception() in the template
  std::size_t pos = kNoPos;
};
struct BreakSignal {};
struct ContinueSignal {};

[[noreturn]] void fail(std::string message) {
  throw TemplateError{StatusCode::kInvalidArgument, std::move(message)};
}

// ---------------------------------------------------------------------------------------------
// Environments

struct Env {
  explicit Env(EnvPtr p) : parent(std::move(p)) {}
  std::unordered_map<std::string, Value> vars;
  EnvPtr parent;
};

// Every reference Environment declares `namespace` itself, so it resolves at the first scope
// that does not shadow it.
Value lookup(const Env* env, const std::string& name, const Value& namespace_fn) {
  for (; env != nullptr; env = env->parent.get()) {
    auto it = env->vars.find(name);
    if (it != env->vars.end()) return it->second;
    if (name == "namespace") return namespace_fn;
  }
  return undefined_value();
}

// ---------------------------------------------------------------------------------------------
// Conversions to text

struct JsonOptions {
  double indent = 0;  // falsy (0) means no indentation, as in the reference
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_separators = false;
  std::string item_separator;
  std::string key_separator;
};

// Approximates String.prototype.localeCompare for sort_keys: letters compare case-insensitively
// first (lower case first on a tie), digits before letters, punctuation before digits.
bool locale_less(const std::string& a, const std::string& b) {
  auto primary = [](unsigned char c) -> std::pair<int, int> {
    if (c >= 'a' && c <= 'z') return {3, c};
    if (c >= 'A' && c <= 'Z') return {3, c - 'A' + 'a'};
    if (c >= '0' && c <= '9') return {2, c};
    if (c < 0x80) return {1, c};
    return {4, c};
  };
  std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    auto pa = primary(static_cast<unsigned char>(a[i]));
    auto pb = primary(static_cast<unsigned char>(b[i]));
    if (pa != pb) return pa < pb;
  }
  if (a.size() != b.size()) return a.size() < b.size();
  for (std::size_t i = 0; i < n; ++i) {
    bool la = a[i] >= 'a' && a[i] <= 'z';
    bool lb = b[i] >= 'a' && b[i] <= 'z';
    if (la != lb) return la;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The interpreter

class Interpreter {
 public:
  Interpreter(const JinjaRenderOptions& options, const std::string& source)
      : limits_(options.limits), now_(options.now), source_(source) {
    namespace_fn_ = function_value(
        [](Interpreter& in, Args& args, const EnvPtr&) { return make_namespace(in, args); });
  }

  // Namespaces are the only mutable values, so the only way to a reference cycle
  // (`{% set ns.self = ns %}`); emptying them all after a render frees such cycles.
  ~Interpreter() {
    for (const auto& weak : namespaces_) {
      if (auto ns = weak.lock()) {
        std::vector<std::pair<std::string, Value>> entries;
        entries.swap(ns->entries);
        ns->index.clear();
      }
    }
  }
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  const Value& namespace_fn() const { return namespace_fn_; }

  std::string run(const Node& program, const EnvPtr& global) {
    try {
      return render_block(program.a, global);
    } catch (const BreakSignal&) {
      fail("break outside a loop");
    } catch (const ContinueSignal&) {
      fail("continue outside a loop");
    }
  }

  Value from_json(const nlohmann::ordered_json& j, int depth);
  void setup_globals(Env& env);

 private:
  friend struct DepthGuard;

  // Counts a step and a level of nesting; fails past the limits.
  struct DepthGuard {
    explicit DepthGuard(Interpreter* in) : in_(in) {
      if (++in_->depth_ > in_->limits_.max_depth) {
        throw TemplateError{StatusCode::kResourceExhausted,
                            "template nesting exceeds the limit of " +
                                std::to_string(in_->limits_.max_depth) + " levels"};
      }
    }
    ~DepthGuard() { --in_->depth_; }
    Interpreter* in_;
  };

  void check_size(std::size_t bytes) const {
    if (bytes > limits_.max_output_bytes) {
      throw TemplateError{StatusCode::kResourceExhausted,
                          "template output exceeds the limit of " +
                              std::to_string(limits_.max_output_bytes) + " bytes"};
    }
  }
  void check_items(std::size_t count) const {
    // A list costs far more than its text; bound it by the same budget at 16 bytes an item.
    if (count > limits_.max_output_bytes / 16) {
      throw TemplateError{StatusCode::kResourceExhausted,
                          "template builds a list longer than the limit of " +
                              std::to_string(limits_.max_output_bytes / 16) + " items"};
    }
  }

  // -- evaluation ----------------------------------------------------------------------------

 public:
  // Every evaluated node and every loop iteration is a step, so even an empty loop body counts.
  void count_step() {
    if (++steps_ > limits_.max_steps) {
      throw TemplateError{StatusCode::kResourceExhausted,
                          "template evaluation exceeds the limit of " +
                              std::to_string(limits_.max_steps) + " steps"};
    }
  }

  Value eval(const Node* node, const EnvPtr& env) {
    if (node == nullptr) return undefined_value();
    count_step();
    DepthGuard guard(this);
    try {
      return eval_node(*node, env);
    } catch (TemplateError& e) {
      if (e.pos == kNoPos) e.pos = node->pos;
      throw;
    }
  }

 private:
  std::string render_block(const std::vector<NodePtr>& statements, const EnvPtr& env) {
    std::string result;
    for (const auto& statement : statements) {
      Value v = eval(statement.get(), env);
      if (v.is_nullish()) continue;
      if (v.kind == Kind::kString) {
        result += v.str;
      } else {
        result += display(v);
      }
      check_size(result.size());
    }
    return result;
  }

  Value eval_node(const Node& n, const EnvPtr& env) {
    switch (n.kind) {
      case NodeKind::kProgram: return string_value(render_block(n.a, env));
      case NodeKind::kSet: return eval_set(n, env);
      case NodeKind::kIf: {
        Value test = eval(n.x.get(), env);
        return string_value(render_block(truthy(test) ? n.a : n.b, env));
      }
      case NodeKind::kFor: return eval_for(n, env);
      case NodeKind::kMacro: return eval_macro(n, env);
      case NodeKind::kCallStatement: return eval_call_statement(n, env);
      case NodeKind::kBreak: throw BreakSignal{};
      case NodeKind::kContinue: throw ContinueSignal{};
      case NodeKind::kIntegerLiteral: return int_value(n.number);
      case NodeKind::kFloatLiteral: return float_value(n.number);
      case NodeKind::kStringLiteral: return string_value(n.str);
      case NodeKind::kArrayLiteral:
      case NodeKind::kTupleLiteral: {
        ArrayData items;
        for (const auto& e : n.a) items.push_back(eval(e.get(), env));
        return array_value(std::move(items), n.kind == NodeKind::kTupleLiteral);
      }
      case NodeKind::kObjectLiteral: {
        ObjectData data;
        for (const auto& [k, v] : n.pairs) {
          Value key = eval(k.get(), env);
          if (key.kind != Kind::kString) fail("Object keys must be strings: got " + type_name(key));
          data.set(key.str, eval(v.get(), env));
        }
        return object_value(std::move(data));
      }
      case NodeKind::kIdentifier: return lookup(env.get(), n.str, namespace_fn_);
      case NodeKind::kCall: return eval_call(n, env);
      case NodeKind::kMember: return eval_member(n, env);
      case NodeKind::kUnary: return eval_unary(n, env);
      case NodeKind::kBinary: return eval_binary(n, env);
      case NodeKind::kFilter: {
        Value operand = eval(n.x.get(), env);
        return apply_filter(operand, *n.y, env);
      }
      case NodeKind::kFilterStatement: {
        Value rendered = string_value(render_block(n.a, env));
        return apply_filter(rendered, *n.x, env);
      }
      case NodeKind::kTest: {
        Value operand = eval(n.x.get(), env);
        bool result = run_test(n.str, operand, nullptr);
        return bool_value(n.flag ? !result : result);
      }
      case NodeKind::kSelect: {
        Value predicate = eval(n.y.get(), env);
        if (!truthy(predicate)) return undefined_value();
        return eval(n.x.get(), env);
      }
      case NodeKind::kTernary: {
        Value cond = eval(n.x.get(), env);
        return truthy(cond) ? eval(n.y.get(), env) : eval(n.z.get(), env);
      }
      case NodeKind::kComment: return null_value();
      case NodeKind::kSlice:
      case NodeKind::kKeywordArgument:
      case NodeKind::kSpread:
      case NodeKind::kKeywordSpread: break;
    }
    fail("Unexpected expression here");
  }

  // -- text conversions -----------------------------------------------------------------------

 public:
  // RuntimeValue.toString(): what {{ value }} prints.
  std::string display(const Value& v) {
    switch (v.kind) {
      case Kind::kUndefined: return "undefined";
      case Kind::kNull: return "null";
      case Kind::kBool: return v.boolean ? "true" : "false";
      case Kind::kInt: return text::js_number(v.number);
      case Kind::kFloat: return text::js_float(v.number);
      case Kind::kString: return v.str;
      case Kind::kArray:
      case Kind::kObject:
      case Kind::kNamespace: return to_json(v, JsonOptions{}, 0, false);
      case Kind::kFunction: fail("Cannot convert a function to text");
    }
    return "";
  }

  // JavaScript's ToString of the underlying value (value.toString() in the reference): numbers
  // print without ".0", arrays join their items' display text with ",", objects print as
  // "[object Map]".
  std::string raw_string(const Value& v) {
    switch (v.kind) {
      case Kind::kUndefined: return "undefined";
      case Kind::kNull: return "null";
      case Kind::kBool: return v.boolean ? "true" : "false";
      case Kind::kInt:
      case Kind::kFloat: return text::js_number(v.number);
      case Kind::kString: return v.str;
      case Kind::kArray: {
        std::string out;
        for (std::size_t i = 0; i < v.array->size(); ++i) {
          if (i > 0) out += ',';
          out += display((*v.array)[i]);
          check_size(out.size());
        }
        return out;
      }
      case Kind::kObject:
      case Kind::kNamespace: return "[object Map]";
      case Kind::kFunction: fail("Cannot convert a function to text");
    }
    return "";
  }

  std::string to_json(const Value& v, const JsonOptions& o, int depth, bool undefined_as_null) {
    DepthGuard guard(this);
    std::string item_sep = ", ";
    std::string key_sep = ": ";
    if (o.has_separators) {
      item_sep = o.item_separator;
      key_sep = o.key_separator;
    } else if (o.indent != 0) {
      item_sep = ",";
    }
    switch (v.kind) {
      case Kind::kNull: return "null";
      case Kind::kUndefined: return undefined_as_null ? "null" : "undefined";
      case Kind::kInt:
      case Kind::kFloat: return std::isfinite(v.number) ? text::js_number(v.number) : "null";
      case Kind::kBool: return v.boolean ? "true" : "false";
      case Kind::kString: return text::json_quote(v.str, o.ensure_ascii);
      case Kind::kFunction: fail("Cannot convert to JSON: FunctionValue");
      case Kind::kArray:
      case Kind::kObject:
      case Kind::kNamespace: break;
    }
    if (v.is_tuple || v.is_kwargs) fail("Cannot convert to JSON: " + type_name(v));
    if (o.indent < 0) fail("Invalid count value: " + text::js_number(o.indent));
    std::string indent_unit =
        o.indent != 0 ? std::string(static_cast<std::size_t>(o.indent), ' ') : "";
    check_size(indent_unit.size() * static_cast<std::size_t>(depth + 1));
    std::string base_padding = "\n";
    for (int i = 0; i < depth; ++i) base_padding += indent_unit;
    std::string child_padding = base_padding + indent_unit;
    bool pretty = o.indent != 0;
    std::string out;
    if (v.kind == Kind::kArray) {
      out = "[";
      if (pretty && !v.array->empty()) out += child_padding;
      for (std::size_t i = 0; i < v.array->size(); ++i) {
        if (i > 0) out += pretty ? item_sep + child_padding : item_sep;
        out += to_json((*v.array)[i], o, depth + 1, undefined_as_null);
        check_size(out.size());
      }
      if (pretty && !v.array->empty()) out += base_padding;
      return out + "]";
    }
    std::vector<const std::pair<std::string, Value>*> entries;
    for (const auto& e : v.object->entries) entries.push_back(&e);
    if (o.sort_keys) {
      std::stable_sort(entries.begin(), entries.end(), [](const auto* a, const auto* b) {
        return locale_less(a->first, b->first);
      });
    }
    out = "{";
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) out += item_sep;
      if (pretty) out += child_padding;
      out += text::json_quote(entries[i]->first, o.ensure_ascii);
      out += key_sep;
      out += to_json(entries[i]->second, o, depth + 1, undefined_as_null);
      check_size(out.size());
    }
    if (pretty && !entries.empty()) out += base_padding;
    return out + "}";
  }

 private:
  // -- equality ------------------------------------------------------------------------------

  static bool is_reference(const Value& v) {
    return v.kind == Kind::kArray || v.kind == Kind::kObject || v.kind == Kind::kNamespace ||
           v.kind == Kind::kFunction;
  }
  static bool same_reference(const Value& a, const Value& b) {
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case Kind::kArray: return a.array == b.array;
      case Kind::kObject:
      case Kind::kNamespace: return a.object == b.object;
      case Kind::kFunction: return a.fn == b.fn;
      default: return false;
    }
  }

  // `left.value == right.value` in JavaScript.
  bool loose_equal(const Value& a, const Value& b) {
    if (is_reference(a) && is_reference(b)) return same_reference(a, b);
    if (a.is_nullish() || b.is_nullish()) return a.is_nullish() && b.is_nullish();
    if (is_reference(a)) return loose_equal(string_value(raw_string(a)), b);
    if (is_reference(b)) return loose_equal(a, string_value(raw_string(b)));
    if (a.kind == Kind::kBool) return loose_equal(int_value(a.boolean ? 1 : 0), b);
    if (b.kind == Kind::kBool) return loose_equal(a, int_value(b.boolean ? 1 : 0));
    if (a.kind == Kind::kString && b.kind == Kind::kString) return a.str == b.str;
    double x = a.kind == Kind::kString ? text::js_string_to_number(a.str) : a.number;
    double y = b.kind == Kind::kString ? text::js_string_to_number(b.str) : b.number;
    return x == y;
  }

  // `x.value === y.value` in JavaScript.
  static bool strict_equal(const Value& a, const Value& b) {
    if (a.is_number() && b.is_number()) return a.number == b.number;
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case Kind::kUndefined:
      case Kind::kNull: return true;
      case Kind::kBool: return a.boolean == b.boolean;
      case Kind::kString: return a.str == b.str;
      default: return same_reference(a, b);
    }
  }

  // -- operators ------------------------------------------------------------------------------

  static bool numeric_like(const Value& v) { return v.is_number() || v.kind == Kind::kBool; }
  static double numeric(const Value& v) {
    return v.kind == Kind::kBool ? (v.boolean ? 1 : 0) : v.number;
  }

  Value eval_binary(const Node& n, const EnvPtr& env) {
    const std::string& op = n.str;
    Value left = eval(n.x.get(), env);
    if (op == "and") return truthy(left) ? eval(n.y.get(), env) : left;
    if (op == "or") return truthy(left) ? left : eval(n.y.get(), env);
    Value right = eval(n.y.get(), env);
    if (op == "==") return bool_value(loose_equal(left, right));
    if (op == "!=") return bool_value(!loose_equal(left, right));

    if (left.kind == Kind::kUndefined || right.kind == Kind::kUndefined) {
      if (right.kind == Kind::kUndefined && (op == "in" || op == "not in")) {
        return bool_value(op == "not in");
      }
      fail("Cannot perform operation " + op + " on undefined values");
    }
    if (left.kind == Kind::kNull || right.kind == Kind::kNull) {
      fail("Cannot perform operation on null values");
    }
    if (op == "~") {
      std::string s = raw_string(left);
      s += raw_string(right);
      check_size(s.size());
      return string_value(std::move(s));
    }
    if (op == "**" && numeric_like(left) && numeric_like(right)) {
      double a = numeric(left);
      double b = numeric(right);
      if (a == 0 && b < 0) fail("0.0 cannot be raised to a negative power");
      double result = std::pow(a, b);
      if (!std::isfinite(result)) fail("Exponentiation result is not a finite real number");
      bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat || b < 0;
      return is_float ? float_value(result) : int_value(result);
    }
    if (left.is_number() && right.is_number()) {
      double a = left.number;
      double b = right.number;
      bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat;
      auto num = [&](double r) { return is_float ? float_value(r) : int_value(r); };
      if (op == "+") return num(a + b);
      if (op == "-") return num(a - b);
      if (op == "*") return num(a * b);
      if (op == "/") return float_value(a / b);
      if (op == "//") return num(std::floor(a / b));
      if (op == "%") return num(std::fmod(a, b));
      if (op == "<") return bool_value(a < b);
      if (op == ">") return bool_value(a > b);
      if (op == ">=") return bool_value(a >= b);
      if (op == "<=") return bool_value(a <= b);
    } else if (left.kind == Kind::kArray && right.kind == Kind::kArray) {
      if (op == "+") {
        check_items(left.array->size() + right.array->size());
        ArrayData items = *left.array;
        items.insert(items.end(), right.array->begin(), right.array->end());
        return array_value(std::move(items));
      }
    } else if (right.kind == Kind::kArray) {
      bool member = std::any_of(right.array->begin(), right.array->end(),
                                [&](const Value& x) { return strict_equal(x, left); });
      if (op == "in") return bool_value(member);
      if (op == "not in") return bool_value(!member);
    }
    if ((left.kind == Kind::kString || right.kind == Kind::kString) && op == "+") {
      std::string s = raw_string(left);
      s += raw_string(right);
      check_size(s.size());
      return string_value(std::move(s));
    }
    if (left.kind == Kind::kString && right.kind == Kind::kString) {
      bool found = right.str.find(left.str) != std::string::npos;
      if (op == "in") return bool_value(found);
      if (op == "not in") return bool_value(!found);
    }
    if (left.kind == Kind::kString && right.kind == Kind::kObject) {
      bool found = right.object->find(left.str) != nullptr;
      if (op == "in") return bool_value(found);
      if (op == "not in") return bool_value(!found);
    }
    fail("Unknown operator \"" + op + "\" between " + type_name(left) + " and " + type_name(right));
  }

  Value eval_unary(const Node& n, const EnvPtr& env) {
    Value arg = eval(n.x.get(), env);
    if (n.str == "not") return bool_value(!truthy(arg));
    double sign = n.str == "-" ? -1 : 1;
    if (numeric_like(arg)) {
      double r = sign * numeric(arg);
      return arg.kind == Kind::kFloat ? float_value(r) : int_value(r);
    }
    fail("Unknown operator \"" + n.str + "\" for " + type_name(arg));
  }

  // -- calls ---------------------------------------------------------------------------------

  std::pair<Args, ObjectData> eval_arguments(const std::vector<NodePtr>& args, const EnvPtr& env) {
    Args positional;
    ObjectData keywords;
    for (const auto& a : args) {
      if (a->kind == NodeKind::kSpread) {
        Value v = eval(a->x.get(), env);
        if (v.kind != Kind::kArray) fail("Cannot unpack non-iterable type: " + type_name(v));
        positional.insert(positional.end(), v.array->begin(), v.array->end());
      } else if (a->kind != NodeKind::kKeywordArgument && a->kind != NodeKind::kKeywordSpread) {
        positional.push_back(eval(a.get(), env));
      }
    }
    auto add = [&](const std::string& key, Value v) {
      if (keywords.find(key) != nullptr)
        fail("Got multiple values for keyword argument '" + key + "'");
      keywords.set(key, std::move(v));
    };
    for (const auto& a : args) {
      if (a->kind == NodeKind::kKeywordArgument) {
        add(a->str, eval(a->x.get(), env));
      } else if (a->kind == NodeKind::kKeywordSpread) {
        Value v = eval(a->x.get(), env);
        if (v.kind != Kind::kObject)
          fail("Argument after ** must be a mapping, not " + type_name(v));
        for (const auto& [k, val] : v.object->entries) add(k, val);
      }
    }
    return {std::move(positional), std::move(keywords)};
  }

  static Value kwargs_value(ObjectData data) {
    Value v = object_value(std::move(data));
    v.is_kwargs = true;
    return v;
  }

  Value call(const Value& fn, Args& args, const EnvPtr& env) {
    if (fn.kind != Kind::kFunction) {
      fail("Cannot call something that is not a function: got " + type_name(fn));
    }
    return (*fn.fn)(*this, args, env);
  }

  Value eval_call(const Node& n, const EnvPtr& env) {
    auto [args, kwargs] = eval_arguments(n.a, env);
    if (kwargs.size() > 0) args.push_back(kwargs_value(std::move(kwargs)));
    Value fn = eval(n.x.get(), env);
    return call(fn, args, env);
  }

  // -- member access -------------------------------------------------------------------------

  Value eval_member(const Node& n, const EnvPtr& env) {
    Value object = eval(n.x.get(), env);
    Value property;
    if (n.flag) {
      if (n.y->kind == NodeKind::kSlice) return eval_slice(object, *n.y, env);
      property = eval(n.y.get(), env);
    } else if (n.y->kind == NodeKind::kIntegerLiteral) {
      property = int_value(n.y->number);
    } else {
      property = string_value(n.y->str);
    }
    return member(object, property);
  }

  Value member(const Value& object, const Value& property) {
    if (object.is_container()) {
      if (property.kind != Kind::kString) {
        fail("Cannot access property with non-string: got " + type_name(property));
      }
      if (const Value* v = object.object->find(property.str)) return *v;
      if (object.kind == Kind::kObject) return object_builtin(object, property.str);
      return undefined_value();
    }
    if (object.kind == Kind::kArray || object.kind == Kind::kString) {
      if (property.kind == Kind::kInt) {
        return object.kind == Kind::kString ? string_at(object.str, property.number)
                                            : array_at(*object.array, property.number);
      }
      if (property.kind == Kind::kString) {
        if (object.kind == Kind::kString) return string_builtin(object, property.str);
        if (property.str == "length") return int_value(static_cast<double>(object.array->size()));
        return undefined_value();
      }
      fail("Cannot access property with non-string/non-number: got " + type_name(property));
    }
    if (property.kind != Kind::kString) {
      fail("Cannot access property with non-string: got " + type_name(property));
    }
    return undefined_value();
  }

  // Array.prototype.at: negative indices count from the end.
  static Value array_at(const ArrayData& items, double index) {
    double i = std::trunc(index);
    if (i < 0) i += static_cast<double>(items.size());
    if (i < 0 || i >= static_cast<double>(items.size())) return undefined_value();
    return items[static_cast<std::size_t>(i)];
  }

  // String.prototype.at over UTF-16 code units; half of a surrogate pair comes out as U+FFFD,
  // which is what Node writes for a lone surrogate.
  static Value string_at(const std::string& s, double index) {
    double len = static_cast<double>(text::utf16_length(s));
    double i = std::trunc(index);
    if (i < 0) i += len;
    if (i < 0 || i >= len) return undefined_value();
    std::size_t target = static_cast<std::size_t>(i);
    std::size_t unit = 0;
    for (std::size_t b = 0; b < s.size();) {
      std::size_t n = 0;
      std::uint32_t cp = text::decode_utf8(s, b, &n);
      std::size_t units = cp >= 0x10000 ? 2 : 1;
      if (target < unit + units) {
        return string_value(units == 2 ? std::string("\xEF\xBF\xBD") : s.substr(b, n));
      }
      unit += units;
      b += n;
    }
    return undefined_value();
  }

  // Python slicing (utils.ts slice), over code points for strings.
  template <typename T>
  static std::vector<T> slice_items(const std::vector<T>& items, const Value& start_v,
                                    const Value& stop_v, const Value& step_v) {
    double len = static_cast<double>(items.size());
    double step = step_v.kind == Kind::kUndefined ? 1 : step_v.number;
    double direction = step > 0 ? 1 : step < 0 ? -1 : 0;
    double start = 0;
    double stop = 0;
    if (direction >= 0) {
      start = start_v.kind == Kind::kUndefined ? 0 : start_v.number;
      start = start < 0 ? std::max(len + start, 0.0) : std::min(start, len);
      stop = stop_v.kind == Kind::kUndefined ? len : stop_v.number;
      stop = stop < 0 ? std::max(len + stop, 0.0) : std::min(stop, len);
    } else {
      start = start_v.kind == Kind::kUndefined ? len - 1 : start_v.number;
      start = start < 0 ? std::max(len + start, -1.0) : std::min(start, len - 1);
      stop = stop_v.kind == Kind::kUndefined ? -1 : stop_v.number;
      stop = stop < -1 ? std::max(len + stop, -1.0) : std::min(stop, len - 1);
    }
    std::vector<T> out;
    if (direction == 0) return out;  // the reference loops forever on a zero step; see README
    for (double i = start; direction * i < direction * stop; i += step) {
      out.push_back(items[static_cast<std::size_t>(i)]);
    }
    return out;
  }

  Value eval_slice(const Value& object, const Node& n, const EnvPtr& env) {
    if (object.kind != Kind::kArray && object.kind != Kind::kString) {
      fail("Slice object must be an array or string");
    }
    Value start = eval(n.x.get(), env);
    Value stop = eval(n.y.get(), env);
    Value step = eval(n.z.get(), env);
    if (start.kind != Kind::kInt && start.kind != Kind::kUndefined)
      fail("Slice start must be numeric or undefined");
    if (stop.kind != Kind::kInt && stop.kind != Kind::kUndefined)
      fail("Slice stop must be numeric or undefined");
    if (step.kind != Kind::kInt && step.kind != Kind::kUndefined)
      fail("Slice step must be numeric or undefined");
    if (step.kind == Kind::kInt && step.number == 0) fail("slice step cannot be zero");
    if (object.kind == Kind::kArray) {
      return array_value(slice_items(*object.array, start, stop, step));
    }
    auto parts = slice_items(text::code_points(object.str), start, stop, step);
    std::string out;
    for (auto p : parts) out.append(p);
    return string_value(std::move(out));
  }

  // -- statements ----------------------------------------------------------------------------

  Value eval_set(const Node& n, const EnvPtr& env) {
    Value rhs = n.y ? eval(n.y.get(), env) : string_value(render_block(n.a, env));
    const Node& target = *n.x;
    if (target.kind == NodeKind::kIdentifier) {
      env->vars[target.str] = std::move(rhs);
    } else if (target.kind == NodeKind::kTupleLiteral) {
      if (rhs.kind != Kind::kArray)
        fail("Cannot unpack non-iterable type in set: " + type_name(rhs));
      if (rhs.array->size() != target.a.size()) {
        fail(std::string("Too ") + (target.a.size() > rhs.array->size() ? "few" : "many") +
             " items to unpack in set");
      }
      for (std::size_t i = 0; i < target.a.size(); ++i) {
        if (target.a[i]->kind != NodeKind::kIdentifier)
          fail("Cannot unpack to non-identifier in set");
        env->vars[target.a[i]->str] = (*rhs.array)[i];
      }
    } else if (target.kind == NodeKind::kMember) {
      Value object = eval(target.x.get(), env);
      if (object.kind != Kind::kNamespace) fail("cannot assign attribute on non-namespace object");
      if (target.y->kind != NodeKind::kIdentifier)
        fail("Cannot assign to member with non-identifier property");
      object.object->set(target.y->str, std::move(rhs));
    } else {
      fail("Invalid left-hand side of an assignment");
    }
    return null_value();
  }

  Value eval_for(const Node& n, const EnvPtr& env) {
    auto scope = std::make_shared<Env>(env);
    const Node* test = nullptr;
    Value iterable;
    if (n.y->kind == NodeKind::kSelect) {
      iterable = eval(n.y->x.get(), scope);
      test = n.y->y.get();
    } else {
      iterable = eval(n.y.get(), scope);
    }
    if (iterable.kind != Kind::kArray && iterable.kind != Kind::kObject) {
      fail("Expected iterable or object type in for loop: got " + type_name(iterable));
    }
    ArrayData source;
    if (iterable.kind == Kind::kObject) {
      for (const auto& e : iterable.object->entries) source.push_back(string_value(e.first));
    } else {
      source = *iterable.array;
    }
    const Node& loopvar = *n.x;
    auto bind = [&](const Value& current, Env& target) {
      if (loopvar.kind == NodeKind::kIdentifier) {
        target.vars[loopvar.str] = current;
        return;
      }
      if (current.kind != Kind::kArray || current.is_tuple) {
        fail("Cannot unpack non-iterable type: " + type_name(current));
      }
      if (loopvar.a.size() != current.array->size()) {
        fail(std::string("Too ") + (loopvar.a.size() > current.array->size() ? "few" : "many") +
             " items to unpack");
      }
      for (std::size_t j = 0; j < loopvar.a.size(); ++j) {
        if (loopvar.a[j]->kind != NodeKind::kIdentifier) fail("Cannot unpack non-identifier type");
        target.vars[loopvar.a[j]->str] = (*current.array)[j];
      }
    };
    ArrayData items;
    for (const Value& current : source) {
      count_step();
      if (test != nullptr) {
        auto loop_scope = std::make_shared<Env>(scope);
        bind(current, *loop_scope);
        if (!truthy(eval(test, loop_scope))) continue;
      } else if (loopvar.kind == NodeKind::kTupleLiteral) {
        // The reference checks unpacking while collecting items, before the body runs.
        Env probe(nullptr);
        bind(current, probe);
      }
      items.push_back(current);
    }
    std::string result;
    bool no_iteration = true;
    const double length = static_cast<double>(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      count_step();
      ObjectData loop;
      double di = static_cast<double>(i);
      loop.set("index", int_value(di + 1));
      loop.set("index0", int_value(di));
      loop.set("revindex", int_value(length - di));
      loop.set("revindex0", int_value(length - di - 1));
      loop.set("first", bool_value(i == 0));
      loop.set("last", bool_value(i + 1 == items.size()));
      loop.set("length", int_value(length));
      loop.set("previtem", i > 0 ? items[i - 1] : undefined_value());
      loop.set("nextitem", i + 1 < items.size() ? items[i + 1] : undefined_value());
      scope->vars["loop"] = object_value(std::move(loop));
      bind(items[i], *scope);
      try {
        result += render_block(n.a, scope);
        check_size(result.size());
      } catch (const ContinueSignal&) {
        continue;
      } catch (const BreakSignal&) {
        break;
      }
      no_iteration = false;
    }
    if (no_iteration) result += render_block(n.b, scope);
    return string_value(std::move(result));
  }

  static void collect_special_args(const Node* node, bool* kwargs, bool* varargs) {
    if (node == nullptr) return;
    if (node->kind == NodeKind::kIdentifier) {
      if (node->str == "kwargs") *kwargs = true;
      if (node->str == "varargs") *varargs = true;
      return;
    }
    if (node->kind == NodeKind::kMember && !node->flag) {
      collect_special_args(node->x.get(), kwargs, varargs);
      return;
    }
    for (const Node* child : {node->x.get(), node->y.get(), node->z.get()}) {
      collect_special_args(child, kwargs, varargs);
    }
    for (const auto& c : node->a) collect_special_args(c.get(), kwargs, varargs);
    for (const auto& c : node->b) collect_special_args(c.get(), kwargs, varargs);
    for (const auto& [k, v] : node->pairs) {
      collect_special_args(k.get(), kwargs, varargs);
      collect_special_args(v.get(), kwargs, varargs);
    }
  }

  struct SpecialArgs {
    bool kwargs = false;
    bool varargs = false;
  };

  // Which of `kwargs` and `varargs` a macro body reads (and does not declare as a parameter).
  static SpecialArgs special_args(const std::vector<NodePtr>& params,
                                  const std::vector<NodePtr>& body) {
    SpecialArgs s;
    for (const auto& statement : body) collect_special_args(statement.get(), &s.kwargs, &s.varargs);
    for (const auto& p : params) {
      if (p->str == "kwargs") s.kwargs = false;
      if (p->str == "varargs") s.varargs = false;
    }
    return s;
  }

  void bind_macro_arguments(const std::string& display_name, const std::vector<NodePtr>& params,
                            SpecialArgs special, Args args, const EnvPtr& scope_ptr) {
    Env& scope = *scope_ptr;
    ObjectData keywords;
    if (!args.empty() && args.back().is_kwargs) {
      keywords = *args.back().object;
      args.pop_back();
    }
    std::vector<std::pair<std::string, const Node*>> pending;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const Node& p = *params[i];
      const std::string& name = p.str;
      std::optional<Value> value;
      if (i < args.size()) value = args[i];
      if (!value && keywords.find(name) != nullptr) {
        value = *keywords.find(name);
        keywords.erase(name);
      }
      if (!value && p.kind == NodeKind::kKeywordArgument) pending.emplace_back(name, p.x.get());
      scope.vars[name] = value ? *value : undefined_value();
    }
    if (special.kwargs) {
      scope.vars["kwargs"] = object_value(std::move(keywords));
    } else if (keywords.size() > 0) {
      fail("macro " + display_name + " takes no keyword argument '" + keywords.entries[0].first +
           "'");
    }
    if (special.varargs) {
      ArrayData rest;
      for (std::size_t i = params.size(); i < args.size(); ++i) rest.push_back(args[i]);
      scope.vars["varargs"] = array_value(std::move(rest));
    } else if (args.size() > params.size()) {
      fail("macro " + display_name + " takes not more than " + std::to_string(params.size()) +
           " argument(s)");
    }
    for (const auto& [name, default_node] : pending)
      scope.vars[name] = eval(default_node, scope_ptr);
  }

  Value eval_macro(const Node& n, const EnvPtr& env) {
    SpecialArgs special = special_args(n.a, n.b);
    const Node* node = &n;
    // Macros are dynamically scoped in the reference: the body sees the caller's variables.
    env->vars[n.str] =
        function_value([node, special](Interpreter& in, Args& args, const EnvPtr& caller) {
          auto scope = std::make_shared<Env>(caller);
          in.bind_macro_arguments("'" + node->str + "'", node->a, special, args, scope);
          return string_value(in.render_block(node->b, scope));
        });
    return null_value();
  }

  Value eval_call_statement(const Node& n, const EnvPtr& env) {
    SpecialArgs special = special_args(n.a, n.b);
    const Node* node = &n;
    EnvPtr defining = env;
    Value caller_fn =
        function_value([node, special, defining](Interpreter& in, Args& args, const EnvPtr&) {
          auto scope = std::make_shared<Env>(defining);
          in.bind_macro_arguments("None", node->a, special, args, scope);
          return string_value(in.render_block(node->b, scope));
        });
    auto [args, kwargs] = eval_arguments(n.x->a, env);
    args.push_back(kwargs_value(std::move(kwargs)));
    Value fn = eval(n.x->x.get(), env);
    if (fn.kind != Kind::kFunction) {
      fail("Cannot call something that is not a function: got " + type_name(fn));
    }
    auto call_env = std::make_shared<Env>(env);
    call_env->vars["caller"] = caller_fn;
    return (*fn.fn)(*this, args, call_env);
  }

  // -- tests ---------------------------------------------------------------------------------

  bool run_test(const std::string& name, const Value& v, const Value* arg) {
    if (name == "boolean") return v.kind == Kind::kBool;
    if (name == "callable") return v.kind == Kind::kFunction;
    if (name == "odd" || name == "even") {
      if (v.kind != Kind::kInt) fail("cannot " + name + " on " + type_name(v));
      bool odd = std::fmod(v.number, 2) != 0;
      return name == "odd" ? odd : !odd;
    }
    if (name == "false") return v.kind == Kind::kBool && !v.boolean;
    if (name == "true") return v.kind == Kind::kBool && v.boolean;
    if (name == "none") return v.kind == Kind::kNull;
    if (name == "string") return v.kind == Kind::kString;
    if (name == "number") return v.is_number();
    if (name == "integer") return v.kind == Kind::kInt;
    if (name == "iterable")
      return (v.kind == Kind::kArray && !v.is_tuple) || v.kind == Kind::kString;
    if (name == "mapping") return v.kind == Kind::kObject;
    if (name == "sequence")
      return v.kind == Kind::kArray || v.kind == Kind::kObject || v.kind == Kind::kString;
    if (name == "lower") return v.kind == Kind::kString && v.str == text::ascii_lower(v.str);
    if (name == "upper") return v.kind == Kind::kString && v.str == text::ascii_upper(v.str);
    if (name == "defined") return v.kind != Kind::kUndefined;
    if (name == "undefined") return v.kind == Kind::kUndefined;
    if (name == "equalto" || name == "eq") return strict_equal(v, arg ? *arg : undefined_value());
    fail("Unknown test: " + name);
  }

  static bool known_test(const std::string& name) {
    static const std::unordered_set<std::string> kTests = {
        "boolean", "callable", "odd",       "even",     "false",   "true",     "none",
        "string",  "number",   "integer",   "iterable", "mapping", "sequence", "lower",
        "upper",   "defined",  "undefined", "equalto",  "eq"};
    return kTests.count(name) != 0;
  }

  // -- builtins of values ----------------------------------------------------------------------

  Value object_builtin(const Value& object, const std::string& name);
  Value string_builtin(const Value& s, const std::string& name);
  Value apply_filter(const Value& operand, const Node& filter, const EnvPtr& env);
  Value apply_call_filter(const Value& operand, const Node& filter, const EnvPtr& env);
  int compare_values(const Value& a, const Value& b, bool case_sensitive);
  static Value make_namespace(Interpreter& in, Args& args);

  JinjaLimits limits_;
  std::function<std::chrono::system_clock::time_point()> now_;
  const std::string& source_;
  Value namespace_fn_;
  std::uint64_t steps_ = 0;
  int depth_ = 0;
  std::vector<std::weak_ptr<ObjectData>> namespaces_;

 public:
  std::chrono::system_clock::time_point now() const {
    return now_ ? now_() : std::chrono::system_clock::now();
  }
  void check_list(std::size_t count) const { check_items(count); }
};

// ---------------------------------------------------------------------------------------------

Value Interpreter::make_namespace(Interpreter& in, Args& args) {
  Args positional = args;
  const Value* kwargs = nullptr;
  if (!positional.empty() && positional.back().is_kwargs) {
    kwargs = &args.back();
    positional.pop_back();
  }
  if (positional.size() > 1) {
    fail("namespace expected at most 1 argument, got " + std::to_string(positional.size()));
  }
  ObjectData entries;
  if (positional.size() == 1) {
    const Value& source = positional[0];
    if (source.kind == Kind::kObject) {
      for (const auto& [k, v] : source.object->entries) entries.set(k, v);
    } else if (source.kind == Kind::kArray) {
      for (const Value& pair : *source.array) {
        ArrayData values;
        if (pair.kind == Kind::kArray) {
          values = *pair.array;
        } else if (pair.kind == Kind::kString) {
          for (auto cp : text::code_points(pair.str))
            values.push_back(string_value(std::string(cp)));
        }
        if (values.size() != 2)
          fail("namespace expected an object or an iterable of [key, value] pairs");
        if (values[0].kind != Kind::kString) fail("namespace keys must be strings");
        entries.set(values[0].str, values[1]);
      }
    } else {
      fail("'" + type_name(source) + "' object is not iterable");
    }
  }
  if (kwargs != nullptr) {
    for (const auto& [k, v] : kwargs->object->entries) entries.set(k, v);
  }
  Value ns = object_value(std::move(entries), Kind::kNamespace);
  in.namespaces_.push_back(ns.object);
  return ns;
}

int Interpreter::compare_values(const Value& a, const Value& b, bool case_sensitive) {
  if (a.kind == Kind::kNull && b.kind == Kind::kNull) return 0;
  if (a.kind == Kind::kNull || b.kind == Kind::kNull) {
    fail("Cannot compare " + type_name(a) + " with " + type_name(b));
  }
  if (a.kind == Kind::kUndefined && b.kind == Kind::kUndefined) return 0;
  if (a.kind == Kind::kUndefined || b.kind == Kind::kUndefined) {
    fail("Cannot compare " + type_name(a) + " with " + type_name(b));
  }
  if (numeric_like(a) && numeric_like(b)) {
    double x = numeric(a);
    double y = numeric(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (type_name(a) != type_name(b)) {
    fail("Cannot compare different types: " + type_name(a) + " and " + type_name(b));
  }
  if (a.kind == Kind::kString) {
    std::string x = case_sensitive ? a.str : text::ascii_lower(a.str);
    std::string y = case_sensitive ? b.str : text::ascii_lower(b.str);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  fail("Cannot compare type: " + type_name(a));
}

Value Interpreter::object_builtin(const Value& object, const std::string& name) {
  std::shared_ptr<ObjectData> data = object.object;
  if (name == "get") {
    return function_value([data](Interpreter&, Args& args, const EnvPtr&) {
      if (args.empty() || args[0].kind != Kind::kString) {
        fail("Object key must be a string: got " +
             (args.empty() ? std::string("undefined") : type_name(args[0])));
      }
      if (const Value* v = data->find(args[0].str)) return *v;
      return args.size() > 1 ? args[1] : null_value();
    });
  }
  if (name == "items" || name == "keys" || name == "values") {
    return function_value([data, name](Interpreter&, Args&, const EnvPtr&) {
      ArrayData out;
      for (const auto& [k, v] : data->entries) {
        if (name == "items") {
          out.push_back(array_value({string_value(k), v}));
        } else {
          out.push_back(name == "keys" ? string_value(k) : v);
        }
      }
      return array_value(std::move(out));
    });
  }
  if (name == "dictsort") {
    return function_value([data](Interpreter& in, Args& args, const EnvPtr&) {
      ObjectData kwargs;
      Args positional;
      for (Value& a : args) {
        if (a.is_kwargs) {
          kwargs = *a.object;
        } else {
          positional.push_back(a);
        }
      }
      auto pick = [&](std::size_t i, const char* key, Value fallback) {
        if (i < positional.size()) return positional[i];
        if (const Value* v = kwargs.find(key)) return *v;
        return fallback;
      };
      Value case_sensitive = pick(0, "case_sensitive", bool_value(false));
      if (case_sensitive.kind != Kind::kBool) fail("case_sensitive must be a boolean");
      Value by = pick(1, "by", string_value("key"));
      if (by.kind != Kind::kString) fail("by must be a string");
      if (by.str != "key" && by.str != "value") fail("by must be either 'key' or 'value'");
      Value reverse = pick(2, "reverse", bool_value(false));
      if (reverse.kind != Kind::kBool) fail("reverse must be a boolean");
      ArrayData items;
      for (const auto& [k, v] : data->entries) items.push_back(array_value({string_value(k), v}));
      std::size_t index = by.str == "key" ? 0 : 1;
      std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
        int r = in.compare_values((*a.array)[index], (*b.array)[index], case_sensitive.boolean);
        return reverse.boolean ? r > 0 : r < 0;
      });
      return array_value(std::move(items));
    });
  }
  return undefined_value();
}

// Python's str.title as the reference does it: /\b\w/g upper-cased, nothing lower-cased.
std::string title_case(const std::string& s) {
  auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  std::string out = s;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (word(out[i]) && (i == 0 || !word(out[i - 1])) && out[i] >= 'a' && out[i] <= 'z') {
      out[i] = static_cast<char>(out[i] - 'a' + 'A');
    }
  }
  return out;
}

std::string capitalize(const std::string& s) {
  std::string out = s;
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z')
    out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

// utils.ts replace(): at most `count` (null or negative: all) non-overlapping occurrences.
std::string replace_text(const std::string& s, const std::string& old_value,
                         const std::string& new_value, double count, std::size_t limit) {
  if (count == 0) return s;
  double remaining =
      (std::isnan(count) || count < 0) ? std::numeric_limits<double>::infinity() : count;
  std::string out;
  auto grow = [&](std::string_view piece) {
    out.append(piece);
    if (out.size() > limit) {
      throw TemplateError{StatusCode::kResourceExhausted, "template output exceeds the limit of " +
                                                              std::to_string(limit) + " bytes"};
    }
  };
  if (old_value.empty()) {
    // (?=) with the u flag: before every code point and at the end.
    auto cps = text::code_points(s);
    for (auto cp : cps) {
      if (remaining > 0) {
        grow(new_value);
        --remaining;
      }
      grow(cp);
    }
    if (remaining > 0) grow(new_value);
    return out;
  }
  std::size_t pos = 0;
  while (true) {
    std::size_t found = s.find(old_value, pos);
    if (found == std::string::npos || remaining <= 0) break;
    grow(std::string_view(s).substr(pos, found - pos));
    grow(new_value);
    --remaining;
    pos = found + old_value.size();
  }
  grow(std::string_view(s).substr(pos));
  return out;
}

ArrayData split_text(const std::string& s, const Value& sep, double maxsplit) {
  ArrayData result;
  if (sep.kind == Kind::kNull) {
    std::string t = text::js_trim_start(s);
    std::size_t i = 0;
    while (i < t.size()) {
      std::size_t start = i;
      while (i < t.size() && text::js_space_at(t, i) == 0) {
        std::size_t n = 0;
        text::decode_utf8(t, i, &n);
        i += n;
      }
      if (maxsplit != -1 && static_cast<double>(result.size()) >= maxsplit) {
        result.push_back(string_value(t.substr(start)));
        break;
      }
      result.push_back(string_value(t.substr(start, i - start)));
      while (std::size_t n = text::js_space_at(t, i)) i += n;
    }
    return result;
  }
  if (sep.str.empty()) fail("empty separator");
  std::vector<std::string> parts;
  std::size_t pos = 0;
  while (true) {
    std::size_t found = s.find(sep.str, pos);
    if (found == std::string::npos) break;
    parts.push_back(s.substr(pos, found - pos));
    pos = found + sep.str.size();
  }
  parts.push_back(s.substr(pos));
  if (maxsplit != -1 && static_cast<double>(parts.size()) > maxsplit) {
    std::size_t keep = static_cast<std::size_t>(std::max(0.0, maxsplit));
    std::string rest;
    for (std::size_t i = keep; i < parts.size(); ++i) {
      if (i > keep) rest += sep.str;
      rest += parts[i];
    }
    parts.resize(keep);
    parts.push_back(rest);
  }
  for (auto& p : parts) result.push_back(string_value(std::move(p)));
  return result;
}

Value Interpreter::string_builtin(const Value& s, const std::string& name) {
  const std::string str = s.str;
  using Fn = std::function<Value(Args&)>;
  auto wrap = [](Fn f) {
    return function_value([f](Interpreter&, Args& args, const EnvPtr&) { return f(args); });
  };
  // The reference ignores the arguments of strip/lstrip/rstrip: they always trim whitespace.
  if (name == "upper") return wrap([str](Args&) { return string_value(text::ascii_upper(str)); });
  if (name == "lower") return wrap([str](Args&) { return string_value(text::ascii_lower(str)); });
  if (name == "strip") return wrap([str](Args&) { return string_value(text::js_trim(str)); });
  if (name == "rstrip") return wrap([str](Args&) { return string_value(text::js_trim_end(str)); });
  if (name == "lstrip")
    return wrap([str](Args&) { return string_value(text::js_trim_start(str)); });
  if (name == "title") return wrap([str](Args&) { return string_value(title_case(str)); });
  if (name == "capitalize") return wrap([str](Args&) { return string_value(capitalize(str)); });
  if (name == "length") return int_value(static_cast<double>(text::utf16_length(str)));
  if (name == "startswith" || name == "endswith") {
    bool starts = name == "startswith";
    return wrap([str, starts, name](Args& args) {
      if (args.empty()) fail(name + "() requires at least one argument");
      auto test = [&](const std::string& p) {
        if (p.size() > str.size()) return false;
        return starts ? str.compare(0, p.size(), p) == 0
                      : str.compare(str.size() - p.size(), p.size(), p) == 0;
      };
      const Value& pattern = args[0];
      if (pattern.kind == Kind::kString) return bool_value(test(pattern.str));
      if (pattern.kind == Kind::kArray) {
        for (const Value& item : *pattern.array) {
          if (item.kind != Kind::kString) fail(name + "() tuple elements must be strings");
          if (test(item.str)) return bool_value(true);
        }
        return bool_value(false);
      }
      fail(name + "() argument must be a string or tuple of strings");
    });
  }
  if (name == "split") {
    return wrap([str](Args& args) {
      Value sep = args.size() > 0 ? args[0] : null_value();
      if (sep.kind != Kind::kString && sep.kind != Kind::kNull)
        fail("sep argument must be a string or null");
      Value maxsplit = args.size() > 1 ? args[1] : int_value(-1);
      if (maxsplit.kind != Kind::kInt) fail("maxsplit argument must be a number");
      return array_value(split_text(str, sep, maxsplit.number));
    });
  }
  if (name == "replace") {
    return function_value([str](Interpreter& in, Args& args, const EnvPtr&) {
      if (args.size() < 2) fail("replace() requires at least two arguments");
      if (args[0].kind != Kind::kString || args[1].kind != Kind::kString) {
        fail("replace() arguments must be strings");
      }
      Value count = null_value();
      if (args.size() > 2) {
        if (args[2].is_kwargs) {
          const Value* c = args[2].object->find("count");
          count = c ? *c : null_value();
        } else {
          count = args[2];
        }
      }
      if (count.kind != Kind::kInt && count.kind != Kind::kNull) {
        fail("replace() count argument must be a number or null");
      }
      double n = count.kind == Kind::kNull ? -1 : count.number;
      return string_value(
          replace_text(str, args[0].str, args[1].str, n, in.limits_.max_output_bytes));
    });
  }
  return undefined_value();
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string indent_text(const std::string& s, const std::string& indent, bool first, bool blank) {
  std::string out;
  std::size_t start = 0;
  bool is_first = true;
  while (true) {
    std::size_t nl = s.find('\n', start);
    std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (!is_first) out += '\n';
    bool skip = (!first && is_first) || (!blank && line.empty());
    if (!skip) out += indent;
    out += line;
    is_first = false;
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return out;
}

Value Interpreter::apply_filter(const Value& operand, const Node& filter, const EnvPtr& env) {
  if (filter.kind == NodeKind::kCall) return apply_call_filter(operand, filter, env);
  const std::string& name = filter.str;
  if (name == "safe") return operand;
  if (name == "tojson") return string_value(to_json(operand, JsonOptions{}, 0, true));
  // Extensions beyond the reference (which fails on them): see chat/README.md.
  if (name == "default" && operand.kind == Kind::kUndefined) return string_value("");
  if (name == "default") return operand;
  if ((name == "e" || name == "escape") && operand.kind == Kind::kString) {
    return string_value(html_escape(operand.str));
  }
  if (operand.kind == Kind::kArray) {
    const ArrayData& items = *operand.array;
    if (name == "list") return operand;
    if (name == "first") return items.empty() ? undefined_value() : items.front();
    if (name == "last") return items.empty() ? undefined_value() : items.back();
    if (name == "length") return int_value(static_cast<double>(items.size()));
    if (name == "reverse") return array_value(ArrayData(items.rbegin(), items.rend()));
    if (name == "sort") {
      ArrayData sorted = items;
      std::stable_sort(sorted.begin(), sorted.end(), [&](const Value& a, const Value& b) {
        return compare_values(a, b, false) < 0;
      });
      return array_value(std::move(sorted));
    }
    if (name == "join") {
      std::string out;
      for (const Value& x : items) {
        if (!x.is_nullish()) out += raw_string(x);
        check_size(out.size());
      }
      return string_value(std::move(out));
    }
    if (name == "string") return string_value(to_json(operand, JsonOptions{}, 0, false));
    if (name == "unique") {
      ArrayData out;
      for (const Value& x : items) {
        bool seen = std::any_of(out.begin(), out.end(), [&](const Value& y) {
          return strict_equal(x, y) ||
                 (x.is_number() && y.is_number() && std::isnan(x.number) && std::isnan(y.number));
        });
        if (!seen) out.push_back(x);
      }
      return array_value(std::move(out));
    }
    fail("Unknown ArrayValue filter: " + name);
  }
  if (operand.kind == Kind::kString) {
    const std::string& s = operand.str;
    if (name == "length") return int_value(static_cast<double>(text::utf16_length(s)));
    if (name == "upper") return string_value(text::ascii_upper(s));
    if (name == "lower") return string_value(text::ascii_lower(s));
    if (name == "title") return string_value(title_case(s));
    if (name == "capitalize") return string_value(capitalize(s));
    if (name == "trim") return string_value(text::js_trim(s));
    if (name == "indent") return string_value(indent_text(s, "    ", false, false));
    if (name == "join" || name == "string") return operand;
    if (name == "int") {
      double v = text::js_parse_int(s);
      return int_value(std::isnan(v) ? 0 : v);
    }
    if (name == "float") {
      double v = text::js_parse_float(s);
      return float_value(std::isnan(v) ? 0 : v);
    }
    fail("Unknown StringValue filter: " + name);
  }
  if (operand.is_number()) {
    if (name == "abs") {
      return operand.kind == Kind::kInt ? int_value(std::fabs(operand.number))
                                        : float_value(std::fabs(operand.number));
    }
    if (name == "int") return int_value(std::floor(operand.number));
    if (name == "float") return float_value(operand.number);
    if (name == "string") return string_value(display(operand));
    fail("Unknown NumericValue filter: " + name);
  }
  if (operand.kind == Kind::kObject) {
    if (name == "items") {
      ArrayData out;
      for (const auto& [k, v] : operand.object->entries)
        out.push_back(array_value({string_value(k), v}));
      return array_value(std::move(out));
    }
    if (name == "length") return int_value(static_cast<double>(operand.object->size()));
    Value builtin = object_builtin(operand, name);
    if (builtin.kind == Kind::kFunction) {
      Args none;
      return call(builtin, none, env);
    }
    fail("Unknown ObjectValue filter: " + name);
  }
  if (operand.kind == Kind::kBool) {
    if (name == "bool") return operand;
    if (name == "int") return int_value(operand.boolean ? 1 : 0);
    if (name == "float") return float_value(operand.boolean ? 1 : 0);
    if (name == "string") return string_value(operand.boolean ? "true" : "false");
    fail("Unknown BooleanValue filter: " + name);
  }
  fail("Cannot apply filter \"" + name + "\" to type: " + type_name(operand));
}

// map(attribute="a.b") and sort(attribute=...): a dotted path through objects and lists.
Value attribute_path(const Value& item, const std::string& path) {
  Value v = item;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (v.is_container()) {
      const Value* found = v.object->find(part);
      v = found ? *found : undefined_value();
    } else if (v.kind == Kind::kArray) {
      double index = text::js_parse_int(part);
      if (std::isnan(index) || index < 0 || index >= static_cast<double>(v.array->size())) {
        return undefined_value();
      }
      v = (*v.array)[static_cast<std::size_t>(index)];
    } else {
      return undefined_value();
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return v;
}

Value Interpreter::apply_call_filter(const Value& operand, const Node& filter, const EnvPtr& env) {
  if (filter.x->kind != NodeKind::kIdentifier) fail("Unknown filter");
  const std::string& name = filter.x->str;
  auto arg = [](const Args& args, const ObjectData& kwargs, std::size_t i, const char* key,
                Value fallback) {
    if (i < args.size()) return args[i];
    if (key != nullptr) {
      if (const Value* v = kwargs.find(key)) return *v;
    }
    return fallback;
  };
  if (name == "tojson") {
    auto [args, kwargs] = eval_arguments(filter.a, env);
    JsonOptions o;
    Value indent = arg({}, kwargs, 0, "indent", null_value());
    if (indent.kind != Kind::kInt && indent.kind != Kind::kNull)
      fail("If set, indent must be a number");
    o.indent = indent.kind == Kind::kInt ? indent.number : 0;
    Value ensure_ascii = arg({}, kwargs, 0, "ensure_ascii", bool_value(false));
    if (ensure_ascii.kind != Kind::kBool) fail("If set, ensure_ascii must be a boolean");
    o.ensure_ascii = ensure_ascii.boolean;
    Value sort_keys = arg({}, kwargs, 0, "sort_keys", bool_value(false));
    if (sort_keys.kind != Kind::kBool) fail("If set, sort_keys must be a boolean");
    o.sort_keys = sort_keys.boolean;
    Value separators = arg({}, kwargs, 0, "separators", null_value());
    if (separators.kind == Kind::kArray) {
      if (separators.array->size() != 2 || (*separators.array)[0].kind != Kind::kString ||
          (*separators.array)[1].kind != Kind::kString) {
        fail("separators must be a tuple of two strings");
      }
      o.has_separators = true;
      o.item_separator = (*separators.array)[0].str;
      o.key_separator = (*separators.array)[1].str;
    } else if (separators.kind != Kind::kNull) {
      fail("If set, separators must be a tuple of two strings");
    }
    return string_value(to_json(operand, o, 0, true));
  }
  if (name == "join") {
    ArrayData values;
    if (operand.kind == Kind::kString) {
      for (auto cp : text::code_points(operand.str))
        values.push_back(string_value(std::string(cp)));
    } else if (operand.kind == Kind::kArray) {
      values = *operand.array;
    } else {
      fail("Cannot apply filter \"" + name + "\" to type: " + type_name(operand));
    }
    auto [args, kwargs] = eval_arguments(filter.a, env);
    Value sep = arg(args, kwargs, 0, "separator", string_value(""));
    if (sep.kind != Kind::kString) fail("separator must be a string");
    std::string out;
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (i > 0) out += sep.str;
      if (!values[i].is_nullish()) out += raw_string(values[i]);
      check_size(out.size());
    }
    return string_value(std::move(out));
  }
  if (name == "int" || name == "float") {
    auto [args, kwargs] = eval_arguments(filter.a, env);
    bool is_int = name == "int";
    Value fallback = arg(args, kwargs, 0, "default", is_int ? int_value(0) : float_value(0));
    if (operand.kind == Kind::kString) {
      double v = is_int ? text::js_parse_int(operand.str) : text::js_parse_float(operand.str);
      if (std::isnan(v)) return fallback;
      return is_int ? int_value(v) : float_value(v);
    }
    if (operand.is_number()) return operand;
    if (operand.kind == Kind::kBool) {
      return is_int ? int_value(operand.boolean ? 1 : 0) : float_value(operand.boolean ? 1 : 0);
    }
    fail("Cannot apply filter \"" + name + "\" to type: " + type_name(operand));
  }
  if (name == "default") {
    auto [args, kwargs] = eval_arguments(filter.a, env);
    Value fallback = args.size() > 0 ? args[0] : string_value("");
    Value boolean = arg(args, kwargs, 1, "boolean", bool_value(false));
    if (boolean.kind != Kind::kBool) fail("`default` filter flag must be a boolean");
    if (operand.kind == Kind::kUndefined || (boolean.boolean && !truthy(operand))) return fallback;
    return operand;
  }
  if (operand.kind == Kind::kArray) {
    const ArrayData& items = *operand.array;
    if (name == "sort") {
      auto [args, kwargs] = eval_arguments(filter.a, env);
      Value reverse = arg(args, kwargs, 0, "reverse", bool_value(false));
      if (reverse.kind != Kind::kBool) fail("reverse must be a boolean");
      Value case_sensitive = arg(args, kwargs, 1, "case_sensitive", bool_value(false));
      if (case_sensitive.kind != Kind::kBool) fail("case_sensitive must be a boolean");
      Value attribute = arg(args, kwargs, 2, "attribute", null_value());
      if (attribute.kind != Kind::kString && attribute.kind != Kind::kInt &&
          attribute.kind != Kind::kNull) {
        fail("attribute must be a string, integer, or null");
      }
      auto key = [&](const Value& item) {
        if (attribute.kind == Kind::kNull) return item;
        return attribute_path(
            item, attribute.kind == Kind::kInt ? text::js_number(attribute.number) : attribute.str);
      };
      ArrayData sorted = items;
      std::stable_sort(sorted.begin(), sorted.end(), [&](const Value& a, const Value& b) {
        int r = compare_values(key(a), key(b), case_sensitive.boolean);
        return reverse.boolean ? r > 0 : r < 0;
      });
      return array_value(std::move(sorted));
    }
    if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
      // select/reject are an extension (the reference lacks them): the test runs on the item.
      bool by_attribute = name == "selectattr" || name == "rejectattr";
      bool select = name == "selectattr" || name == "select";
      if (by_attribute && std::any_of(items.begin(), items.end(),
                                      [](const Value& v) { return !v.is_container(); })) {
        fail("`" + name + "` can only be applied to array of objects");
      }
      for (const auto& a : filter.a) {
        if (a->kind != NodeKind::kStringLiteral)
          fail("arguments of `" + name + "` must be strings");
      }
      Args args;
      for (const auto& a : filter.a) args.push_back(eval(a.get(), env));
      std::size_t next = 0;
      std::string attr = by_attribute && next < args.size() ? args[next++].str : "";
      std::optional<std::string> test_name;
      if (next < args.size()) test_name = args[next++].str;
      std::optional<Value> test_arg;
      if (next < args.size()) test_arg = args[next];
      if (test_name && !known_test(*test_name)) fail("Unknown test: " + *test_name);
      ArrayData out;
      for (const Value& item : items) {
        bool result = false;
        const Value* subject = &item;
        if (by_attribute) subject = item.object->find(attr);
        if (subject != nullptr) {
          result = test_name ? run_test(*test_name, *subject, test_arg ? &*test_arg : nullptr)
                             : truthy(*subject);
        }
        if (result == select) out.push_back(item);
      }
      return array_value(std::move(out));
    }
    if (name == "map") {
      auto [args, kwargs] = eval_arguments(filter.a, env);
      const Value* attr = kwargs.find("attribute");
      if (attr == nullptr)
        fail("`map` expressions without `attribute` set are not currently supported.");
      if (attr->kind != Kind::kString) fail("attribute must be a string");
      const Value* fallback = kwargs.find("default");
      ArrayData out;
      for (const Value& item : items) {
        if (!item.is_container()) fail("items in map must be an object");
        Value v = attribute_path(item, attr->str);
        out.push_back(v.kind == Kind::kUndefined ? (fallback ? *fallback : undefined_value()) : v);
      }
      return array_value(std::move(out));
    }
    fail("Unknown ArrayValue filter: " + name);
  }
  if (operand.kind == Kind::kString) {
    if (name == "indent") {
      auto [args, kwargs] = eval_arguments(filter.a, env);
      Value width = arg(args, kwargs, 0, "width", int_value(4));
      if (width.kind != Kind::kInt) fail("width must be a number");
      if (width.number < 0) fail("Invalid count value: " + text::js_number(width.number));
      check_size(static_cast<std::size_t>(std::min(width.number, 1e18)));
      Value first = arg(args, kwargs, 1, "first", bool_value(false));
      Value blank = arg(args, kwargs, 2, "blank", bool_value(false));
      std::string indent(static_cast<std::size_t>(width.number), ' ');
      std::string out = indent_text(operand.str, indent, truthy(first), truthy(blank));
      check_size(out.size());
      return string_value(std::move(out));
    }
    if (name == "replace") {
      auto [args, kwargs] = eval_arguments(filter.a, env);
      args.push_back(kwargs_value(std::move(kwargs)));
      Value fn = string_builtin(operand, "replace");
      return call(fn, args, env);
    }
    fail("Unknown StringValue filter: " + name);
  }
  if (operand.kind == Kind::kObject) {
    Value builtin = object_builtin(operand, name);
    if (builtin.kind == Kind::kFunction) {
      auto [args, kwargs] = eval_arguments(filter.a, env);
      if (kwargs.size() > 0) args.push_back(kwargs_value(std::move(kwargs)));
      return call(builtin, args, env);
    }
    fail("Unknown ObjectValue filter: " + name);
  }
  fail("Cannot apply filter \"" + name + "\" to type: " + type_name(operand));
}

// ---------------------------------------------------------------------------------------------
// Globals and input

// The reference converts JSON.parse output: integral numbers are integers, and an object lists
// its array-index keys ("0", "7") first in numeric order, then the rest in insertion order.
Value Interpreter::from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > limits_.max_depth) {
    throw TemplateError{StatusCode::kResourceExhausted,
                        "template input nests deeper than the limit of " +
                            std::to_string(limits_.max_depth) + " levels"};
  }
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return null_value();
    case nlohmann::ordered_json::value_t::boolean: return bool_value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return int_value(static_cast<double>(j.get<std::int64_t>()));
    case nlohmann::ordered_json::value_t::number_unsigned:
      return int_value(static_cast<double>(j.get<std::uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: {
      double d = j.get<double>();
      return std::isfinite(d) && std::trunc(d) == d ? int_value(d) : float_value(d);
    }
    case nlohmann::ordered_json::value_t::string: return string_value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ArrayData items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e, depth + 1));
      return array_value(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto is_index = [](const std::string& k) {
        if (k.empty() || k.size() > 10) return false;
        if (k.size() > 1 && k[0] == '0') return false;
        for (char c : k) {
          if (c < '0' || c > '9') return false;
        }
        return std::stoull(k) < 4294967295ull;
      };
      std::vector<std::pair<unsigned long long, const std::string*>> indices;
      for (const auto& [k, v] : j.items()) {
        if (is_index(k)) indices.emplace_back(std::stoull(k), &k);
      }
      std::sort(indices.begin(), indices.end());
      ObjectData data;
      for (const auto& [n, k] : indices) data.set(*k, from_json(j.at(*k), depth + 1));
      for (const auto& [k, v] : j.items()) {
        if (!is_index(k)) data.set(k, from_json(v, depth + 1));
      }
      return object_value(std::move(data));
    }
    case nlohmann::ordered_json::value_t::binary:
    case nlohmann::ordered_json::value_t::discarded: break;
  }
  fail("unsupported JSON value in the template context");
}

// utils.ts strftime: %Y %m %d %b %B %H %M %% in local time, English month names.
std::string strftime_js(std::chrono::system_clock::time_point when, const std::string& format) {
  static const char* kMonths[] = {"January",   "February", "March",    "April",
                                  "May",       "June",     "July",     "August",
                                  "September", "October",  "November", "December"};
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  localtime_r(&t, &tm);
  auto pad2 = [](int n) { return (n < 10 ? "0" : "") + std::to_string(n); };
  std::string out;
  for (std::size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%' || i + 1 >= format.size()) {
      out += format[i];
      continue;
    }
    char c = format[i + 1];
    std::string month = kMonths[tm.tm_mon];
    switch (c) {
      case 'Y': out += std::to_string(tm.tm_year + 1900); break;
      case 'm': out += pad2(tm.tm_mon + 1); break;
      case 'd': out += pad2(tm.tm_mday); break;
      case 'b': out += month.substr(0, 3); break;
      case 'B': out += month; break;
      case 'H': out += pad2(tm.tm_hour); break;
      case 'M': out += pad2(tm.tm_min); break;
      case '%': out += '%'; break;
      default: out += format.substr(i, 2);
    }
    ++i;
  }
  return out;
}

void Interpreter::setup_globals(Env& env) {
  env.vars["false"] = bool_value(false);
  env.vars["true"] = bool_value(true);
  env.vars["none"] = null_value();
  env.vars["raise_exception"] =
      function_value([](Interpreter& in, Args& args, const EnvPtr&) -> Value {
        std::string message;
        if (!args.empty() && !args[0].is_nullish()) message = in.raw_string(args[0]);
        throw TemplateError{StatusCode::kInvalidArgument, message, true};
      });
  env.vars["range"] = function_value([](Interpreter& in, Args& args, const EnvPtr&) {
    if (args.empty() || args.size() > 3) fail("range() expects 1 to 3 arguments");
    for (const Value& a : args) {
      if (!numeric_like(a)) fail("range() arguments must be numbers, got " + type_name(a));
    }
    double start = 0;
    double stop = numeric(args[0]);
    double step = 1;
    if (args.size() >= 2) {
      start = numeric(args[0]);
      stop = numeric(args[1]);
    }
    if (args.size() == 3) step = numeric(args[2]);
    if (step == 0) fail("range() step must not be zero");
    double count = std::ceil((stop - start) / step);
    if (count > 0) in.check_list(static_cast<std::size_t>(std::min(count, 1e18)));
    ArrayData out;
    for (double i = start; step > 0 ? i < stop : i > stop; i += step) {
      out.push_back(std::trunc(i) == i ? int_value(i) : float_value(i));
    }
    return array_value(std::move(out));
  });
  env.vars["strftime_now"] = function_value([](Interpreter& in, Args& args, const EnvPtr&) {
    if (args.empty() || args[0].kind != Kind::kString)
      fail("strftime_now() expects a format string");
    return string_value(strftime_js(in.now(), args[0].str));
  });
  env.vars["True"] = bool_value(true);
  env.vars["False"] = bool_value(false);
  env.vars["None"] = null_value();
}

// 1-based line and column (in code points) of a byte offset.
std::string position_text(const std::string& source, std::size_t pos) {
  pos = std::min(pos, source.size());
  std::size_t line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < pos; ++i) {
    if (source[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  std::size_t column = 1;
  for (std::size_t i = line_start; i < pos;) {
    std::size_t n = 0;
    text::decode_utf8(source, i, &n);
    i += n;
    ++column;
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

}  // namespace

Result<JinjaTemplate> JinjaTemplate::parse(std::string_view source) {
  std::size_t bad = 0;
  if (!text::is_valid_utf8(source, &bad)) {
    return invalid_argument("syntax error at " + position_text(std::string(source), bad) +
                            ": the template is not valid UTF-8");
  }
  std::vector<Token> tokens;
  SyntaxErrorInfo error;
  auto program = std::make_shared<JinjaProgram>();
  program->source.assign(source);
  try {
    if (!tokenize(source, &tokens, &error) ||
        !parse_tokens(tokens, source.size(), &program->root, &error)) {
      return invalid_argument("syntax error at " + position_text(program->source, error.pos) +
                              ": " + error.message);
    }
  } catch (const std::exception& e) {
    return internal_error(std::string("template parsing failed: ") + e.what());
  }
  return JinjaTemplate(std::move(program));
}

Result<std::string> JinjaTemplate::render(const nlohmann::ordered_json& context,
                                          const JinjaRenderOptions& options) const {
  if (!context.is_object()) return invalid_argument("the template context must be a JSON object");
  Interpreter interpreter(options, program_->source);
  try {
    auto global = std::make_shared<Env>(nullptr);
    interpreter.setup_globals(*global);
    for (const auto& [key, value] : context.items()) {
      if (global->vars.count(key) != 0 || key == "namespace") {
        return invalid_argument("template context variable '" + key +
                                "' is already declared (a built-in name)");
      }
      global->vars[key] = interpreter.from_json(value, 0);
    }
    return interpreter.run(*program_->root, global);
  } catch (const TemplateError& e) {
    if (e.raised) return invalid_argument("template raised an exception: " + e.message);
    std::string where = e.pos == kNoPos ? "" : " at " + position_text(program_->source, e.pos);
    return Status(e.code, "template error" + where + ": " + e.message);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kResourceExhausted, "template rendering ran out of memory");
  } catch (const std::exception& e) {
    return internal_error(std::string("template rendering failed: ") + e.what());
  }
}

}  // namespace kvfleet::chat
