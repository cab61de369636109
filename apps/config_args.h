#pragma once
// `--config FILE` for every subcommand: a YAML (or JSON) map whose keys are the subcommand's long
// flag names (dashes or underscores), turned into command-line tokens that go before the user's
// own flags, so that flags given on the command line override the file.
//
//   context: 50000                    -> --context 50000
//   sweep: {context: [4000, 50000]}   -> --sweep context=4000,50000
//   compress: {layer: 0.5, head: 0.1} -> --compress layer=0.5,head=0.1
//   json: true                        -> --json      (false: omitted)

#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvfleet::apps {

// Reads the file and returns the tokens. Every key must satisfy is_known_flag("--key"); an
// unknown key is an error naming the file and the key.
Result<std::vector<std::string>> config_file_to_args(
    const std::string& path, const std::function<bool(const std::string&)>& is_known_flag);

}  // namespace kvfleet::apps
