/// @file report.cpp
/// Text table and JSON for an eval_report.

#include "report.hpp"

#include <cmath>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "eval_error.hpp"

namespace pkveval {
namespace {

std::string json_string(const std::string& s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"':
                o += "\\\"";
                break;
            case '\\':
                o += "\\\\";
                break;
            case '\n':
                o += "\\n";
                break;
            case '\r':
                o += "\\r";
                break;
            case '\t':
                o += "\\t";
                break;
            default:
                if (c < 0x20)
                    o += fmt::format("\\u{:04x}", c);
                else
                    o += static_cast<char>(c);
        }
    }
    return o + "\"";
}

std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{:.9g}", v) : "null"; }

}  // namespace

std::string format_table(const eval_report& r) {
    std::string s = fmt::format(
        "model {} | text {} | {} chunk(s) of prefill {} + decode {} tokens (offsets {}) | prefill {:.1f} s | "
        "decode {:.1f} s = {:.2f} steps/s ({} methods batched)\n",
        r.model, r.text, r.chunks, r.prefill, r.tokens, fmt::join(r.chunk_offsets, ","), r.prefill_seconds, r.decode_seconds,
        r.tokens * r.chunks / r.decode_seconds, r.results.size());
    s += fmt::format("{:<24} {:>9} {:>8} {:>20} {:>9} {:>17} {:>7} {:>15} {:>11}\n", "method", "bits/elem", "at end", "KL(fp32||m) ± se",
                     "ppl", "ln ppl ± se", "top1", "KL/KIVI@bits±se", "cache tok/s");
    for (const auto& m : r.results) {
        const auto [ratio, ratio_se] = kl_over_kivi(r, m);
        const std::string vs = m.family == "fp32" || std::isnan(ratio) ? "-" : fmt::format("{:.3f} ± {:.3f}", ratio, ratio_se);
        s += fmt::format("{:<24} {:>9.3f} {:>8.3f} {:>10.5f} ± {:>7.5f} {:>9.3f} {:>8.4f} ± {:>6.4f} {:>7.4f} {:>15} {:>11.1f}\n", m.method,
                         m.bits_per_element, m.bits_at_end, m.kl, m.kl_se, m.ppl, m.mean_nll, m.nll_se, m.top1, vs, m.tokens_per_s);
    }
    if (r.local_layers > 0)
        s += fmt::format(
            "sliding-window layers: {} of the {} layers keep their last {} tokens exact in every method; the methods "
            "quantize the {} global layers, and bits/elem counts those.\n",
            r.local_layers, r.n_layers, r.sliding_window, r.n_layers - r.local_layers);
    s += "bits/elem: stored bits per cached K/V element when each prediction was made (averaged); at end: after the last step.\n"
         "KL/KIVI@bits: this method's KL over KIVI's at the same bits/elem (log-linear between KIVI points; - outside them);\n"
         "its ± is paired: the same interpolation block by block on the same predictions.\n";
    return s;
}

std::string format_json(const eval_report& r) {
    std::string s = "{\n";
    s += fmt::format(
        "  \"model\": {},\n  \"text\": {},\n  \"prefill\": {},\n  \"tokens\": {},\n  \"chunks\": {},\n"
        "  \"chunk_offsets\": [{}],\n",
        json_string(r.model), json_string(r.text), r.prefill, r.tokens, r.chunks, fmt::join(r.chunk_offsets, ", "));
    s += fmt::format("  \"prefill_seconds\": {},\n  \"decode_seconds\": {},\n", json_number(r.prefill_seconds),
                     json_number(r.decode_seconds));
    s += fmt::format("  \"layers\": {},\n  \"sliding_window_layers_exact\": {},\n  \"sliding_window\": {},\n", r.n_layers, r.local_layers,
                     r.sliding_window);
    s += "  \"metrics_over\": \"per chunk, the tokens predicted by the decode steps: tokens P+1..P+N from positions P..P+N-1\",\n";
    s += "  \"results\": [\n";
    for (std::size_t i = 0; i < r.results.size(); ++i) {
        const method_result& m = r.results[i];
        const double kivi = kivi_kl_at(r, m.bits_per_element);
        const auto [ratio, ratio_se] = kl_over_kivi(r, m);
        s += fmt::format(
            "    {{\"method\": {}, \"family\": {}, \"k_bits\": {}, \"v_bits\": {}, \"bits_per_element\": {}, "
            "\"bits_at_end\": {}, \"ppl\": {}, \"kl\": {}, \"kl_se\": {}, \"kivi_kl_at_bits\": {}, "
            "\"kl_over_kivi\": {}, \"kl_over_kivi_se\": {}, \"top1\": {}, "
            "\"tokens_per_s\": {}, \"mean_nll\": {}, \"nll_se\": {}, \"cache_bytes\": {}, \"cache_seconds\": {}, "
            "\"config\": {}}}{}\n",
            json_string(m.method), json_string(m.family), m.k_bits, m.v_bits, json_number(m.bits_per_element), json_number(m.bits_at_end),
            json_number(m.ppl), json_number(m.kl), json_number(m.kl_se), json_number(kivi), json_number(ratio), json_number(ratio_se),
            json_number(m.top1), json_number(m.tokens_per_s), json_number(m.mean_nll), json_number(m.nll_se), m.cache_bytes,
            json_number(m.cache_seconds), json_string(m.config), i + 1 < r.results.size() ? "," : "");
    }
    s += "  ]\n}\n";
    return s;
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary);
    if (!f || !f.write(text.data(), static_cast<std::streamsize>(text.size()))) throw eval_error(fmt::format("cannot write '{}'", path));
}

}  // namespace pkveval
