#pragma once
// Running the real kvfleet binary from tests, and the shared check for bad-input cases.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/test_util.h"

namespace kvfleet::test {

inline CommandResult kvfleet(const std::string& args) {
  return run_command(std::string(KVFLEET_BINARY) + " " + args);
}

struct BadInputCase {
  std::string args;
  std::string fragment;  // must appear in stderr
};

// Each case must exit with code 2 and name the problem on stderr, never an internal error.
inline void expect_bad_input(const std::vector<BadInputCase>& cases) {
  for (const BadInputCase& c : cases) {
    auto r = kvfleet(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.out << r.err;
    EXPECT_THAT(r.err, ::testing::HasSubstr(c.fragment)) << c.args;
    EXPECT_THAT(r.err, ::testing::Not(::testing::HasSubstr("internal error"))) << c.args;
  }
}

}  // namespace kvfleet::test
