/// @file report.cpp
/// Text table and JSON for an eval_report.

#include "report.hpp"

#include <cmath>
#include <fstream>

#include <fmt/format.h>

#include "eval_error.hpp"

namespace pkveval {
namespace {

std::string json_string(const std::string& s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\n': o += "\\n"; break;
        case '\r': o += "\\r"; break;
        case '\t': o += "\\t"; break;
        default:
            if (c < 0x20) o += fmt::format("\\u{:04x}", c);
            else o += static_cast<char>(c);
        }
    }
    return o + "\"";
}

std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{:.9g}", v) : "null"; }

} // namespace

std::string format_table(const eval_report& r) {
    std::string s = fmt::format("model {} | text {} | prefill {} + decode {} tokens | prefill {:.1f} s | decode {:.1f} s = {:.2f} steps/s "
                                "({} methods batched, {:.1f} sequence-tokens/s)\n",
                                r.model, r.text, r.prefill, r.tokens, r.prefill_seconds, r.decode_seconds,
                                r.tokens / r.decode_seconds, r.results.size(), r.tokens * r.results.size() / r.decode_seconds);
    s += fmt::format("{:<22} {:>9} {:>10} {:>10} {:>11} {:>8} {:>13}\n", "method", "bits/elem", "ppl", "nll", "KL(fp32||m)",
                     "top1", "cache tok/s");
    for (const auto& m : r.results)
        s += fmt::format("{:<22} {:>9.3f} {:>10.4f} {:>10.5f} {:>11.5f} {:>8.4f} {:>13.1f}\n", m.method, m.bits_per_element, m.ppl,
                         m.mean_nll, m.kl, m.top1, m.tokens_per_s);
    return s;
}

std::string format_json(const eval_report& r) {
    std::string s = "{\n";
    s += fmt::format("  \"model\": {},\n  \"text\": {},\n  \"prefill\": {},\n  \"tokens\": {},\n", json_string(r.model),
                     json_string(r.text), r.prefill, r.tokens);
    s += fmt::format("  \"prefill_seconds\": {},\n  \"decode_seconds\": {},\n", json_number(r.prefill_seconds),
                     json_number(r.decode_seconds));
    s += "  \"metrics_over\": \"the tokens predicted by the decode steps: tokens P+1..P+N from positions P..P+N-1\",\n";
    s += "  \"results\": [\n";
    for (std::size_t i = 0; i < r.results.size(); ++i) {
        const method_result& m = r.results[i];
        s += fmt::format("    {{\"method\": {}, \"bits_per_element\": {}, \"ppl\": {}, \"kl\": {}, \"top1\": {}, \"tokens_per_s\": {}, "
                         "\"mean_nll\": {}, \"cache_bytes\": {}, \"cache_seconds\": {}, \"config\": {}}}{}\n",
                         json_string(m.method), json_number(m.bits_per_element), json_number(m.ppl), json_number(m.kl),
                         json_number(m.top1), json_number(m.tokens_per_s), json_number(m.mean_nll), m.cache_bytes,
                         json_number(m.cache_seconds), json_string(m.config), i + 1 < r.results.size() ? "," : "");
    }
    s += "  ]\n}\n";
    return s;
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary);
    if (!f || !f.write(text.data(), static_cast<std::streamsize>(text.size())))
        throw eval_error(fmt::format("cannot write '{}'", path));
}

} // namespace pkveval
