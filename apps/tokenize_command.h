#pragma once
// `kvfleet tokenize`: a Hugging Face tokenizer (a model folder or a tokenizer.json) on text, a chat
// conversation or token ids, as the server would apply it.

#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct TokenizeOptions {
  std::string model;        // model folder or tokenizer.json
  std::string text;         // --text: ids of TEXT (special tokens added as the tokenizer says)
  std::string chat;         // --chat FILE: a JSON array of messages -> rendered prompt and its ids
  std::string decode;       // --decode IDS: "1,2,3" or "1 2 3" -> text
  bool no_special = false;  // --no-special-tokens: encode without BOS/EOS, decode skipping them
  bool json = false;
};

CLI::App* add_tokenize_command(CLI::App& root, TokenizeOptions& opts);
int run_tokenize(const TokenizeOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
