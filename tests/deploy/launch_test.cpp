// The launchers against the real things, on this machine: `kvfleet cluster start/status/stop`
// over a real sshd on loopback, and the shipped Slurm batch script on a real one-node Slurm
// (munged, slurmctld, slurmd). The daemons run in the foreground with their own configuration
// and ports, and are stopped when the test ends, whatever its outcome. Needs root and the Debian
// packages openssh-server, openssh-client, slurm-wlm and munge (scripts/setup); skipped, saying
// why, without them or when a daemon cannot be started here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "tests/cluster/cluster_util.h"
#include "tests/deploy/daemon_util.h"

namespace kvfleet::test {
namespace {

using std::chrono::seconds;

// One greedy request on the tiny model; its status.
int one_completion(const std::string& url) {
  json body;
  body["model"] = "tiny";
  body["prompt"] = std::vector<std::int32_t>{10, 20, 30, 40, 50, 60, 70, 80};
  body["max_tokens"] = 6;
  body["temperature"] = 0;
  body["ignore_eos"] = true;
  const Completion c = complete(url, body, false);
  EXPECT_EQ(c.tokens.size(), 6u) << c.error.dump();
  return c.status;
}

TEST(SshLaunch, ClusterStartStatusStopOverARealSshd) {
  if (::geteuid() != 0) GTEST_SKIP() << "sshd with its own configuration needs root";
  for (const char* p : {"/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"}) {
    if (!have_program(p)) GTEST_SKIP() << p << " is missing (openssh-server, openssh-client)";
  }
  TempDir dir;
  const std::string d = dir.path();
  // Throwaway keys: the server's host key and the client's key it accepts.
  ASSERT_EQ(
      run_command("ssh-keygen -q -t ed25519 -N '' -f " + d +
                  "/host_key && ssh-keygen -q -t ed25519 -N '' -f " + d + "/client_key && cp " + d +
                  "/client_key.pub " + d + "/authorized_keys && mkdir -p /run/sshd")
          .exit_code,
      0);
  const std::string ssh_options =
      "[-i, " + d + "/client_key, -o, BatchMode=yes, -o, StrictHostKeyChecking=no, " +
      "-o, UserKnownHostsFile=/dev/null, -o, IdentitiesOnly=yes, -o, LogLevel=ERROR, " +
      "-o, ConnectTimeout=5";
  std::uint16_t ssh_port = 0;
  std::unique_ptr<Daemon> sshd;
  auto ssh_ok = [&] {
    return run_command("ssh -p " + std::to_string(ssh_port) + " -i " + d +
                       "/client_key -o BatchMode=yes -o StrictHostKeyChecking=no -o "
                       "UserKnownHostsFile=/dev/null "
                       "-o IdentitiesOnly=yes -o LogLevel=ERROR 127.0.0.1 true")
               .exit_code == 0;
  };
  for (int attempt = 0; attempt < 3 && !sshd; ++attempt) {  // the port may be taken meanwhile
    ssh_port = unused_port();
    dir.write("sshd_config",
              "Port " + std::to_string(ssh_port) + "\nListenAddress 127.0.0.1\nHostKey " + d +
                  "/host_key\nPidFile " + d + "/sshd.pid\nAuthorizedKeysFile " + d +
                  "/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                  "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPrintMotd no\n");
    sshd = std::make_unique<Daemon>(
        std::vector<std::string>{"/usr/sbin/sshd", "-D", "-e", "-f", d + "/sshd_config"},
        d + "/sshd.log");
    if (!wait_until([&] { return !sshd->running() || ssh_ok(); }, seconds(10)) || !sshd->running())
      sshd.reset();
  }
  if (!sshd) GTEST_SKIP() << "cannot start sshd here; its log:\n" << slurp(d + "/sshd.log");

  // Two groups of one role on one host: distinct worker ids and log files.
  const std::uint16_t port = unused_port_pair();  // the coordinator's internal port is port + 1
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  const std::string file =
      dir.write("cluster.yaml",
                "model: tiny\nmode: colocated\nenv: {UCX_TLS: tcp}\n"
                "launch:\n  method: ssh\n  ssh_options: " +
                    ssh_options + ", -p, " + std::to_string(ssh_port) +
                    "]\n  binary: " + KVFLEET_BINARY + "\n  log_dir: " + d +
                    "/logs\n  timeout_seconds: 40\n"
                    "coordinator: {host: 127.0.0.1, address: 127.0.0.1, port: " +
                    std::to_string(port) +
                    "}\n"
                    "workers:\n  - {host: 127.0.0.1, role: both, kv_blocks: 64}\n"
                    "  - {host: 127.0.0.1, role: both, kv_blocks: 64}\n");
  const std::string kv = std::string(KVFLEET_BINARY) + " cluster ";
  std::vector<long> pids;
  struct StopCluster {  // on any exit: stop the cluster, then kill what remains of it
    std::string cmd;
    std::vector<long>& pids;
    ~StopCluster() {
      run_command(cmd);
      for (long p : pids) {
        if (pid_running(p)) ::kill(static_cast<pid_t>(p), SIGKILL);
      }
    }
  } stop_cluster{kv + "stop --file " + file, pids};

  const auto started = run_command(kv + "start --file " + file);
  ASSERT_EQ(started.exit_code, 0) << started.err << "\nsshd:\n" << sshd->log();
  EXPECT_NE(started.out.find("2 workers ready"), std::string::npos) << started.out;
  const json state = json::parse(slurp(file + ".state.json"), nullptr, false);
  ASSERT_TRUE(state.contains("processes")) << state.dump();
  for (const json& p : state["processes"]) pids.push_back(p["pid"].get<long>());
  ASSERT_EQ(pids.size(), 3u);
  for (long p : pids) EXPECT_TRUE(pid_running(p)) << p;

  const auto status = run_command(kv + "status --file " + file);
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("both-127.0.0.1-0"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("both-127.0.0.1-1"), std::string::npos) << status.out;
  EXPECT_NE(slurp(d + "/logs/both-127.0.0.1-0.log"), "");
  EXPECT_NE(slurp(d + "/logs/both-127.0.0.1-1.log"), "");
  EXPECT_EQ(one_completion(url), 200);

  const auto stopped = run_command(kv + "stop --file " + file);
  EXPECT_EQ(stopped.exit_code, 0) << stopped.err;
  EXPECT_NE(stopped.out.find("stopped 3 processes"), std::string::npos) << stopped.out;
  for (long p : pids) EXPECT_FALSE(pid_running(p)) << p;
  EXPECT_FALSE(listening(port));
  sshd->stop();
  EXPECT_FALSE(listening(ssh_port));
}

// A one-node Slurm: munged with a throwaway key, slurmctld and slurmd on free ports.
class OneNodeSlurm {
 public:
  explicit OneNodeSlurm(const TempDir& dir) : d_(dir.path()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    node_ = std::string(host).substr(0, std::string(host).find('.'));
    ::chmod(d_.c_str(), 0711);  // munged wants its socket's folder searchable by all
    run_command("head -c 1024 /dev/urandom > " + d_ + "/munge.key && chmod 600 " + d_ +
                "/munge.key && mkdir -p " + d_ + "/state " + d_ + "/spool");
    munged_ = std::make_unique<Daemon>(
        std::vector<std::string>{
            "/usr/sbin/munged", "-F", "--force", "--key-file=" + d_ + "/munge.key",
            "--socket=" + d_ + "/munge.sock", "--pid-file=" + d_ + "/munged.pid",
            "--seed-file=" + d_ + "/munged.seed", "--log-file=" + d_ + "/munged.log"},
        d_ + "/munged.out");
    if (!wait_until(
            [&] {
              return !munged_->running() || ::access((d_ + "/munge.sock").c_str(), F_OK) == 0;
            },
            seconds(10)) ||
        !munged_->running()) {
      why_ = "munged did not start:\n" + munged_->log();
      return;
    }
    ctld_port_ = unused_port();
    slurmd_port_ = unused_port();
    const std::string cpus = std::to_string(std::max(1u, std::thread::hardware_concurrency()));
    dir.write("slurm.conf",
              "ClusterName=kvfleettest\nSlurmctldHost=" + node_ + "(127.0.0.1)\nSlurmctldPort=" +
                  std::to_string(ctld_port_) + "\nSlurmdPort=" + std::to_string(slurmd_port_) +
                  "\nSlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\nCredType=cred/munge\n"
                  "AuthInfo=socket=" +
                  d_ + "/munge.sock\nStateSaveLocation=" + d_ + "/state\nSlurmdSpoolDir=" + d_ +
                  "/spool\nSlurmctldPidFile=" + d_ + "/slurmctld.pid\nSlurmdPidFile=" + d_ +
                  "/slurmd.pid\n"
                  "SlurmctldLogFile=" +
                  d_ + "/slurmctld.log\nSlurmdLogFile=" + d_ +
                  "/slurmd.log\n"
                  "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/"
                  "none\nJobAcctGatherType=jobacct_gather/none\n"
                  "AccountingStorageType=accounting_storage/none\nJobCompType=jobcomp/none\n"
                  "SelectType=select/"
                  "cons_tres\nSelectTypeParameters=CR_CPU\nMpiDefault=none\nReturnToService=2\n"
                  "KillWait=10\nNodeName=" +
                  node_ + " NodeAddr=127.0.0.1 CPUs=" + cpus +
                  " State=UNKNOWN\n"
                  "PartitionName=test Nodes=" +
                  node_ + " Default=YES MaxTime=INFINITE State=UP\n");
    ::setenv("SLURM_CONF", (d_ + "/slurm.conf").c_str(), 1);
    ctld_ = std::make_unique<Daemon>(
        std::vector<std::string>{"/usr/sbin/slurmctld", "-D", "-i", "-f", d_ + "/slurm.conf"},
        d_ + "/slurmctld.out");
    slurmd_ = std::make_unique<Daemon>(
        std::vector<std::string>{"/usr/sbin/slurmd", "-D", "-f", d_ + "/slurm.conf", "-N", node_},
        d_ + "/slurmd.out");
    if (!wait_until(
            [&] {
              return !ctld_->running() || !slurmd_->running() ||
                     run_command("sinfo -h -N -o %T").out == "idle\n";
            },
            seconds(30)) ||
        !ctld_->running() || !slurmd_->running()) {
      why_ = "slurmctld and slurmd did not bring the node up:\n" + logs();
    }
  }
  ~OneNodeSlurm() {
    // Jobs first (their steps run outside the daemons), then the daemons.
    if (ctld_ && ctld_->running()) {
      run_command("scancel --user root");
      wait_until([] { return run_command("squeue -h").out.empty(); }, seconds(40));
    }
    slurmd_.reset();
    ctld_.reset();
    munged_.reset();
    ::unsetenv("SLURM_CONF");
  }
  const std::string& why_not_up() const { return why_; }
  std::string logs() const {
    return "--- slurmctld\n" + slurp(d_ + "/slurmctld.out") + "--- slurmd\n" +
           slurp(d_ + "/slurmd.out");
  }
  std::vector<std::uint16_t> ports() const { return {ctld_port_, slurmd_port_}; }

 private:
  std::string d_, node_, why_;
  std::uint16_t ctld_port_ = 0, slurmd_port_ = 0;
  std::unique_ptr<Daemon> munged_, ctld_, slurmd_;
};

TEST(SlurmLaunch, TheBatchScriptRunsAHealthyClusterThatAnswersAndStopsOnScancel) {
  if (::geteuid() != 0) GTEST_SKIP() << "slurmd and munged with their own configuration need root";
  for (const char* p :
       {"/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch"}) {
    if (!have_program(p)) GTEST_SKIP() << p << " is missing (slurm-wlm, munge)";
  }
  TempDir dir;
  std::vector<std::uint16_t> daemon_ports;
  const std::uint16_t port = unused_port_pair();  // the coordinator's internal port is port + 1
  {
    OneNodeSlurm slurm(dir);
    if (!slurm.why_not_up().empty())
      GTEST_SKIP() << "cannot run Slurm here: " << slurm.why_not_up();
    daemon_ports = slurm.ports();
    // The script finds the node's routable address; a machine with none gets loopback.
    const bool routable =
        run_command("ip -4 route get 1.1.1.1").exit_code == 0 ||
        run_command("hostname -I | tr ' ' '\\n' | grep -Evq '^(127\\.|::1$|$)'").exit_code == 0;
    const std::string out = dir.path() + "/job.out";
    const auto submitted =
        run_command(std::string(routable ? "" : "KVFLEET_ADDRESS=127.0.0.1 ") +
                    "KVFLEET=" + KVFLEET_BINARY + " MODEL=tiny PORT=" + std::to_string(port) +
                    " WORKER_ARGS='--kv-blocks 64 --host-kv-bytes 0' HEALTH_TIMEOUT=60 sbatch "
                    "--parsable --nodes=1 --time=5 "
                    "--chdir=" +
                    dir.path() + " --output=" + out + " " + KVFLEET_SOURCE_DIR +
                    "/deploy/slurm/kvfleet.sbatch");
    ASSERT_EQ(submitted.exit_code, 0) << submitted.err << slurm.logs();
    const std::string job = submitted.out.substr(0, submitted.out.find_first_of(";\n"));
    // The cluster's processes: the coordinator (--port PORT) and the workers (URL:PORT).
    auto cluster_pids = [&] {
      std::vector<long> a = pids_mentioning("--port " + std::to_string(port) + " ");
      for (long p : pids_mentioning(":" + std::to_string(port))) a.push_back(p);
      // Workers name the coordinator's internal listener (port + 1).
      for (long p : pids_mentioning(":" + std::to_string(port + 1))) a.push_back(p);
      return a;
    };
    auto job_listed = [&] { return !run_command("squeue -h -j " + job).out.empty(); };
    std::string url;
    wait_until(
        [&] {
          const std::string o = slurp(out);
          const auto at = o.find("kvfleet ready at ");
          if (at != std::string::npos) url = o.substr(at + 17, o.find('\n', at) - at - 17);
          return !url.empty() || !job_listed();
        },
        seconds(90));
    ASSERT_FALSE(url.empty()) << "job output:\n" << slurp(out) << slurm.logs();
    EXPECT_EQ(url.find("127.0.0.1"), routable ? std::string::npos : 0u) << url;
    EXPECT_EQ(cluster_pids().size(), 3u) << "coordinator, prefill and decode worker";
    EXPECT_EQ(one_completion(url), 200);
    EXPECT_EQ(run_command("curl -sf " + url + "/health").exit_code, 0);

    // scancel: the script's trap stops every step, and the job ends.
    ASSERT_EQ(run_command("scancel " + job).exit_code, 0);
    EXPECT_TRUE(wait_until([&] { return !job_listed(); }, seconds(40))) << slurp(out);
    EXPECT_TRUE(wait_until([&] { return cluster_pids().empty(); }, seconds(10))) << slurp(out);
    EXPECT_FALSE(listening(port));
    EXPECT_NE(slurp(out).find("stopping"), std::string::npos) << slurp(out);
    for (long p : cluster_pids()) ::kill(static_cast<pid_t>(p), SIGKILL);
  }
  // The daemons are gone with their ports.
  for (std::uint16_t p : daemon_ports) EXPECT_FALSE(listening(p)) << p;
}

}  // namespace
}  // namespace kvfleet::test
