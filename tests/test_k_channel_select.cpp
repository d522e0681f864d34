// core/k_channel_select.hpp: a K channel keeps its patterns only when they make the quantization
// error vary less from token to token; and the cache applies the choice to its K bank.
#include <cstdint>
#include <vector>

#include <doctest/doctest.h>

#include "core/k_channel_select.hpp"
#include "src/layer_cache_state.hpp"
#include "support.hpp"

namespace core = patternkv::core;

namespace {

// Two channels, 2 groups of 8 tokens; tokens alternate between patterns 0 and 1.
//   channel 0: the token's value is its pattern's value exactly (patterns explain it: keep);
//   channel 1: nearly constant with one outlier per group, and the patterns differ in this channel,
//              so subtracting them spreads the bulk over the range (drop).
struct fixture {
    static constexpr int d = 2, group = 8, groups = 2, T = group * groups;
    std::vector<float> x = std::vector<float>(T * d);
    std::vector<int> assign = std::vector<int>(T);
    std::vector<float> bank = {-3.0f, 0.3f,   // pattern 0
                               5.0f, -0.4f};  // pattern 1
    fixture() {
        for (int t = 0; t < T; ++t) {
            assign[t] = t % 2;
            x[t * d] = bank[assign[t] * d];
            x[t * d + 1] = t % group == 3 ? 4.0f : 1.0f + 0.001f * static_cast<float>(t % 3);
        }
    }
    bool keep(int j, int bits = 2) {
        std::vector<float> col(group);
        std::vector<std::uint8_t> codes(group);
        return core::keep_k_pattern_channel(x.data(), d, bank.data(), assign.data(), groups, group, bits, j, col.data(), codes.data());
    }
};

}  // namespace

TEST_CASE("a channel the patterns explain keeps them; a near-constant channel with outliers drops them") {
    fixture f;
    for (int bits : {2, 3, 4}) {
        CAPTURE(bits);
        CHECK(f.keep(0, bits));
        CHECK(!f.keep(1, bits));
    }
}

TEST_CASE("the error spread ignores an error shared by the whole group") {
    // every value rounds the same way: a common error, no spread
    const std::vector<float> same = {0.0f, 1.0f, 1.0f, 1.0f, 1.0f, 3.0f};
    std::vector<std::uint8_t> codes(same.size());
    CHECK(core::group_error_spread(same.data(), 6, 1, 2, codes.data()) >= 0.0);
    const std::vector<float> spread = {0.0f, 0.4f, 1.6f, 1.4f, 2.6f, 3.0f};
    CHECK(core::group_error_spread(spread.data(), 6, 1, 2, codes.data()) > core::group_error_spread(same.data(), 6, 1, 2, codes.data()));
}

TEST_CASE("the criterion is the error's spread, not its size: lower MSE with patterns can still drop them") {
    // one group of 8 tokens, every token its own pattern. Raw: two outliers (0 and 3) and a bulk at
    // 1.4 that rounds the same way (one shared error). With the patterns the residuals spread over the
    // range: a smaller squared error, but no longer a shared one.
    const int n = 8;
    const std::vector<float> raw = {0.0f, 3.0f, 1.4f, 1.4f, 1.4f, 1.4f, 1.4f, 1.4f};
    const std::vector<float> res = {0.0f, 2.7f, 0.2f, 0.9f, 1.6f, 2.3f, 0.5f, 1.2f};
    std::vector<float> bank(n);
    std::vector<int> assign(n);
    for (int t = 0; t < n; ++t) bank[t] = raw[t] - res[t], assign[t] = t;
    std::vector<std::uint8_t> codes(n);
    auto mse = [&](const std::vector<float>& g) {
        const core::scale_min sm = core::quantize_group(g.data(), n, 1, 2, codes.data());
        double e = 0;
        for (int t = 0; t < n; ++t) {
            const double err = core::dequantize_value(codes[t], core::half_to_float(sm.scale), core::half_to_float(sm.min)) - g[t];
            e += err * err;
        }
        return e;
    };
    std::vector<float> stored(n);
    for (int t = 0; t < n; ++t) stored[t] = raw[t] - bank[t];
    REQUIRE(mse(stored) < mse(raw));  // by squared error alone the patterns would stay
    std::vector<float> col(n);
    CHECK(!core::keep_k_pattern_channel(raw.data(), 1, bank.data(), assign.data(), 1, n, 2, 0, col.data(), codes.data()));
}

TEST_CASE("without a whole group there is no evidence: the channel keeps its patterns") {
    fixture f;
    std::vector<float> col(8);
    std::vector<std::uint8_t> codes(8);
    CHECK(core::keep_k_pattern_channel(f.x.data(), 2, f.bank.data(), f.assign.data(), 0, 8, 2, 1, col.data(), codes.data()));
}

TEST_CASE("a cache with K channel selection zeroes dropped K bank columns and never grows its K bank") {
    patternkv::config c = pkv_test::with_shape(patternkv::patternkv_config(2), 2, 32, 4, 32);
    c.k_patterns = true;
    c.num_patterns = 4;
    c.tokens_per_pattern = 0;  // four patterns from this short prompt
    patternkv::layer_cache cache(c, 1, 400);
    const int H = 2, d = 32;
    const auto k = pkv_test::synthetic_kv(11, 300, H, d, true), v = pkv_test::synthetic_kv(12, 300, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), 200, H, d), patternkv::view_f32(v.data(), 200, H, d));
    const auto& s = patternkv::state_of(cache);
    int zero_columns = 0;
    for (int h = 0; h < H; ++h)
        for (int j = 0; j < d; ++j) {
            bool zero = true;
            for (int p = 0; p < cache.bank_size(0, h, false); ++p) zero &= s.bank(false, 0, h)[p * d + j] == 0;
            zero_columns += zero;
        }
    MESSAGE(zero_columns << " of " << H * d << " K channels quantized without patterns");
    CHECK(zero_columns > 0);
    CHECK(zero_columns < H * d);
    for (int t = 200; t < 300; ++t)
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
    CHECK(cache.quantized_size(0) > 200);
    CHECK(cache.bank_size(0, 0, false) == 4);  // K: as mined
    CHECK(cache.bank_size(0, 0, true) > 4);    // V: one Chebyshev centre per flush
}
