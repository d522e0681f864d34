#pragma once
/// @file policies.hpp
/// The library's implementations of PatternMiner, VGate and ResidualQuantizer (concepts.hpp).
/// layer_cache composes them from its config; they are also usable on their own.

#include <cstdint>
#include <span>

#include "concepts.hpp"
#include "config.hpp"
#include "export.hpp"

namespace patternkv {

/// PatternKV's miner: seeded k-means at prefill (tokens themselves when fewer than num_patterns),
/// the Chebyshev centre (per-channel midrange) of the window at each flush.
struct PATTERNKV_API kmeans_miner {
    int num_patterns = 32;       ///< k: patterns mined per bank (config::num_patterns)
    int iterations = 30;         ///< at most this many Lloyd iterations (config::kmeans_iterations)
    float tolerance = 1e-4f;     ///< stop once no centroid coordinate moves more (config::kmeans_tolerance)
    std::uint64_t seed = 0;      ///< seeds initialisation and empty-cluster repair (config::seed)
    bool grow = true;            ///< propose a pattern at each flush (config::grow_patterns)
    int tokens_per_pattern = 0;  ///< 0, or mine at most ceil(tokens / this) patterns (config::tokens_per_pattern)
    /// Patterns mined from a prompt of `tokens` tokens (core::mined_patterns).
    int patterns_for(int tokens) const;
    /// Mines the bank of one head: x [tokens][d]; writes fp16-representable patterns [count][d]
    /// to bank (capacity >= num_patterns rows) and returns count = min(tokens, patterns_for(tokens)).
    int mine(std::span<const float> x, int d, int head, bool is_v, std::span<float> bank) const;
    /// Writes the fp16-rounded Chebyshev centre (per-channel midrange) of window [n][d] to centre
    /// and returns true, or returns false when growth is off.
    bool propose(std::span<const float> window, int d, std::span<float> centre) const;
};

/// No patterns (KIVI and the per-token baseline).
struct no_pattern_miner {
    /// Mines nothing: returns 0.
    int mine(std::span<const float>, int, int, bool, std::span<float>) const { return 0; }
    /// Proposes nothing: returns false.
    bool propose(std::span<const float>, int, std::span<float>) const { return false; }
};

/// The one-sided z-test gate of method.md section 5 at level alpha for head_dim d.
struct PATTERNKV_API z_test_gate {
    /// The gate at significance level alpha (0 < alpha < 0.5) for vectors of head_dim channels.
    z_test_gate(double alpha, int head_dim);
    /// True iff 1 - rho^2 >= c sqrt(1 + rho^4), rho = range(v - m) / range(v) (ranges >= 1e-12).
    bool residualize(std::span<const float> v, std::span<const float> m) const;
    /// rho*: the largest residual-to-raw range ratio the gate still accepts (computed in double).
    double rho_star() const;
    float c;  ///< 2 z / sqrt(5 d), as used by every backend
};

/// Gate that always residualizes.
struct always_gate {
    /// Always true.
    bool residualize(std::span<const float>, std::span<const float>) const { return true; }
};
/// Gate that never residualizes.
struct never_gate {
    /// Always false.
    bool residualize(std::span<const float>, std::span<const float>) const { return false; }
};

/// Per-channel quantizer (K in KIVI and PatternKV): groups of `group` tokens per channel, codes
/// packed along tokens.
struct PATTERNKV_API channel_quantizer {
    int d;       ///< channels per vector (head_dim)
    int tokens;  ///< tokens per page (residual_length)
    int bits;    ///< bits per code: 2, 3, 4 or 8
    int group;   ///< channels per group (v_group or k_token_group)
    /// Index of the bank row [n][d] nearest to x by squared L2 (prefill alignment; ties: lowest).
    int align_prefill(std::span<const float> x, std::span<const float> bank, int n) const;
    /// Index of the bank row minimizing the range of x - m (flush alignment; ties: lowest).
    int align_flush(std::span<const float> x, std::span<const float> bank, int n) const;
    /// 32-bit words of packed codes one page stores.
    int code_words() const;
    /// fp16 (scale, min) pairs one page stores.
    int groups() const;
    /// Quantizes a page of residual rows [tokens][d] into codes (code_words()) and scale/min
    /// pairs (2 * groups() fp16 bit patterns: scale, min).
    void quantize(std::span<const float> rows, std::span<std::uint32_t> codes, std::span<std::uint16_t> sm) const;
    /// Dequantized residual row t [d] of a page.
    void dequantize(std::span<const std::uint32_t> codes, std::span<const std::uint16_t> sm, int t, std::span<float> out) const;
};

/// Per-token quantizer (V always; K in the per-token baseline): groups of `group` channels of one
/// token, codes packed along channels.
struct PATTERNKV_API token_quantizer {
    int d;       ///< channels per vector (head_dim)
    int tokens;  ///< tokens per page (residual_length)
    int bits;    ///< bits per code: 2, 3, 4 or 8
    int group;   ///< channels per group (v_group or k_token_group)
    /// Index of the bank row [n][d] nearest to x by squared L2 (prefill alignment; ties: lowest).
    int align_prefill(std::span<const float> x, std::span<const float> bank, int n) const;
    /// Index of the bank row minimizing the range of x - m (flush alignment; ties: lowest).
    int align_flush(std::span<const float> x, std::span<const float> bank, int n) const;
    /// 32-bit words of packed codes one page stores.
    int code_words() const;
    /// fp16 (scale, min) pairs one page stores.
    int groups() const;
    /// Quantizes a page of residual rows [tokens][d] into codes (code_words()) and scale/min
    /// pairs (2 * groups() fp16 bit patterns: scale, min).
    void quantize(std::span<const float> rows, std::span<std::uint32_t> codes, std::span<std::uint16_t> sm) const;
    /// Dequantized residual row t [d] of a page.
    void dequantize(std::span<const std::uint32_t> codes, std::span<const std::uint16_t> sm, int t, std::span<float> out) const;
};

static_assert(PatternMiner<kmeans_miner> && PatternMiner<no_pattern_miner>);
static_assert(VGate<z_test_gate> && VGate<always_gate> && VGate<never_gate>);
static_assert(ResidualQuantizer<channel_quantizer> && ResidualQuantizer<token_quantizer>);

}  // namespace patternkv
