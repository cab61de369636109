#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace kvfleet {
namespace {

Result<int> half(int x) {
  if (x % 2 != 0) return invalid_argument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> quarter(int x) {
  KVFLEET_ASSIGN_OR_RETURN(int h, half(x));
  KVFLEET_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

Status check_even(int x) {
  KVFLEET_RETURN_IF_ERROR(half(x).status());
  return Status::ok();
}

TEST(Status, OkAndErrorsCarryCodeAndMessage) {
  EXPECT_TRUE(Status::ok().is_ok());
  Status s = not_found("model 'x'");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.to_string(), "not_found: model 'x'");
  EXPECT_EQ(s.with_context("loading").message(), "loading: model 'x'");
  EXPECT_EQ(Status::ok().with_context("ignored"), Status::ok());
}

TEST(Result, PropagatesThroughMacros) {
  EXPECT_EQ(*quarter(8), 2);
  Result<int> bad = quarter(6);  // 6 / 2 = 3 is odd
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().message(), "3 is odd");
  EXPECT_TRUE(check_even(4).is_ok());
  EXPECT_EQ(check_even(5).code(), StatusCode::kInvalidArgument);
}

TEST(Result, HoldsMoveOnlyValues) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  ASSERT_TRUE(r.is_ok());
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  EXPECT_DEATH(
      {
        Result<int> r = internal_error("boom");
        (void)r.value();
      },
      "boom");
}

}  // namespace
}  // namespace kvfleet
