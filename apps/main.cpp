// kvfleet: the single binary. Each subcommand parses its flags into a typed options struct once;
// `--config FILE` (YAML/JSON) supplies the same keys, and flags on the command line override it.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "apps/bench_compare_command.h"
#include "apps/bench_engine_command.h"
#include "apps/bench_overhead_command.h"
#include "apps/bench_serve_command.h"
#include "apps/bench_transfer_command.h"
#include "apps/cluster_commands.h"
#include "apps/cluster_launch_command.h"
#include "apps/config_args.h"
#include "apps/export_command.h"
#include "apps/generate_command.h"
#include "apps/invocation.h"
#include "apps/plan_command.h"
#include "apps/simulate_command.h"
#include "apps/tokenize_command.h"
#include "apps/version.h"
#include "common/log.h"

namespace {

// Replaces "--config FILE" / "--config=FILE" after a subcommand name with the file's flags,
// placed right after the subcommand so that the user's own flags come later and win.
kvfleet::Result<std::vector<std::string>> expand_config(const CLI::App& root,
                                                        std::vector<std::string> args) {
  size_t sub_index = 0;
  const CLI::App* sub = nullptr;
  for (size_t i = 1; i < args.size(); ++i) {
    if (!args[i].empty() && args[i][0] != '-') {
      for (const CLI::App* candidate : root.get_subcommands({})) {
        if (candidate->check_name(args[i])) {
          sub = candidate;
          sub_index = i;
        }
      }
      break;
    }
  }
  if (!sub) return args;
  std::string path;
  for (size_t i = sub_index + 1; i < args.size(); ++i) {
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) return kvfleet::invalid_argument("--config needs a file path");
      path = args[i + 1];
      args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
      break;
    }
    if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
      args.erase(args.begin() + static_cast<long>(i));
      break;
    }
  }
  if (path.empty()) return args;
  auto known = [sub](const std::string& flag) {
    return flag != "--config" && sub->get_option_no_throw(flag) != nullptr;
  };
  KVFLEET_ASSIGN_OR_RETURN(auto extra, kvfleet::apps::config_file_to_args(path, known));
  args.insert(args.begin() + static_cast<long>(sub_index) + 1, extra.begin(), extra.end());
  return args;
}

int run(int argc, char** argv) {
  CLI::App app{"kvfleet: serving and planning for long-context transformers", "kvfleet"};
  app.set_version_flag("--version", kvfleet::apps::kVersion);
  app.require_subcommand(1);
  app.fallthrough(false);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "debug|info|warning|error|off")->capture_default_str();

  kvfleet::apps::PlanOptions plan_opts;
  CLI::App* plan = kvfleet::apps::add_plan_command(app, plan_opts);
  kvfleet::apps::GenerateOptions generate_opts;
  CLI::App* generate = kvfleet::apps::add_generate_command(app, generate_opts);
  kvfleet::apps::TokenizeOptions tokenize_opts;
  CLI::App* tokenize = kvfleet::apps::add_tokenize_command(app, tokenize_opts);
  kvfleet::apps::ExportOptions export_opts;
  CLI::App* export_cmd = kvfleet::apps::add_export_command(app, export_opts);
  CLI::App* bench = app.add_subcommand(
      "bench", "Benchmarks: serve (load generator), compare, engine, transfer, overhead");
  bench->require_subcommand(1);
  kvfleet::apps::BenchEngineOptions bench_engine_opts;
  CLI::App* bench_engine = kvfleet::apps::add_bench_engine_command(*bench, bench_engine_opts);
  kvfleet::apps::BenchServeOptions bench_serve_opts;
  CLI::App* bench_serve = kvfleet::apps::add_bench_serve_command(*bench, bench_serve_opts);
  kvfleet::apps::BenchCompareOptions bench_compare_opts;
  CLI::App* bench_compare = kvfleet::apps::add_bench_compare_command(*bench, bench_compare_opts);
  kvfleet::apps::BenchOverheadOptions bench_overhead_opts;
  CLI::App* bench_overhead = kvfleet::apps::add_bench_overhead_command(*bench, bench_overhead_opts);
  kvfleet::apps::BenchTransferOptions bench_transfer_opts;
  CLI::App* bench_transfer = kvfleet::apps::add_bench_transfer_command(*bench, bench_transfer_opts);
  kvfleet::apps::WorkerOptions worker_opts;
  CLI::App* worker = kvfleet::apps::add_worker_command(app, worker_opts);
  kvfleet::apps::ServeOptions serve_opts;
  CLI::App* serve = kvfleet::apps::add_serve_command(app, serve_opts);
  kvfleet::apps::ClusterLaunchOptions cluster_opts;
  CLI::App* cluster = kvfleet::apps::add_cluster_launch_command(app, cluster_opts);
  kvfleet::apps::UpOptions up_opts;
  CLI::App* up = kvfleet::apps::add_up_command(app, up_opts);
  kvfleet::apps::SimulateOptions simulate_opts;
  CLI::App* simulate = kvfleet::apps::add_simulate_command(app, simulate_opts);
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    sub->add_option("--config", "YAML/JSON file with this subcommand's flags (flags override)");
  }

  std::vector<std::string> args(argv, argv + argc);
  kvfleet::apps::set_invocation(args);
  if (args.size() > 1 && !args[1].empty() && args[1][0] != '-') {
    bool known = false;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) {
      known = known || sub->check_name(args[1]);
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::cerr << "kvfleet: error: unknown subcommand '" << args[1] << "' (known: " << names
                << ")\n";
      return 2;
    }
  }
  auto expanded = expand_config(app, std::move(args));
  if (!expanded.is_ok()) {
    std::cerr << "kvfleet: error: " << expanded.status().message() << "\n";
    return 2;
  }
  std::vector<std::string> reversed(expanded->rbegin(), expanded->rend() - 1);
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "kvfleet: error: " << e.what() << "\n"
              << "Run 'kvfleet --help' (or 'kvfleet SUBCOMMAND --help') for usage.\n";
    return 2;
  }
  kvfleet::LogLevel level;
  if (!kvfleet::parse_log_level(log_level, &level)) {
    std::cerr << "kvfleet: error: unknown --log-level '" << log_level << "'\n";
    return 2;
  }
  kvfleet::set_log_level(level);

  if (worker->parsed()) return kvfleet::apps::run_worker(worker_opts, std::cout, std::cerr);
  if (serve->parsed()) return kvfleet::apps::run_serve(serve_opts, std::cout, std::cerr);
  if (cluster->parsed())
    return kvfleet::apps::run_cluster_launch(cluster_opts, std::cout, std::cerr);
  if (up->parsed()) return kvfleet::apps::run_up(up_opts, std::cout, std::cerr);
  if (plan->parsed()) return kvfleet::apps::run_plan(plan_opts, std::cout, std::cerr);
  if (simulate->parsed()) return kvfleet::apps::run_simulate(simulate_opts, std::cout, std::cerr);
  if (generate->parsed()) return kvfleet::apps::run_generate(generate_opts, std::cout, std::cerr);
  if (tokenize->parsed()) return kvfleet::apps::run_tokenize(tokenize_opts, std::cout, std::cerr);
  if (export_cmd->parsed()) return kvfleet::apps::run_export(export_opts, std::cout, std::cerr);
  if (bench_engine->parsed()) {
    return kvfleet::apps::run_bench_engine(bench_engine_opts, std::cout, std::cerr);
  }
  if (bench_serve->parsed())
    return kvfleet::apps::run_bench_serve(bench_serve_opts, std::cout, std::cerr);
  if (bench_compare->parsed()) {
    return kvfleet::apps::run_bench_compare(bench_compare_opts, std::cout, std::cerr);
  }
  if (bench_overhead->parsed()) {
    return kvfleet::apps::run_bench_overhead(bench_overhead_opts, std::cout, std::cerr);
  }
  if (bench_transfer->parsed()) {
    return kvfleet::apps::run_bench_transfer(bench_transfer_opts, std::cout, std::cerr);
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "kvfleet: internal error: " << e.what() << "\n";
    return 1;
  }
}
