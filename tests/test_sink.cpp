// The attention sink (config::sink_tokens): a sequence's first S tokens stay fp16 for good, the
// pages begin after them, and banks are mined from the tokens after them.
#include <algorithm>
#include <cstring>

#include "core/fp16.hpp"
#include "support.hpp"

namespace {

using patternkv::config;
using patternkv::layer_cache;

constexpr int H = 2, D = 16, Hq = 4, R = 8;

config sink_config(int sink) {
    config c = pkv_test::with_shape(patternkv::patternkv_config(2), H, D, Hq, R);
    c.num_patterns = 4;
    c.sink_tokens = sink;
    return c;
}

std::vector<float> rounded(std::vector<float> x) {
    for (auto& e : x) e = patternkv::core::round_to_half(e);
    return x;
}

// k, v [T][H][d] of sequence 0 as attention sees them.
std::pair<std::vector<float>, std::vector<float>> reconstruction(const layer_cache& c) {
    const auto T = c.size(0);
    std::vector<float> k(static_cast<std::size_t>(T) * H * D), v(k.size());
    c.dequantize(0, patternkv::view_f32(k.data(), T, H, D), patternkv::view_f32(v.data(), T, H, D));
    return {k, v};
}

struct run {
    layer_cache cache;
    int prompt;
};

// A cache of `sink` sink tokens fed tokens [first, first + prompt) as its prompt, then [.., total) one by one.
run feed(int sink, const std::vector<float>& k, const std::vector<float>& v, int first, int prompt, int total) {
    const std::size_t row = static_cast<std::size_t>(H) * D;
    layer_cache c(sink_config(sink), 1, total);
    c.prefill(0, patternkv::view_f32(k.data() + first * row, prompt, H, D), patternkv::view_f32(v.data() + first * row, prompt, H, D));
    for (int t = first + prompt; t < total; ++t)
        c.append(patternkv::view_f32(k.data() + t * row, 1, H, D), patternkv::view_f32(v.data() + t * row, 1, H, D));
    return {std::move(c), prompt};
}

}  // namespace

TEST_CASE("sink rows are stored exactly and the rest is encoded as if the sequence began after them") {
    const int total = 61, S = 3;
    const auto k = pkv_test::synthetic_kv(11, total, H, D, true), v = pkv_test::synthetic_kv(12, total, H, D, false);
    const std::size_t row = static_cast<std::size_t>(H) * D;
    for (const int prompt : {0, 1, 3, 4, 11, 27, 40}) {
        CAPTURE(prompt);
        const run with = feed(S, k, v, 0, prompt, total);
        CHECK(with.cache.size(0) == total);
        // the pages after the sink: (total - S) / R whole pages, minus a full window not yet flushed
        const std::int64_t after = total - S, pages = with.cache.quantized_size(0) / R;
        CHECK((pages == after / R || pages == after / R - 1));
        const auto [wk, wv] = reconstruction(with.cache);
        // the sink rows are the inputs rounded to fp16, bit for bit
        const auto kr = rounded(k), vr = rounded(v);
        CHECK(std::memcmp(wk.data(), kr.data(), S * row * sizeof(float)) == 0);
        CHECK(std::memcmp(wv.data(), vr.data(), S * row * sizeof(float)) == 0);
        // every later token is what a sink-free cache holds when given the sequence from token S on
        // (same banks, same pages, same window), when the prompt covered the sink
        if (prompt >= S) {
            const run without = feed(0, k, v, S, prompt - S, total);
            const auto [ok, ov] = reconstruction(without.cache);
            CHECK(std::memcmp(wk.data() + S * row, ok.data(), ok.size() * sizeof(float)) == 0);
            CHECK(std::memcmp(wv.data() + S * row, ov.data(), ov.size() * sizeof(float)) == 0);
            for (int h = 0; h < H; ++h)
                for (const bool isv : {false, true}) CHECK(with.cache.bank_size(0, h, isv) == without.cache.bank_size(0, h, isv));
        }
    }
}

TEST_CASE("a sink shifts the page boundaries and attention sees every token") {
    const int S = 5, total = S + 3 * R;
    const auto k = pkv_test::synthetic_kv(21, total, H, D, true), v = pkv_test::synthetic_kv(22, total, H, D, false);
    const run r = feed(S, k, v, 0, 2, total);  // the sink fills by appends too
    // 3 * R tokens after the sink flush two pages (the third window is full and waits for the next token)
    CHECK(r.cache.quantized_size(0) == 2 * R);
    const patternkv::memory_report m = r.cache.memory();
    CHECK(m.window_tokens == static_cast<std::uint64_t>(S + R));
    CHECK(m.window_bytes == 2ull * 2 * (S + R) * H * D);
    const auto q = pkv_test::normal_floats(23, static_cast<std::size_t>(Hq) * D);
    std::vector<float> out(q.size());
    r.cache.attend(patternkv::view_f32(q.data(), 1, Hq, D), patternkv::view_f32(out.data(), 1, Hq, D));
    const double err = pkv_test::max_head_relative_error(out.data(), pkv_test::naive_attention(r.cache, 0, q.data()), Hq, D);
    CHECK(err <= pkv_test::on_codes_tolerance(r.cache.cfg()));
}

TEST_CASE("sink_tokens = 0 is the cache without a sink and kivi_config has none") {
    CHECK(patternkv::kivi_config(2).sink_tokens == 0);
    CHECK(patternkv::per_token_config(2).sink_tokens == 0);
    CHECK(patternkv::patternkv_config(2).sink_tokens == 1);
    config c = sink_config(0);
    c.set("sink_tokens", "7");
    CHECK(c.sink_tokens == 7);
    c.set("sink_tokens", "-2");
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("sink_tokens = -2"), patternkv::error);
}
