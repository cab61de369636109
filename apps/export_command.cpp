#include "apps/export_command.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <ostream>

#include "apps/exit_code.h"
#include "hfmodel/gguf_export.h"

namespace kvfleet::apps {
namespace {

Status export_model(const ExportOptions& o, std::ostream& out) {
  if (o.gguf.empty()) return invalid_argument("give the output file with --gguf OUT.gguf");
  auto summary = hfmodel::export_gguf(o.model, o.gguf);
  if (!summary.is_ok()) return summary.status();
  if (o.json) {
    nlohmann::ordered_json j = {{"gguf", o.gguf},
                                {"architecture", summary->architecture},
                                {"tokenizer_model", summary->tokenizer_model},
                                {"pre_tokenizer", summary->pre_tokenizer},
                                {"vocab_size", summary->vocab_size},
                                {"tensors", summary->tensors},
                                {"tensor_bytes", summary->tensor_bytes}};
    out << j.dump(2) << "\n";
  } else {
    out << "wrote " << o.gguf << ": architecture " << summary->architecture << ", "
        << summary->tensors << " F32 tensors (" << summary->tensor_bytes << " bytes), tokenizer "
        << summary->tokenizer_model
        << (summary->pre_tokenizer.empty() ? "" : " (pre " + summary->pre_tokenizer + ")") << ", "
        << summary->vocab_size << " tokens\n";
  }
  return Status::ok();
}

}  // namespace

CLI::App* add_export_command(CLI::App& root, ExportOptions& o) {
  CLI::App* cmd = root.add_subcommand(
      "export", "Write a Hugging Face model folder in another format (GGUF for llama.cpp)");
  cmd->add_option("--model", o.model, "Hugging Face model folder")->required();
  cmd->add_option("--gguf", o.gguf,
                  "write a GGUF v3 file (F32 tensors, llama.cpp's names and rope layout, the "
                  "folder's tokenizer)");
  cmd->add_flag("--json", o.json, "print what was written as JSON");
  return cmd;
}

int run_export(const ExportOptions& opts, std::ostream& out, std::ostream& err) {
  return finish_command("export", export_model(opts, out), err);
}

}  // namespace kvfleet::apps
