// `kvfleet bench engine --profile FILE` and `--check-profile FILE`.
//
// The profile measures each kernel class of the cpu engine in isolation on one model's own
// shapes and fits the calibrated step model's factors (docs/PERFMODEL.md):
//   linear layers alone at 1..4096 tokens per step    -> weight_read_efficiency, gemm table
//   decode attention over contexts, cold KV            -> kv_read_efficiency, call overhead
//   prefill attention at several lengths               -> prefill_attention_efficiency
//   spill/restore through the host KV store vs memcpy  -> swap_efficiency
//   a few whole forward passes                         -> step and per-token overheads (residual)
// The check runs decode and prefill steps through worker::Model::forward and prints what the
// step model predicts for each beside what it measured.
#include <sys/utsname.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>

#include "apps/bench_engine_command.h"
#include "apps/bench_engine_internal.h"
#include "apps/version.h"
#include "common/model_spec.h"
#include "common/units.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged_attention.h"
#include "kvstore/host_memory.h"
#include "kvstore/host_store.h"
#include "perfmodel/hardware.h"
#include "perfmodel/step_model.h"
#include "worker/model.h"

namespace kvfleet::apps {
namespace {

using engine_bench::TimeBase;
using nlohmann::json;

using engine_bench::Sampling;
using engine_bench::Statistic;

// How every figure is timed: `repeats` runs, on the thread's CPU clock when the BLAS runs on
// this one thread (other processes sharing the core then do not count), else on the wall clock;
// the median run, or the fastest with --fastest.
Sampling sampling(const BenchEngineOptions& o) {
  return {o.repeats, o.threads == 1 && !o.wall_clock ? TimeBase::kThreadCpu : TimeBase::kWall,
          o.fastest ? Statistic::kMinimum : Statistic::kMedian};
}

constexpr std::int64_t kBlockTokens = 16;
// Decode attention is timed over a pool much larger than the last-level cache, cycling through
// sequences, so every call streams its KV from memory as it does inside a decode step (where
// the weights streamed between two layers' attention evict it). One layer's pass over the pool
// reads an eighth of it (small has 8 layers): with 1 GiB that is 128 MiB, so no layer finds what
// the previous layer's pass (or the hardware prefetcher running past it) left in the cache.
constexpr std::size_t kColdPoolBytes = 1u << 30;
// A second, large pool for the decode KV read rate when a step's KV footprint is far beyond what
// the TLB maps (at 4 KiB or even 2 MiB pages): its sequences of kLargeFootprintContext tokens
// are read in turn, as one decode step of a large batch does.
constexpr std::int64_t kLargeFootprintContext = 16384;
constexpr std::int64_t kDecodeContexts[] = {16, 64, 256, 1024, 4096, 16384};
constexpr std::int64_t kPrefillLengths[] = {64, 256, 1024, 4096};

Result<std::vector<std::int64_t>> parse_counts(std::string_view flag, std::string_view text) {
  std::vector<std::int64_t> values;
  while (!text.empty()) {
    const auto comma = text.find(',');
    auto v = parse_positive_count(text.substr(0, comma));
    if (!v.is_ok()) return v.status().with_context(std::string(flag));
    values.push_back(*v);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  if (values.empty()) return invalid_argument(std::string(flag) + " needs at least one value");
  return values;
}

// Random values in [-1, 1): a 1 MiB random pattern repeated over the buffer. Attention's time
// does not depend on the values, only on there being finite, varied ones.
void fill_random(std::byte* p, std::size_t bytes, std::mt19937_64& rng) {
  std::vector<float> pattern(1u << 18);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& f : pattern) f = u(rng);
  const std::size_t pattern_bytes = pattern.size() * sizeof(float);
  for (std::size_t off = 0; off < bytes; off += pattern_bytes) {
    std::memcpy(p + off, pattern.data(), std::min(pattern_bytes, bytes - off));
  }
}

std::vector<float> random_floats(std::size_t n, std::mt19937_64& rng) {
  std::vector<float> v(n);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& f : v) f = u(rng);
  return v;
}

// Block ids 0..n-1 in a random order: sequences' blocks lie scattered in the pool, as in an
// engine that has been running for a while.
std::vector<std::int32_t> shuffled_blocks(std::int64_t n, std::mt19937_64& rng) {
  std::vector<std::int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  return ids;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(" \t"));
        return name;
      }
    }
  }
  utsname u{};
  return uname(&u) == 0 ? std::string(u.machine) : "unknown cpu";
}

// MemAvailable from /proc/meminfo: what the engine's weights and KV pool can use.
double available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  for (std::string key; in >> key;) {
    double kib = 0;
    in >> kib;
    if (key == "MemAvailable:") return kib * 1024.0;
    in.ignore(256, '\n');
  }
  return 0;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// y ~ intercept + slope * x, least squares on relative errors (weights 1 / y^2), so that short
// and long measurements count alike.
struct Line {
  double intercept = 0;
  double slope = 0;
};
Line fit_relative(const std::vector<double>& x, const std::vector<double>& y) {
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double w = 1.0 / (y[i] * y[i]);
    sw += w;
    sx += w * x[i];
    sy += w * y[i];
    sxx += w * x[i] * x[i];
    sxy += w * x[i] * y[i];
  }
  Line l;
  const double det = sw * sxx - sx * sx;
  if (det == 0) return l;
  l.slope = (sw * sxy - sx * sy) / det;
  l.intercept = (sy - l.slope * sx) / sw;
  return l;
}

// The same with the intercept fixed at 0 (when the free fit would make it negative).
double fit_slope_through_origin(const std::vector<double>& x, const std::vector<double>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += x[i] / y[i];
    den += x[i] * x[i] / (y[i] * y[i]);
  }
  return den > 0 ? num / den : 0.0;
}

// y ~ intercept + slope * x with both non-negative, minimising the sum of |error| / scale:
// the best of the lines through two points, through the origin and one point, and flat through
// one point (an L1 fit's optimum passes through as many points as it has parameters). Robust to
// a point or two spoiled by a disturbance, where least squares would follow them.
Line fit_robust_nonnegative(const std::vector<double>& x, const std::vector<double>& y,
                            const std::vector<double>& scale) {
  auto cost = [&](const Line& l) {
    double c = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      c += std::fabs(y[i] - l.intercept - l.slope * x[i]) / scale[i];
    }
    return c;
  };
  std::vector<Line> candidates = {{0, 0}};
  for (size_t i = 0; i < x.size(); ++i) {
    candidates.push_back({y[i], 0});
    if (x[i] > 0) candidates.push_back({0, y[i] / x[i]});
    for (size_t j = i + 1; j < x.size(); ++j) {
      if (x[j] == x[i]) continue;
      const double slope = (y[j] - y[i]) / (x[j] - x[i]);
      candidates.push_back({y[i] - slope * x[i], slope});
    }
  }
  Line best{0, 0};
  double best_cost = cost(best);
  for (const Line& l : candidates) {
    if (l.intercept < 0 || l.slope < 0) continue;
    const double c = cost(l);
    if (c < best_cost) {
      best = l;
      best_cost = c;
    }
  }
  return best;
}

// The linear layers of one transformer layer, (out_features, in_features) as PyTorch stores them.
std::vector<std::pair<std::int64_t, std::int64_t>> linear_shapes(const ModelSpec& s) {
  const std::int64_t d = s.hidden_size, q = s.num_heads * s.head_dim;
  const std::int64_t kv = s.num_kv_heads * s.head_dim, f = s.intermediate_size;
  return {{q, d}, {kv, d}, {kv, d}, {d, q}, {f, d}, {f, d}, {d, f}};
}

class Progress {
 public:
  explicit Progress(std::ostream& err) : err_(err) {}
  void operator()(const std::string& what) const {
    err_ << "bench engine: " << what << "\n" << std::flush;
  }
  // What the step just announced measured.
  void result(const std::string& what) const {
    err_ << "bench engine:   " << what << "\n" << std::flush;
  }

 private:
  std::ostream& err_;
};

// Token ids the byte-level models accept.
std::vector<std::int32_t> random_tokens(std::int64_t n, std::mt19937_64& rng) {
  std::vector<std::int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<std::int32_t>(rng() % 256);
  return t;
}

Result<kvstore::HostBuffer> random_pool(const kernels::KvLayout& layout, std::int64_t blocks,
                                        std::mt19937_64& rng) {
  KVFLEET_ASSIGN_OR_RETURN(
      kvstore::HostBuffer pool,
      kvstore::allocate_host_buffer(static_cast<size_t>(blocks) * layout.block_bytes()));
  fill_random(pool.data(), pool.size(), rng);
  return pool;
}

// --- forward passes, shared by the profile (overheads) and the check ------------------------

// Engine steps through worker::Model::forward: decode steps of sequences whose KV is random
// values in one shared pool, and prompts run in one pass or in chunks. Owns every buffer the
// jobs it hands out use.
class ForwardBench {
 public:
  ForwardBench(const worker::Model& model, std::mt19937_64& rng)
      : model_(model), layout_(model.kv_layout(kBlockTokens, DType::kFp32)), rng_(rng) {}

  // Room for `batch` sequences of `context` tokens (and the token each decodes).
  Status reserve_decode(std::int64_t batch, std::int64_t context) {
    const std::int64_t blocks = batch * layout_.blocks_for_tokens(context + 1);
    KVFLEET_ASSIGN_OR_RETURN(decode_pool_, random_pool(layout_, blocks, rng_));
    decode_tokens_ = random_tokens(batch, rng_);
    return Status::ok();
  }
  Status reserve_prefill(std::int64_t tokens) {
    KVFLEET_ASSIGN_OR_RETURN(
        prefill_pool_,
        kvstore::allocate_host_buffer(static_cast<size_t>(layout_.blocks_for_tokens(tokens)) *
                                      layout_.block_bytes()));
    return Status::ok();
  }

  // One decode step of `batch` sequences at `context` (within what reserve_decode made room for).
  // Their blocks lie scattered over the lowest blocks of the pool, as many as they take: a
  // worker's block pool hands out its lowest free blocks first, so the blocks of the sequences
  // it runs fill the bottom of the pool in the order churn left them, whatever the pool's size.
  std::function<void()> decode(std::int64_t batch, std::int64_t context) {
    const std::int64_t per_seq = layout_.blocks_for_tokens(context + 1);
    auto& step = decode_steps_.emplace_back();
    step.ids = shuffled_blocks(batch * per_seq, rng_);
    for (std::int64_t s = 0; s < batch; ++s) {
      step.chunks.push_back({std::span(decode_tokens_).subspan(static_cast<size_t>(s), 1), context,
                             std::span(step.ids).subspan(static_cast<size_t>(s * per_seq),
                                                         static_cast<size_t>(per_seq)),
                             worker::LogitsWanted::kLast});
    }
    return [this, &step] {
      logits_.clear();
      model_.forward(step.chunks, layout_, decode_pool_.data(), ws_, logits_);
    };
  }

  // A prompt of `len` tokens in chunks of `chunk` tokens (one pass when chunk >= len), the last
  // chunk producing logits, one forward pass per chunk as the engine schedules it.
  std::function<void()> prefill(std::int64_t len, std::int64_t chunk) {
    auto& prompt = prompts_.emplace_back();
    prompt.tokens = random_tokens(len, rng_);
    prompt.ids = shuffled_blocks(layout_.blocks_for_tokens(len), rng_);
    for (std::int64_t p = 0; p < len; p += chunk) {
      const std::int64_t n = std::min(chunk, len - p);
      prompt.chunks.push_back(
          {std::span(prompt.tokens).subspan(static_cast<size_t>(p), static_cast<size_t>(n)), p,
           prompt.ids, p + n >= len ? worker::LogitsWanted::kLast : worker::LogitsWanted::kNone});
    }
    return [this, &prompt] {
      logits_.clear();
      for (const worker::SeqChunk& c : prompt.chunks) {
        model_.forward(std::span(&c, 1), layout_, prefill_pool_.data(), ws_, logits_);
      }
    };
  }

 private:
  struct Prompt {
    std::vector<std::int32_t> tokens, ids;
    std::vector<worker::SeqChunk> chunks;
  };
  const worker::Model& model_;
  kernels::KvLayout layout_;
  std::mt19937_64& rng_;
  kvstore::HostBuffer decode_pool_, prefill_pool_;
  struct DecodeStep {
    std::vector<std::int32_t> ids;
    std::vector<worker::SeqChunk> chunks;
  };
  std::vector<std::int32_t> decode_tokens_;
  std::deque<DecodeStep> decode_steps_;  // deque: stable references
  std::deque<Prompt> prompts_;
  worker::Workspace ws_;
  std::vector<float> logits_;
};

// Predicted seconds of a prompt run as ForwardBench::prefill runs it: one step per chunk.
double predict_prefill(const perfmodel::StepModel& sm, std::int64_t len, std::int64_t chunk) {
  double total = 0;
  for (std::int64_t p = 0; p < len; p += chunk) {
    const std::int64_t n = std::min(chunk, len - p);
    const perfmodel::StepChunk c{n, p, p + n >= len};
    total += sm.step(std::span(&c, 1)).seconds;
  }
  return total;
}

// --- the profile ------------------------------------------------------------------------------

// Every kernel class of the profile as timed jobs; fit() turns their times into a calibration.
class ProfileBench {
 public:
  ProfileBench(const ModelSpec& spec, const worker::Model& model, std::mt19937_64& rng,
               std::size_t large_kv_bytes)
      : spec_(spec),
        model_(model),
        rng_(rng),
        forward_(model, rng),
        large_kv_bytes_(large_kv_bytes) {
    layout_ = model.kv_layout(kBlockTokens, DType::kFp32);
  }

  Status add_jobs(engine_bench::InterleavedTimer& timer, const std::vector<std::int64_t>& gemm) {
    KVFLEET_RETURN_IF_ERROR(add_memory(timer));
    add_peak(timer);
    add_linear(timer, gemm);
    KVFLEET_RETURN_IF_ERROR(add_decode_attention(timer));
    KVFLEET_RETURN_IF_ERROR(add_prefill_attention(timer));
    KVFLEET_RETURN_IF_ERROR(add_swap(timer));
    return add_forward(timer);
  }

  // The hardware spec of this machine with every factor fitted from the jobs' times.
  Result<perfmodel::HardwareSpec> fit(const engine_bench::InterleavedTimer& timer,
                                      const Progress& progress) const;

 private:
  Status add_memory(engine_bench::InterleavedTimer& timer) {
    const std::size_t bytes = 512u << 20;
    KVFLEET_ASSIGN_OR_RETURN(mem_src_, kvstore::allocate_host_buffer(bytes));
    KVFLEET_ASSIGN_OR_RETURN(mem_dst_, kvstore::allocate_host_buffer(bytes));
    std::memset(mem_src_.data(), 1, bytes);
    std::memset(mem_dst_.data(), 2, bytes);
    memcpy_job_ = timer.add("memcpy of 512 MiB", [this, bytes] {
      std::memcpy(mem_dst_.data(), mem_src_.data(), bytes);
    });
    read_job_ = timer.add("read pass over 512 MiB", [this, bytes] {
      sink_ = sink_ +
              engine_bench::read_sum(reinterpret_cast<const float*>(mem_src_.data()), bytes / 4);
    });
    return Status::ok();
  }

  // Dense fp32 GEMM peak of the BLAS: the best of a square product and the model's widest
  // projection at many tokens.
  void add_peak(engine_bench::InterleavedTimer& timer) {
    const std::int64_t f = spec_.intermediate_size, d = spec_.hidden_size;
    for (const auto& [m, n, k] : {std::array<std::int64_t, 3>{2048, 2048, 2048}, {2048, f, d}}) {
      auto& buf = peak_buffers_.emplace_back();
      buf.m = m, buf.n = n, buf.k = k;
      buf.a.assign(static_cast<size_t>(m * k), 0.5f);
      buf.w.assign(static_cast<size_t>(n * k), 0.25f);
      buf.c.resize(static_cast<size_t>(m * n));
      buf.job = timer.add(
          "GEMM " + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k), [&buf] {
            kernels::cpu::linear(buf.c.data(), buf.a.data(), buf.w.data(), nullptr, buf.m, buf.n,
                                 buf.k);
          });
    }
  }

  // Every layer's linear projections, alone, at each tokens-per-step value, each layer with its
  // own weights as in the forward pass (few tokens stream them from memory; many are
  // compute-bound, and the BLAS packs each layer's weights anew).
  void add_linear(engine_bench::InterleavedTimer& timer, const std::vector<std::int64_t>& tokens) {
    std::int64_t per_layer = 0, max_k = 0, max_n = 0;
    for (auto [n, k] : linear_shapes(spec_)) {
      per_layer += n * k;
      max_k = std::max(max_k, k);
      max_n = std::max(max_n, n);
    }
    const std::int64_t max_t = std::max(tokens.back(), kForwardPrefill.back());
    linear_weights_.assign(static_cast<size_t>(per_layer * spec_.num_layers), 0.01f);
    linear_a_.assign(static_cast<size_t>(max_t * max_k), 0.5f);
    linear_c_.resize(static_cast<size_t>(max_t * max_n));
    for (std::int64_t t : tokens) {
      linear_jobs_.push_back(
          {t, timer.add("linear layers at " + std::to_string(t) + " tokens per step", linear(t),
                        /*primed=*/true)});
    }
  }

  // Every layer's linear projections at `t` tokens (t <= the buffers' rows).
  std::function<void()> linear(std::int64_t t) {
    return [this, t, shapes = linear_shapes(spec_)] {
      const float* w = linear_weights_.data();
      for (std::int64_t l = 0; l < spec_.num_layers; ++l) {
        for (auto [n, k] : shapes) {
          kernels::cpu::linear(linear_c_.data(), linear_a_.data(), w, nullptr, t, n, k);
          w += n * k;
        }
      }
    };
  }

  // Decode attention: one query per sequence over its context, cold KV: the timed loop cycles
  // through sequences in a pool larger than the last-level cache, as the weights streamed
  // between two layers' attention evict a decode step's KV.
  Status add_decode_attention(engine_bench::InterleavedTimer& timer) {
    const std::int64_t max_blocks = layout_.blocks_for_tokens(kDecodeContexts[5] + 1);
    const std::int64_t pool_blocks = std::max<std::int64_t>(
        static_cast<std::int64_t>(kColdPoolBytes / layout_.block_bytes()), max_blocks);
    KVFLEET_ASSIGN_OR_RETURN(attention_pool_, random_pool(layout_, pool_blocks, rng_));
    attention_ids_ = shuffled_blocks(pool_blocks, rng_);
    const auto row = static_cast<size_t>(spec_.num_heads * spec_.head_dim);
    attention_q_ = random_floats(row * static_cast<size_t>(kPrefillLengths[3]), rng_);
    attention_out_.resize(attention_q_.size());
    for (std::int64_t context : kDecodeContexts) {
      const std::int64_t per_seq = layout_.blocks_for_tokens(context + 1);
      const std::int64_t seqs = std::min<std::int64_t>(4096, pool_blocks / per_seq);
      const std::size_t job =
          timer.add("decode attention over " + std::to_string(context) + " tokens",
                    [this, context, per_seq, seqs] {
                      const float scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));
                      for (std::int64_t l = 0; l < layout_.num_layers; ++l) {
                        for (std::int64_t s = 0; s < seqs; ++s) {
                          const std::span<const std::int32_t> table(
                              attention_ids_.data() + s * per_seq, static_cast<size_t>(per_seq));
                          kernels::cpu::paged_attention(
                              layout_, attention_pool_.data(), l, table, attention_q_.data(), 1,
                              context, spec_.num_heads, scale, attention_out_.data(), scratch_);
                        }
                      }
                    });
      decode_attention_jobs_.push_back({context, job, static_cast<double>(seqs)});
    }
    // The large footprint: as many sequences of kLargeFootprintContext as fit in
    // --large-kv-bytes (none when that is not above the cold pool, or the memory cannot be had:
    // then the rate is the cold pool's at every footprint).
    if (large_kv_bytes_ <= kColdPoolBytes) return Status::ok();
    const std::int64_t per_seq = layout_.blocks_for_tokens(kLargeFootprintContext + 1);
    const std::int64_t seqs = static_cast<std::int64_t>(
        large_kv_bytes_ / (static_cast<std::size_t>(per_seq) * layout_.block_bytes()));
    auto large = seqs >= 2
                     ? random_pool(layout_, seqs * per_seq, rng_)
                     : Result<kvstore::HostBuffer>(Status(StatusCode::kResourceExhausted, ""));
    if (large.is_ok()) {
      large_pool_ = std::move(large).value();
      large_ids_ = shuffled_blocks(seqs * per_seq, rng_);
      large_sequences_ = static_cast<double>(seqs);
      large_job_ = timer.add(
          "decode attention over " + std::to_string(kLargeFootprintContext) + " tokens, " +
              format_bytes(static_cast<double>(large_pool_.size())) + " of KV",
          [this, per_seq, seqs] {
            const float scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));
            for (std::int64_t l = 0; l < layout_.num_layers; ++l) {
              for (std::int64_t s = 0; s < seqs; ++s) {
                const std::span<const std::int32_t> table(large_ids_.data() + s * per_seq,
                                                          static_cast<size_t>(per_seq));
                kernels::cpu::paged_attention(layout_, large_pool_.data(), l, table,
                                              attention_q_.data(), 1, kLargeFootprintContext,
                                              spec_.num_heads, scale, attention_out_.data(),
                                              scratch_);
              }
            }
          });
    }
    return Status::ok();
  }

  // Prefill attention: a prompt's queries over its own KV, just written; one layer (all alike).
  Status add_prefill_attention(engine_bench::InterleavedTimer& timer) {
    for (std::int64_t len : kPrefillLengths) {
      auto& p = prefill_attention_.emplace_back();
      p.len = len;
      const std::int64_t blocks = layout_.blocks_for_tokens(len);
      KVFLEET_ASSIGN_OR_RETURN(p.pool, random_pool(layout_, blocks, rng_));
      p.ids = shuffled_blocks(blocks, rng_);
      p.job = timer.add("prefill attention over " + std::to_string(len) + " tokens", [this, &p] {
        const float scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));
        kernels::cpu::paged_attention(layout_, p.pool.data(), 0, p.ids, attention_q_.data(), p.len,
                                      0, spec_.num_heads, scale, attention_out_.data(), scratch_);
      });
    }
    return Status::ok();
  }

  // Spill and restore of scattered blocks through the host KV store (what a swap is on a CPU).
  Status add_swap(engine_bench::InterleavedTimer& timer) {
    const std::size_t bb = layout_.block_bytes();
    const auto device_blocks =
        static_cast<std::int32_t>(std::max<std::size_t>(2, (128u << 20) / bb));
    KVFLEET_ASSIGN_OR_RETURN(
        swap_device_, kvstore::allocate_host_buffer(static_cast<size_t>(device_blocks) * bb));
    std::memset(swap_device_.data(), 3, swap_device_.size());
    kvstore::HostKvStoreConfig hc;
    hc.capacity_bytes = static_cast<std::size_t>(device_blocks) * bb;
    hc.block_bytes = bb;
    hc.high_watermark = 1.0;
    hc.low_watermark = 1.0;
    KVFLEET_ASSIGN_OR_RETURN(swap_store_, kvstore::HostKvStore::create(hc));
    // A fragmented sequence: every other block, no two adjacent.
    for (std::int32_t b = 0; b < device_blocks; b += 2) swap_ids_.push_back(b);
    swap_bytes_ = static_cast<double>(swap_ids_.size() * bb);
    spill_job_ = timer.add("spill to the host KV store", [this] {
      if (!swap_host_ids_.empty()) swap_store_->release(swap_host_ids_);
      auto spilled = swap_store_->spill(swap_device_.data(), swap_ids_);
      if (!spilled.is_ok()) swap_status_ = spilled.status();
      swap_host_ids_ = spilled.is_ok() ? *spilled : std::vector<kvstore::BlockId>{};
    });
    restore_job_ = timer.add("restore from the host KV store", [this] {
      Status s = swap_store_->restore(swap_host_ids_, swap_device_.data(), swap_ids_);
      if (!s.is_ok()) swap_status_ = s;
    });
    return Status::ok();
  }

  // Whole forward passes, whose time beyond the kernel classes is the overheads.
  Status add_forward(engine_bench::InterleavedTimer& timer) {
    KVFLEET_RETURN_IF_ERROR(forward_.reserve_decode(kForwardBatches.back(), kOverheadContext));
    KVFLEET_RETURN_IF_ERROR(forward_.reserve_prefill(kForwardPrefill.back()));
    // Each pass right after its own linear layers alone: the two run in the same round, in one
    // state of the machine, and the overheads are fitted on their difference. Both are primed,
    // as the check's steps are: what is fitted is an engine repeating a step.
    for (std::int64_t batch : kForwardBatches) {
      ForwardJob j{batch, kOverheadContext, true};
      j.linear_job =
          timer.add("linear layers at " + std::to_string(batch) + " tokens (beside the next pass)",
                    linear(batch), /*primed=*/true);
      j.job = timer.add("forward pass: decode at batch " + std::to_string(batch),
                        forward_.decode(batch, kOverheadContext), /*primed=*/true);
      forward_jobs_.push_back(j);
    }
    for (std::int64_t len : kForwardPrefill) {
      ForwardJob j{len, 0, false};
      j.linear_job =
          timer.add("linear layers at " + std::to_string(len) + " tokens (beside the next pass)",
                    linear(len), /*primed=*/true);
      j.job = timer.add("forward pass: prefill of " + std::to_string(len),
                        forward_.prefill(len, len), /*primed=*/true);
      forward_jobs_.push_back(j);
    }
    return Status::ok();
  }

  static constexpr std::array<std::int64_t, 6> kForwardBatches = {1, 2, 4, 8, 16, 32};
  static constexpr std::array<std::int64_t, 5> kForwardPrefill = {16, 32, 64, 128, 256};
  static constexpr std::int64_t kOverheadContext = 16;
  struct PeakBuffers {
    std::int64_t m = 0, n = 0, k = 0;
    std::vector<float> a, w, c;
    std::size_t job = 0;
  };
  struct LinearJob {
    std::int64_t tokens;
    std::size_t job;
  };
  struct AttentionJob {
    std::int64_t context;
    std::size_t job;
    double sequences;
  };
  struct PrefillAttention {
    std::int64_t len = 0;
    kvstore::HostBuffer pool;
    std::vector<std::int32_t> ids;
    std::size_t job = 0;
  };
  struct ForwardJob {
    std::int64_t tokens = 0;  // batch (decode) or prompt length
    std::int64_t context = 0;
    bool decode = false;
    std::size_t job = 0;         // the forward pass
    std::size_t linear_job = 0;  // its linear layers alone, just before it in every round
  };

  const ModelSpec& spec_;
  const worker::Model& model_;
  std::mt19937_64& rng_;
  kernels::KvLayout layout_;
  kernels::cpu::AttentionScratch scratch_;
  ForwardBench forward_;
  kvstore::HostBuffer mem_src_, mem_dst_;
  volatile float sink_ = 0;
  std::size_t memcpy_job_ = 0, read_job_ = 0;
  std::deque<PeakBuffers> peak_buffers_;
  std::vector<float> linear_weights_, linear_a_, linear_c_;
  std::vector<LinearJob> linear_jobs_;
  kvstore::HostBuffer attention_pool_;
  std::vector<std::int32_t> attention_ids_;
  std::vector<float> attention_q_, attention_out_;
  std::vector<AttentionJob> decode_attention_jobs_;
  std::size_t large_kv_bytes_;
  kvstore::HostBuffer large_pool_;
  std::vector<std::int32_t> large_ids_;
  double large_sequences_ = 0;
  std::optional<std::size_t> large_job_;
  std::deque<PrefillAttention> prefill_attention_;
  kvstore::HostBuffer swap_device_;
  std::unique_ptr<kvstore::HostKvStore> swap_store_;
  std::vector<kvstore::BlockId> swap_ids_, swap_host_ids_;
  double swap_bytes_ = 0;
  Status swap_status_;
  std::size_t spill_job_ = 0, restore_job_ = 0;
  std::vector<ForwardJob> forward_jobs_;
};

Result<perfmodel::HardwareSpec> ProfileBench::fit(const engine_bench::InterleavedTimer& timer,
                                                  const Progress& progress) const {
  KVFLEET_RETURN_IF_ERROR(swap_status_);
  auto report = [&](std::size_t job, const std::string& what) {
    progress.result(timer.name(job) + ": " + what);
  };
  const double bytes = 512.0 * (1 << 20);
  const double memcpy_bw = bytes / timer.seconds(memcpy_job_);
  const double read_bw = bytes / timer.seconds(read_job_);
  report(memcpy_job_, format_rate_bytes(memcpy_bw));
  report(read_job_, format_rate_bytes(read_bw));
  double peak = 0;
  for (const PeakBuffers& b : peak_buffers_) {
    const double rate = 2.0 * static_cast<double>(b.m * b.n * b.k) / timer.seconds(b.job);
    report(b.job, format_flops(rate));
    peak = std::max(peak, rate);
  }

  perfmodel::Calibration cal;
  // Linear layers: the time at one token is the weights streaming; at T tokens the table holds
  // the fraction of peak reached, so the model's max() reproduces each measured point.
  const ParamCounts params = count_params(spec_);
  const double linear_params = params.matmul_active - params.lm_head;
  for (const LinearJob& j : linear_jobs_) {
    const double seconds = timer.seconds(j.job);
    // (The cpu engine's weights are fp32.)
    if (j.tokens == 1) {
      cal.weight_read_efficiency = linear_params * sizeof(float) / read_bw / seconds;
    }
    const double efficiency =
        2.0 * linear_params * static_cast<double>(j.tokens) / (peak * seconds);
    cal.gemm_efficiency.push_back({j.tokens, efficiency});
    report(j.job, format_seconds(seconds) + " for all layers, " + format_number(efficiency, 3) +
                      " of peak");
  }

  // Decode attention: seconds per sequence = layers * call overhead + KV bytes / rate.
  {
    std::vector<double> x, y;
    for (const AttentionJob& j : decode_attention_jobs_) {
      x.push_back(static_cast<double>(j.context + 1) *
                  static_cast<double>(layout_.bytes_per_token()));
      y.push_back(timer.seconds(j.job) / j.sequences);
      report(j.job, format_seconds(y.back()) + " per sequence, all layers (" +
                        format_rate_bytes(x.back() / y.back()) + ")");
    }
    Line line = fit_relative(x, y);
    if (line.intercept < 0) line = {0, fit_slope_through_origin(x, y)};
    if (!(line.slope > 0)) {
      return Status(StatusCode::kInternal,
                    "decode attention time did not grow with the context; rerun on a quieter "
                    "machine");
    }
    cal.kv_read_efficiency = 1.0 / (line.slope * read_bw);
    cal.attention_call_overhead = line.intercept / static_cast<double>(layout_.num_layers);
    if (large_job_) {
      // The same line's call overhead, the large pool's own rate: the footprint table.
      const double bytes_per_seq = static_cast<double>(kLargeFootprintContext + 1) *
                                   static_cast<double>(layout_.bytes_per_token());
      const double per_seq = timer.seconds(*large_job_) / large_sequences_ - line.intercept;
      const double large = bytes_per_seq / per_seq / read_bw;
      report(*large_job_, format_seconds(per_seq + line.intercept) + " per sequence (" +
                              format_rate_bytes(bytes_per_seq / per_seq) + ")");
      if (per_seq > 0 && large > 0) {
        cal.kv_read_by_footprint = {
            {static_cast<double>(kColdPoolBytes), cal.kv_read_efficiency},
            {static_cast<double>(large_pool_.size()), std::min(large, cal.kv_read_efficiency)}};
      }
    }
  }

  // Prefill attention: seconds per layer = FLOPs / (peak * efficiency), least squares on
  // relative error. (A prefill query's KV is warm, so it has no cold-call cost; what little
  // fixed cost a query has is per token, in token_overhead.)
  {
    std::vector<double> v, t;
    for (const PrefillAttention& p : prefill_attention_) {
      const double l = static_cast<double>(p.len);
      const double flops = l * (l + 1) / 2 * 4.0 * spec_.attention_width();
      v.push_back(flops / peak);
      t.push_back(timer.seconds(p.job));
      report(p.job,
             format_seconds(t.back()) + " per layer (" + format_flops(flops / t.back()) + ")");
    }
    const double slope = fit_slope_through_origin(v, t);
    if (!(slope > 0)) {
      return Status(StatusCode::kInternal, "prefill attention could not be fitted; rerun");
    }
    cal.prefill_attention_efficiency = 1.0 / slope;
  }

  const double swap_rate =
      2.0 * swap_bytes_ / (timer.seconds(spill_job_) + timer.seconds(restore_job_));
  report(spill_job_, format_rate_bytes(swap_bytes_ / timer.seconds(spill_job_)));
  report(restore_job_, format_rate_bytes(swap_bytes_ / timer.seconds(restore_job_)));
  cal.swap_efficiency = swap_rate / memcpy_bw;

  perfmodel::HardwareSpec hw;
  hw.hbm_bytes = available_memory_bytes();
  hw.hbm_bandwidth = read_bw;
  hw.flops[DType::kFp32] = peak;
  hw.pcie_bandwidth = memcpy_bw;  // a swap on a CPU is a memcpy
  hw.host_memory_bytes = hw.hbm_bytes;
  hw.calibration = cal;

  // Overheads: whatever whole forward passes take beyond the kernel classes above (norms, RoPE,
  // activations, residual adds, KV writes, embedding gathers, per-step bookkeeping), fitted as
  // step_overhead + token_overhead * tokens. They are a few percent of a pass, smaller than
  // the drift of a busy machine between two measurements, so each pass is compared with its
  // linear layers timed just before it in the same round (the median of the differences), less
  // the model's other kernel classes; the fit is least absolute relative deviations (a line
  // through two of the points, or through the origin or flat through one), both terms
  // non-negative, so that a point spoiled by a disturbance does not pull it.
  KVFLEET_ASSIGN_OR_RETURN(const perfmodel::StepModel without,
                           perfmodel::StepModel::create(spec_, hw, perfmodel::Deployment{}));
  std::vector<double> x, r, t;
  for (const ForwardJob& j : forward_jobs_) {
    const std::vector<double>& pass = timer.samples(j.job);
    const std::vector<double>& alone = timer.samples(j.linear_job);
    std::vector<double> diff;
    for (size_t k = 0; k < std::min(pass.size(), alone.size()); ++k) {
      diff.push_back(pass[k] - alone[k]);
    }
    std::sort(diff.begin(), diff.end());
    const double beyond_linear = diff.empty() ? 0.0 : diff[diff.size() / 2];
    const std::vector<perfmodel::StepChunk> chunks =
        j.decode
            ? std::vector<perfmodel::StepChunk>(static_cast<size_t>(j.tokens), {1, j.context, true})
            : std::vector<perfmodel::StepChunk>{{j.tokens, 0, true}};
    const perfmodel::StepParts parts = without.parts(chunks);
    const double other = parts.lm_head + parts.decode_attention + parts.prefill_attention;
    t.push_back(timer.seconds(j.job));
    x.push_back(static_cast<double>(j.tokens));
    r.push_back(beyond_linear - other);
    report(j.job, format_seconds(t.back()) + ", its linear layers alone " +
                      format_seconds(timer.seconds(j.linear_job)) + ", other kernel classes " +
                      format_seconds(other) + ": overheads " + format_seconds(r.back()));
  }
  const Line overhead = fit_robust_nonnegative(x, r, t);
  const double per_step = overhead.intercept, per_token = overhead.slope;
  hw.calibration->step_overhead = per_step;
  hw.calibration->token_overhead = per_token;
  return hw;
}

std::string profile_command(const BenchEngineOptions& o) {
  std::string cmd = "kvfleet bench engine --profile " + o.profile + " --model " + o.model +
                    " --threads " + std::to_string(o.threads) + " --repeats " +
                    std::to_string(o.repeats);
  const BenchEngineOptions defaults;
  if (o.gemm_tokens != defaults.gemm_tokens) cmd += " --gemm-tokens " + o.gemm_tokens;
  if (o.large_kv_bytes != defaults.large_kv_bytes) cmd += " --large-kv-bytes " + o.large_kv_bytes;
  if (o.wall_clock) cmd += " --wall-clock";
  if (o.fastest) cmd += " --fastest";
  return cmd;
}

}  // namespace

Status write_engine_profile(const BenchEngineOptions& o, std::ostream& out, std::ostream& err) {
  const Progress progress(err);
  KVFLEET_ASSIGN_OR_RETURN(ModelSpec spec, load_model_spec(o.model));
  KVFLEET_RETURN_IF_ERROR(worker::Model::check_supported(spec));
  KVFLEET_ASSIGN_OR_RETURN(auto gemm_tokens, parse_counts("--gemm-tokens", o.gemm_tokens));
  if (gemm_tokens.front() != 1 || !std::is_sorted(gemm_tokens.begin(), gemm_tokens.end()) ||
      std::adjacent_find(gemm_tokens.begin(), gemm_tokens.end()) != gemm_tokens.end()) {
    return invalid_argument("--gemm-tokens must start at 1 and increase, got " + o.gemm_tokens);
  }
  kernels::cpu::set_blas_threads(o.threads);
  std::mt19937_64 rng(1);
  KVFLEET_ASSIGN_OR_RETURN(auto model, worker::Model::random(spec, 7));

  progress("preparing buffers");
  engine_bench::InterleavedTimer timer(sampling(o));
  KVFLEET_ASSIGN_OR_RETURN(double large_kv, parse_quantity(o.large_kv_bytes, Quantity::kBytes));
  if (large_kv < 0) return invalid_argument("--large-kv-bytes must be >= 0");
  ProfileBench bench(spec, *model, rng, static_cast<std::size_t>(large_kv));
  KVFLEET_RETURN_IF_ERROR(bench.add_jobs(timer, gemm_tokens));
  timer.run([&](const std::string& what) { progress(what); });
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::HardwareSpec hw, bench.fit(timer, progress));

  const std::string cpu = cpu_model_name();
  hw.name = cpu + " (" + std::to_string(o.threads) + (o.threads == 1 ? " thread" : " threads") +
            ", measured)";
  hw.calibration->provenance = {cpu, o.threads, utc_now(), kVersion, profile_command(o), o.model};
  {
    std::ofstream file(o.profile);
    file << "# This machine's hardware profile, written by `" << profile_command(o) << "`.\n"
         << "# Use it with: kvfleet plan --hardware " << o.profile << " ...; check it with:\n"
         << "# kvfleet bench engine --check-profile " << o.profile << " --model " << o.model << "\n"
         << perfmodel::hardware_to_yaml(hw);
    if (!file) return invalid_argument("cannot write --profile '" + o.profile + "'");
  }
  progress("wrote " + o.profile);

  if (o.json) {
    out << perfmodel::hardware_to_json(hw).dump(2) << "\n";
    return Status::ok();
  }
  const perfmodel::Calibration& c = *hw.calibration;
  out << "kvfleet bench engine --profile: " << hw.name << ", model " << o.model << "\n\n"
      << "  read bandwidth (hbm_bandwidth)       " << format_rate_bytes(hw.hbm_bandwidth) << "\n"
      << "  memcpy (pcie_bandwidth)              " << format_rate_bytes(hw.pcie_bandwidth) << "\n"
      << "  BLAS fp32 peak                       " << format_flops(*hw.flops_for(DType::kFp32))
      << "\n"
      << "  weight read efficiency               " << format_number(c.weight_read_efficiency, 3)
      << "\n"
      << "  decode attention KV read efficiency  " << format_number(c.kv_read_efficiency, 3) << "\n"
      << "  attention call overhead              " << format_seconds(c.attention_call_overhead)
      << " per decode sequence and layer\n"
      << "  prefill attention efficiency         "
      << format_number(c.prefill_attention_efficiency, 3) << "\n"
      << "  swap efficiency                      " << format_number(c.swap_efficiency, 3) << "\n"
      << "  step overhead                        " << format_seconds(c.step_overhead) << "\n"
      << "  token overhead                       " << format_seconds(c.token_overhead) << "\n"
      << "  GEMM efficiency by tokens per step  ";
  for (const auto& p : c.gemm_efficiency) {
    out << " " << p.tokens << ":" << format_number(p.efficiency, 2);
  }
  out << "\n\nwrote " << o.profile << "\n";
  return Status::ok();
}

Status check_engine_profile(const BenchEngineOptions& o, std::ostream& out, std::ostream& err) {
  const Progress progress(err);
  KVFLEET_ASSIGN_OR_RETURN(perfmodel::HardwareSpec hw, perfmodel::load_hardware(o.check_profile));
  KVFLEET_ASSIGN_OR_RETURN(ModelSpec spec, load_model_spec(o.model));
  KVFLEET_RETURN_IF_ERROR(worker::Model::check_supported(spec));
  KVFLEET_ASSIGN_OR_RETURN(auto batches, parse_counts("--check-batches", o.check_batches));
  KVFLEET_ASSIGN_OR_RETURN(auto contexts, parse_counts("--check-contexts", o.check_contexts));
  KVFLEET_ASSIGN_OR_RETURN(auto lengths, parse_counts("--check-prefill", o.check_prefill));
  if (o.chunk_tokens < 1) return invalid_argument("--chunk-tokens must be positive");
  perfmodel::Deployment dep;
  dep.kv_dtype = DType::kFp32;  // what the engine's fp32 pool holds
  KVFLEET_ASSIGN_OR_RETURN(const perfmodel::StepModel sm,
                           perfmodel::StepModel::create(spec, hw, dep));
  kernels::cpu::set_blas_threads(o.threads);
  std::mt19937_64 rng(2);
  KVFLEET_ASSIGN_OR_RETURN(auto model, worker::Model::random(spec, 7));

  struct Point {
    std::string kind;  // decode | prefill
    std::int64_t batch = 0, context = 0, tokens = 0, chunk = 0;
    std::size_t job = 0;
    double predicted = 0, measured = 0;
    perfmodel::Bound bound = perfmodel::Bound::kCompute;
  };
  std::vector<Point> points;
  engine_bench::InterleavedTimer timer(sampling(o));
  ForwardBench forward(*model, rng);

  const std::int64_t max_batch = *std::max_element(batches.begin(), batches.end());
  const std::int64_t max_context = *std::max_element(contexts.begin(), contexts.end());
  progress("filling a KV pool for " + std::to_string(max_batch) + " sequences of " +
           std::to_string(max_context) + " tokens with random values");
  KVFLEET_RETURN_IF_ERROR(forward.reserve_decode(max_batch, max_context));
  KVFLEET_RETURN_IF_ERROR(
      forward.reserve_prefill(*std::max_element(lengths.begin(), lengths.end())));
  for (std::int64_t b : batches) {
    for (std::int64_t c : contexts) {
      Point p{"decode", b, c, b, 1};
      p.job =
          timer.add("decode step at batch " + std::to_string(b) + ", context " + std::to_string(c),
                    forward.decode(b, c), /*primed=*/true);
      const perfmodel::Roofline r = sm.decode(b, c);
      p.predicted = r.seconds;
      p.bound = r.bound;
      points.push_back(p);
    }
  }
  for (std::int64_t len : lengths) {
    // One pass, then in chunks as the engine runs it when that differs.
    std::vector<std::int64_t> chunks = {len};
    if (o.chunk_tokens < len) chunks.push_back(o.chunk_tokens);
    for (std::int64_t chunk : chunks) {
      Point p{"prefill", 1, 0, len, chunk};
      p.job = timer.add("prefill of " + std::to_string(len) + " tokens" +
                            (chunk < len ? ", chunks of " + std::to_string(chunk) : ", one pass"),
                        forward.prefill(len, chunk), /*primed=*/true);
      p.predicted = predict_prefill(sm, len, chunk);
      const perfmodel::StepChunk first{std::min(chunk, len), 0, chunk >= len};
      p.bound = sm.step(std::span(&first, 1)).bound;
      points.push_back(p);
    }
  }
  // The machine's read bandwidth now, beside the profile's: memory-bound points move with it
  // when something else on the machine competes for memory.
  const std::size_t read_bytes = 256u << 20;
  KVFLEET_ASSIGN_OR_RETURN(kvstore::HostBuffer read_buffer,
                           kvstore::allocate_host_buffer(read_bytes));
  std::memset(read_buffer.data(), 1, read_bytes);
  volatile float sink = 0;
  const std::size_t read_job = timer.add("read pass over 256 MiB", [&] {
    sink = sink + engine_bench::read_sum(reinterpret_cast<const float*>(read_buffer.data()),
                                         read_bytes / 4);
  });
  timer.run([&](const std::string& what) { progress(what); });
  for (Point& p : points) p.measured = timer.seconds(p.job);
  const double read_now = static_cast<double>(read_bytes) / timer.seconds(read_job);
  const std::string read_line = "read bandwidth during the check " + format_rate_bytes(read_now) +
                                ", in the profile " + format_rate_bytes(hw.hbm_bandwidth);
  progress(read_line);

  double worst_decode = 0, worst_prefill = 0;
  for (const Point& p : points) {
    double& worst = p.kind == "decode" ? worst_decode : worst_prefill;
    worst = std::max(worst, std::fabs(p.predicted / p.measured - 1));
  }
  if (o.json) {
    json rows = json::array();
    for (const Point& p : points) {
      rows.push_back({{"kind", p.kind},
                      {"batch", p.batch},
                      {"context", p.context},
                      {"tokens", p.tokens},
                      {"chunk_tokens", p.chunk},
                      {"steps", (p.tokens + p.chunk - 1) / p.chunk},
                      {"predicted_seconds", p.predicted},
                      {"measured_seconds", p.measured},
                      {"error", p.predicted / p.measured - 1},
                      {"predicted_bound", perfmodel::bound_name(p.bound)}});
    }
    out << rows.dump(2) << "\n";
    return Status::ok();
  }
  out << "kvfleet bench engine --check-profile " << o.check_profile << ": " << o.model << " on "
      << hw.name << ", " << (sm.calibrated() ? "calibrated" : "uncalibrated (no calibration)")
      << " step model vs worker::Model::forward\n"
      << read_line << "\n\n";
  char line[200];
  std::snprintf(line, sizeof line, "  %-36s %12s %12s %9s  %s\n", "step", "predicted", "measured",
                "error", "predicted bound");
  out << line;
  for (const Point& p : points) {
    std::string what;
    if (p.kind == "decode") {
      what = "decode, batch " + std::to_string(p.batch) + ", context " + std::to_string(p.context);
    } else if (p.chunk >= p.tokens) {
      what = "prefill " + std::to_string(p.tokens) + ", one pass";
    } else {
      what = "prefill " + std::to_string(p.tokens) + ", " +
             std::to_string((p.tokens + p.chunk - 1) / p.chunk) + " chunks of " +
             std::to_string(p.chunk);
    }
    std::snprintf(line, sizeof line, "  %-36s %12s %12s %+8.1f%%  %s\n", what.c_str(),
                  format_seconds(p.predicted).c_str(), format_seconds(p.measured).c_str(),
                  100.0 * (p.predicted / p.measured - 1),
                  std::string(perfmodel::bound_name(p.bound)).c_str());
    out << line;
  }
  std::snprintf(line, sizeof line,
                "\nlargest |error|: decode %.1f%%, prefill %.1f%% (target: every point within "
                "10%%)\n",
                100.0 * worst_decode, 100.0 * worst_prefill);
  out << line;
  return Status::ok();
}

}  // namespace kvfleet::apps
