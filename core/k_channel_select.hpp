#pragma once
// Which K channels keep their patterns (ours; docs/accuracy.md). K is quantized per channel over
// groups of k_group tokens. What attention needs from K are the differences between the scores of
// tokens, so the part of a group's quantization error that is the same for every token of the group
// is harmless (the softmax ignores a common shift), and the part that varies from token to token is
// what hurts. Subtracting per-token patterns lowers a channel's range a little but spreads its values
// over the range, turning shared errors into independent ones. A channel keeps its patterns only
// when, summed over every group of the prompt, the within-group variance of the quantization error is
// smaller with the patterns than without; otherwise the bank column is zeroed and the channel is
// quantized as KIVI quantizes it.

#include <cstdint>

#include "fp16.hpp"
#include "platform.hpp"
#include "quantize.hpp"

namespace patternkv::core {

/// Sum over the `n` values g[i * stride] of the squared deviation of their quantization errors from
/// the errors' mean: n times the within-group variance of the error (double, in token order).
PKV_HD double group_error_spread(const float* g, int n, int stride, int bits, std::uint8_t* codes) {
    const scale_min sm = quantize_group(g, n, stride, bits, codes);
    const float s = half_to_float(sm.scale), mn = half_to_float(sm.min);
    double sum = 0.0, sq = 0.0;
    for (int i = 0; i < n; ++i) {
        const double e = static_cast<double>(dequantize_value(codes[i], s, mn)) - static_cast<double>(g[i * stride]);
        sum += e;
        sq += e * e;
    }
    return sq - sum * sum / n;
}

/// Whole groups of `group` tokens in the whole pages of a prompt of T tokens (what selection measures).
PKV_HD int k_select_groups(int T, int page_tokens, int group) { return T / page_tokens * (page_tokens / group); }

/// Whether channel j keeps its K patterns. x: [T][d] prompt rows; bank: [count][d] (fp16 values as
/// floats); assign: each token's pattern; only the `groups` whole groups of `group` tokens are
/// measured. It reads only column j of the bank, so callers may zero a dropped column at once.
/// res_col: scratch of `group` floats; codes: `group` bytes. Without a whole
/// group there is no evidence and the channel keeps its patterns.
PKV_HD bool keep_k_pattern_channel(const float* x, int d, const float* bank, const int* assign, int groups, int group, int bits, int j,
                                   float* res_col, std::uint8_t* codes) {
    double with = 0.0, without = 0.0;
    for (int gi = 0; gi < groups; ++gi) {
        const float* xg = x + static_cast<std::int64_t>(gi) * group * d + j;
        for (int t = 0; t < group; ++t) res_col[t] = xg[t * d] - bank[assign[gi * group + t] * d + j];
        without += group_error_spread(xg, group, d, bits, codes);
        with += group_error_spread(res_col, group, 1, bits, codes);
    }
    return groups == 0 || with < without;
}

}  // namespace patternkv::core
