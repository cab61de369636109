#pragma once
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/model_spec.h"
#include "perfmodel/estimate.h"
#include "perfmodel/hardware.h"

namespace kvfleet::perfmodel::test {

inline ModelSpec model(std::string_view name) {
  auto m = load_model_spec(name);
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  return m.is_ok() ? *m : ModelSpec{};
}

inline HardwareSpec hardware(std::string_view name) {
  auto h = load_hardware(name);
  EXPECT_TRUE(h.is_ok()) << h.status().to_string();
  return h.is_ok() ? *h : HardwareSpec{};
}

inline Workload workload(std::int64_t context, std::int64_t decode = 250, std::int64_t batch = 1) {
  Workload w;
  w.context_tokens = context;
  w.decode_tokens = decode;
  w.batch = batch;
  return w;
}

// Runs the estimate and fails the test on error.
inline Estimate run(const ModelSpec& m, const HardwareSpec& hw, const Deployment& d,
                    const Workload& w) {
  auto e = estimate(m, hw, d, w);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return e.is_ok() ? *e : Estimate{};
}

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

}  // namespace kvfleet::perfmodel::test
