// The library's policies (policies.hpp) at run time, and user types against the concepts.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include <doctest/doctest.h>

#include <patternkv/concepts.hpp>
#include <patternkv/policies.hpp>

#include "core/fp16.hpp"
#include "core/patterns.hpp"
#include "core/quantize.hpp"

namespace core = patternkv::core;
using patternkv::PatternMiner;
using patternkv::ResidualQuantizer;
using patternkv::VGate;

namespace {

// ---- user-defined models of the concepts -------------------------------------------------------

/// Residualizes iff the residual's median absolute value is below the raw one's.
struct median_gate {
    bool residualize(std::span<const float> v, std::span<const float> m) const {
        std::vector<float> a(v.size()), b(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) {
            a[i] = std::fabs(v[i]);
            b[i] = std::fabs(v[i] - m[i]);
        }
        std::nth_element(a.begin(), a.begin() + a.size() / 2, a.end());
        std::nth_element(b.begin(), b.begin() + b.size() / 2, b.end());
        return b[b.size() / 2] < a[a.size() / 2];
    }
};

/// Mines the first token as the only pattern; proposes the first window token.
struct first_token_miner {
    int mine(std::span<const float> x, int d, int, bool, std::span<float> bank) const {
        if (x.size() < static_cast<std::size_t>(d)) return 0;
        for (int j = 0; j < d; ++j) bank[j] = core::round_to_half(x[j]);
        return 1;
    }
    bool propose(std::span<const float> w, int d, std::span<float> c) const {
        for (int j = 0; j < d; ++j) c[j] = core::round_to_half(w[j]);
        return true;
    }
};

/// Stores residuals as fp16 (one "code word" per element, no scale/min): a lossless-ish quantizer.
struct fp16_quantizer {
    int d, tokens;
    int align_prefill(std::span<const float> x, std::span<const float> bank, int n) const {
        return core::nearest_pattern_l2(x.data(), bank.data(), n, d);
    }
    int align_flush(std::span<const float> x, std::span<const float> bank, int n) const {
        return core::nearest_pattern_dmm(x.data(), bank.data(), n, d);
    }
    int code_words() const { return d * tokens; }
    int groups() const { return 0; }
    void quantize(std::span<const float> rows, std::span<std::uint32_t> codes, std::span<std::uint16_t>) const {
        for (int i = 0; i < d * tokens; ++i) codes[i] = core::float_to_half(rows[i]);
    }
    void dequantize(std::span<const std::uint32_t> codes, std::span<const std::uint16_t>, int t, std::span<float> out) const {
        for (int j = 0; j < d; ++j) out[j] = core::half_to_float(static_cast<std::uint16_t>(codes[t * d + j]));
    }
};

// ---- types that do not model the concepts -----------------------------------------------------

struct gate_without_member {};
struct gate_returning_int {
    int residualize(std::span<const float>, std::span<const float>) const { return 1; }
};
struct gate_non_const {
    bool residualize(std::span<const float>, std::span<const float>) { return true; }
};
struct miner_without_propose {
    int mine(std::span<const float>, int, int, bool, std::span<float>) const { return 0; }
};
struct miner_propose_wrong_type {
    int mine(std::span<const float>, int, int, bool, std::span<float>) const { return 0; }
    int propose(std::span<const float>, int, std::span<float>) const { return 0; }
};
struct quantizer_without_dequantize {
    int align_prefill(std::span<const float>, std::span<const float>, int) const { return 0; }
    int align_flush(std::span<const float>, std::span<const float>, int) const { return 0; }
    int code_words() const { return 0; }
    int groups() const { return 0; }
    void quantize(std::span<const float>, std::span<std::uint32_t>, std::span<std::uint16_t>) const {}
};

static_assert(VGate<median_gate>);
static_assert(PatternMiner<first_token_miner>);
static_assert(ResidualQuantizer<fp16_quantizer>);
static_assert(!VGate<gate_without_member>);
static_assert(!VGate<gate_returning_int>);
static_assert(!VGate<gate_non_const>);
static_assert(!VGate<int>);
static_assert(!PatternMiner<miner_without_propose>);
static_assert(!PatternMiner<miner_propose_wrong_type>);
static_assert(!PatternMiner<median_gate>);
static_assert(!ResidualQuantizer<quantizer_without_dequantize>);
static_assert(!ResidualQuantizer<median_gate>);
// the library's own models (also asserted in policies.hpp)
static_assert(VGate<patternkv::z_test_gate> && VGate<patternkv::always_gate> && VGate<patternkv::never_gate>);
static_assert(PatternMiner<patternkv::kmeans_miner> && PatternMiner<patternkv::no_pattern_miner>);
static_assert(ResidualQuantizer<patternkv::channel_quantizer> && ResidualQuantizer<patternkv::token_quantizer>);

// ---- conformance: round trip of a page ---------------------------------------------------------

std::vector<float> random_page(std::mt19937_64& rng, int tokens, int d) {
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<float> rows(static_cast<std::size_t>(tokens) * d);
    std::vector<double> sc(d), off(d);
    for (int j = 0; j < d; ++j) {
        sc[j] = std::exp(1.5 * nd(rng));
        off[j] = 2.0 * nd(rng);
    }
    for (int t = 0; t < tokens; ++t)
        for (int j = 0; j < d; ++j) rows[t * d + j] = static_cast<float>(off[j] + sc[j] * nd(rng));
    if (tokens > 3)
        for (int j = 0; j < d; ++j) rows[3 * d + j] = rows[2 * d + j];  // repeated row
    return rows;
}

// The scale/min pair used for element (t, j), from the documented storage layout (page_layout.hpp).
struct group_index_fn {
    bool per_channel;
    int d, group;
    int operator()(int t, int j) const { return per_channel ? (t / group) * d + j : t * (d / group) + j / group; }
};

// Runs a quantizer's round trip; returns the largest (error - bound), bound = s/2 + 2^-22 (|x| + |mn| + s)
// (test_quantize.cpp explains the allowance).
template <ResidualQuantizer Q>
double round_trip_excess(const Q& q, const std::vector<float>& rows, int tokens, int d, group_index_fn gi, int bits, bool& codes_fit,
                         bool& same_as_core) {
    std::vector<std::uint32_t> codes(q.code_words() + 1, 0xa5a5a5a5u);
    std::vector<std::uint16_t> sm(2 * q.groups() + 2, 0xdead);
    q.quantize(rows, std::span<std::uint32_t>(codes.data(), q.code_words()), std::span<std::uint16_t>(sm.data(), 2 * q.groups()));
    codes_fit = codes.back() == 0xa5a5a5a5u && sm[2 * q.groups()] == 0xdead && sm[2 * q.groups() + 1] == 0xdead;
    double excess = -1e300;
    std::vector<float> out(d);
    same_as_core = true;
    for (int t = 0; t < tokens; ++t) {
        q.dequantize(std::span<const std::uint32_t>(codes.data(), q.code_words()),
                     std::span<const std::uint16_t>(sm.data(), 2 * q.groups()), t, out);
        for (int j = 0; j < d; ++j) {
            const int g = gi(t, j);
            const float s = core::half_to_float(sm[2 * g]), mn = core::half_to_float(sm[2 * g + 1]);
            const double x = rows[t * d + j];
            const double err = std::fabs(x - out[j]);
            excess = std::max(excess, err - (0.5 * s + std::ldexp(std::fabs(x) + std::fabs(mn) + s, -22)));
            // the reconstruction is one of the group's grid points
            const double k = (static_cast<double>(out[j]) - mn) / (s == 0.0f ? 1.0f : s);
            if (s != 0.0f && (k < -1e-3 || k > ((1 << bits) - 1) + 1e-3)) same_as_core = false;
        }
    }
    // scale/min equal what core::quantize_group computes for each group
    for (int t = 0; t < tokens; ++t)
        for (int j = 0; j < d; ++j) {
            if (gi.per_channel ? (t % gi.group != 0) : (j % gi.group != 0)) continue;
            std::vector<std::uint8_t> c(std::max(gi.group, 1));
            const core::scale_min ref = gi.per_channel ? core::quantize_group(rows.data() + t * d + j, gi.group, d, bits, c.data())
                                                       : core::quantize_group(rows.data() + t * d + j, gi.group, 1, bits, c.data());
            const int g = gi(t, j);
            if (sm[2 * g] != ref.scale || sm[2 * g + 1] != ref.min) same_as_core = false;
        }
    return excess;
}

}  // namespace

TEST_CASE("channel_quantizer round-trips pages within s/2 (seed 31337)") {
    std::mt19937_64 rng(31337u);
    for (int bits : {2, 3, 4, 8}) {
        for (int d : {8, 64, 128}) {
            for (const auto& shape : {std::pair{128, 128}, std::pair{128, 32}, std::pair{64, 64}, std::pair{96, 32}}) {
                const int tokens = shape.first, group = shape.second;  // named, not bound: clang 15 cannot capture bindings
                CAPTURE(bits);
                CAPTURE(d);
                CAPTURE(tokens);
                CAPTURE(group);
                const patternkv::channel_quantizer q{d, tokens, bits, group};
                CHECK(q.groups() == (tokens / group) * d);
                CHECK(q.code_words() == d * ((tokens + 32 / bits - 1) / (32 / bits)));
                const auto rows = random_page(rng, tokens, d);
                bool fit = false, same = false;
                const double ex = round_trip_excess(q, rows, tokens, d, {true, d, group}, bits, fit, same);
                CHECK(ex <= 0.0);
                CHECK(fit);
                CHECK(same);
            }
        }
    }
}

TEST_CASE("token_quantizer round-trips pages within s/2 (seed 4711)") {
    std::mt19937_64 rng(4711u);
    for (int bits : {2, 3, 4, 8}) {
        for (int d : {8, 64, 128}) {
            for (int group : {d, d / 2, 8}) {
                const int tokens = 128;
                CAPTURE(bits);
                CAPTURE(d);
                CAPTURE(group);
                const patternkv::token_quantizer q{d, tokens, bits, group};
                CHECK(q.groups() == tokens * (d / group));
                CHECK(q.code_words() == tokens * ((d + 32 / bits - 1) / (32 / bits)));
                const auto rows = random_page(rng, tokens, d);
                bool fit = false, same = false;
                const double ex = round_trip_excess(q, rows, tokens, d, {false, d, group}, bits, fit, same);
                CHECK(ex <= 0.0);
                CHECK(fit);
                CHECK(same);
            }
        }
    }
}

TEST_CASE("quantizers align with L2 at prefill and d_mm at a flush") {
    // x is closest in L2 to pattern 0, but pattern 1 leaves the flattest residual.
    const int d = 4;
    const std::vector<float> x = {0, 0, 0, 4};
    const std::vector<float> bank = {0, 0, 0, 3, 5, 5, 5, 9};
    const patternkv::channel_quantizer cq{d, 128, 2, 128};
    const patternkv::token_quantizer tq{d, 128, 2, d};
    CHECK(cq.align_prefill(x, bank, 2) == 0);
    CHECK(cq.align_flush(x, bank, 2) == 1);
    CHECK(tq.align_prefill(x, bank, 2) == 0);
    CHECK(tq.align_flush(x, bank, 2) == 1);
    CHECK(cq.align_prefill(x, bank, 1) == 0);  // n limits the bank
}

TEST_CASE("user-defined models run through the concept interface") {
    std::mt19937_64 rng(99u);
    const median_gate g;
    const std::vector<float> v = {1, -2, 3, -4, 5, -6, 7, -8};
    CHECK(g.residualize(v, v));  // zero residual
    CHECK_FALSE(g.residualize(v, std::vector<float>(8, 100.0f)));
    const first_token_miner m;
    std::vector<float> bank(8);
    CHECK(m.mine(v, 8, 0, false, bank) == 1);
    CHECK(bank == v);
    const fp16_quantizer q{8, 2};
    std::vector<float> rows = {0.1f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    std::vector<std::uint32_t> codes(q.code_words());
    std::vector<std::uint16_t> sm;
    q.quantize(rows, codes, sm);
    std::vector<float> out(8);
    q.dequantize(codes, sm, 1, out);
    CHECK(out[0] == 8.0f);
    q.dequantize(codes, sm, 0, out);
    CHECK(out[0] == core::round_to_half(0.1f));
}
