#pragma once
// Minimal SVG line charts for benchmark reports (no plotting library on the machine): axes with
// ticks, one polyline with markers per series, a legend.

#include <string>
#include <utility>
#include <vector>

namespace kvfleet::bench {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in order
  bool dashed = false;
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool step = false;  // draw as a step function (CDFs)
};

std::string render_svg(const Chart& chart);

}  // namespace kvfleet::bench
