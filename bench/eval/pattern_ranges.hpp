#pragma once
/// @file pattern_ranges.hpp
/// The ablation that shows *why* patterns help or hurt: how much they shrink or inflate the
/// ranges the quantizer has to cover. A uniform quantizer's squared error is proportional to its
/// step squared, so the ratio of summed squared ranges (stored residual / raw vector) is the factor
/// by which patterns change the quantization MSE before any rounding happens.
///
/// K (per-channel groups): range of each channel over each k_group of a prefilled page, raw x
/// against x - m_a(t) as stored; reported separately for the fast-rotating half of the channels
/// (RoPE pairs 0..d/4-1) and the slow half. V (per-token groups): range of each token's group, raw
/// against what was stored (the residual where the gate said yes).

#include <string>
#include <vector>

#include "kv_method.hpp"
#include "transformer.hpp"

namespace pkveval {

/// One text block per pattern method: per layer, K (fast / slow channels / all) and V squared-range
/// ratios and the share of groups whose range grew, over the pages the prefill quantized.
std::string format_range_report(const std::vector<method_cache>& methods, const transformer::prefill_result& pre, const model_config& mc,
                                int chunk);

}  // namespace pkveval
