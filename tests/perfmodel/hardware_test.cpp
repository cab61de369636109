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

}  // namespace
}  // namespace kvfleet::perfmodel
