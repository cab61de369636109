#include "tests/perfmodel/perfmodel_test_util.h"

namespace kvfleet::perfmodel {
namespace {

using namespace test;

void expect_invalid(const Result<Estimate>& r, const std::string& fragment) {
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(fragment), std::string::npos)
      << r.status().message() << " (wanted '" << fragment << "')";
}

TEST(BadInput, WorkloadAndDeploymentAreValidated) {
  const ModelSpec m = model("yi-34b-200k");
  const HardwareSpec hw = hardware("a100-80g");
  expect_invalid(estimate(m, hw, Deployment{}, workload(0)), "context must be a positive");
  expect_invalid(estimate(m, hw, Deployment{}, workload(-5)), "got -5");
  expect_invalid(estimate(m, hw, Deployment{}, workload(100, -1)), "decode tokens");
  expect_invalid(estimate(m, hw, Deployment{}, workload(100, 1, 0)), "batch must be positive");
  Deployment d;
  d.tp = 3;
  expect_invalid(estimate(m, hw, d, workload(100)), "tp 3 must divide the model's 56");
  d.tp = 0;
  expect_invalid(estimate(m, hw, d, workload(100)), "tp must be positive");
  d = Deployment{};
  d.hbm_utilization = 1.5;
  expect_invalid(estimate(m, hw, d, workload(100)), "hbm utilization");
  d = Deployment{};
  d.compute_dtype = DType::kFp8;
  expect_invalid(estimate(m, hw, d, workload(100)), "has no fp8 FLOP rate (it has: fp32");
  d = Deployment{};
  d.kv_dtype = DType::kTf32;
  expect_invalid(estimate(m, hw, d, workload(100)), "tf32 is an arithmetic mode");
}

TEST(BadInput, WeightsThatDoNotFitAreZeroConcurrencyWithAReason) {
  auto e = estimate(model("llama-3.1-405b"), hardware("a100-80g"), Deployment{}, workload(4000));
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  EXPECT_EQ(e->max_concurrency, 0);
  EXPECT_EQ(e->sessions_per_second, 0.0);
  EXPECT_NE(e->concurrency_limit.find("weights need"), std::string::npos) << e->concurrency_limit;
  EXPECT_NE(e->concurrency_limit.find("fits with tp >= 16"), std::string::npos)
      << e->concurrency_limit;
  // The per-request figures are still computed, as if it fit.
  EXPECT_GT(e->prefill_seconds, 0);
  EXPECT_GT(e->decode_seconds, 0);
}

TEST(BadInput, ContextBeyondTheModelIsAWarning) {
  auto e = estimate(model("llama-3-8b"), hardware("h100-80g"), Deployment{}, workload(100000));
  ASSERT_TRUE(e.is_ok());
  ASSERT_FALSE(e->warnings.empty());
  EXPECT_NE(e->warnings.front().find("max_position_embeddings (8192)"), std::string::npos);
}

TEST(BadInput, CompressionSpecs) {
  auto ok = parse_compression("token=0.5,layer=1/60");
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_DOUBLE_EQ(ok->token, 0.5);
  EXPECT_DOUBLE_EQ(ok->layer, 1.0 / 60);
  EXPECT_DOUBLE_EQ(ok->head, 1.0);
  struct Case {
    const char* spec;
    const char* fragment;
  };
  for (Case c :
       {Case{"depth=0.5", "unknown compression key 'depth'"}, Case{"layer=0", "in (0, 1]"},
        Case{"layer=2", "in (0, 1]"}, Case{"layer=abc", "not a number"},
        Case{"layer=1/0", "not a number"}, Case{"layer", "must be KEY=RATIO"},
        Case{"layer=0.5,layer=0.5", "given twice"}, Case{"layer=0.5,,head=1", "empty item"}}) {
    auto r = parse_compression(c.spec);
    ASSERT_FALSE(r.is_ok()) << c.spec;
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos)
        << c.spec << ": " << r.status().message();
  }
  EXPECT_FALSE(parse_attention_flops("quadratic").is_ok());
}

}  // namespace
}  // namespace kvfleet::perfmodel
