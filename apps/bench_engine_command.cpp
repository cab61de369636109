#include "apps/bench_engine_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>

#include "apps/bench_engine_internal.h"
#include "apps/exit_code.h"
#include "common/checksum.h"
#include "common/units.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged_attention.h"
#include "kvstore/host_memory.h"
#include "kvstore/host_store.h"
#include "perfmodel/estimate.h"
#include "worker/model.h"

namespace kvfleet::apps {
namespace engine_bench {
namespace {

double now(TimeBase base) {
  if (base == TimeBase::kThreadCpu) {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

double time_seconds(const Sampling& sampling, const std::function<void()>& fn) {
  const double t0 = now(sampling.base);
  fn();
  const double first = now(sampling.base) - t0;
  const bool long_run = first > 1.0;
  std::vector<double> t;
  if (long_run) t.push_back(first);  // else the first run was the warm-up
  const std::int64_t runs = std::max<std::int64_t>(
      long_run ? std::min<std::int64_t>(sampling.repeats, 3) : sampling.repeats, 1);
  while (static_cast<std::int64_t>(t.size()) < runs) {
    const double t1 = now(sampling.base);
    fn();
    t.push_back(now(sampling.base) - t1);
  }
  std::sort(t.begin(), t.end());
  return sampling.statistic == Statistic::kMinimum ? t.front() : t[t.size() / 2];
}

std::size_t InterleavedTimer::add(std::string name, std::function<void()> fn, bool primed) {
  jobs_.push_back({std::move(name), std::move(fn), {}, 0, primed});
  return jobs_.size() - 1;
}

void InterleavedTimer::run(const std::function<void(const std::string&)>& progress) {
  std::int64_t rounds = 0;
  for (Job& job : jobs_) {
    progress("warm-up: " + job.name);
    const double t0 = now(sampling_.base);
    job.fn();
    const double first = now(sampling_.base) - t0;
    const bool long_run = first > 1.0;
    if (long_run) job.samples.push_back(first);
    job.primed = job.primed && !long_run;
    job.runs = std::max<std::int64_t>(
        long_run ? std::min<std::int64_t>(sampling_.repeats, 3) : sampling_.repeats, 1);
    rounds = std::max(rounds, job.runs);
  }
  for (std::int64_t r = 0; r < rounds; ++r) {
    progress("round " + std::to_string(r + 1) + " of " + std::to_string(rounds));
    for (Job& job : jobs_) {
      if (static_cast<std::int64_t>(job.samples.size()) >= job.runs) continue;
      if (job.primed) job.fn();
      const double t0 = now(sampling_.base);
      job.fn();
      job.samples.push_back(now(sampling_.base) - t0);
    }
  }
}

double InterleavedTimer::seconds(std::size_t job) const {
  std::vector<double> t = jobs_[job].samples;
  if (t.empty()) return 0;
  std::sort(t.begin(), t.end());
  return sampling_.statistic == Statistic::kMinimum ? t.front() : t[t.size() / 2];
}

double median_seconds(std::int64_t repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (std::int64_t i = 0; i < std::max<std::int64_t>(repeats, 1); ++i) {
    const double t0 = now(TimeBase::kWall);
    fn();
    t.push_back(now(TimeBase::kWall) - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// (ThreadSanitizer builds skip the AVX2 clone: its ifunc resolver runs before the sanitizer's
// runtime is set up and crashes the binary at load time.)
#if defined(__SANITIZE_THREAD__)
#define KVFLEET_READ_SUM_CLONES
#else
#define KVFLEET_READ_SUM_CLONES __attribute__((target_clones("avx2", "default")))
#endif
KVFLEET_READ_SUM_CLONES float read_sum(const float* p, std::size_t n) {
  // Sixteen independent sums: a single chain would measure add latency, not bandwidth.
  float acc[16] = {};
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
  }
  float s = 0;
  for (float a : acc) s += a;
  for (; i < n; ++i) s += p[i];
  return s;
}

Result<MemoryRates> measure_memory(std::size_t bytes, const Sampling& sampling) {
  KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer src, kvstore::allocate_host_buffer(bytes));
  KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer dst, kvstore::allocate_host_buffer(bytes));
  std::memset(src.data(), 1, bytes);
  std::memset(dst.data(), 2, bytes);
  MemoryRates r;
  r.memcpy = static_cast<double>(bytes) /
             time_seconds(sampling, [&] { std::memcpy(dst.data(), src.data(), bytes); });
  volatile float sink = 0;
  r.read = static_cast<double>(bytes) / time_seconds(sampling, [&] {
             sink = sink + read_sum(reinterpret_cast<const float*>(src.data()), bytes / 4);
           });
  (void)sink;
  return r;
}

}  // namespace engine_bench

namespace {

using nlohmann::json;

using engine_bench::median_seconds;
using engine_bench::read_sum;

struct Row {
  std::string name;
  double measured = 0;
  std::string unit;
  std::string baseline_name;
  double baseline = 0;
  double ratio = 0;   // measured relative to the baseline (1.0 = as fast as the baseline)
  double target = 0;  // 0: no target
  std::string note;
};

std::string fmt(double v, const std::string& unit) {
  if (unit == "B/s") return format_rate_bytes(v);
  if (unit == "FLOP/s") return format_flops(v);
  if (unit == "s") return format_seconds(v);
  return format_number(v, 4) + " " + unit;
}

Status bench(const BenchEngineOptions& o, std::ostream& out, std::ostream& err) {
  if (!o.profile.empty() || !o.check_profile.empty()) {
    if (o.repeats < 1) return invalid_argument("bench engine: --repeats must be positive");
    if (o.threads < 1) return invalid_argument("bench engine: --threads must be positive");
    if (!o.profile.empty()) KVFLEET_RETURN_IF_ERROR(write_engine_profile(o, out, err));
    if (!o.check_profile.empty()) KVFLEET_RETURN_IF_ERROR(check_engine_profile(o, out, err));
    return Status::ok();
  }
  if (o.context < 16 || o.prefill_tokens < 1 || o.decode_context < 1 || o.repeats < 1) {
    return invalid_argument("bench engine: sizes and --repeats must be positive");
  }
  std::vector<std::int64_t> batches;
  {
    std::string_view rest(o.decode_batches);
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      auto b = parse_positive_count(rest.substr(0, comma));
      if (!b.is_ok()) return b.status().with_context("--decode-batches");
      batches.push_back(*b);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  kernels::cpu::set_blas_threads(1);  // one core for every figure: like for like
  KVFLEET_ASSIGN_OR_RETURN(ModelSpec spec, load_model_spec("small"));
  std::vector<Row> rows;
  std::mt19937_64 rng(1);
  auto progress = [&](const std::string& what) {
    err << "bench engine: " << what << "\n" << std::flush;
  };

  // --- Memory baselines --------------------------------------------------------------------
  progress("memory baselines (memcpy, read pass)");
  KVFLEET_ASSIGN_OR_RETURN(const engine_bench::MemoryRates mem,
                           engine_bench::measure_memory(512u << 20, {o.repeats}));
  const double memcpy_bw = mem.memcpy;
  const double read_bw = mem.read;
  rows.push_back({"memcpy bandwidth (baseline)", memcpy_bw, "B/s", "", 0, 0, 0,
                  "counts bytes copied; each is read and written"});
  rows.push_back({"read bandwidth (baseline)", read_bw, "B/s", "", 0, 0, 0,
                  "one core summing a 512 MiB array"});

  // --- Decode attention over a long context ------------------------------------------------
  progress("decode attention over " + std::to_string(o.context) + " tokens");
  {
    kernels::KvLayout layout;
    layout.num_layers = spec.num_layers;
    layout.num_kv_heads = spec.num_kv_heads;
    layout.head_dim = spec.head_dim;
    layout.block_tokens = 16;
    layout.dtype = DType::kFp32;
    const std::int64_t blocks = layout.blocks_for_tokens(o.context);
    KVFLEET_ASSIGN_OR_RETURN(
        kvstore::HostBuffer pool,
        kvstore::allocate_host_buffer(static_cast<std::size_t>(blocks) * layout.block_bytes()));
    {
      auto* f = reinterpret_cast<float*>(pool.data());
      std::uniform_real_distribution<float> u(-1, 1);
      const std::size_t n = static_cast<std::size_t>(blocks) * layout.block_bytes() / 4;
      for (std::size_t i = 0; i < n; i += 97) f[i] = u(rng);
    }
    std::vector<std::int32_t> table(static_cast<size_t>(blocks));
    for (std::int64_t i = 0; i < blocks; ++i)
      table[static_cast<size_t>(i)] = static_cast<std::int32_t>(i);
    std::shuffle(table.begin(), table.end(), rng);  // paged: blocks scattered in the pool
    std::vector<float> q(static_cast<size_t>(spec.num_heads * spec.head_dim), 0.1f);
    std::vector<float> att(q.size());
    kernels::cpu::AttentionScratch scratch;
    const double t = median_seconds(o.repeats, [&] {
      for (std::int64_t l = 0; l < spec.num_layers; ++l) {
        kernels::cpu::paged_attention(layout, pool.data(), l, table, q.data(), 1, o.context - 1,
                                      spec.num_heads, 0.125f, att.data(), scratch);
      }
    });
    const double bytes =
        static_cast<double>(layout.bytes_per_token()) * static_cast<double>(o.context);
    const double bw = bytes / t;
    rows.push_back(
        {"decode attention read bandwidth", bw, "B/s", "memcpy", memcpy_bw, bw / memcpy_bw, 0.6,
         format_bytes(bytes) + " of KV (small, all layers) per step, " + format_seconds(t)});
    rows.push_back({"decode attention vs read pass", bw, "B/s", "read pass", read_bw, bw / read_bw,
                    0, "the stricter baseline: reading without writing"});
  }

  // --- Prefill: the whole forward pass vs BLAS alone on the same GEMM shapes ----------------
  progress("prefill of " + std::to_string(o.prefill_tokens) + " tokens through small");
  KVFLEET_ASSIGN_OR_RETURN(auto model, worker::Model::random(spec, 7));
  double gemm_flops_rate = 0;
  {
    const std::int64_t T = o.prefill_tokens;
    const auto layout = model->kv_layout(16, DType::kFp32);
    const std::int64_t blocks = layout.blocks_for_tokens(T);
    KVFLEET_ASSIGN_OR_RETURN(
        kvstore::HostBuffer pool,
        kvstore::allocate_host_buffer(static_cast<std::size_t>(blocks) * layout.block_bytes()));
    std::vector<std::int32_t> table(static_cast<size_t>(blocks));
    for (std::int64_t i = 0; i < blocks; ++i)
      table[static_cast<size_t>(i)] = static_cast<std::int32_t>(i);
    std::vector<std::int32_t> tokens(static_cast<size_t>(T));
    for (auto& t : tokens) t = static_cast<std::int32_t>(rng() % 256);
    worker::Workspace ws;
    std::vector<float> logits;
    const worker::SeqChunk chunk{tokens, 0, table, worker::LogitsWanted::kLast};
    const double t_forward = median_seconds(o.repeats, [&] {
      logits.clear();
      model->forward(std::span(&chunk, 1), layout, pool.data(), ws, logits);
    });
    // The same GEMMs, straight to the BLAS: (out, in) of every linear layer.
    const std::int64_t d = spec.hidden_size, q = spec.num_heads * spec.head_dim;
    const std::int64_t kv = spec.num_kv_heads * spec.head_dim, f = spec.intermediate_size;
    const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {
        {q, d}, {kv, d}, {kv, d}, {d, q}, {f, d}, {f, d}, {d, f}};
    std::int64_t max_elems = 0;
    for (auto [n, k] : shapes) max_elems = std::max({max_elems, n * k, T * k, T * n});
    std::vector<float> a(static_cast<size_t>(max_elems), 0.5f),
        w(static_cast<size_t>(max_elems), 0.25f), c(static_cast<size_t>(max_elems));
    double flops = 0;
    for (auto [n, k] : shapes) flops += 2.0 * static_cast<double>(T * n * k);
    flops *= static_cast<double>(spec.num_layers);
    const double t_gemm = median_seconds(o.repeats, [&] {
      for (std::int64_t l = 0; l < spec.num_layers; ++l) {
        for (auto [n, k] : shapes)
          kernels::cpu::linear(c.data(), a.data(), w.data(), nullptr, T, n, k);
      }
    });
    gemm_flops_rate = flops / t_gemm;
    rows.push_back({"prefill GEMM rate in the forward pass", flops / t_forward, "FLOP/s",
                    "BLAS alone, same shapes", gemm_flops_rate, t_gemm / t_forward, 0.7,
                    std::to_string(T) + " tokens: forward " + format_seconds(t_forward) +
                        ", its GEMMs alone " + format_seconds(t_gemm)});
  }

  // --- Spill / restore through the host KV store --------------------------------------------
  progress("spill and restore through the host KV store");
  {
    const auto layout = model->kv_layout(16, DType::kFp32);
    const std::size_t bb = layout.block_bytes();
    const std::int32_t device_blocks = static_cast<std::int32_t>((256u << 20) / bb);
    KVFLEET_ASSIGN_OR_RETURN(
        kvstore::HostBuffer device,
        kvstore::allocate_host_buffer(static_cast<std::size_t>(device_blocks) * bb));
    std::memset(device.data(), 3, static_cast<std::size_t>(device_blocks) * bb);
    // A fragmented sequence: every other device block (no two adjacent, one copy per block).
    std::vector<kvstore::BlockId> ids;
    for (std::int32_t b = 0; b < device_blocks; b += 2) ids.push_back(b);
    const double bytes = static_cast<double>(ids.size() * bb);
    // Spill and restore times of a store with checksums (the default: each block hashed as it
    // is copied, verified on restore) or without.
    auto measure = [&](bool checksums) -> Result<std::pair<double, double>> {
      kvstore::HostKvStoreConfig hc;
      hc.capacity_bytes = static_cast<std::size_t>(device_blocks) * bb;
      hc.block_bytes = bb;
      hc.high_watermark = 1.0;
      hc.low_watermark = 1.0;
      hc.checksums = checksums;
      KVFLEET_ASSIGN_OR_RETURN(auto store, kvstore::HostKvStore::create(hc));
      std::vector<kvstore::BlockId> host_ids;
      const double t_out = median_seconds(o.repeats, [&] {
        if (!host_ids.empty()) store->release(host_ids);
        host_ids = *store->spill(device.data(), ids);
      });
      Status restored;
      const double t_in = median_seconds(
          o.repeats, [&] { restored = store->restore(host_ids, device.data(), ids); });
      KVFLEET_RETURN_IF_ERROR(restored.with_context("restore"));
      store->release(host_ids);
      return std::make_pair(t_out, t_in);
    };
    KVFLEET_ASSIGN_OR_RETURN(const auto plain, measure(false));
    KVFLEET_ASSIGN_OR_RETURN(const auto checked, measure(true));
    const auto [t_out, t_in] = checked;
    rows.push_back({"spill (device -> host) throughput", bytes / t_out, "B/s", "memcpy", memcpy_bw,
                    bytes / t_out / memcpy_bw, 0.7,
                    std::to_string(ids.size()) + " scattered blocks of " +
                        format_bytes(static_cast<double>(bb)) + ", checksummed"});
    rows.push_back({"restore (host -> device) throughput", bytes / t_in, "B/s", "memcpy", memcpy_bw,
                    bytes / t_in / memcpy_bw, 0.7, "checksums verified"});
    const double t_plain = plain.first + plain.second, t_checked = t_out + t_in;
    rows.push_back(
        {"spill + restore with checksums", 2 * bytes / t_checked, "B/s",
         "the same without checksums", 2 * bytes / t_plain, t_plain / t_checked, 0.95,
         "checksums (" + std::string(checksum_implementation()) + ") add " +
             std::to_string(static_cast<int>(std::lround(100 * (t_checked / t_plain - 1)))) +
             "% to spill + restore time"});
  }

  // --- Decode tokens/s of small vs its roofline and the analytical model --------------------
  perfmodel::HardwareSpec here;
  here.name = "this machine (1 core, measured)";
  here.hbm_bytes = 16.0 * (1ull << 30);
  here.hbm_bandwidth = read_bw;
  here.flops[DType::kFp32] = gemm_flops_rate;
  here.flops[DType::kTf32] = gemm_flops_rate;
  here.pcie_bandwidth = memcpy_bw;
  for (std::int64_t batch : batches) {
    progress("decode of small at batch " + std::to_string(batch) + ", context " +
             std::to_string(o.decode_context));
    const auto layout = model->kv_layout(16, DType::kFp32);
    const std::int64_t per_seq = layout.blocks_for_tokens(o.decode_context + 64);
    KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer pool,
                             kvstore::allocate_host_buffer(
                                 static_cast<std::size_t>(per_seq * batch) * layout.block_bytes()));
    std::vector<std::vector<std::int32_t>> tables(static_cast<size_t>(batch)),
        seqs(static_cast<size_t>(batch));
    worker::Workspace ws;
    std::vector<float> logits;
    for (std::int64_t b = 0; b < batch; ++b) {
      for (std::int64_t i = 0; i < per_seq; ++i) {
        tables[static_cast<size_t>(b)].push_back(static_cast<std::int32_t>(b * per_seq + i));
      }
      seqs[static_cast<size_t>(b)].resize(static_cast<size_t>(o.decode_context));
      for (auto& t : seqs[static_cast<size_t>(b)]) t = static_cast<std::int32_t>(rng() % 256);
      const worker::SeqChunk c{
          std::span(seqs[static_cast<size_t>(b)]).first(static_cast<size_t>(o.decode_context - 1)),
          0, tables[static_cast<size_t>(b)], worker::LogitsWanted::kNone};
      model->forward(std::span(&c, 1), layout, pool.data(), ws, logits);
    }
    // Each timed step decodes the last token of every sequence at position context - 1.
    std::vector<worker::SeqChunk> step(static_cast<size_t>(batch));
    for (std::int64_t b = 0; b < batch; ++b) {
      step[static_cast<size_t>(b)] = {std::span(seqs[static_cast<size_t>(b)]).last(1),
                                      o.decode_context - 1, tables[static_cast<size_t>(b)],
                                      worker::LogitsWanted::kLast};
    }
    const double t_step = median_seconds(std::max<std::int64_t>(o.repeats, 5), [&] {
      logits.clear();
      model->forward(step, layout, pool.data(), ws, logits);
    });
    const double weights_read =
        static_cast<double>(model->weight_bytes()) -
        static_cast<double>(spec.vocab_size * spec.hidden_size) * 4.0;  // embedding: a gather
    const double kv_read = static_cast<double>(batch) * static_cast<double>(o.decode_context) *
                           static_cast<double>(layout.bytes_per_token());
    const double roofline = (weights_read + kv_read) / read_bw;
    const double tokens_per_s = static_cast<double>(batch) / t_step;
    rows.push_back({"decode tokens/s, small, batch " + std::to_string(batch), tokens_per_s, "tok/s",
                    "roofline (weights + KV) / read bandwidth",
                    static_cast<double>(batch) / roofline, roofline / t_step, 0,
                    "step " + format_seconds(t_step) + ", roofline " + format_seconds(roofline)});
    perfmodel::Deployment dep;
    perfmodel::Workload w;
    w.context_tokens = o.decode_context;
    w.decode_tokens = 1;
    w.batch = batch;
    auto predicted = perfmodel::estimate(spec, here, dep, w);
    if (predicted.is_ok()) {
      rows.push_back({"decode step, small, batch " + std::to_string(batch) + ": measured vs plan",
                      t_step, "s", "kvfleet plan on measured bandwidth/FLOP/s",
                      predicted->decode_seconds_per_token,
                      predicted->decode_seconds_per_token / t_step, 0,
                      std::string("predicted bound: ") +
                          std::string(perfmodel::bound_name(predicted->decode_step.bound))});
    }
  }

  if (o.json) {
    json list = json::array();
    for (const Row& r : rows) {
      list.push_back({{"name", r.name},
                      {"measured", r.measured},
                      {"unit", r.unit},
                      {"baseline_name", r.baseline_name},
                      {"baseline", r.baseline},
                      {"ratio", r.ratio},
                      {"target", r.target},
                      {"note", r.note}});
    }
    out << list.dump(2) << "\n";
    return Status::ok();
  }
  out << "kvfleet bench engine (one core; ratios are measured / baseline from this run)\n\n";
  for (const Row& r : rows) {
    out << "  " << r.name << ": " << fmt(r.measured, r.unit);
    if (!r.baseline_name.empty()) {
      char ratio[32];
      std::snprintf(ratio, sizeof ratio, "%.2f", r.ratio);
      out << "  | " << r.baseline_name << " " << fmt(r.baseline, r.unit) << "  | ratio " << ratio;
      if (r.target > 0)
        out << (r.ratio >= r.target ? " (target >= " : " (BELOW target ") << r.target << ")";
    }
    if (!r.note.empty()) out << "\n      " << r.note;
    out << "\n";
  }
  return Status::ok();
}

}  // namespace

CLI::App* add_bench_engine_command(CLI::App& bench, BenchEngineOptions& o) {
  CLI::App* cmd = bench.add_subcommand("engine", "Micro-benchmarks of the cpu engine vs baselines");
  cmd->add_option("--context", o.context, "KV tokens for decode attention")->capture_default_str();
  cmd->add_option("--prefill-tokens", o.prefill_tokens, "Prompt tokens for prefill")
      ->capture_default_str();
  cmd->add_option("--decode-context", o.decode_context, "Context per sequence for decode")
      ->capture_default_str();
  cmd->add_option("--decode-batches", o.decode_batches, "Decode batch sizes")
      ->capture_default_str();
  cmd->add_option("--repeats", o.repeats, "Runs per figure (median)")->capture_default_str();
  cmd->add_flag("--json", o.json, "Print JSON rows");
  cmd->add_option("--profile", o.profile,
                  "Measure this machine's kernels and write a hardware profile (YAML) here");
  cmd->add_option("--check-profile", o.check_profile,
                  "Compare a profile's step predictions with the forward pass on a grid");
  cmd->add_option("--model", o.model, "Model whose kernels --profile/--check-profile measure")
      ->capture_default_str();
  cmd->add_option("--threads", o.threads, "BLAS threads for --profile/--check-profile")
      ->capture_default_str();
  cmd->add_flag("--wall-clock", o.wall_clock,
                "--profile/--check-profile: time by the wall clock, not the thread's CPU time");
  cmd->add_flag("--fastest", o.fastest,
                "--profile/--check-profile: the fastest of the runs stands for a figure, not the "
                "median (for machines whose other cores are busy)");
  cmd->add_option("--large-kv-bytes", o.large_kv_bytes,
                  "--profile: KV footprint of the second decode-attention rate (0: none)")
      ->capture_default_str();
  cmd->add_option("--gemm-tokens", o.gemm_tokens,
                  "--profile: tokens per step of the GEMM efficiency table (first 1)")
      ->capture_default_str();
  cmd->add_option("--check-batches", o.check_batches, "--check-profile: decode batch sizes")
      ->capture_default_str();
  cmd->add_option("--check-contexts", o.check_contexts, "--check-profile: decode contexts")
      ->capture_default_str();
  cmd->add_option("--check-prefill", o.check_prefill, "--check-profile: prompt lengths")
      ->capture_default_str();
  cmd->add_option("--chunk-tokens", o.chunk_tokens,
                  "--check-profile: tokens per step of chunked prefill")
      ->capture_default_str();
  return cmd;
}

int run_bench_engine(const BenchEngineOptions& opts, std::ostream& out, std::ostream& err) {
  return finish_command("bench engine", bench(opts, out, err), err);
}

}  // namespace kvfleet::apps
