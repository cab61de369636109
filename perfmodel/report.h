#pragma once
// Presenting estimates: one JSON object per estimate (the keys are documented in
// docs/PERFMODEL.md and are a stable interface), and a readable table with a baseline column.

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "perfmodel/estimate.h"

namespace kvfleet::perfmodel {

nlohmann::json estimate_to_json(const Estimate& e);

// A table with one row per figure and one column per estimate. `headers` names the columns
// ("4K", "50K"); values in other columns carry their ratio to the column at `baseline` ("x16.0").
// Warnings of every column follow the table.
std::string render_table(const std::vector<Estimate>& columns,
                         const std::vector<std::string>& headers, size_t baseline);

}  // namespace kvfleet::perfmodel
