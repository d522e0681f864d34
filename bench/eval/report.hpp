#pragma once
/// @file report.hpp
/// Presenting an eval_report: a text table, JSON and an SVG plot.

#include <string>

#include "evaluate.hpp"

namespace pkveval {

/// The result table as fixed-width text (one line per method, header first).
std::string format_table(const eval_report& r);
/// {"model":…, "text":…, "prefill":P, "tokens":N, "results":[{"method":…, "bits_per_element":…,
///  "ppl":…, "kl":…, "top1":…, "tokens_per_s":…, …}], …}
std::string format_json(const eval_report& r);
/// Two panels, KL vs bits/element and perplexity vs bits/element, one labelled point per method.
std::string format_svg(const eval_report& r);
/// Writes `text` to `path`; throws eval_error when it cannot.
void write_file(const std::string& path, const std::string& text);

}  // namespace pkveval
