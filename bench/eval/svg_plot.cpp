/// @file svg_plot.cpp
/// A hand-written two-panel SVG scatter plot: KL(fp32 || method) and perplexity against stored
/// bits per element. KL spans orders of magnitude, so its axis is logarithmic (fp32, KL = 0, is
/// drawn on the bottom edge); perplexity is linear.

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "report.hpp"

namespace pkveval {
namespace {

struct panel {
    double x0, y0, w, h;  // plot area in pixels
    double xmin, xmax, ymin, ymax;
    bool logy;
    double px(double x) const { return x0 + (x - xmin) / (xmax - xmin) * w; }
    double py(double y) const {
        if (logy) y = std::log10(std::max(y, std::pow(10.0, ymin)));
        return y0 + h - (y - ymin) / (ymax - ymin) * h;
    }
};

std::string escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '<') o += "&lt;";
        else if (c == '>') o += "&gt;";
        else if (c == '&') o += "&amp;";
        else o += c;
    }
    return o;
}

std::string draw_panel(const panel& p, const eval_report& r, bool kl, const std::string& title, const std::string& ylabel) {
    std::string s = fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#444"/>)"
                                "\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
                                p.x0, p.y0, p.w, p.h, p.x0 + p.w / 2, p.y0 - 12, escape(title));
    for (int i = 0; i <= 5; ++i) {  // x ticks
        const double x = p.xmin + (p.xmax - p.xmin) * i / 5;
        s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>"
                         "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" font-size=\"11\">{4:.3g}</text>\n",
                         p.px(x), p.y0, p.y0 + p.h, p.y0 + p.h + 15, x);
    }
    for (int i = 0; i <= 4; ++i) {  // y ticks
        const double t = p.ymin + (p.ymax - p.ymin) * i / 4;
        const double label = p.logy ? std::pow(10.0, t) : t;
        const double y = p.y0 + p.h - (t - p.ymin) / (p.ymax - p.ymin) * p.h;
        s += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
                         "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" font-size=\"11\">{5:.3g}</text>\n",
                         p.x0, y, p.x0 + p.w, p.x0 - 5, y + 4, label);
    }
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">stored bits per cached K/V element</text>\n",
                     p.x0 + p.w / 2, p.y0 + p.h + 34);
    s += fmt::format("<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n", p.x0 - 48,
                     p.y0 + p.h / 2, escape(ylabel));
    for (const auto& m : r.results) {
        const double x = p.px(m.bits_per_element), y = p.py(kl ? m.kl : m.ppl);
        const char* colour = m.method.find("patternkv") == 0 ? "#c0392b" : m.method.find("kivi") == 0 ? "#2471a3"
                           : m.method.find("pertoken") == 0 ? "#7d3c98" : "#1e8449";
        s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"{}\"/><text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" "
                         "fill=\"{}\">{}</text>\n",
                         x, y, colour, x + 7, y - 6, colour, escape(m.method));
    }
    return s;
}

} // namespace

std::string format_svg(const eval_report& r) {
    double bmax = 0, klmin = 1e300, klmax = 0, pmin = 1e300, pmax = 0;
    for (const auto& m : r.results) {
        bmax = std::max(bmax, m.bits_per_element);
        if (m.kl > 0) { klmin = std::min(klmin, m.kl); klmax = std::max(klmax, m.kl); }
        pmin = std::min(pmin, m.ppl);
        pmax = std::max(pmax, m.ppl);
    }
    if (klmax <= 0) { klmin = 1e-6; klmax = 1e-5; }
    const double ly0 = std::floor(std::log10(klmin)) - (klmin == klmax ? 1 : 0), ly1 = std::ceil(std::log10(klmax));
    const double pad = std::max(1e-3, (pmax - pmin) * 0.1);
    const panel a{80, 60, 420, 320, 0, std::ceil(bmax / 4 + 0.25) * 4, ly0, std::max(ly1, ly0 + 1), true};
    const panel b{600, 60, 420, 320, 0, a.xmax, pmin - pad, pmax + pad, false};
    std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1080\" height=\"460\" font-family=\"sans-serif\">\n"
                    "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    s += fmt::format("<text x=\"540\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{} on {}: prefill {}, decode {} tokens</text>\n",
                     escape(r.model), escape(r.text), r.prefill, r.tokens);
    s += draw_panel(a, r, true, "KL(fp32 || method), nats/token (log scale)", "mean KL");
    s += draw_panel(b, r, false, "perplexity of the decoded tokens", "perplexity");
    return s + "</svg>\n";
}

} // namespace pkveval
