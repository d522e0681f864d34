// The library's PatternMiner, VGate and ResidualQuantizer implementations: thin wrappers over core/.
#include <cmath>
#include <vector>

#include <patternkv/policies.hpp>

#include "core/fp16.hpp"
#include "core/kmeans.hpp"
#include "core/page_quantizer.hpp"
#include "core/patterns.hpp"
#include "core/v_gate.hpp"
#include "kmeans_bounds.hpp"
#include "simd/cpu_features.hpp"
#include "simd/distance_avx2.hpp"
#include "simd/quantize_avx2.hpp"

namespace patternkv {
namespace {

// Storage of fp16 scale/min pairs as the core struct (same layout: two uint16_t).
core::scale_min* as_scale_min(std::span<std::uint16_t> s) { return reinterpret_cast<core::scale_min*>(s.data()); }
const core::scale_min* as_scale_min(std::span<const std::uint16_t> s) { return reinterpret_cast<const core::scale_min*>(s.data()); }

// Inverse of the standard normal CDF by bisection on erfc (host-only, double; the result is
// rounded once to the float constant every backend uses).
double normal_quantile_upper(double alpha) {
    double lo = 0.0, hi = 40.0;
    for (int i = 0; i < 200; ++i) {
        const double mid = 0.5 * (lo + hi);
        (0.5 * std::erfc(mid / std::sqrt(2.0)) > alpha ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
}

// Nearest pattern by squared L2 with the fastest distance this CPU has (identical bits).
int nearest_l2(const float* x, const float* bank, int count, int d) {
#if defined(__x86_64__)
    if (simd::have_avx2()) return simd::avx2_distance::nearest_l2(x, bank, count, d);
#endif
    return core::nearest_pattern_l2(x, bank, count, d);
}

// Nearest pattern by min-max distance, likewise.
int nearest_dmm(const float* x, const float* bank, int count, int d) {
#if defined(__x86_64__)
    if (simd::have_avx2()) return simd::avx2_distance::nearest_dmm(x, bank, count, d);
#endif
    return core::nearest_pattern_dmm(x, bank, count, d);
}

core::page_geometry channel_geometry(int d, int tokens, int bits, int group) {
    return {d, tokens, bits, bits, true, group, d, false, false};
}
core::page_geometry token_geometry(int d, int tokens, int bits, int group) {
    return {d, tokens, bits, bits, false, group, group, false, false};
}

}  // namespace

int kmeans_miner::patterns_for(int tokens) const { return core::mined_patterns(tokens, num_patterns, tokens_per_pattern); }

int kmeans_miner::mine(std::span<const float> x, int d, int head, bool is_v, std::span<float> bank) const {
    const int tokens = static_cast<int>(x.size()) / d;
    const int k = patterns_for(tokens);
    if (k == 0 || tokens == 0) return 0;
    if (core::bank_is_tokens(tokens, k)) {
        for (std::size_t i = 0; i < x.size(); ++i) bank[i] = core::round_to_half(x[i]);
        return tokens;
    }
    const core::kmeans_params p{k,
                                iterations,
                                tolerance,
                                seed,
                                is_v ? core::stream_kmeans_init_v : core::stream_kmeans_init_k,
                                is_v ? core::stream_empty_cluster_v : core::stream_empty_cluster_k,
                                static_cast<std::uint64_t>(head)};
    std::vector<int> assign(tokens), chosen(k);
    std::vector<std::uint64_t> keys(k);
    std::vector<float> sum(static_cast<std::size_t>(k) * d);
    const auto run = [&]<class Distance>(Distance) {
        elkan_assignment<Distance> step(tokens, k, d);
        core::kmeans_iterate(p, x.data(), tokens, d, bank.data(), assign.data(), chosen.data(), keys.data(), sum.data(), step);
    };
#if defined(__x86_64__)
    if (simd::have_avx2())
        run(simd::avx2_distance{});
    else
#endif
        run(core::scalar_distance{});
    for (int i = 0; i < k * d; ++i) bank[i] = core::round_to_half(bank[i]);
    return k;
}

bool kmeans_miner::propose(std::span<const float> window, int d, std::span<float> centre) const {
    if (!grow || window.empty()) return false;
    core::chebyshev_centre(window.data(), static_cast<int>(window.size()) / d, d, d, centre.data());
    for (int j = 0; j < d; ++j) centre[j] = core::round_to_half(centre[j]);
    return true;
}

z_test_gate::z_test_gate(double alpha, int head_dim)
    : c(static_cast<float>(2.0 * normal_quantile_upper(alpha) / std::sqrt(5.0 * head_dim))) {}

bool z_test_gate::residualize(std::span<const float> v, std::span<const float> m) const {
    return core::gate_residualize(v.data(), m.data(), static_cast<int>(v.size()), {core::gate_rule::z_test, c});
}

double z_test_gate::rho_star() const {
    // 1 - rho^2 - c sqrt(1 + rho^4) decreases on [0, 1]: bisection for its root.
    const double cd = c;
    double lo = 0.0, hi = 1.0;
    for (int i = 0; i < 200; ++i) {
        const double mid = 0.5 * (lo + hi);
        (1.0 - mid * mid >= cd * std::sqrt(1.0 + mid * mid * mid * mid) ? lo : hi) = mid;
    }
    return lo;
}

int channel_quantizer::align_prefill(std::span<const float> x, std::span<const float> bank, int n) const {
    return nearest_l2(x.data(), bank.data(), n, d);
}
int channel_quantizer::align_flush(std::span<const float> x, std::span<const float> bank, int n) const {
    return nearest_dmm(x.data(), bank.data(), n, d);
}
int channel_quantizer::code_words() const { return channel_geometry(d, tokens, bits, group).k_code_words(); }
int channel_quantizer::groups() const { return channel_geometry(d, tokens, bits, group).k_groups(); }
void channel_quantizer::quantize(std::span<const float> rows, std::span<std::uint32_t> codes, std::span<std::uint16_t> sm) const {
    const core::page_geometry g = channel_geometry(d, tokens, bits, group);
#if defined(__x86_64__)
    if (simd::have_avx2() && d % 8 == 0) {
        for (int j = 0; j < d; j += 8) simd::avx2_quantizer::k_channels8(g, rows.data(), j, codes.data(), as_scale_min(sm));
        return;
    }
#endif
    for (int j = 0; j < d; ++j) core::quantize_k_channel(g, rows.data(), j, codes.data(), as_scale_min(sm));
}
void channel_quantizer::dequantize(std::span<const std::uint32_t> codes, std::span<const std::uint16_t> sm, int t,
                                   std::span<float> out) const {
    const core::page_geometry g = channel_geometry(d, tokens, bits, group);
    const core::page_view p{codes.data(), as_scale_min(sm), nullptr, nullptr, nullptr, nullptr, nullptr};
    core::dequantize_k_row(g, p, t, out.data());
}

int token_quantizer::align_prefill(std::span<const float> x, std::span<const float> bank, int n) const {
    return nearest_l2(x.data(), bank.data(), n, d);
}
int token_quantizer::align_flush(std::span<const float> x, std::span<const float> bank, int n) const {
    return nearest_dmm(x.data(), bank.data(), n, d);
}
int token_quantizer::code_words() const { return token_geometry(d, tokens, bits, group).v_code_words(); }
int token_quantizer::groups() const { return token_geometry(d, tokens, bits, group).v_groups(); }
void token_quantizer::quantize(std::span<const float> rows, std::span<std::uint32_t> codes, std::span<std::uint16_t> sm) const {
    const core::page_geometry g = token_geometry(d, tokens, bits, group);
#if defined(__x86_64__)
    const bool vector = simd::have_avx2() && d % 8 == 0 && group % 8 == 0;
#else
    const bool vector = false;
#endif
    for (int t = 0; t < tokens; ++t) {
        std::uint32_t* row_codes = codes.data() + t * g.v_row_words();
        core::scale_min* row_sm = as_scale_min(sm) + t * (d / group);
#if defined(__x86_64__)
        if (vector) {
            simd::avx2_quantizer::token_row(rows.data() + t * d, d, group, bits, row_codes, row_sm);
            continue;
        }
#endif
        core::quantize_token_row(rows.data() + t * d, d, group, bits, row_codes, row_sm);
    }
}
void token_quantizer::dequantize(std::span<const std::uint32_t> codes, std::span<const std::uint16_t> sm, int t,
                                 std::span<float> out) const {
    const core::page_geometry g = token_geometry(d, tokens, bits, group);
    const core::page_view p{nullptr, nullptr, nullptr, codes.data(), as_scale_min(sm), nullptr, nullptr};
    core::dequantize_v_row(g, p, t, out.data());
}

}  // namespace patternkv
