// Every validation path: a patternkv::error whose message names the problem, and an unchanged cache.
#include <cmath>
#include <limits>

#include "state_snapshot.hpp"
#include "support.hpp"

namespace {

constexpr int H = 2, d = 16, Hq = 4;

patternkv::config small_config() {
    patternkv::config c = patternkv::patternkv_config(2);
    c.head_dim = d;
    c.num_kv_heads = H;
    c.num_q_heads = Hq;
    c.residual_length = c.k_group = 16;
    return c;
}

// A cache with two sequences: 0 holds 40 tokens, 1 is empty.
struct fixture {
    patternkv::layer_cache cache{small_config(), 2, 64};
    std::vector<float> k = pkv_test::synthetic_kv(1, 64, H, d, true), v = pkv_test::synthetic_kv(2, 64, H, d, false);
    fixture() { cache.prefill(0, patternkv::view_f32(k.data(), 40, H, d), patternkv::view_f32(v.data(), 40, H, d)); }
};

// Runs `op`, which must throw patternkv::error mentioning `needle`, and checks the cache is unchanged.
template <class Op>
void expect_rejected(fixture& f, const std::string& needle, Op op) {
    const auto before = pkv_test::snapshot(f.cache);
    try {
        op();
        FAIL("no error thrown; expected one mentioning '" << needle << "'");
    } catch (const patternkv::error& e) {
        INFO("message: " << e.what());
        CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
    CHECK(pkv_test::snapshot(f.cache) == before);
}

template <class Op>
void expect_config_error(const std::string& needle, Op change) {
    patternkv::config c = small_config();
    change(c);
    try {
        patternkv::layer_cache cache(c, 1, 16);
        FAIL("config accepted; expected an error mentioning '" << needle << "'");
    } catch (const patternkv::error& e) {
        INFO("message: " << e.what());
        CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
}

}  // namespace

TEST_CASE("invalid configurations name the field") {
    expect_config_error("head_dim", [](auto& c) { c.head_dim = 0; });
    expect_config_error("head_dim", [](auto& c) { c.head_dim = 1024; });
    expect_config_error("k_bits", [](auto& c) { c.k_bits = 5; });
    expect_config_error("v_bits", [](auto& c) { c.v_bits = 1; });
    expect_config_error("v_group", [](auto& c) { c.v_group = 5; });
    expect_config_error("k_group", [](auto& c) { c.k_group = 5; });
    expect_config_error("k_token_group", [](auto& c) {
        c.k_mode = patternkv::k_quant_mode::per_token;
        c.k_token_group = 3;
    });
    expect_config_error("num_q_heads", [](auto& c) { c.num_q_heads = 3; });
    expect_config_error("num_kv_heads", [](auto& c) { c.num_kv_heads = 0; });
    expect_config_error("residual_length", [](auto& c) { c.residual_length = 0; });
    expect_config_error("sink_tokens", [](auto& c) { c.sink_tokens = -1; });
    expect_config_error("sink_tokens", [](auto& c) { c.sink_tokens = 4097; });
    expect_config_error("max_patterns", [](auto& c) {
        c.max_patterns = 300;
        c.num_patterns = 32;
    });
    expect_config_error("num_patterns", [](auto& c) {
        c.num_patterns = 40;
        c.max_patterns = 33;
    });
    expect_config_error("gate_alpha", [](auto& c) { c.gate_alpha = 0.7; });
    expect_config_error("kmeans_iterations", [](auto& c) { c.kmeans_iterations = 0; });
    expect_config_error("softmax_scale", [](auto& c) { c.softmax_scale = -1.0f; });
    CHECK_THROWS_WITH_AS(patternkv::layer_cache(small_config(), 0, 16), doctest::Contains("batch"), patternkv::error);
    CHECK_THROWS_WITH_AS(patternkv::layer_cache(small_config(), 1, 0), doctest::Contains("max_tokens"), patternkv::error);
    patternkv::config c;
    CHECK_THROWS_WITH_AS(c.set("k_bitz", "4"), doctest::Contains("unknown config key 'k_bitz'"), patternkv::error);
    CHECK_THROWS_WITH_AS(c.set("k_bits", "four"), doctest::Contains("not an integer"), patternkv::error);
    CHECK_THROWS_WITH_AS(c.set("gate", "sometimes"), doctest::Contains("gate"), patternkv::error);
    c.set("bits", "4");
    CHECK((c.k_bits == 4 && c.v_bits == 4));
    c.set("grow_patterns", "false");
    CHECK(!c.grow_patterns);
    c.set("grow_patterns", "true");
    CHECK(c.grow_patterns);
    CHECK_THROWS_WITH_AS(c.set("grow_patterns", "yes"), doctest::Contains("not a boolean"), patternkv::error);
    CHECK(c.grow_patterns);  // a rejected value leaves the field as it was
}

TEST_CASE("prefill rejects bad input and leaves the cache unchanged") {
    fixture f;
    auto kv = [&](std::int64_t T, std::int64_t heads, std::int64_t dim) { return patternkv::view_f32(f.k.data(), T, heads, dim); };
    auto vv = [&](std::int64_t T) { return patternkv::view_f32(f.v.data(), T, H, d); };
    expect_rejected(f, "shape", [&] { f.cache.prefill(1, kv(10, H, 8), vv(10)); });             // wrong head_dim
    expect_rejected(f, "shape", [&] { f.cache.prefill(1, kv(10, 3, d), vv(10)); });             // wrong head count
    expect_rejected(f, "prefill v", [&] { f.cache.prefill(1, kv(10, H, d), vv(12)); });         // K/V token mismatch
    expect_rejected(f, "out of range", [&] { f.cache.prefill(2, kv(10, H, d), vv(10)); });      // no such sequence
    expect_rejected(f, "already holds 40", [&] { f.cache.prefill(0, kv(10, H, d), vv(10)); });  // non-empty
    std::vector<float> big(100 * H * d, 0.5f);
    expect_rejected(f, "capacity",
                    [&] { f.cache.prefill(1, patternkv::view_f32(big.data(), 100, H, d), patternkv::view_f32(big.data(), 100, H, d)); });
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 20000.0f}) {
        std::vector<float> k = f.k;
        k[5 * H * d + 3] = bad;
        expect_rejected(f, "prefill k[5, 0, 3]", [&] { f.cache.prefill(1, patternkv::view_f32(k.data(), 10, H, d), vv(10)); });
    }
    patternkv::const_tensor_view null_k = kv(10, H, d);
    null_k.data = nullptr;
    expect_rejected(f, "null data", [&] { f.cache.prefill(1, null_k, vv(10)); });
    patternkv::const_tensor_view odd = kv(10, H, d);
    odd.type = static_cast<patternkv::dtype>(7);
    expect_rejected(f, "dtype", [&] { f.cache.prefill(1, odd, vv(10)); });
}

TEST_CASE("append rejects bad input and leaves the cache unchanged") {
    fixture f;
    const int both[] = {0, 1}, twice[] = {0, 0}, bad_seq[] = {5};
    auto k1 = [&](std::int64_t n) { return patternkv::view_f32(f.k.data(), n, H, d); };
    auto v1 = [&](std::int64_t n) { return patternkv::view_f32(f.v.data(), n, H, d); };
    expect_rejected(f, "shape", [&] { f.cache.append(both, k1(1), v1(1)); });  // mismatched batch
    expect_rejected(f, "shape", [&] { f.cache.append(k1(3), v1(3)); });        // batch is 2
    expect_rejected(f, "listed twice", [&] { f.cache.append(twice, k1(2), v1(2)); });
    expect_rejected(f, "out of range", [&] { f.cache.append(bad_seq, k1(1), v1(1)); });
    std::vector<float> v = f.v;
    v[H * d + 7] = std::numeric_limits<float>::quiet_NaN();  // second row bad: the first must not land either
    expect_rejected(f, "append v[1, 0, 7]", [&] { f.cache.append(both, k1(2), patternkv::view_f32(v.data(), 2, H, d)); });
    // exhausted capacity: fill sequence 0 to 64 tokens, then one more
    const int zero[] = {0};
    while (f.cache.size(0) < 64) f.cache.append(zero, k1(1), v1(1));
    expect_rejected(f, "is full", [&] { f.cache.append(zero, k1(1), v1(1)); });
}

TEST_CASE("attend rejects bad input") {
    fixture f;
    std::vector<float> q(2 * Hq * d, 0.1f), out(2 * Hq * d);
    std::vector<std::uint16_t> out16(2 * Hq * d);
    const int zero[] = {0}, one[] = {1};
    expect_rejected(f, "empty cache",
                    [&] { f.cache.attend(one, patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(out.data(), 1, Hq, d)); });
    expect_rejected(f, "empty cache", [&] {  // sequence 1 of the whole batch is empty
        f.cache.attend(patternkv::view_f32(q.data(), 2, Hq, d), patternkv::view_f32(out.data(), 2, Hq, d));
    });
    expect_rejected(f, "attend q",
                    [&] { f.cache.attend(zero, patternkv::view_f32(q.data(), 1, H, d), patternkv::view_f32(out.data(), 1, Hq, d)); });
    expect_rejected(f, "f32", [&] {
        f.cache.attend(zero, patternkv::view_f32(q.data(), 1, Hq, d),
                       patternkv::tensor_view::contiguous(out16.data(), patternkv::dtype::f16, 1, Hq, d));
    });
    q[3] = std::numeric_limits<float>::infinity();
    expect_rejected(f, "attend q[0, 0, 3]",
                    [&] { f.cache.attend(zero, patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(out.data(), 1, Hq, d)); });
    CHECK_THROWS_WITH_AS(f.cache.reset(9), doctest::Contains("out of range"), patternkv::error);
    CHECK_THROWS_WITH_AS(f.cache.bank_size(0, 5, false), doctest::Contains("kv_head"), patternkv::error);
}
