// StepModel: the uncalibrated form is estimate()'s prefill and decode step, generalised to mixed
// batches; the calibrated form sums kernel classes at the profile's efficiencies.
#include "perfmodel/step_model.h"

#include <cmath>
#include <vector>

#include "tests/perfmodel/perfmodel_test_util.h"

namespace kvfleet::perfmodel {
namespace {

using namespace test;

StepModel make(const ModelSpec& m, const HardwareSpec& hw, const Deployment& d = {}) {
  auto s = StepModel::create(m, hw, d);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return std::move(s).value();
}

Deployment with_tp(std::int64_t tp) {
  Deployment d;
  d.tp = tp;
  return d;
}

// Relative agreement for sums taken in a different order.
void expect_close(double a, double b, const std::string& what) {
  EXPECT_NEAR(a, b, 1e-12 * std::max(std::fabs(a), std::fabs(b))) << what;
}

void expect_same_roofline(const Roofline& a, const Roofline& b, const std::string& what) {
  expect_close(a.flops, b.flops, what + " flops");
  expect_close(a.bytes, b.bytes, what + " bytes");
  expect_close(a.comm_bytes, b.comm_bytes, what + " comm_bytes");
  expect_close(a.compute_seconds, b.compute_seconds, what + " compute_seconds");
  expect_close(a.memory_seconds, b.memory_seconds, what + " memory_seconds");
  expect_close(a.comm_seconds, b.comm_seconds, what + " comm_seconds");
  expect_close(a.seconds, b.seconds, what + " seconds");
  EXPECT_EQ(a.bound, b.bound) << what;
}

struct Case {
  const char* model;
  const char* hardware;
  std::int64_t tp;
};

// Dense MHA and GQA, MoE (expert fractions by tokens per step), MLA (replicated latent), TP.
const Case kCases[] = {
    {"yi-34b-200k", "a100-80g", 1},  {"yi-34b-200k", "a100-80g", 4},
    {"llama-2-7b", "h100-80g", 2},   {"llama-3-70b", "h100-80g", 8},
    {"mixtral-8x7b", "h100-80g", 1}, {"mixtral-8x7b", "h100-80g", 4},
    {"deepseek-v2", "h200", 8},      {"deepseek-v2-lite", "a100-80g", 1},
};

TEST(StepModel, OnePrefillChunkIsEstimatesPrefill) {
  for (const Case& c : kCases) {
    const ModelSpec m = model(c.model);
    const HardwareSpec hw = hardware(c.hardware);
    const StepModel s = make(m, hw, with_tp(c.tp));
    EXPECT_FALSE(s.calibrated());
    for (std::int64_t len : {1, 37, 4000, 50000}) {
      const Estimate e = run(m, hw, with_tp(c.tp), workload(len));
      const std::string what =
          std::string(c.model) + " tp " + std::to_string(c.tp) + " L " + std::to_string(len);
      const StepChunk one{len, 0, true};
      expect_same_roofline(s.step(std::span(&one, 1)), e.prefill, what);
      expect_same_roofline(s.prefill(len), e.prefill, what + " (shorthand)");
    }
  }
}

TEST(StepModel, DecodeChunksAreEstimatesDecodeStep) {
  for (const Case& c : kCases) {
    const ModelSpec m = model(c.model);
    const HardwareSpec hw = hardware(c.hardware);
    const StepModel s = make(m, hw, with_tp(c.tp));
    for (std::int64_t batch : {1, 8, 64}) {
      for (std::int64_t context : {1, 4000, 100000}) {
        const Estimate e = run(m, hw, with_tp(c.tp), workload(context, 10, batch));
        const std::vector<StepChunk> chunks(static_cast<size_t>(batch),
                                            StepChunk{1, context, true});
        const std::string what = std::string(c.model) + " tp " + std::to_string(c.tp) + " B " +
                                 std::to_string(batch) + " c " + std::to_string(context);
        expect_same_roofline(s.step(chunks), e.decode_step, what);
        expect_same_roofline(s.decode(batch, context), e.decode_step, what + " (shorthand)");
      }
    }
  }
}

TEST(StepModel, ChunkedPrefillAddsUpToTheOnePassAttentionAndKv) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  const StepModel s = make(m, hw);
  const std::int64_t len = 50000, chunk = 2048;
  double flops = 0, kv_and_weights = 0;
  std::int64_t steps = 0;
  for (std::int64_t p = 0; p < len; p += chunk, ++steps) {
    const StepChunk c{std::min(chunk, len - p), p, p + chunk >= len};
    const Roofline r = s.step(std::span(&c, 1));
    flops += r.flops;
    kv_and_weights += r.bytes;
  }
  const Roofline one = s.prefill(len);
  // FLOPs: the linear part is per token and the L^2 attention term telescopes over the chunks.
  expect_close(flops, one.flops, "chunked prefill FLOPs");
  // Bytes: each chunk reads the weights again and reads back the earlier context once.
  const double kv = s.kv_bytes_per_token_device();
  double context_read = 0;
  for (std::int64_t p = 0; p < len; p += chunk) context_read += static_cast<double>(p) * kv;
  const double weights = one.bytes - static_cast<double>(len) * kv;
  expect_close(kv_and_weights,
               static_cast<double>(steps) * weights + static_cast<double>(len) * kv + context_read,
               "chunked prefill bytes");
}

TEST(StepModel, MixedBatchPricesEveryPartOnce) {
  const ModelSpec m = model("llama-3-8b");
  const HardwareSpec hw = hardware("h100-80g");
  const StepModel s = make(m, hw);
  // Two decode tokens at 1000 and 3000, a prefill chunk of 512 on top of 1024.
  const std::vector<StepChunk> chunks = {{1, 1000, true}, {1, 3000, true}, {512, 1024, false}};
  const Roofline r = s.step(chunks);
  const ParamCounts p = count_params(m);
  const double w = m.attention_width(), layers = static_cast<double>(m.num_layers);
  const double attention = 4.0 * layers * 1000 * w + 4.0 * layers * 3000 * w +
                           layers * w * (1536.0 * 1536.0 - 1024.0 * 1024.0);
  expect_close(r.flops, 2.0 * p.matmul_active * 514 + attention, "mixed FLOPs");
  const double kv = s.kv_bytes_per_token_device();
  const double weights = s.decode(514, 1).bytes - 514 * kv;  // weights at 514 tokens per step
  expect_close(r.bytes, weights + (1000 + 3000 + 1536) * kv, "mixed bytes");
  EXPECT_DOUBLE_EQ(r.seconds,
                   std::max(r.flops / *hw.flops_for(DType::kBf16), r.bytes / hw.hbm_bandwidth));
  // Nothing to run costs nothing.
  EXPECT_EQ(s.step({}).seconds, 0.0);
  const StepChunk empty{0, 100, true};
  EXPECT_EQ(s.step(std::span(&empty, 1)).seconds, 0.0);
}

TEST(StepModel, SizesMatchEstimate) {
  for (const Case& c : kCases) {
    const ModelSpec m = model(c.model);
    const HardwareSpec hw = hardware(c.hardware);
    Deployment d = with_tp(c.tp);
    d.hbm_utilization = 0.9;
    const StepModel s = make(m, hw, d);
    const Estimate e = run(m, hw, d, workload(20000, 250));
    EXPECT_DOUBLE_EQ(s.kv_bytes_per_token_device(), e.kv_bytes_per_token_per_device) << c.model;
    EXPECT_DOUBLE_EQ(s.weight_bytes_per_device(), e.weight_bytes_per_device) << c.model;
    EXPECT_EQ(s.max_requests(20250), e.max_concurrency) << c.model;
    EXPECT_EQ(s.min_tp_to_fit(20250), e.min_tp_to_fit) << c.model;
    EXPECT_DOUBLE_EQ(s.swap_seconds(e.context_switch_bytes), e.context_switch_seconds);
    // Blocks: the same budget over block-sized requests.
    const double budget = hw.hbm_bytes * 0.9 - e.weight_bytes_per_device;
    const double block = 16 * e.kv_bytes_per_token_per_device;
    EXPECT_EQ(s.kv_blocks(16),
              budget > 0 ? static_cast<std::int64_t>(std::floor(budget / block)) : 0)
        << c.model;
  }
  // Weights that do not fit leave no blocks, and say which TP degree would.
  const StepModel yi = make(model("yi-34b-200k"), hardware("a100-40g"));
  EXPECT_EQ(yi.kv_blocks(16), 0);
  EXPECT_EQ(yi.min_tp_to_fit(16), 2);
}

TEST(StepModel, RejectsWhatEstimateRejects) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  auto bad_tp = StepModel::create(m, hw, with_tp(3));
  ASSERT_FALSE(bad_tp.is_ok());
  EXPECT_THAT(bad_tp.status().message(), ::testing::HasSubstr("must divide the model's 56"));
  Deployment fp8;
  fp8.compute_dtype = DType::kFp8;
  auto no_rate = StepModel::create(m, hw, fp8);
  ASSERT_FALSE(no_rate.is_ok());
  EXPECT_THAT(no_rate.status().message(), ::testing::HasSubstr("has no fp8 FLOP rate"));
  Deployment util;
  util.hbm_utilization = 0;
  EXPECT_FALSE(StepModel::create(m, hw, util).is_ok());
}

// A CPU-like device with a calibration whose every term can be computed by hand.
HardwareSpec calibrated_device() {
  HardwareSpec hw;
  hw.name = "calibrated";
  hw.hbm_bytes = 16e9;
  hw.hbm_bandwidth = 10e9;
  hw.flops[DType::kFp32] = 50e9;
  hw.pcie_bandwidth = 8e9;
  Calibration c;
  c.step_overhead = 1e-4;
  c.token_overhead = 2e-5;
  c.attention_call_overhead = 1e-7;
  c.weight_read_efficiency = 0.8;
  c.kv_read_efficiency = 0.5;
  c.prefill_attention_efficiency = 0.25;
  c.swap_efficiency = 0.9;
  c.gemm_efficiency = {{1, 0.02}, {4, 0.08}, {64, 0.5}, {1024, 0.8}};
  hw.calibration = c;
  return hw;
}

TEST(Calibration, GemmEfficiencyInterpolatesInLogTokensAndClamps) {
  const Calibration c = *calibrated_device().calibration;
  EXPECT_DOUBLE_EQ(c.gemm_efficiency_at(1), 0.02);
  EXPECT_DOUBLE_EQ(c.gemm_efficiency_at(0.5), 0.02);
  EXPECT_DOUBLE_EQ(c.gemm_efficiency_at(2), 0.05);  // halfway from 1 to 4 in log
  EXPECT_DOUBLE_EQ(c.gemm_efficiency_at(16), 0.29);
  EXPECT_DOUBLE_EQ(c.gemm_efficiency_at(1024), 0.8);
  EXPECT_DOUBLE_EQ(c.gemm_efficiency_at(1e6), 0.8);
  EXPECT_DOUBLE_EQ(Calibration{}.gemm_efficiency_at(7), 1.0);
}

TEST(Calibration, DecodeStepSumsKernelClassesByHand) {
  const ModelSpec m = model("small");
  const HardwareSpec hw = calibrated_device();
  const StepModel s = make(m, hw);
  ASSERT_TRUE(s.calibrated());
  EXPECT_EQ(s.deployment().compute_dtype, DType::kFp32);
  const ParamCounts p = count_params(m);
  const double layers = static_cast<double>(m.num_layers);
  const double kv = s.kv_bytes_per_token_device();
  EXPECT_DOUBLE_EQ(kv, 8.0 * 2 * 4 * 64 * 4);  // fp32, 8 layers, 4 KV heads of 64

  const std::int64_t batch = 4, context = 1000;
  const Roofline r = s.decode(batch, context);
  const double lm = p.lm_head, linear = p.matmul_active - lm;
  const double linear_bytes = (p.total - p.embedding - lm) * 4;
  const double t_linear = std::max(linear_bytes / (10e9 * 0.8), 2 * linear * 4 / (50e9 * 0.08));
  const double t_lm = std::max(lm * 4 / (10e9 * 0.8), 2 * lm * 4 / (50e9 * 0.08));
  const double t_kv = 4 * 1001 * kv / (10e9 * 0.5);
  const double t_over = 1e-4 + 4 * 2e-5 + 4 * layers * 1e-7;
  EXPECT_NEAR(r.seconds, t_linear + t_lm + t_kv + t_over, 1e-12);
  EXPECT_NEAR(r.overhead_seconds, t_over, 1e-15);
  EXPECT_EQ(r.comm_seconds, 0.0);
  // The uniform shorthand and the chunk list agree.
  const std::vector<StepChunk> chunks(batch, StepChunk{1, context, true});
  expect_same_roofline(s.step(chunks), r, "calibrated decode");
  // The bound names the largest class.
  const double memory = r.memory_seconds, compute = r.compute_seconds;
  EXPECT_EQ(r.bound, memory > compute && memory > t_over ? Bound::kHbmBandwidth
                     : compute > t_over                  ? Bound::kCompute
                                                         : Bound::kOverhead);
  EXPECT_DOUBLE_EQ(s.swap_seconds(9e8), 9e8 / (8e9 * 0.9));
}

TEST(Calibration, PrefillRunsTheLmHeadOnlyForLogitRowsAndAttentionAsTheKernelDoes) {
  const ModelSpec m = model("small");
  const StepModel s = make(m, calibrated_device());
  const ParamCounts p = count_params(m);
  const double layers = static_cast<double>(m.num_layers);
  const double w = m.attention_width();
  const std::int64_t n = 512, ctx = 1024;
  const StepChunk with{n, ctx, true}, without{n, ctx, false};
  const Roofline a = s.step(std::span(&with, 1));
  const Roofline b = s.step(std::span(&without, 1));
  const double lm_one_row = std::max(p.lm_head * 4 / (10e9 * 0.8), 2 * p.lm_head / (50e9 * 0.02));
  EXPECT_NEAR(a.seconds - b.seconds, lm_one_row, 1e-12);
  // Query i of the chunk attends to ctx + i + 1 tokens: 4 FLOPs per pair and attention width.
  const double visits = 512.0 * 1024 + 512.0 * 513 / 2;
  const double attention = visits * 4 * layers * w / (50e9 * 0.25);
  const double linear = p.matmul_active - p.lm_head;
  const double context_read = 1024 * s.kv_bytes_per_token_device() / (10e9 * 0.5);
  const double over = 1e-4 + 512 * 2e-5;  // no per-call cost: a prefill query's KV is warm
  const double gemm = calibrated_device().calibration->gemm_efficiency_at(512);
  const double t_lin = std::max((p.total - p.embedding - p.lm_head) * 4 / (10e9 * 0.8),
                                2 * linear * 512 / (50e9 * gemm));
  EXPECT_NEAR(b.seconds, t_lin + attention + context_read + over, 1e-12);
  EXPECT_EQ(b.bound, Bound::kCompute);
}

TEST(Calibration, PartsAddUpToTheStep) {
  const ModelSpec m = model("small");
  const StepModel s = make(m, calibrated_device());
  const std::vector<StepChunk> chunks = {{1, 3000, true}, {1, 100, true}, {256, 512, false}};
  const StepParts p = s.parts(chunks);
  const Roofline r = s.step(chunks);
  EXPECT_NEAR(p.linear + p.lm_head + p.decode_attention + p.prefill_attention + p.overhead + p.comm,
              r.seconds, 1e-15);
  EXPECT_DOUBLE_EQ(p.overhead, 1e-4 + 258 * 2e-5);
  const double kv = s.kv_bytes_per_token_device();
  EXPECT_NEAR(p.decode_attention,
              (3001 + 101) * kv / (10e9 * 0.5) + 2 * static_cast<double>(m.num_layers) * 1e-7,
              1e-15);
  EXPECT_GT(p.prefill_attention, 0);
  EXPECT_GT(p.lm_head, 0);
  // Uncalibrated hardware has one roofline, no parts.
  const StepParts none = make(m, hardware("a100-80g")).parts(chunks);
  EXPECT_EQ(none.linear + none.lm_head + none.decode_attention + none.prefill_attention +
                none.overhead + none.comm,
            0.0);
}

TEST(Calibration, EstimateUsesTheCalibratedSteps) {
  const ModelSpec m = model("small");
  const HardwareSpec hw = calibrated_device();
  const StepModel s = make(m, hw);
  const Estimate e = run(m, hw, Deployment{}, workload(2000, 4, 2));
  EXPECT_TRUE(e.calibrated);
  EXPECT_DOUBLE_EQ(e.prefill_seconds, s.prefill(2000).seconds);
  EXPECT_DOUBLE_EQ(e.decode_seconds_per_token, s.decode(2, 2000).seconds);
  EXPECT_NEAR(e.decode_seconds,
              s.decode(2, 2000).seconds + s.decode(2, 2001).seconds + s.decode(2, 2002).seconds +
                  s.decode(2, 2003).seconds,
              1e-12);
  EXPECT_DOUBLE_EQ(e.context_switch_seconds, e.context_switch_bytes / (8e9 * 0.9));
  EXPECT_FALSE(run(m, hardware("a100-80g"), Deployment{}, workload(2000)).calibrated);
}

}  // namespace
}  // namespace kvfleet::perfmodel
