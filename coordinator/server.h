#pragma once
// The coordinator process (`kvfleet serve`): the OpenAI front door, the worker registry with
// leases, routing and admission, disaggregated and colocated request flows, re-runs after
// worker failures, and the request-level metrics.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/cluster_secret.h"
#include "common/status.h"

namespace kvfleet::coordinator {

struct CoordinatorConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8000;             // 0: any free port
  // The internal listener: worker registration, heartbeats and deregistration, the worker list
  // and Prometheus discovery. Never the public port; loopback unless a multi-host cluster needs
  // it reachable, and then only with a cluster secret.
  std::string internal_host = "127.0.0.1";
  std::uint16_t internal_port = 0;  // 0: any free port
  // Authenticates every internal message (see common/cluster_secret.h). Required when the
  // internal listener is not on loopback.
  std::optional<ClusterSecret> secret;
  std::string mode = "auto";             // disaggregated | colocated | auto
  double lease_seconds = 3;              // a worker silent this long is dropped
  std::int64_t max_inflight = 256;       // requests being served; beyond: 429
  std::size_t max_body_bytes = 4 << 20;  // larger bodies: 413
  // Open connections from one client address (IPv6: one /64); beyond: 503 and closed, so that
  // one client's idle connections cannot take all of the 4096 slots. 0: no limit.
  std::size_t max_connections_per_client = 256;
  int max_attempts = 3;                  // runs of one request across worker failures
  // A run whose worker sends nothing (not even a keep-alive; workers send one every 0.5 s) for
  // this long, or for 4 of the worker's longest recent steps if that is longer, is failed over
  // like a dead worker's: a frozen worker holds no request longer.
  double progress_timeout_seconds = 5;
  double drain_seconds = 30;             // SIGTERM: time for in-flight requests
  std::int64_t auto_local_prefill_tokens = 256;
  std::string name = "coordinator";
  // The engine backend of this cluster's workers (`kvfleet up` sets it): the `backend` label of
  // the coordinator's metrics, and workers of another backend are refused at registration (a sim
  // worker's modelled numbers must not mix with real ones). Empty: any backend, label empty.
  std::string backend;
  // Models served from Hugging Face folders: served name -> folder on this host (`serve --model
  // NAME=DIR`). The coordinator tokenizes with the folder's tokenizer and chat template, and
  // refuses a worker registering that name whose tokenizer files differ (tokenizer_id), or a
  // worker registering a folder model it has no folder for.
  std::map<std::string, std::string> model_folders;
};

class Coordinator {
 public:
  static Result<std::unique_ptr<Coordinator>> create(const CoordinatorConfig& config);
  virtual ~Coordinator() = default;
  virtual std::uint16_t port() const = 0;
  virtual std::string url() const = 0;
  virtual std::string internal_url() const = 0;  // where workers register
  virtual void run() = 0;   // until stop() or SIGINT/SIGTERM
  virtual void stop() = 0;  // graceful: stop accepting, drain, return from run()
};

}  // namespace kvfleet::coordinator
