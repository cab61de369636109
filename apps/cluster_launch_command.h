#pragma once
// `kvfleet cluster start|status|stop --file CLUSTER.yaml`: a multi-node cluster from one
// description file (hosts, roles, counts, ports, model, transfer backend, UCX settings),
// started over ssh (or in network namespaces standing for hosts, or locally), checked through
// /health, and stopped. Everything is validated, every host reached and every fixed port checked
// before anything starts; a failure while starting stops what already started.

#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace kvfleet::apps {

struct ClusterLaunchOptions {
  std::string action;  // start | status | stop | check
  std::string file;
  std::string state;  // default: FILE.state.json
};

CLI::App* add_cluster_launch_command(CLI::App& root, ClusterLaunchOptions& opts);
int run_cluster_launch(const ClusterLaunchOptions& opts, std::ostream& out, std::ostream& err);

}  // namespace kvfleet::apps
