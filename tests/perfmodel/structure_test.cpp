// The framework's structure, beyond the one published example: TP, MoE, MLA, compression,
// dtypes, the roofline's choice of bound, and how the figures combine.
#include <cmath>

#include "tests/perfmodel/perfmodel_test_util.h"

namespace kvfleet::perfmodel {
namespace {

using namespace test;

Deployment with_tp(std::int64_t tp) {
  Deployment d;
  d.tp = tp;
  return d;
}

TEST(TensorParallel, MultipliesHbmAndDividesWeights) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  const Estimate one = run(m, hw, with_tp(1), workload(100000));
  for (std::int64_t tp : {2, 4, 8}) {
    const Estimate e = run(m, hw, with_tp(tp), workload(100000));
    EXPECT_DOUBLE_EQ(e.weight_bytes, one.weight_bytes);
    EXPECT_DOUBLE_EQ(e.weight_bytes_per_device, one.weight_bytes / static_cast<double>(tp));
    EXPECT_DOUBLE_EQ(e.kv_bytes_per_token_per_device, 245760.0 / static_cast<double>(tp));
    // The paper's form: floor((HBM * tp - weights) / kv_per_request), KV at the peak length.
    const double kv = 245760.0 * (100000 + 250);
    const auto expected = static_cast<std::int64_t>(
        std::floor((hw.hbm_bytes * static_cast<double>(tp) - one.weight_bytes) / kv));
    EXPECT_EQ(e.max_concurrency, expected) << "tp " << tp;
    // Compute splits too: prefill FLOPs per device fall by tp.
    EXPECT_NEAR(e.prefill.flops * static_cast<double>(tp), one.prefill.flops,
                1e-9 * one.prefill.flops);
    EXPECT_GT(e.prefill.comm_bytes, 0.0);
  }
  EXPECT_EQ(one.max_concurrency, 0);
  EXPECT_EQ(one.min_tp_to_fit, 2);
  // Concurrency grows about linearly with tp once the weights are paid for.
  const auto c2 = run(m, hw, with_tp(2), workload(100000)).max_concurrency;
  const auto c8 = run(m, hw, with_tp(8), workload(100000)).max_concurrency;
  EXPECT_GE(c8, 4 * c2);
}

TEST(TensorParallel, KvHeadsAreReplicatedBeyondTheirCount) {
  // llama-3-70b has 64 query heads and 8 KV heads: at tp=16 each rank still holds a whole KV
  // head, i.e. 1/8 of the KV, not 1/16.
  const Estimate e = run(model("llama-3-70b"), hardware("h100-80g"), with_tp(16), workload(8000));
  EXPECT_DOUBLE_EQ(e.kv_bytes_per_token_per_device, e.kv_bytes_per_token / 8.0);
  // MLA's latent is shared by all heads, so every rank holds all of it.
  const Estimate mla = run(model("deepseek-v2"), hardware("h200"), with_tp(8), workload(8000));
  EXPECT_DOUBLE_EQ(mla.kv_bytes_per_token_per_device, mla.kv_bytes_per_token);
  EXPECT_DOUBLE_EQ(mla.kv_bytes_per_token, 60.0 * (512 + 64) * 2);
}

TEST(MixtureOfExperts, AllExpertsForMemoryActiveExpertsForFlops) {
  const ModelSpec moe = model("mixtral-8x7b");
  const HardwareSpec hw = hardware("h100-80g");
  const Estimate e = run(moe, hw, with_tp(2), workload(1000, 100));
  const ParamCounts p = count_params(moe);
  EXPECT_DOUBLE_EQ(e.weight_bytes, p.total * 2);
  // Prefill: 2 FLOPs per active matmul parameter per token, plus attention.
  const double linear = 2.0 * p.matmul_active * 1000 / 2;
  EXPECT_GT(e.prefill.flops, linear);
  EXPECT_LT(e.prefill.flops, linear * 1.1);
  EXPECT_LT(p.matmul_active, 0.3 * p.total);
  // Batch-1 decode reads only the chosen experts' weights: well under all weights...
  EXPECT_LT(e.decode_step.bytes, 0.5 * e.weight_bytes_per_device);
  // ...while a large batch touches nearly every expert.
  const Estimate big = run(moe, hw, with_tp(2), workload(1000, 100, 64));
  const double kv = 64 * e.kv_bytes_per_request_per_device;
  EXPECT_GT(big.decode_step.bytes - kv, 0.95 * e.weight_bytes_per_device);
}

TEST(MixtureOfExperts, ExpectedExpertFraction) {
  EXPECT_DOUBLE_EQ(expected_expert_fraction(1, 2, 8), 0.25);
  EXPECT_DOUBLE_EQ(expected_expert_fraction(2, 2, 8), 1 - 0.75 * 0.75);
  EXPECT_DOUBLE_EQ(expected_expert_fraction(5, 8, 8), 1.0);
  EXPECT_NEAR(expected_expert_fraction(4000, 6, 160), 1.0, 1e-12);
}

TEST(Compression, EachKnobShrinksKvAsStated) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  const Estimate base = run(m, hw, Deployment{}, workload(50000));
  struct Case {
    const char* spec;
    double factor;
  };
  for (Case c : {Case{"layer=1/60", 1.0 / 60}, Case{"head=0.02", 0.02}, Case{"token=0.5", 0.5},
                 Case{"hidden=0.25", 0.25}, Case{"layer=0.5,token=0.5", 0.25},
                 Case{"layer=0.5,head=0.5,token=0.5,hidden=0.5", 1.0 / 16}}) {
    auto comp = parse_compression(c.spec);
    ASSERT_TRUE(comp.is_ok()) << comp.status().to_string();
    Deployment d;
    d.compression = *comp;
    const Estimate e = run(m, hw, d, workload(50000));
    EXPECT_NEAR(e.kv_bytes_per_token, base.kv_bytes_per_token * c.factor, 1e-6) << c.spec;
    EXPECT_NEAR(e.context_switch_seconds, base.context_switch_seconds * c.factor, 1e-12) << c.spec;
    EXPECT_GT(e.max_concurrency, base.max_concurrency) << c.spec;
    EXPECT_LT(e.decode_seconds, base.decode_seconds) << c.spec;
    // The prompt still runs through every layer and head.
    EXPECT_DOUBLE_EQ(e.prefill.flops, base.prefill.flops) << c.spec;
  }
}

TEST(Dtypes, KvAndWeightDtypesScaleTheirBytes) {
  const ModelSpec m = model("llama-3-70b");
  const HardwareSpec hw = hardware("h100-80g");
  Deployment d;
  d.tp = 4;
  const Estimate bf16 = run(m, hw, d, workload(32000));
  d.kv_dtype = DType::kFp8;
  const Estimate kv8 = run(m, hw, d, workload(32000));
  EXPECT_DOUBLE_EQ(kv8.kv_bytes_per_token * 2, bf16.kv_bytes_per_token);
  EXPECT_GT(kv8.max_concurrency, bf16.max_concurrency);
  d.weight_dtype = DType::kInt4;
  const Estimate w4 = run(m, hw, d, workload(32000));
  EXPECT_DOUBLE_EQ(w4.weight_bytes * 4, bf16.weight_bytes);
  EXPECT_EQ(w4.compute_dtype, DType::kBf16);  // weight-only quantization by default
  d.weight_dtype = DType::kFp8;
  d.kv_dtype.reset();
  const Estimate fp8 = run(m, hw, d, workload(32000));
  EXPECT_EQ(fp8.compute_dtype, DType::kFp8);  // H100 has fp8 tensor cores
  EXPECT_EQ(fp8.kv_dtype, DType::kFp8);
  EXPECT_NEAR(fp8.prefill.compute_seconds * 2, bf16.prefill.compute_seconds,
              1e-3 * bf16.prefill.compute_seconds);
}

TEST(Roofline, BatchOneDecodeIsMemoryBoundLargeBatchIsComputeBound) {
  const ModelSpec m = model("llama-3-8b");
  const HardwareSpec hw = hardware("h100-80g");
  const Estimate one = run(m, hw, Deployment{}, workload(100, 16, 1));
  EXPECT_EQ(one.decode_step.bound, Bound::kHbmBandwidth);
  EXPECT_GT(one.decode_step.memory_seconds, 10 * one.decode_step.compute_seconds);
  const Estimate many = run(m, hw, Deployment{}, workload(100, 16, 2048));
  EXPECT_EQ(many.decode_step.bound, Bound::kCompute);
  EXPECT_GE(many.max_concurrency, 2048);
  // Per-token time amortises: 2048 requests cost far less than 2048 single steps.
  EXPECT_LT(many.decode_seconds_per_token, 100 * one.decode_seconds_per_token);
}

TEST(Roofline, ShortPrefillIsMemoryBoundLongPrefillIsComputeBound) {
  const ModelSpec m = model("llama-3-8b");
  const HardwareSpec hw = hardware("h100-80g");
  EXPECT_EQ(run(m, hw, Deployment{}, workload(1)).prefill.bound, Bound::kHbmBandwidth);
  EXPECT_EQ(run(m, hw, Deployment{}, workload(8000)).prefill.bound, Bound::kCompute);
}

TEST(Roofline, LongContextDecodeIsDominatedByKvReads) {
  // "With many concurrent users, KV reads dominate decode instead of weights."
  const Estimate e =
      run(model("llama-3-8b"), hardware("h100-80g"), Deployment{}, workload(100000, 250, 4));
  EXPECT_GT(e.decode_kv_read_share, 0.5);
  EXPECT_EQ(e.decode_step.bound, Bound::kHbmBandwidth);
}

TEST(AttentionFlops, ConventionsScaleTheQuadraticTerm) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  Deployment d;
  const Estimate paper = run(m, hw, d, workload(50000));
  d.attention_flops = AttentionFlops::kCausal;
  const Estimate causal = run(m, hw, d, workload(50000));
  d.attention_flops = AttentionFlops::kFull;
  const Estimate full = run(m, hw, d, workload(50000));
  const double attn = 60.0 * 50000.0 * 50000.0 * 7168.0;  // n_layers * L^2 * d_model
  EXPECT_NEAR(causal.prefill.flops - paper.prefill.flops, attn, 1e-9 * attn);
  EXPECT_NEAR(full.prefill.flops - paper.prefill.flops, 3 * attn, 1e-9 * attn);
  EXPECT_NEAR(paper.prefill_attention_flops_share * paper.prefill.flops, attn, 1e-9 * attn);
}

TEST(Decode, SumsStepsAsTheContextGrows) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  const Estimate e = run(m, hw, Deployment{}, workload(50000, 1000));
  const Estimate last = run(m, hw, Deployment{}, workload(50999, 1));
  EXPECT_GT(e.decode_seconds, 1000 * e.decode_seconds_per_token);
  EXPECT_LT(e.decode_seconds, 1000 * last.decode_seconds_per_token);
  // Memory-bound steps are linear in the context: the sum is the step at the mean context.
  const Estimate mid = run(m, hw, Deployment{}, workload(50000, 1));
  const double slope = last.decode_seconds_per_token - mid.decode_seconds_per_token;
  EXPECT_NEAR(e.decode_seconds, 1000 * (mid.decode_seconds_per_token + slope / 2),
              1e-9 * e.decode_seconds);
  EXPECT_EQ(run(m, hw, Deployment{}, workload(50000, 0)).decode_seconds, 0.0);
}

TEST(Session, ThroughputCombinesTheFourMetrics) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  const Estimate e = run(m, hw, Deployment{}, workload(4000, 250));
  ASSERT_GT(e.max_concurrency, 0);
  const Estimate batch = run(m, hw, Deployment{}, workload(4000, 250, e.max_concurrency));
  const double b = static_cast<double>(e.max_concurrency);
  const double wave = b * e.prefill_seconds + batch.decode_seconds;
  EXPECT_NEAR(e.session_seconds, wave, 1e-9 * wave);
  EXPECT_NEAR(e.sessions_per_second, b / wave, 1e-12);
  EXPECT_NEAR(e.session_tokens_per_second, b * 250 / wave, 1e-9);
  // 50K context serves an order of magnitude fewer sessions than 4K: the paper's cost gap.
  const Estimate long_ctx = run(m, hw, Deployment{}, workload(50000, 250));
  EXPECT_GT(e.sessions_per_second / long_ctx.sessions_per_second, 10.0);
  const Estimate none = run(m, hw, Deployment{}, workload(100000, 250));
  EXPECT_EQ(none.sessions_per_second, 0.0);
}

TEST(Host, CapacityCountsSwappedRequests) {
  const Estimate e =
      run(model("yi-34b-200k"), hardware("a100-80g"), Deployment{}, workload(50000, 250));
  EXPECT_EQ(e.host_kv_capacity,
            static_cast<std::int64_t>(std::floor(256 * kGiB / (245760.0 * 50250))));
}

}  // namespace
}  // namespace kvfleet::perfmodel
