#pragma once
// `kvfleet export --gguf OUT.gguf --model DIR`: a Hugging Face model folder as a GGUF file that
// llama.cpp loads (hfmodel/gguf_export.h does the work).

#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct ExportOptions {
  std::string model;  // --model DIR: a Hugging Face model folder
  std::string gguf;   // --gguf OUT: the GGUF file to write
  bool json = false;
};

CLI::App* add_export_command(CLI::App& root, ExportOptions& opts);
int run_export(const ExportOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
