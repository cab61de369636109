#include <nlohmann/json.hpp>

#include "tests/perfmodel/perfmodel_test_util.h"
#include "tests/test_util.h"

namespace kvfleet::perfmodel {
namespace {

using namespace test;

TEST(Hardware, BuiltinsCarryTheRunningExampleConventions) {
  const HardwareSpec a100 = hardware("a100-80g");
  EXPECT_DOUBLE_EQ(a100.hbm_bytes, 80 * kGiB);  // 81920 MiB, as the device reports
  EXPECT_DOUBLE_EQ(a100.hbm_bandwidth, 2039e9);
  EXPECT_DOUBLE_EQ(*a100.flops_for(DType::kBf16), 312e12);
  EXPECT_DOUBLE_EQ(a100.pcie_bandwidth, 25e9);
  EXPECT_FALSE(a100.flops_for(DType::kFp8).has_value());
  for (const auto& name : builtin_hardware_names()) {
    const HardwareSpec hw = hardware(name);
    EXPECT_EQ(hw.name, name);
    EXPECT_GT(hw.hbm_bytes, 0) << name;
    EXPECT_TRUE(hw.flops_for(DType::kBf16).has_value()) << name;
  }
  for (const char* required : {"a100-80g", "a100-40g", "h100-80g", "h200"}) {
    EXPECT_TRUE(load_hardware(required).is_ok()) << required;
  }
}

TEST(Hardware, LoadsYamlAndJsonFilesWithUnits) {
  kvfleet::test::TempDir dir;
  const std::string yaml = dir.write("gpu.yaml",
                                     "name: test-gpu\n"
                                     "hbm_bytes: 96GiB\n"
                                     "hbm_bandwidth: 3TB/s\n"
                                     "flops: {bf16: 500T, fp8: 1000 TFLOPS}\n"
                                     "pcie_bandwidth: 50GB/s\n"
                                     "nvlink_bandwidth: 450GB/s\n"
                                     "host_memory_bytes: 512GiB\n");
  auto hw = load_hardware(yaml);
  ASSERT_TRUE(hw.is_ok()) << hw.status().to_string();
  EXPECT_EQ(hw->name, "test-gpu");
  EXPECT_DOUBLE_EQ(hw->hbm_bytes, 96 * kGiB);
  EXPECT_DOUBLE_EQ(hw->hbm_bandwidth, 3e12);
  EXPECT_DOUBLE_EQ(*hw->flops_for(DType::kFp8), 1e15);
  EXPECT_DOUBLE_EQ(hw->host_memory_bytes, 512 * kGiB);

  const std::string js =
      dir.write("gpu.json", R"({"hbm_bytes": 1e10, "hbm_bandwidth": 1e12, "flops": {"fp16": 1e14},
                     "pcie_bandwidth": 1e10})");
  auto j = load_hardware(js);
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ(j->name, js);
  EXPECT_DOUBLE_EQ(j->nvlink_bandwidth, 0);
  // A file-defined device drives the model like a built-in one.
  Deployment d;
  d.weight_dtype = DType::kFp16;
  auto e = estimate(model("llama-2-7b"), *j, d, workload(1000));
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  EXPECT_EQ(e->max_concurrency, 0);  // 13.5 GB of fp16 weights do not fit in 10 GB
}

TEST(Hardware, BadFilesGetErrorsNamingTheField) {
  kvfleet::test::TempDir dir;
  auto expect_error = [&](const std::string& text, const std::string& fragment) {
    const std::string path = dir.write("hw.yaml", text);
    auto hw = load_hardware(path);
    ASSERT_FALSE(hw.is_ok()) << text;
    EXPECT_NE(hw.status().message().find(fragment), std::string::npos)
        << hw.status().message() << " (wanted '" << fragment << "')";
  };
  const std::string ok_rest = "hbm_bandwidth: 1TB/s\nflops: {bf16: 100T}\npcie_bandwidth: 10GB/s\n";
  expect_error(ok_rest, "required field 'hbm_bytes' is missing");
  expect_error("hbm_bytes: 80 furlongs\n" + ok_rest, "unknown unit 'furlongs'");
  expect_error("hbm_bytes: 0\n" + ok_rest, "'hbm_bytes' must be positive");
  expect_error("hbm_bytes: 80GiB\nhbm_bandwidth: 1TB/s\nflops: {bf17: 1T}\npcie_bandwidth: 1GB/s\n",
               "unknown dtype 'bf17'");
  expect_error("hbm_bytes: 80GiB\nhbm_bandwidth: 1TB/s\nflops: 5\npcie_bandwidth: 1GB/s\n",
               "'flops' must map dtypes");
  expect_error("[1, 2]", "expected an object");

  auto unknown = load_hardware("tpu-v9");
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("a100-80g"), std::string::npos)
      << "the error lists the built-in hardware";
}

TEST(Hardware, UnknownFieldsAreErrors) {
  kvfleet::test::TempDir dir;
  const std::string path = dir.write("hw.yaml",
                                     "hbm_bytes: 80GiB\nhbm_bandwidth: 1TB/s\nflops: {bf16: 100T}\n"
                                     "pcie_bandwidth: 10GB/s\nnvlink_bandwith: 300GB/s\n");
  auto hw = load_hardware(path);
  ASSERT_FALSE(hw.is_ok());
  EXPECT_THAT(hw.status().message(), ::testing::HasSubstr("unknown field 'nvlink_bandwith'"));
}

const char* kProfile =
    "name: cpu-profile\n"
    "hbm_bytes: 16GiB\n"
    "hbm_bandwidth: 13.4GB/s\n"
    "flops: {fp32: 60G}\n"
    "pcie_bandwidth: 11GB/s\n"
    "host_memory_bytes: 8GiB\n"
    "calibration:\n"
    "  step_overhead: 150us\n"
    "  token_overhead: 2.5e-5\n"
    "  attention_call_overhead: 80ns\n"
    "  weight_read_efficiency: 0.93\n"
    "  kv_read_efficiency: 0.55\n"
    "  prefill_attention_efficiency: 0.3\n"
    "  swap_efficiency: 0.9\n"
    "  gemm_efficiency:\n"
    "    - {tokens: 1, efficiency: 0.04}\n"
    "    - {tokens: 8, efficiency: 0.21}\n"
    "    - {tokens: 512, efficiency: 0.82}\n"
    "  provenance: {cpu: \"AMD EPYC 7B13\", threads: 1, date: \"2025-01-02T03:04:05Z\",\n"
    "               kvfleet_version: \"0.1.0\", command: \"kvfleet bench engine --profile "
    "p.yaml\",\n"
    "               model: small}\n";

TEST(Hardware, CalibrationSectionParses) {
  kvfleet::test::TempDir dir;
  auto hw = load_hardware(dir.write("p.yaml", kProfile));
  ASSERT_TRUE(hw.is_ok()) << hw.status().to_string();
  ASSERT_TRUE(hw->calibration.has_value());
  const Calibration& c = *hw->calibration;
  EXPECT_DOUBLE_EQ(c.step_overhead, 150e-6);
  EXPECT_DOUBLE_EQ(c.token_overhead, 2.5e-5);
  EXPECT_DOUBLE_EQ(c.attention_call_overhead, 80e-9);
  EXPECT_DOUBLE_EQ(c.weight_read_efficiency, 0.93);
  EXPECT_DOUBLE_EQ(c.kv_read_efficiency, 0.55);
  EXPECT_DOUBLE_EQ(c.prefill_attention_efficiency, 0.3);
  EXPECT_DOUBLE_EQ(c.swap_efficiency, 0.9);
  ASSERT_EQ(c.gemm_efficiency.size(), 3u);
  EXPECT_EQ(c.gemm_efficiency[1].tokens, 8);
  EXPECT_DOUBLE_EQ(c.gemm_efficiency[1].efficiency, 0.21);
  EXPECT_EQ(c.provenance.cpu, "AMD EPYC 7B13");
  EXPECT_EQ(c.provenance.threads, 1);
  EXPECT_EQ(c.provenance.model, "small");
  // Built-ins have none: they keep the paper's roofline.
  EXPECT_FALSE(hardware("a100-80g").calibration.has_value());
}

TEST(Hardware, ProfilesRoundTripThroughJsonAndYaml) {
  kvfleet::test::TempDir dir;
  auto hw = load_hardware(dir.write("p.yaml", kProfile));
  ASSERT_TRUE(hw.is_ok()) << hw.status().to_string();
  auto expect_same = [&](const HardwareSpec& b, const std::string& how) {
    EXPECT_EQ(b.name, hw->name) << how;
    EXPECT_EQ(b.hbm_bytes, hw->hbm_bytes) << how;
    EXPECT_EQ(b.hbm_bandwidth, hw->hbm_bandwidth) << how;
    EXPECT_EQ(b.flops, hw->flops) << how;
    EXPECT_EQ(b.pcie_bandwidth, hw->pcie_bandwidth) << how;
    EXPECT_EQ(b.nvlink_bandwidth, hw->nvlink_bandwidth) << how;
    EXPECT_EQ(b.host_memory_bytes, hw->host_memory_bytes) << how;
    ASSERT_TRUE(b.calibration.has_value()) << how;
    const Calibration& x = *b.calibration;
    const Calibration& y = *hw->calibration;
    EXPECT_EQ(x.step_overhead, y.step_overhead) << how;
    EXPECT_EQ(x.token_overhead, y.token_overhead) << how;
    EXPECT_EQ(x.attention_call_overhead, y.attention_call_overhead) << how;
    EXPECT_EQ(x.weight_read_efficiency, y.weight_read_efficiency) << how;
    EXPECT_EQ(x.kv_read_efficiency, y.kv_read_efficiency) << how;
    EXPECT_EQ(x.prefill_attention_efficiency, y.prefill_attention_efficiency) << how;
    EXPECT_EQ(x.swap_efficiency, y.swap_efficiency) << how;
    ASSERT_EQ(x.gemm_efficiency.size(), y.gemm_efficiency.size()) << how;
    for (size_t i = 0; i < x.gemm_efficiency.size(); ++i) {
      EXPECT_EQ(x.gemm_efficiency[i].tokens, y.gemm_efficiency[i].tokens) << how;
      EXPECT_EQ(x.gemm_efficiency[i].efficiency, y.gemm_efficiency[i].efficiency) << how;
    }
    EXPECT_EQ(x.provenance.cpu, y.provenance.cpu) << how;
    EXPECT_EQ(x.provenance.threads, y.provenance.threads) << how;
    EXPECT_EQ(x.provenance.date, y.provenance.date) << how;
    EXPECT_EQ(x.provenance.kvfleet_version, y.provenance.kvfleet_version) << how;
    EXPECT_EQ(x.provenance.command, y.provenance.command) << how;
    EXPECT_EQ(x.provenance.model, y.provenance.model) << how;
  };
  auto from_json = parse_hardware(hardware_to_json(*hw), "round trip");
  ASSERT_TRUE(from_json.is_ok()) << from_json.status().to_string();
  expect_same(*from_json, "json");
  auto from_yaml = load_hardware(dir.write("again.yaml", hardware_to_yaml(*hw)));
  ASSERT_TRUE(from_yaml.is_ok()) << from_yaml.status().to_string() << "\n" << hardware_to_yaml(*hw);
  expect_same(*from_yaml, "yaml");
  // A spec without a calibration writes none.
  EXPECT_FALSE(hardware_to_json(hardware("h100-80g")).contains("calibration"));
}

TEST(Hardware, BadCalibrationsGetErrorsNamingTheField) {
  kvfleet::test::TempDir dir;
  const std::string head =
      "hbm_bytes: 16GiB\nhbm_bandwidth: 10GB/s\nflops: {fp32: 50G}\npcie_bandwidth: 8GB/s\n"
      "calibration:\n";
  auto expect_error = [&](const std::string& section, const std::string& fragment) {
    auto hw = load_hardware(dir.write("bad.yaml", head + section));
    ASSERT_FALSE(hw.is_ok()) << section;
    EXPECT_EQ(hw.status().code(), StatusCode::kInvalidArgument) << section;
    EXPECT_THAT(hw.status().message(), ::testing::HasSubstr(fragment)) << section;
  };
  expect_error("  kv_read_efficency: 0.5\n", "unknown field 'kv_read_efficency'");
  expect_error("  kv_read_efficiency: fast\n", "'kv_read_efficiency' must be a number");
  expect_error("  kv_read_efficiency: -0.5\n", "'kv_read_efficiency' must be a positive");
  expect_error("  weight_read_efficiency: 0\n", "'weight_read_efficiency' must be a positive");
  expect_error("  step_overhead: -1e-6\n", "'step_overhead' must be finite and non-negative");
  expect_error("  token_overhead: 3 fortnights\n", "'token_overhead'");
  expect_error("  gemm_efficiency: {1: 0.5}\n", "'gemm_efficiency' must be a list");
  expect_error("  gemm_efficiency: [{tokens: 8, efficiency: 0.2}, {tokens: 8, efficiency: 0.3}]\n",
               "'tokens' must increase along the table (8 after 8)");
  expect_error("  gemm_efficiency: [{tokens: 0, efficiency: 0.2}]\n", "'tokens' must be >= 1");
  expect_error("  gemm_efficiency: [{tokens: 1}]\n", "required field 'efficiency' is missing");
  expect_error("  gemm_efficiency: [{tokens: 1, efficiency: 0.2, note: x}]\n",
               "unknown field 'note'");
  expect_error("  provenance: {threads: -1}\n", "'threads' must be non-negative");
  expect_error("  provenance: {cpu: 7}\n", "'cpu' must be a string");
  expect_error("  provenance: {gpu: x}\n", "unknown field 'gpu'");
  expect_error("  5\n", "expected an object");
}

}  // namespace
}  // namespace kvfleet::perfmodel
