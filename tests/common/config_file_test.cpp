#include "common/config_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace kvfleet {
namespace {

using nlohmann::json;

TEST(ConfigFile, YamlAndJsonGiveTheSameTree) {
  test::TempDir dir;
  const std::string yaml = dir.write("a.yaml",
                                     "name: gpu\n"
                                     "hbm_bytes: 80GiB\n"
                                     "count: 8\n"
                                     "ratio: 0.5\n"
                                     "quoted: \"42\"\n"
                                     "on: true\n"
                                     "none: ~\n"
                                     "flops: {bf16: 312T}\n"
                                     "list: [1, 2]\n");
  const std::string js =
      dir.write("a.json",
                R"({"name": "gpu", "hbm_bytes": "80GiB", "count": 8, "ratio": 0.5, "quoted": "42",
          "on": true, "none": null, "flops": {"bf16": "312T"}, "list": [1, 2]})");
  auto a = load_config_file(yaml);
  auto b = load_config_file(js);
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(*a, *b);
  EXPECT_TRUE((*a)["count"].is_number_integer());
  EXPECT_TRUE((*a)["quoted"].is_string());
}

TEST(ConfigFile, ErrorsNameTheFile) {
  test::TempDir dir;
  auto missing = load_config_file(dir.path() + "/nope.json");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.json"), std::string::npos);

  const std::string bad_json = dir.write("bad.json", "{\"a\": 1,,}");
  auto r = load_config_file(bad_json);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("bad.json"), std::string::npos);
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos);

  const std::string bad_yaml = dir.write("bad.yaml", "a: [1, 2\nb: }");
  auto y = load_config_file(bad_yaml);
  ASSERT_FALSE(y.is_ok());
  EXPECT_NE(y.status().message().find("bad.yaml"), std::string::npos);
}

TEST(FieldReader, ReportsMissingAndMistypedFields) {
  json obj = {{"n", 5}, {"f", 4096.0}, {"half", 2.5}, {"s", "x"}, {"b", true}, {"q", "2GB"}};
  FieldReader f(obj, "thing");
  EXPECT_EQ(*f.integer("n"), 5);
  EXPECT_EQ(*f.integer("f"), 4096);
  EXPECT_EQ(*f.integer_or("absent", 7), 7);
  EXPECT_EQ(*f.string("s"), "x");
  EXPECT_TRUE(*f.boolean_or("b", false));
  EXPECT_DOUBLE_EQ(*f.quantity("q", Quantity::kBytes), 2e9);
  EXPECT_DOUBLE_EQ(*f.quantity("n", Quantity::kBytes), 5);

  auto miss = f.integer("hidden_size");
  ASSERT_FALSE(miss.is_ok());
  EXPECT_EQ(miss.status().message(), "thing: required field 'hidden_size' is missing");
  auto frac = f.integer("half");
  ASSERT_FALSE(frac.is_ok());
  EXPECT_NE(frac.status().message().find("'half' must be an integer"), std::string::npos);
  EXPECT_FALSE(f.number("s").is_ok());
  EXPECT_FALSE(f.boolean_or("n", false).is_ok());
  auto unit = f.quantity("s", Quantity::kBytes);
  ASSERT_FALSE(unit.is_ok());
  EXPECT_NE(unit.status().message().find("thing: field 's'"), std::string::npos);
}

}  // namespace
}  // namespace kvfleet
