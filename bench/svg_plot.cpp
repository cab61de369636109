#include "bench/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace kvfleet::bench {
namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

std::string num(double v) {
  char b[32];
  if (v != 0 && (std::fabs(v) >= 1e4 || std::fabs(v) < 1e-2)) {
    std::snprintf(b, sizeof b, "%.1e", v);
  } else {
    std::snprintf(b, sizeof b, "%.3g", v);
  }
  return b;
}

// "Nice" tick step for a range.
double tick_step(double span) {
  if (!(span > 0)) return 1;
  const double raw = span / 5;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * mag) return m * mag;
  }
  return 10 * mag;
}

}  // namespace

std::string render_svg(const Chart& c) {
  const double W = 640, H = 400, L = 70, R = 20, T = 40, B = 60;
  double x0 = 1e300, x1 = -1e300, y0 = 0, y1 = -1e300;
  for (const Series& s : c.series) {
    for (auto [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y1 = std::max(y1, y);
    }
  }
  if (x0 > x1) { x0 = 0; x1 = 1; }
  if (x0 == x1) { x0 -= 0.5; x1 += 0.5; }
  if (!(y1 > y0)) y1 = 1;
  const double ys = tick_step(y1 - y0);
  y1 = std::ceil(y1 / ys) * ys;
  const double xs = tick_step(x1 - x0);
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << esc(c.title) << "</text>\n";
  for (double y = y0; y <= y1 + ys / 2; y += ys) {
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << py(y) << "\" y2=\"" << py(y)
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << py(y) + 4
      << "\" text-anchor=\"end\">" << num(y) << "</text>\n";
  }
  for (double x = std::ceil(x0 / xs) * xs; x <= x1 + xs / 2; x += xs) {
    o << "<line x1=\"" << px(x) << "\" x2=\"" << px(x) << "\" y1=\"" << H - B << "\" y2=\"" << H - B + 5
      << "\" stroke=\"#333\"/>\n<text x=\"" << px(x) << "\" y=\"" << H - B + 18
      << "\" text-anchor=\"middle\">" << num(x) << "</text>\n";
  }
  o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << H - B << "\" y2=\"" << H - B << "\" stroke=\"#333\"/>\n";
  o << "<line x1=\"" << L << "\" x2=\"" << L << "\" y1=\"" << T << "\" y2=\"" << H - B << "\" stroke=\"#333\"/>\n";
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 18 << "\" text-anchor=\"middle\">" << esc(c.x_label) << "</text>\n";
  o << "<text transform=\"translate(16," << (T + H - B) / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << esc(c.y_label) << "</text>\n";
  for (size_t i = 0; i < c.series.size(); ++i) {
    const Series& s = c.series[i];
    const char* color = kColors[i % 6];
    std::ostringstream pts;
    double prev_y = std::nan("");
    for (auto [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      if (c.step && std::isfinite(prev_y)) pts << px(x) << "," << py(prev_y) << " ";
      pts << px(x) << "," << py(y) << " ";
      prev_y = y;
    }
    o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\""
      << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << " points=\"" << pts.str() << "\"/>\n";
    if (!c.step) {
      for (auto [x, y] : s.points) {
        if (std::isfinite(x) && std::isfinite(y)) {
          o << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"3\" fill=\"" << color << "\"/>\n";
        }
      }
    }
    const double ly = T + 8 + 16 * static_cast<double>(i);
    o << "<line x1=\"" << L + 12 << "\" x2=\"" << L + 36 << "\" y1=\"" << ly << "\" y2=\"" << ly << "\" stroke=\""
      << color << "\" stroke-width=\"2\"" << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>\n";
    o << "<text x=\"" << L + 42 << "\" y=\"" << ly + 4 << "\">" << esc(s.name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace kvfleet::bench
