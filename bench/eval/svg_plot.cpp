/// @file svg_plot.cpp
/// A hand-written two-panel SVG scatter plot: KL(fp32 || method) and perplexity against stored
/// bits per element (fp32's 32 bits sit at the right edge behind an axis break). Both y axes are
/// logarithmic: KL spans orders of magnitude (fp32, KL = 0, is drawn on the bottom edge) and so can
/// perplexity at 2 bits.

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

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
        if (c == '<')
            o += "&lt;";
        else if (c == '>')
            o += "&gt;";
        else if (c == '&')
            o += "&amp;";
        else
            o += c;
    }
    return o;
}

const char* family_colour(const std::string& family) {
    if (family.starts_with("patternkv-nogate")) return "#e67e22";
    if (family.starts_with("patternkv")) return "#c0392b";
    if (family.starts_with("kivi")) return "#2471a3";
    if (family.starts_with("pertoken")) return "#7d3c98";
    return "#1e8449";
}

std::string draw_panel(const panel& p, const eval_report& r, bool kl, const std::string& title, const std::string& ylabel) {
    std::string s = fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#444"/>)"
                                "\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
                                p.x0, p.y0, p.w, p.h, p.x0 + p.w / 2, p.y0 - 12, escape(title));
    for (int i = 0; i <= 5; ++i) {  // x ticks
        const double x = p.xmin + (p.xmax - p.xmin) * i / 5;
        s += fmt::format(
            "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>"
            "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" font-size=\"11\">{4:.3g}</text>\n",
            p.px(x), p.y0, p.y0 + p.h, p.y0 + p.h + 15, x);
    }
    for (int i = 0; i <= 4; ++i) {  // y ticks
        const double t = p.ymin + (p.ymax - p.ymin) * i / 4;
        const double label = p.logy ? std::pow(10.0, t) : t;
        const double y = p.y0 + p.h - (t - p.ymin) / (p.ymax - p.ymin) * p.h;
        s += fmt::format(
            "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
            "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" font-size=\"11\">{5:.3g}</text>\n",
            p.x0, y, p.x0 + p.w, p.x0 - 5, y + 4, label);
    }
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">stored bits per cached K/V element</text>\n",
                     p.x0 + p.w / 2, p.y0 + p.h + 34);
    s += fmt::format("<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n", p.x0 - 48,
                     p.y0 + p.h / 2, escape(ylabel));
    // one line per method family (bits ascending): the Pareto view, KIVI's line as the yardstick
    std::map<std::string, std::vector<const method_result*>> families;
    for (const auto& m : r.results)
        if (m.bits_per_element <= p.xmax) families[m.family + (m.k_bits == m.v_bits ? "" : " (K!=V)")].push_back(&m);
    for (auto& [fam, pts] : families) {
        if (pts.size() < 2) continue;
        std::sort(pts.begin(), pts.end(), [](auto* a, auto* b) { return a->bits_per_element < b->bits_per_element; });
        std::string path;
        for (const auto* m : pts) path += fmt::format("{:.1f},{:.1f} ", p.px(m->bits_per_element), p.py(kl ? m->kl : m->ppl));
        s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"/>\n", path, family_colour(fam),
                         fam == "kivi" ? 2.5 : 1.5);
    }
    bool broken = false;
    for (const auto& m : r.results) {
        // fp32 (32 bits) would squeeze the quantized methods into a corner: it sits on the right
        // edge behind an axis break instead
        const bool off_axis = m.bits_per_element > p.xmax;
        broken = broken || off_axis;
        const double x = off_axis ? p.x0 + p.w : p.px(m.bits_per_element), y = p.py(kl ? m.kl : m.ppl);
        const std::string label = off_axis ? fmt::format("{} ({:.0f} bits)", m.method, m.bits_per_element) : m.method;
        const char* colour = family_colour(m.family);
        if (kl && m.kl_se > 0)  // error bar: mean KL +- one standard error
            s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"{3}\"/>\n", x,
                             p.py(m.kl + m.kl_se), p.py(std::max(m.kl - m.kl_se, m.kl * 1e-3)), colour);
        s += fmt::format(
            "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"{}\"/><text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" "
            "fill=\"{}\">{}</text>\n",
            x, y, colour, off_axis ? x - 7 : x + 7, y - 6, colour, escape(label));
        if (off_axis) s.insert(s.rfind("<text") + 5, " text-anchor=\"end\"");
    }
    if (broken)
        s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">//</text>\n", p.x0 + p.w - 12, p.y0 + p.h + 5);
    return s;
}

}  // namespace

std::string format_svg(const eval_report& r) {
    double bmax = 0, klmin = 1e300, klmax = 0, pmin = 1e300, pmax = 0;
    for (const auto& m : r.results) {
        if (m.bits_per_element < 31.5) bmax = std::max(bmax, m.bits_per_element);  // fp32 goes behind an axis break
        if (m.kl > 0) {
            klmin = std::min(klmin, m.kl);
            klmax = std::max(klmax, m.kl);
        }
        pmin = std::min(pmin, m.ppl);
        pmax = std::max(pmax, m.ppl);
    }
    if (klmax <= 0) {
        klmin = 1e-6;
        klmax = 1e-5;
    }
    const double ly0 = std::floor(std::log10(klmin)) - (klmin == klmax ? 1 : 0), ly1 = std::ceil(std::log10(klmax));
    // perplexity too can span a decade (per-token 2-bit): log scale
    const double py0 = std::log10(pmin) - 0.02, py1 = std::max(std::log10(pmax) + 0.02, py0 + 0.05);
    const panel a{80, 60, 420, 320, 0, std::ceil(bmax + 0.5) + 1, ly0, std::max(ly1, ly0 + 1), true};
    const panel b{600, 60, 420, 320, 0, a.xmax, py0, py1, true};
    std::string s =
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1080\" height=\"460\" font-family=\"sans-serif\">\n"
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    s += fmt::format(
        "<text x=\"540\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{} on {}: {} x (prefill {}, decode {} tokens); "
        "lines join each method family, bars are +-1 standard error</text>\n",
        escape(r.model), escape(r.text), r.chunks, r.prefill, r.tokens);
    s += draw_panel(a, r, true, "KL(fp32 || method), nats/token (log scale)", "mean KL");
    s += draw_panel(b, r, false, "perplexity of the decoded tokens (log scale)", "perplexity");
    return s + "</svg>\n";
}

}  // namespace pkveval
