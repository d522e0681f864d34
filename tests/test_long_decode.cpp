// A long decode: hundreds of flushes with the bank at capacity (config::max_patterns). The bounded
// policy (docs/configuration.md) must keep memory flat, never change a stored token, keep attention
// exact over what is stored, and keep the quantization error of late pages in line with early ones.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "support.hpp"

namespace {

constexpr int H = 2, d = 32, Hq = 4, R = 8, cap = 16, prompt = 64, total = 64 + 2400;

double rel_error(const std::vector<float>& x, const std::vector<float>& xh, int t0, int t1) {
    double e = 0, n = 0;
    for (std::size_t i = static_cast<std::size_t>(t0) * H * d; i < static_cast<std::size_t>(t1) * H * d; ++i) {
        e += (x[i] - xh[i]) * static_cast<double>(x[i] - xh[i]);
        n += x[i] * static_cast<double>(x[i]);
    }
    return e / n;
}

}  // namespace

TEST_CASE("300 flushes with the bank at capacity: flat memory, stored tokens never change, attention exact") {
    patternkv::config c = pkv_test::with_shape(patternkv::patternkv_config(2), H, d, Hq, R);
    c.num_patterns = 4;
    c.max_patterns = cap;
    c.tokens_per_pattern = 0;  // the bank grows at every flush until it is full
    patternkv::layer_cache cache(c, 1, total);
    const auto k = pkv_test::synthetic_kv(31, total, H, d, true), v = pkv_test::synthetic_kv(32, total, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), prompt, H, d), patternkv::view_f32(v.data(), prompt, H, d));
    const int early = 400;  // the V bank fills (4 + 12 flushes) well before this
    std::vector<float> kh(static_cast<std::size_t>(total) * H * d), vh(kh.size()), early_k, early_v;
    std::uint64_t bank_bytes_at_cap = 0;
    for (int t = prompt; t < total; ++t) {
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
        if (t + 1 == early) {
            REQUIRE(cache.bank_size(0, 0, true) == cap);
            bank_bytes_at_cap = cache.memory().bank_bytes;
            cache.dequantize(0, patternkv::view_f32(kh.data(), early, H, d), patternkv::view_f32(vh.data(), early, H, d));
            const auto stored = static_cast<std::ptrdiff_t>(cache.quantized_size(0)) * H * d;  // the window still changes
            early_k.assign(kh.begin(), kh.begin() + stored);
            early_v.assign(vh.begin(), vh.begin() + stored);
        }
    }
    const int flushes = (total - prompt - 1) / R;
    CHECK(cache.quantized_size(0) == static_cast<std::int64_t>(prompt + flushes * R));
    CHECK(flushes >= 299);
    for (int h = 0; h < H; ++h) CHECK(cache.bank_size(0, h, true) == cap);
    CHECK(cache.memory().bank_bytes == bank_bytes_at_cap);  // no growth past the bound
    cache.dequantize(0, patternkv::view_f32(kh.data(), total, H, d), patternkv::view_f32(vh.data(), total, H, d));
    // tokens stored before the bank filled up read back bit for bit the same (nothing evicted or requantized)
    CHECK(std::equal(early_k.begin(), early_k.end(), kh.begin()));
    CHECK(std::equal(early_v.begin(), early_v.end(), vh.begin()));
    // attention over 2400+ tokens matches double-precision attention over the stored cache
    const auto q = pkv_test::normal_floats(33, static_cast<std::size_t>(Hq) * d);
    std::vector<float> out(q.size());
    cache.attend(patternkv::view_f32(q.data(), 1, Hq, d), patternkv::view_f32(out.data(), 1, Hq, d));
    CHECK(pkv_test::max_head_relative_error(out.data(), pkv_test::naive_attention(cache, 0, q.data()), Hq, d) <=
          pkv_test::on_codes_tolerance(cache.cfg()));
    // accuracy of the bounded bank: V pages written with a full bank are quantized about as well as
    // the pages written while it grew (same stationary data)
    const int q_end = static_cast<int>(cache.quantized_size(0));
    const double v_grow = rel_error(v, vh, prompt, early), v_full = rel_error(v, vh, early, q_end);
    const double k_grow = rel_error(k, kh, prompt, early), k_full = rel_error(k, kh, early, q_end);
    MESSAGE("V rel. MSE while the bank grew " << v_grow << ", at capacity " << v_full << "; K " << k_grow << ", " << k_full);
    CHECK(v_full <= 1.25 * v_grow);
    CHECK(k_full <= 1.25 * k_grow);
}

TEST_CASE("tokens_per_pattern: the V bank grows by flushes only while it holds fewer than one pattern per that many quantized tokens") {
    patternkv::config c = pkv_test::with_shape(patternkv::patternkv_config(2), H, d, Hq, 16);
    c.num_patterns = 2;
    c.max_patterns = 16;
    c.tokens_per_pattern = 32;
    c.sink_tokens = 0;
    const int T = 64, steps = 400;
    patternkv::layer_cache cache(c, 1, T + steps);
    const auto k = pkv_test::synthetic_kv(41, T + steps, H, d, true), v = pkv_test::synthetic_kv(42, T + steps, H, d, false);
    cache.prefill(0, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
    CHECK(cache.bank_size(0, 0, true) == 2);  // ceil(64 / 32), at most num_patterns
    for (int t = T; t < T + steps; ++t) {
        cache.append(patternkv::view_f32(k.data() + static_cast<std::size_t>(t) * H * d, 1, H, d),
                     patternkv::view_f32(v.data() + static_cast<std::size_t>(t) * H * d, 1, H, d));
        const std::int64_t quantized = cache.quantized_size(0);
        const int expect = static_cast<int>(std::min<std::int64_t>(16, std::max<std::int64_t>(2, (quantized + 31) / 32)));
        CAPTURE(t);
        for (int h = 0; h < H; ++h) REQUIRE(cache.bank_size(0, h, true) == expect);
    }
    CHECK(cache.bank_size(0, 0, true) == 14);  // 448 quantized tokens
}
