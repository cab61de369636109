#pragma once
// The command line this process was started with, as a report should quote it ("kvfleet ..."
// whatever path the binary was run from), so that a report names every flag that shaped it.

#include <string>
#include <vector>

namespace kvfleet::apps {

// Set once by main before any subcommand runs.
void set_invocation(const std::vector<std::string>& argv);
// "kvfleet simulate --compare ..." with arguments that need it shell-quoted.
const std::string& invocation();

}  // namespace kvfleet::apps
