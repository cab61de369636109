// Link specs: presets, files with units, bad input.
#include "perfmodel/link.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace kvfleet::perfmodel {
namespace {

LinkSpec link(std::string_view name) {
  auto l = load_link(name);
  EXPECT_TRUE(l.is_ok()) << l.status().to_string();
  return l.is_ok() ? *l : LinkSpec{};
}

TEST(Link, PresetsCarryTheirRates) {
  EXPECT_DOUBLE_EQ(link("nvlink").bandwidth, 300e9);
  EXPECT_DOUBLE_EQ(link("nvlink4").bandwidth, 450e9);
  EXPECT_DOUBLE_EQ(link("infiniband").bandwidth, 45e9);
  EXPECT_DOUBLE_EQ(link("infiniband").latency, 5e-6);
  EXPECT_DOUBLE_EQ(link("pcie").bandwidth, 25e9);
  EXPECT_DOUBLE_EQ(link("tcp").bandwidth, 1.1e9);
  EXPECT_DOUBLE_EQ(link("tcp").latency, 50e-6);
  for (const auto& name : builtin_link_names()) {
    const LinkSpec l = link(name);
    EXPECT_EQ(l.name, name);
    EXPECT_GT(l.bandwidth, 0) << name;
    EXPECT_GT(l.latency, 0) << name;
  }
  // Faster links are faster for a KV hand-off of 1 GiB.
  const double gib = 1024.0 * 1024 * 1024;
  EXPECT_LT(link("nvlink4").transfer_seconds(gib), link("nvlink").transfer_seconds(gib));
  EXPECT_LT(link("infiniband").transfer_seconds(gib), link("tcp").transfer_seconds(gib));
}

TEST(Link, TransferIsLatencyPlusBytesOverBandwidth) {
  const LinkSpec tcp = link("tcp");
  EXPECT_DOUBLE_EQ(tcp.transfer_seconds(0), 50e-6);
  EXPECT_DOUBLE_EQ(tcp.transfer_seconds(1.1e9), 1.0 + 50e-6);
}

TEST(Link, LoadsYamlAndJsonFiles) {
  test::TempDir dir;
  auto y = load_link(dir.write("fabric.yaml", "name: fabric\nbandwidth: 90GB/s\nlatency: 2.5us\n"));
  ASSERT_TRUE(y.is_ok()) << y.status().to_string();
  EXPECT_EQ(y->name, "fabric");
  EXPECT_DOUBLE_EQ(y->bandwidth, 90e9);
  EXPECT_DOUBLE_EQ(y->latency, 2.5e-6);
  const std::string js = dir.write("l.json", R"({"bandwidth": 1e9, "latency": 0.001})");
  auto j = load_link(js);
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ(j->name, js);
  EXPECT_DOUBLE_EQ(j->transfer_seconds(1e9), 1.001);
}

TEST(Link, BadInputNamesTheProblem) {
  test::TempDir dir;
  auto expect_error = [&](const std::string& text, const std::string& fragment) {
    auto l = load_link(dir.write("bad.yaml", text));
    ASSERT_FALSE(l.is_ok()) << text;
    EXPECT_EQ(l.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(l.status().message(), ::testing::HasSubstr(fragment)) << text;
  };
  expect_error("latency: 5us\n", "required field 'bandwidth' is missing");
  expect_error("bandwidth: 10GB/s\n", "required field 'latency' is missing");
  expect_error("bandwidth: 0\nlatency: 5us\n", "'bandwidth' must be positive");
  expect_error("bandwidth: 10 GB\nlatency: 5us\n", "'bandwidth'");
  expect_error("bandwidth: 10GB/s\nlatency: 5 parsecs\n", "unknown unit 'parsecs'");
  expect_error("bandwidth: 10GB/s\nlatency: -5\n", "'latency' must be finite and non-negative");
  expect_error("bandwidth: 10GB/s\nlatency: 5us\nmtu: 9000\n", "unknown field 'mtu'");
  expect_error("[1, 2]", "expected an object");

  auto unknown = load_link("carrier-pigeon");
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), ::testing::HasSubstr("presets: nvlink, nvlink4"));
}

}  // namespace
}  // namespace kvfleet::perfmodel
