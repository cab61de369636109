#pragma once
// `kvfleet plan`: the analytical model from the command line (see perfmodel/README.md).

#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct PlanOptions {
  std::string model;
  std::string hardware;
  std::string context;  // tokens; "4000", "50K"
  std::string decode_tokens = "250";
  std::string batch = "1";
  std::string tp = "1";
  std::string weight_dtype;   // empty: the model's own
  std::string kv_dtype;       // empty: follows the weights
  std::string compute_dtype;  // empty: derived from the weights and the hardware
  std::string compress;       // "layer=R,head=R,token=R,hidden=R"
  std::string sweep;          // "context=4000,50000,100000" (or batch=, tp=, decode-tokens=)
  std::string attention_flops = "paper";
  double hbm_utilization = 1.0;
  bool json = false;
  bool list_models = false;
  bool list_hardware = false;
};

// Adds the subcommand and binds its flags to `opts`.
CLI::App* add_plan_command(CLI::App& root, PlanOptions& opts);

// Runs it: results on `out`, errors on `err`. Returns the process exit code (0 ok, 2 bad input).
int run_plan(const PlanOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
