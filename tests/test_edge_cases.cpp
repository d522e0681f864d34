// The edge cases of method.md: short prompts, empty prompts, a prompt of exactly R tokens, constant
// groups, empty k-means clusters, bank growth and its bound, reset.
#include "core/fp16.hpp"
#include "state_snapshot.hpp"
#include "support.hpp"

namespace {

constexpr int H = 2, d = 32, Hq = 4, R = 32;

patternkv::config small(patternkv::config c = patternkv::patternkv_config(2)) {
    c.head_dim = d;
    c.num_kv_heads = H;
    c.num_q_heads = Hq;
    c.residual_length = c.k_group = R;
    if (c.num_patterns > 0) c.num_patterns = 32;  // the paper's setting, K bank growing at every flush
    c.k_channel_select = false;
    c.tokens_per_pattern = 0;  // a short prompt still mines every pattern
    c.sink_tokens = 0;         // every prompt token is mined (test_sink.cpp covers the sink)
    return c;
}

void append_rows(patternkv::layer_cache& cache, const std::vector<float>& k, const std::vector<float>& v, int from, int to) {
    for (int t = from; t < to; ++t)
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
}

void check_attention(const patternkv::layer_cache& cache, std::uint64_t seed) {
    const auto q = pkv_test::normal_floats(seed, static_cast<std::size_t>(Hq) * d);
    std::vector<float> out(q.size());
    const int seqs[] = {0};
    cache.attend(seqs, patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(out.data(), 1, Hq, d));
    for (float x : out) REQUIRE(std::isfinite(x));
    CHECK(pkv_test::max_head_relative_error(out.data(), pkv_test::naive_attention(cache, 0, q.data()), Hq, d) <=
          pkv_test::on_codes_tolerance(cache.cfg()));
}

}  // namespace

TEST_CASE("a prompt shorter than num_patterns uses its tokens as patterns") {
    patternkv::layer_cache cache(small(), 1, 256);
    const auto k = pkv_test::synthetic_kv(1, 200, H, d, true), v = pkv_test::synthetic_kv(2, 200, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), 5, H, d), patternkv::view_f32(v.data(), 5, H, d));
    CHECK(cache.bank_size(0, 0, false) == 5);
    CHECK(cache.bank_size(0, 1, true) == 5);
    const auto& s = patternkv::state_of(cache);
    for (int t = 0; t < 5; ++t)
        for (int j = 0; j < d; ++j)
            CHECK(s.bank(false, 0, 1)[t * d + j] == patternkv::core::float_to_half(k[(static_cast<std::size_t>(t) * H + 1) * d + j]));
    check_attention(cache, 3);
    append_rows(cache, k, v, 5, 100);  // windows full at 32, 64, 96 tokens flush with the next token
    CHECK(cache.quantized_size(0) == 96);
    CHECK(cache.bank_size(0, 0, false) == 8);
    check_attention(cache, 4);
}

TEST_CASE("an empty prompt is a no-op; decoding from nothing flushes with a bank of Chebyshev centres") {
    patternkv::layer_cache cache(small(), 1, 256);
    const auto k = pkv_test::synthetic_kv(5, 100, H, d, true), v = pkv_test::synthetic_kv(6, 100, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), 0, H, d), patternkv::view_f32(v.data(), 0, H, d));
    CHECK(cache.size(0) == 0);
    CHECK(cache.memory().total_bytes() == 0);
    append_rows(cache, k, v, 0, 70);
    CHECK(cache.quantized_size(0) == 64);
    CHECK(cache.bank_size(0, 0, true) == 2);
    check_attention(cache, 7);
}

TEST_CASE("a prompt of exactly R tokens is quantized whole and V keeps flushing afterwards") {
    patternkv::layer_cache cache(small(), 1, 256);
    const auto k = pkv_test::synthetic_kv(8, 200, H, d, true), v = pkv_test::synthetic_kv(9, 200, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), R, H, d), patternkv::view_f32(v.data(), R, H, d));
    CHECK(cache.quantized_size(0) == R);
    CHECK(cache.memory().window_tokens == 0);
    CHECK(cache.bank_size(0, 0, true) == 32);
    append_rows(cache, k, v, R, 3 * R);
    CHECK(cache.quantized_size(0) == 2 * R);  // the second window is full but flushes only with the next token
    CHECK(cache.memory().window_tokens == R);
    CHECK(cache.bank_size(0, 0, true) == 33);
    check_attention(cache, 10);
    append_rows(cache, k, v, 3 * R, 3 * R + 1);
    CHECK(cache.quantized_size(0) == 3 * R);
    CHECK(cache.memory().window_tokens == 1);
    CHECK(cache.bank_size(0, 0, true) == 34);
    check_attention(cache, 10);
}

TEST_CASE("constant groups store scale 0 and reconstruct exactly") {
    for (auto c : {small(), small(patternkv::kivi_config(2)), small(patternkv::per_token_config(4))}) {
        patternkv::layer_cache cache(c, 1, 128);
        std::vector<float> k(static_cast<std::size_t>(64) * H * d, 0.75f), v(k.size(), -1.5f);
        cache.prefill(0, patternkv::view_f32(k.data(), 64, H, d), patternkv::view_f32(v.data(), 64, H, d));
        std::vector<float> kh(k.size()), vh(v.size());
        cache.dequantize(0, patternkv::view_f32(kh.data(), 64, H, d), patternkv::view_f32(vh.data(), 64, H, d));
        CHECK(kh == k);
        CHECK(vh == v);
        for (const auto& sm : patternkv::state_of(cache).k_sm) CHECK(sm.scale == 0);
        check_attention(cache, 11);
    }
}

TEST_CASE("k-means with empty clusters (3 distinct tokens, 32 patterns) completes deterministically") {
    std::vector<float> k(static_cast<std::size_t>(100) * H * d), v(k.size());
    const auto base = pkv_test::normal_floats(12, 3 * d);
    for (int t = 0; t < 100; ++t)
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < d; ++j) {
                k[(static_cast<std::size_t>(t) * H + h) * d + j] = base[(t % 3) * d + j];
                v[(static_cast<std::size_t>(t) * H + h) * d + j] = -base[(t % 3) * d + j];
            }
    patternkv::layer_cache a(small(), 1, 128), b(small(), 1, 128);
    a.prefill(0, patternkv::view_f32(k.data(), 100, H, d), patternkv::view_f32(v.data(), 100, H, d));
    b.prefill(0, patternkv::view_f32(k.data(), 100, H, d), patternkv::view_f32(v.data(), 100, H, d));
    CHECK(pkv_test::snapshot(a) == pkv_test::snapshot(b));
    CHECK(a.bank_size(0, 0, false) == 32);
    // every token equals some pattern exactly, so K residuals are 0 and the reconstruction is exact
    std::vector<float> kh(k.size()), vh(v.size());
    a.dequantize(0, patternkv::view_f32(kh.data(), 100, H, d), patternkv::view_f32(vh.data(), 100, H, d));
    for (std::size_t i = 0; i < k.size(); ++i) REQUIRE(kh[i] == patternkv::core::round_to_half(k[i]));
    check_attention(a, 13);
}

TEST_CASE("the bank grows by one pattern per flush and stops at max_patterns") {
    patternkv::config c = small();
    c.max_patterns = 34;
    patternkv::layer_cache cache(c, 1, 512);
    const auto k = pkv_test::synthetic_kv(14, 400, H, d, true), v = pkv_test::synthetic_kv(15, 400, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), 100, H, d), patternkv::view_f32(v.data(), 100, H, d));
    CHECK(cache.bank_size(0, 0, false) == 32);
    append_rows(cache, k, v, 100, 130);  // one flush
    CHECK(cache.bank_size(0, 0, false) == 33);
    append_rows(cache, k, v, 130, 400);  // eight more flushes
    CHECK(cache.bank_size(0, 0, false) == 34);
    CHECK(cache.bank_size(0, 1, true) == 34);
    check_attention(cache, 16);

    c.grow_patterns = false;
    patternkv::layer_cache fixed(c, 1, 512);
    fixed.prefill(0, patternkv::view_f32(k.data(), 100, H, d), patternkv::view_f32(v.data(), 100, H, d));
    append_rows(fixed, k, v, 100, 200);
    CHECK(fixed.bank_size(0, 0, false) == 32);
    check_attention(fixed, 17);
}

TEST_CASE("reset empties a slot; the same prompt then rebuilds identical state") {
    patternkv::layer_cache a(small(), 1, 256), b(small(), 1, 256);
    const auto k = pkv_test::synthetic_kv(18, 150, H, d, true), v = pkv_test::synthetic_kv(19, 150, H, d, false);
    a.prefill(0, patternkv::view_f32(k.data() + 50 * H * d, 100, H, d), patternkv::view_f32(v.data() + 50 * H * d, 100, H, d));
    a.reset(0);
    CHECK(a.size(0) == 0);
    a.prefill(0, patternkv::view_f32(k.data(), 70, H, d), patternkv::view_f32(v.data(), 70, H, d));
    b.prefill(0, patternkv::view_f32(k.data(), 70, H, d), patternkv::view_f32(v.data(), 70, H, d));
    std::vector<float> q = pkv_test::normal_floats(20, Hq * d), oa(q.size()), ob(q.size());
    a.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(oa.data(), 1, Hq, d));
    b.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(ob.data(), 1, Hq, d));
    CHECK(oa == ob);
}

TEST_CASE("gate modes: never stores V raw, always residualizes every V token") {
    const auto k = pkv_test::synthetic_kv(21, 64, H, d, true), v = pkv_test::synthetic_kv(22, 64, H, d, false);
    for (auto mode : {patternkv::gate_mode::never, patternkv::gate_mode::always, patternkv::gate_mode::z_test}) {
        patternkv::config c = small();
        c.gate = mode;
        patternkv::layer_cache cache(c, 1, 64);
        cache.prefill(0, patternkv::view_f32(k.data(), 64, H, d), patternkv::view_f32(v.data(), 64, H, d));
        int on = 0;
        for (std::uint32_t w : patternkv::state_of(cache).v_gate) on += __builtin_popcount(w);
        if (mode == patternkv::gate_mode::never) CHECK(on == 0);
        if (mode == patternkv::gate_mode::always) CHECK(on == 64 * H);
        MESSAGE("gate mode " << static_cast<int>(mode) << ": " << on << " of " << 64 * H << " V tokens residualized");
        check_attention(cache, 23);
    }
}
