#include "apps/cluster_commands.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <thread>
#include <vector>

#include "apps/exit_code.h"
#include "apps/local_cluster.h"
#include "common/cluster_secret.h"
#include "common/log.h"
#include "common/units.h"
#include "hfmodel/model_folder.h"
#include "net/http.h"
#include "worker/model.h"

namespace kvfleet::apps {

CLI::App* add_worker_command(CLI::App& root, WorkerOptions& o) {
  auto& c = o.config;
  CLI::App* w = root.add_subcommand("worker", "Run a prefill, decode or colocated worker");
  w->add_option("--role", c.role, "prefill | decode | both")->capture_default_str();
  w->add_option("--model", c.model,
                "built-in model name, HF config.json, or a Hugging Face model folder (config, "
                "tokenizer, .safetensors; served under the folder's path as given)")
      ->capture_default_str();
  w->add_option("--weights", c.weights,
                "safetensors weights (default: the folder's, else seeded random)");
  w->add_option("--seed", c.seed, "seed of random weights (all workers of a cluster must agree)")
      ->capture_default_str();
  w->add_option("--backend", c.backend, "engine backend: cpu | sim")->capture_default_str();
  w->add_option("--threads", c.threads, "cpu: BLAS threads (0: the library's default)")
      ->capture_default_str();
  w->add_option("--hardware", c.hardware,
                "sim: modelled device (built-in name, hardware file or profile)")
      ->capture_default_str();
  w->add_option("--tp", c.tp, "sim: tensor-parallel degree")->capture_default_str();
  w->add_option("--link", c.link,
                "sim: link KV hand-offs cross (nvlink, infiniband, pcie, tcp, or a file)")
      ->capture_default_str();
  w->add_option("--time-scale", c.time_scale,
                "sim: wall seconds per modelled second (0.1 runs 10x faster than the hardware)")
      ->capture_default_str();
  w->add_option("--coordinator", c.coordinator,
                "the coordinator's internal URL to register with (serve prints it)");
  w->add_option("--cluster-secret-file", o.secret_file,
                "the cluster secret (default: $KVFLEET_CLUSTER_SECRET_FILE, "
                "$KVFLEET_CLUSTER_SECRET); required off loopback");
  w->add_option("--host", c.host, "listen address")->capture_default_str();
  w->add_option("--port", c.port, "listen port (0: any free)")->capture_default_str();
  w->add_option("--advertise-host", c.advertise_host, "host others reach this worker at");
  w->add_option("--id", c.id, "worker id (default: ROLE-HOST-PID)");
  w->add_option("--kv-blocks", c.kv_blocks,
                "device KV blocks (0: the backend's default; cpu 1024, sim what HBM holds)")
      ->capture_default_str();
  w->add_option("--block-tokens", c.block_tokens, "tokens per KV block")->capture_default_str();
  w->add_option("--host-kv-bytes", o.host_kv_bytes, "host KV store size (0: none)")
      ->capture_default_str();
  w->add_option("--kv-dtype", c.kv_dtype,
                "fp32 | fp16 | bf16 (default: cpu fp32, sim the model's)");
  w->add_option("--max-batch-tokens", c.max_batch_tokens, "tokens per engine step")
      ->capture_default_str();
  w->add_option("--max-running", c.max_running, "sequences per batch")->capture_default_str();
  w->add_option("--max-model-len", c.max_model_len, "context limit (0: the model's)")
      ->capture_default_str();
  w->add_option("--max-queued", c.max_queued, "running + waiting beyond which requests get 429")
      ->capture_default_str();
  w->add_option("--transfer", c.transfer, "ucx | loopback | nccl")->capture_default_str();
  w->add_option("--heartbeat-seconds", c.heartbeat_seconds, "heartbeat period")
      ->capture_default_str();
  w->add_option("--kv-lease-seconds", c.kv_lease_seconds, "held prefill KV lifetime")
      ->capture_default_str();
  w->add_option("--kv-import-wait-seconds", c.kv_import_wait_seconds,
                "decode: wait this long for room for imported KV before recomputing the prompt")
      ->capture_default_str();
  w->add_option("--drain-seconds", c.drain_seconds, "graceful stop time")->capture_default_str();
  w->add_option("--inject-faults", c.inject_faults,
                "for tests: faults to inject on purpose, NAME=P,... (corrupt-kv=P: KV hand-offs "
                "fail their checksum with probability P; corrupt-spill=P: spills to the host "
                "store are damaged after their checksum; drop-notice=P: hand-off notices are "
                "lost); default none");
  return w;
}

int run_worker(const WorkerOptions& o, std::ostream& out, std::ostream& err) {
  worker::WorkerConfig c = o.config;
  auto bytes = parse_quantity(o.host_kv_bytes, Quantity::kBytes);
  if (!bytes.is_ok())
    return finish_command("worker", bytes.status().with_context("--host-kv-bytes"), err);
  c.host_kv_bytes = static_cast<std::size_t>(*bytes);
  auto secret = ClusterSecret::resolve(o.secret_file);
  if (!secret.is_ok()) return finish_command("worker", secret.status(), err);
  c.secret = *secret;
  auto w = worker::WorkerServer::create(c);
  if (!w.is_ok()) return finish_command("worker", w.status(), err);
  out << "kvfleet worker " << (*w)->id() << " listening on " << (*w)->url() << std::endl;
  (*w)->run();
  return 0;
}

CLI::App* add_serve_command(CLI::App& root, ServeOptions& o) {
  auto& c = o.config;
  CLI::App* s = root.add_subcommand("serve", "Run the coordinator (OpenAI-compatible front door)");
  s->add_option("--host", c.host, "listen address of the OpenAI API")->capture_default_str();
  s->add_option("--port", c.port, "listen port (0: any free)")->capture_default_str();
  s->add_option("--internal-host", c.internal_host,
                "listen address of the internal routes (worker registration, worker list)")
      ->capture_default_str();
  s->add_option("--internal-port", o.internal_port,
                "internal listen port (default: --port + 1; 0: any free)");
  s->add_option("--cluster-secret-file", o.secret_file,
                "the cluster secret (default: $KVFLEET_CLUSTER_SECRET_FILE, "
                "$KVFLEET_CLUSTER_SECRET); required when --internal-host is not loopback");
  s->add_option("--model", o.models,
                "[NAME=]DIR: serve NAME (default: DIR as given) from a Hugging Face folder's "
                "tokenizer and chat template; its workers must load the same tokenizer files "
                "(repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  s->add_option("--mode", c.mode, "disaggregated | colocated | auto")->capture_default_str();
  s->add_option("--lease-seconds", c.lease_seconds, "worker lease (missed heartbeats)")
      ->capture_default_str();
  s->add_option("--max-inflight", c.max_inflight, "requests in flight before 429")
      ->capture_default_str();
  s->add_option("--max-body-bytes", c.max_body_bytes, "largest request body (413 beyond)")
      ->capture_default_str();
  s->add_option("--max-connections-per-client", c.max_connections_per_client,
                "open connections from one client address before 503 (0: no limit)")
      ->capture_default_str();
  s->add_option("--progress-timeout", c.progress_timeout_seconds,
                "seconds a worker may send nothing (not even a keep-alive) before its requests "
                "are re-run elsewhere (at least 4 of its longest recent steps)")
      ->capture_default_str();
  s->add_option("--max-attempts", c.max_attempts, "runs per request across worker failures")
      ->capture_default_str();
  s->add_option("--drain-seconds", c.drain_seconds, "graceful stop time")->capture_default_str();
  s->add_option("--backend", c.backend,
                "engine backend of this cluster's workers (metrics label; others are refused)");
  s->add_option(
       "--auto-local-prefill-tokens", c.auto_local_prefill_tokens,
       "auto mode: prompts with at most this many uncached tokens prefill on the decode worker")
      ->capture_default_str();
  return s;
}

int run_serve(const ServeOptions& o, std::ostream& out, std::ostream& err) {
  coordinator::CoordinatorConfig c = o.config;
  if (o.internal_port > 65535 || o.internal_port < -1) {
    return finish_command("serve", invalid_argument("--internal-port must be in [0, 65535]"), err);
  }
  if (o.internal_port >= 0) {
    c.internal_port = static_cast<std::uint16_t>(o.internal_port);
  } else {
    c.internal_port = c.port == 0 || c.port == 65535 ? 0 : static_cast<std::uint16_t>(c.port + 1);
  }
  for (const std::string& m : o.models) {
    const auto eq = m.find('=');
    const std::string dir = eq == std::string::npos ? m : m.substr(eq + 1);
    const std::string name =
        eq == std::string::npos ? hfmodel::folder_model_name(dir) : m.substr(0, eq);
    if (name.empty() || dir.empty()) {
      return finish_command("serve", invalid_argument("--model '" + m + "': expected [NAME=]DIR"),
                            err);
    }
    c.model_folders[name] = dir;
  }
  auto secret = ClusterSecret::resolve(o.secret_file);
  if (!secret.is_ok()) return finish_command("serve", secret.status(), err);
  c.secret = *secret;
  auto s = coordinator::Coordinator::create(c);
  if (!s.is_ok()) return finish_command("serve", s.status(), err);
  out << "kvfleet serve listening on " << (*s)->url() << std::endl;
  out << "kvfleet serve internal routes on " << (*s)->internal_url() << std::endl;
  (*s)->run();
  return 0;
}

CLI::App* add_up_command(CLI::App& root, UpOptions& o) {
  CLI::App* u = root.add_subcommand("up", "Start a local cluster: coordinator + workers");
  u->add_option("--model", o.model,
                "model for every worker: a built-in name, a config.json, or a Hugging Face "
                "folder (the coordinator then uses its tokenizer and chat template)")
      ->capture_default_str();
  u->add_option("--weights", o.weights,
                "safetensors weights (default: the folder's, else seeded random)");
  u->add_option("--seed", o.seed, "seed of random weights")->capture_default_str();
  u->add_option("--host", o.host, "listen address of every process")->capture_default_str();
  u->add_option("--port", o.port, "coordinator port (0: any free)")->capture_default_str();
  u->add_option("--prefill", o.prefill, "prefill workers");
  u->add_option("--decode", o.decode, "decode workers");
  u->add_option("--colocated", o.colocated, "workers doing both phases");
  u->add_option("--mode", o.mode, "coordinator mode (default from the worker counts)");
  u->add_option("--backend", o.backend, "engine backend of every worker: cpu | sim")
      ->capture_default_str();
  u->add_option("--threads", o.threads,
                "cpu: BLAS threads per worker (0: this machine's cores divided among the workers)")
      ->capture_default_str();
  u->add_option("--hardware", o.hardware, "sim: modelled device")->capture_default_str();
  u->add_option("--tp", o.tp, "sim: tensor-parallel degree per worker")->capture_default_str();
  u->add_option("--link", o.link, "sim: link KV hand-offs cross")->capture_default_str();
  u->add_option("--time-scale", o.time_scale, "sim: wall seconds per modelled second")
      ->capture_default_str();
  u->add_option("--kv-blocks", o.kv_blocks,
                "device KV blocks per worker (0: the backend's default)")
      ->capture_default_str();
  u->add_option("--block-tokens", o.block_tokens, "tokens per KV block")->capture_default_str();
  u->add_option("--host-kv-bytes", o.host_kv_bytes,
                "host KV store per worker (default: cpu 64MiB, sim none)");
  u->add_option("--transfer", o.transfer, "KV transfer backend")->capture_default_str();
  u->add_option("--max-batch-tokens", o.max_batch_tokens, "tokens per engine step")
      ->capture_default_str();
  u->add_option("--timeout", o.timeout_seconds, "seconds to wait for /health")
      ->capture_default_str();
  return u;
}

namespace {

// The first of `pids` that has exited (reaped; its entry set to -1), or -1.
pid_t reap_exited(std::vector<pid_t>& pids, int& status) {
  for (pid_t& p : pids) {
    if (p > 0 && ::waitpid(p, &status, WNOHANG) == p) {
      const pid_t exited = p;
      p = -1;
      return exited;
    }
  }
  return -1;
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
  }
}

}  // namespace

int run_up(const UpOptions& o, std::ostream& out, std::ostream& err) {
  // Everything is checked before anything starts or is printed.
  if (o.prefill < 0 || o.decode < 0 || o.colocated < 0) {
    return finish_command("up", invalid_argument("worker counts must be >= 0"), err);
  }
  if (o.prefill + o.decode + o.colocated == 0) {
    return finish_command("up", invalid_argument("give --prefill N --decode M, or --colocated N"),
                          err);
  }
  if ((o.prefill > 0) != (o.decode > 0) && o.colocated == 0) {
    return finish_command(
        "up", invalid_argument("a disaggregated cluster needs --prefill and --decode workers"),
        err);
  }
  if (o.backend != "cpu" && o.backend != "sim") {
    return finish_command(
        "up", invalid_argument("--backend must be cpu or sim, not '" + o.backend + "'"), err);
  }
  if (!(o.time_scale > 0)) {
    return finish_command("up", invalid_argument("--time-scale must be > 0"), err);
  }
  // A Hugging Face folder is checked whole (config, tokenizer, template, weights) before
  // anything starts; the coordinator serves it under the name the workers register.
  // (A sim cluster may take a folder with only config.json, as a sim worker does.)
  std::error_code fs_error;
  const bool folder =
      hfmodel::is_model_folder(o.model) &&
      (o.backend != "sim" ||
       std::filesystem::exists(std::filesystem::path(o.model) / "tokenizer.json", fs_error));
  if (folder) {
    hfmodel::LoadFolderOptions fo;
    fo.weights = o.weights.empty() && o.backend != "sim";
    auto f = hfmodel::load_model_folder(o.model, fo);
    if (!f.is_ok()) return finish_command("up", f.status(), err);
    if (o.backend == "cpu") {
      if (Status st = worker::Model::check_supported(f->spec); !st.is_ok())
        return finish_command("up", st, err);
    }
  }
  const std::string mode = !o.mode.empty()                     ? o.mode
                           : o.colocated > 0 && o.prefill == 0 ? "colocated"
                                                               : "disaggregated";
  // The coordinator's port must be ours: with another server there, its /health would answer
  // for a cluster that never started. Workers take ports the OS picks.
  if (o.port != 0) {
    if (Status s = check_port_free(o.host, o.port); !s.is_ok()) return finish_command("up", s, err);
  }
  // Ports (the internal listener's from the OS), and a fresh cluster secret readable by this
  // user only (removed when `up` ends).
  auto plan = plan_local_cluster(o.host, o.port);
  if (!plan.is_ok()) return finish_command("up", plan.status(), err);
  const std::uint16_t port = (*plan)->port;
  const std::string url = (*plan)->url;
  // Before any child or thread: stop requests (SIGINT, SIGTERM, SIGHUP) and child exits are
  // taken synchronously from here on.
  StopSignals signals;
  std::vector<pid_t> pids;

  const int workers = o.prefill + o.decode + o.colocated;
  // cpu workers share this machine's cores instead of each taking them all.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = o.threads > 0 ? o.threads : std::max(1, cores / workers);
  const std::string host_kv =
      !o.host_kv_bytes.empty() ? o.host_kv_bytes : (o.backend == "sim" ? "0" : "64MiB");
  std::vector<std::string> serve = {"kvfleet", "serve", "--mode", mode, "--backend", o.backend};
  for (const std::string& a : (*plan)->serve_args(o.host)) serve.push_back(a);
  if (folder) {
    serve.push_back("--model");
    serve.push_back(o.model);
  }
  pids.push_back(spawn(serve));
  auto add_workers = [&](const char* role, int n) {
    for (int i = 0; i < n; ++i) {
      std::vector<std::string> a = {
          "kvfleet",
          "worker",
          "--role",
          role,
          "--model",
          o.model,
          "--host",
          o.host,
          "--id",
          std::string(role) + "-" + std::to_string(i) + "-" + std::to_string(port),
          "--kv-blocks",
          std::to_string(o.kv_blocks),
          "--block-tokens",
          std::to_string(o.block_tokens),
          "--host-kv-bytes",
          host_kv,
          "--transfer",
          o.transfer,
          "--max-batch-tokens",
          std::to_string(o.max_batch_tokens),
          "--seed",
          std::to_string(o.seed),
          "--backend",
          o.backend};
      if (o.backend == "sim") {
        for (const std::string& x : {std::string("--hardware"), o.hardware, std::string("--tp"),
                                     std::to_string(o.tp), std::string("--link"), o.link,
                                     std::string("--time-scale"), format_number(o.time_scale, 9)}) {
          a.push_back(x);
        }
      } else {
        a.push_back("--threads");
        a.push_back(std::to_string(threads));
      }
      if (!o.weights.empty()) {
        a.push_back("--weights");
        a.push_back(o.weights);
      }
      for (const std::string& x : (*plan)->worker_args()) a.push_back(x);
      pids.push_back(spawn(a));
    }
  };
  add_workers("prefill", o.prefill);
  add_workers("decode", o.decode);
  add_workers("both", o.colocated);

  auto ep = net::parse_url(url);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(o.timeout_seconds);
  bool ready = false;
  int status = 0;
  while (!ready && signals.stop_requested() == 0) {
    if (const pid_t p = reap_exited(pids, status); p > 0) {
      err << "kvfleet up: process " << p << " exited during start-up (status " << status
          << "); stopping\n";
      stop_all(pids, err);
      return 1;
    }
    net::ClientOptions co;
    co.connect_timeout = net::Seconds(1);
    co.timeout = net::Seconds(2);
    auto r = net::http_call_sync(*ep, "GET", "/health", "", co);
    // Ready only while every process of ours still runs (the answer came from our coordinator).
    if (r.is_ok() && r->status == 200 && reap_exited(pids, status) < 0) {
      ready = true;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      err << "kvfleet up: " << url << "/health did not turn 200 within " << o.timeout_seconds
          << " s\n";
      stop_all(pids, err);
      return 1;
    }
    signals.wait(std::chrono::milliseconds(100));
  }
  if (ready) {
    out << "kvfleet up: " << mode << " cluster of " << workers << " workers (" << o.model << ", "
        << o.backend << " backend"
        << (o.backend == "sim" ? " modelling " + o.hardware + ": figures are simulated"
                               : std::string())
        << ") ready at " << url << std::endl;
    out << "kvfleet up: OpenAI API at " << url << "/v1, metrics at " << url
        << "/metrics; Ctrl-C, SIGTERM or SIGHUP stops it" << std::endl;
  }
  // Serve until a stop request or until a process dies.
  while (signals.stop_requested() == 0) {
    if (const pid_t p = reap_exited(pids, status); p > 0) {
      err << "kvfleet up: process " << p << " exited (status " << status
          << "); stopping the cluster\n";
      stop_all(pids, err);
      return 1;
    }
    signals.wait(std::chrono::seconds(1));
  }
  out << "kvfleet up: " << signal_name(signals.stop_requested()) << ": stopping" << std::endl;
  stop_all(pids, err);
  return 0;
}

}  // namespace kvfleet::apps
