#pragma once
/// @file policies.hpp
/// The library's implementations of PatternMiner, VGate and ResidualQuantizer (concepts.hpp).
/// layer_cache composes them from its config; they are also usable on their own.

#include <cstdint>
#include <span>

#include "concepts.hpp"
#include "config.hpp"

namespace patternkv {

/// PatternKV's miner: seeded k-means at prefill (tokens themselves when fewer than num_patterns),
/// the Chebyshev centre (per-channel midrange) of the window at each flush.
struct kmeans_miner {
    int num_patterns = 32;
    int iterations = 30;
    float tolerance = 1e-4f;
    std::uint64_t seed = 0;
    bool grow = true;  ///< propose a pattern at each flush
    int mine(std::span<const float> x, int d, int head, bool is_v, std::span<float> bank) const;
    bool propose(std::span<const float> window, int d, std::span<float> centre) const;
};

/// No patterns (KIVI and the per-token baseline).
struct no_pattern_miner {
    int mine(std::span<const float>, int, int, bool, std::span<float>) const { return 0; }
    bool propose(std::span<const float>, int, std::span<float>) const { return false; }
};

/// The one-sided z-test gate of method.md section 5 at level alpha for head_dim d.
struct z_test_gate {
    z_test_gate(double alpha, int head_dim);
    bool residualize(std::span<const float> v, std::span<const float> m) const;
    /// rho*: the largest residual-to-raw range ratio the gate still accepts (computed in double).
    double rho_star() const;
    float c;  ///< 2 z / sqrt(5 d), as used by every backend
};

/// Gate that always residualizes.
struct always_gate {
    bool residualize(std::span<const float>, std::span<const float>) const { return true; }
};
/// Gate that never residualizes.
struct never_gate {
    bool residualize(std::span<const float>, std::span<const float>) const { return false; }
};

/// Per-channel quantizer (K in KIVI and PatternKV): groups of `group` tokens per channel, codes
/// packed along tokens.
struct channel_quantizer {
    int d, tokens, bits, group;
    int align_prefill(std::span<const float> x, std::span<const float> bank, int n) const;
    int align_flush(std::span<const float> x, std::span<const float> bank, int n) const;
    int code_words() const;
    int groups() const;
    void quantize(std::span<const float> rows, std::span<std::uint32_t> codes, std::span<std::uint16_t> sm) const;
    void dequantize(std::span<const std::uint32_t> codes, std::span<const std::uint16_t> sm, int t, std::span<float> out) const;
};

/// Per-token quantizer (V always; K in the per-token baseline): groups of `group` channels of one
/// token, codes packed along channels.
struct token_quantizer {
    int d, tokens, bits, group;
    int align_prefill(std::span<const float> x, std::span<const float> bank, int n) const;
    int align_flush(std::span<const float> x, std::span<const float> bank, int n) const;
    int code_words() const;
    int groups() const;
    void quantize(std::span<const float> rows, std::span<std::uint32_t> codes, std::span<std::uint16_t> sm) const;
    void dequantize(std::span<const std::uint32_t> codes, std::span<const std::uint16_t> sm, int t, std::span<float> out) const;
};

static_assert(PatternMiner<kmeans_miner> && PatternMiner<no_pattern_miner>);
static_assert(VGate<z_test_gate> && VGate<always_gate> && VGate<never_gate>);
static_assert(ResidualQuantizer<channel_quantizer> && ResidualQuantizer<token_quantizer>);

} // namespace patternkv
