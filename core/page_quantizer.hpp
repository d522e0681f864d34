#pragma once
// Quantizing a page of residual rows into its packed storage (page_layout.hpp), and reading one
// row back. Residuals are x - pattern (or x itself where the gate said no / without patterns).

#include <cstdint>

#include "page_layout.hpp"
#include "platform.hpp"
#include "quantize.hpp"

namespace patternkv::core {

/// K per-channel: channel j of a page. rows: [R][d] residuals. Writes row j of codes and the
/// scale/min of channel j for every token group. buf: scratch of R bytes (the channel's codes
/// before packing; a GPU thread passes global memory, as R bytes of stack per thread would make the
/// driver reserve local memory for every thread the device can hold).
PKV_HD void quantize_k_channel(const page_geometry& g, const float* rows, int j, std::uint32_t* codes, scale_min* sm, std::uint8_t* buf) {
    for (int t0 = 0, gi = 0; t0 < g.tokens; t0 += g.k_group, ++gi)
        sm[gi * g.d + j] = quantize_group(rows + t0 * g.d + j, g.k_group, g.d, g.k_bits, buf + t0);
    pack_codes(buf, g.tokens, g.k_bits, codes + j * g.k_row_words());
}

/// The same with its scratch on the stack (host code).
inline void quantize_k_channel(const page_geometry& g, const float* rows, int j, std::uint32_t* codes, scale_min* sm) {
    std::uint8_t buf[max_page_tokens];
    quantize_k_channel(g, rows, j, codes, sm, buf);
}

/// One token row quantized per-token in groups of `group` channels (V always; K per-token).
PKV_HD void quantize_token_row(const float* row, int d, int group, int bits, std::uint32_t* codes, scale_min* sm) {
    std::uint8_t buf[max_head_dim];
    for (int j0 = 0, gi = 0; j0 < d; j0 += group, ++gi) sm[gi] = quantize_group(row + j0, group, 1, bits, buf + j0);
    pack_codes(buf, d, bits, codes);
}

/// Dequantized K of token t of a page (d floats), residual only (pattern not added).
PKV_HD void dequantize_k_row(const page_geometry& g, const page_view& p, int t, float* out) {
    if (g.k_per_channel) {
        const scale_min* sm = p.k_sm + (t / g.k_group) * g.d;
        for (int j = 0; j < g.d; ++j)
            out[j] = dequantize_value(unpack_code(p.k_codes + j * g.k_row_words(), t, g.k_bits), half_to_float(sm[j].scale),
                                      half_to_float(sm[j].min));
    } else {
        const std::uint32_t* row = p.k_codes + t * g.k_row_words();
        const scale_min* sm = p.k_sm + t * (g.d / g.k_group);
        for (int j = 0; j < g.d; ++j)
            out[j] = dequantize_value(unpack_code(row, j, g.k_bits), half_to_float(sm[j / g.k_group].scale),
                                      half_to_float(sm[j / g.k_group].min));
    }
}

/// Dequantized V of token t of a page (d floats), residual only.
PKV_HD void dequantize_v_row(const page_geometry& g, const page_view& p, int t, float* out) {
    const std::uint32_t* row = p.v_codes + t * g.v_row_words();
    const scale_min* sm = p.v_sm + t * (g.d / g.v_group);
    for (int j = 0; j < g.d; ++j)
        out[j] =
            dequantize_value(unpack_code(row, j, g.v_bits), half_to_float(sm[j / g.v_group].scale), half_to_float(sm[j / g.v_group].min));
}

}  // namespace patternkv::core
