// checkasm-style: every optimized primitive against core's scalar definition, bit for bit, on
// identical inputs; and whole split kernels with each primitive set.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>

#include "core/attention.hpp"
#include "core/kmeans.hpp"
#include "core/page_quantizer.hpp"
#include "reference/simd/attention_ops_avx2.hpp"
#include "reference/simd/attention_ops_amx.hpp"
#include "reference/simd/cpu_features.hpp"
#include "reference/simd/distance_avx2.hpp"
#include "reference/simd/halves_avx2.hpp"
#include "reference/simd/quantize_avx2.hpp"
#include "state_snapshot.hpp"
#include "support.hpp"

#if defined(__x86_64__)

namespace {

bool skip_without_avx2() {
    if (patternkv::simd::have_avx2()) return false;
    pkv_test::skip(doctest::getContextOptions()->currentTest->m_name +
                   std::string(": this CPU has no AVX2/FMA/F16C (or PATTERNKV_NO_SIMD is set)"));
    return true;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

using patternkv::core::scalar_ops;
using patternkv::simd::amx_ops;
using patternkv::simd::avx2_ops;
using patternkv::simd::avx512_ops;

/// Calls f.template operator()<Ops>() for avx2_ops, then for avx512_ops where the CPU has AVX-512
/// VNNI/VBMI and, with Tiles (the cases that reach code_sums, the one primitive amx_ops replaces),
/// for amx_ops where it has AMX-INT8 (and says loudly which twins did not run).
template <bool Tiles = false, class F>
void for_simd_ops(F&& f) {
    f.template operator()<avx2_ops>();
    if (patternkv::simd::have_avx512()) {
        f.template operator()<avx512_ops>();
    } else {
        pkv_test::skip(doctest::getContextOptions()->currentTest->m_name +
                       std::string(": AVX-512 twins not run (no AVX-512 F/BW/VL/VNNI/VBMI, or PATTERNKV_NO_AVX512 is set)"));
    }
    if constexpr (!Tiles) return;
    if (patternkv::simd::have_amx()) {
        f.template operator()<amx_ops>();
    } else {
        pkv_test::skip(doctest::getContextOptions()->currentTest->m_name +
                       std::string(": AMX twins not run (no AMX-TILE/INT8, the OS refused the tile state, or PATTERNKV_NO_AMX is set)"));
    }
}

}  // namespace

TEST_CASE("code_sums: AVX2, AVX-512 and AMX equal scalar for bits 2, 3, 4, 8, int8 and int16 multipliers, rows, offsets, head counts") {
    if (skip_without_avx2()) return;
    std::mt19937 gen(1);
    const int row_words = 32;  // rows of up to 32 * 16 codes: byte-path slices at every offset below
    std::vector<std::uint32_t> codes(static_cast<std::size_t>(300) * row_words);
    for (auto& w : codes) w = gen();
    int byte_cases = 0, slice_cases = 0, tile_cases = 0;
    for (int qmax : {127, 2056, 32767})
        for (int bits : {2, 3, 4, 8})
            for (int rows : {4, 24, 37, 64, 128, 136, 256, 300}) {                       // 300: past the multipliers' stack storage
                if (qmax > patternkv::core::multiplier_max(true, rows, bits)) continue;  // the bound code_sums' callers keep
                // integer multipliers in [-qmax, qmax], the extremes included (they bound the int16 pair sums)
                std::vector<float> m(static_cast<std::size_t>(9) * 300);
                for (std::size_t i = 0; i < m.size(); ++i)
                    m[i] = i % 7 == 0 ? static_cast<float>(i % 2 ? qmax : -qmax)
                                      : static_cast<float>(static_cast<int>(gen() % (2 * qmax + 1)) - qmax);
                for (int first : {0, 8, 32, 64, 3})
                    for (int n : {8, 16, 32, 64, 128, 256, 5})
                        for (int heads : {1, 2, 3, 4, 5, 8, 9}) {
                            if (first + n > row_words * (32 / bits)) continue;
                            INFO("qmax " << qmax << " bits " << bits << " rows " << rows << " first " << first << " n " << n << " heads "
                                         << heads);
                            const int stride = 256;
                            const auto a = pkv_test::normal_floats(4, static_cast<std::size_t>(heads) * stride);
                            auto expect = a;
                            scalar_ops::code_sums(codes.data(), row_words, rows, bits, first, n, m.data(), 300, heads, qmax, expect.data(),
                                                  stride);
                            for_simd_ops<true>([&]<class Ops>() {
                                auto b = a;
                                Ops::code_sums(codes.data(), row_words, rows, bits, first, n, m.data(), 300, heads, qmax, b.data(), stride);
                                CHECK(same_bits(expect, b));
                            });
                            byte_cases += patternkv::simd::detail::byte_codes(bits, qmax <= 127, rows, first, n) ? 1 : 0;
                            slice_cases += patternkv::simd::detail::slice_codes(bits, qmax <= 127, rows, first, n) ? 1 : 0;
                            tile_cases += amx_ops::on_tiles(rows, bits, first, n, qmax) ? 1 : 0;
                        }
            }
    CHECK(byte_cases > 200);  // the byte paths were exercised, not only the pair path
    CHECK(slice_cases > 100);
    CHECK(tile_cases > 100);
}

TEST_CASE("token_scores: AVX2 equals scalar for bits 2, 3, 4, 8, head dims, channel groups, head counts, multipliers at their bounds") {
    if (skip_without_avx2()) return;
    std::mt19937 gen(5);
    int simd_cases = 0;
    for (int bits : {2, 3, 4, 8})
        for (int d : {16, 64, 128, 256, 512})
            for (int group : {16, 32, 64, d, 8})
                for (int heads : {1, 4, 6}) {
                    if (group > d || d % group != 0) continue;
                    const int groups = d / group, tokens = 37, row_words = patternkv::core::words_for_codes(d, bits), stride = 40;
                    const int qmax = patternkv::core::multiplier_max(false, d, bits);
                    std::vector<std::uint32_t> codes(static_cast<std::size_t>(tokens) * row_words);
                    for (auto& w : codes) w = static_cast<std::uint32_t>(gen());
                    std::vector<patternkv::core::scale_min> sm(static_cast<std::size_t>(tokens) * groups);
                    for (auto& x : sm)  // finite halves of either sign
                        x = {static_cast<std::uint16_t>(gen() % 0x7C00u | (gen() % 2 ? 0x8000u : 0u)),
                             static_cast<std::uint16_t>(gen() % 0x7C00u | (gen() % 2 ? 0x8000u : 0u))};
                    std::vector<float> m(static_cast<std::size_t>(heads) * d), steps(static_cast<std::size_t>(heads));
                    for (std::size_t j = 0; j < m.size(); ++j)
                        m[j] = j % 5 == 0 ? static_cast<float>(j % 2 ? qmax : -qmax)
                                          : static_cast<float>(static_cast<int>(gen() % (2 * qmax + 1)) - qmax);
                    const auto q = pkv_test::normal_floats(gen(), m.size(), 2.0f);
                    for (auto& x : steps) x = 1e-3f * static_cast<float>(gen() % 1000 + 1);
                    std::vector<float> expect(static_cast<std::size_t>(heads) * stride, -1.0f), got = expect;
                    scalar_ops::token_scores(codes.data(), row_words, sm.data(), tokens, bits, d, group, q.data(), m.data(), heads,
                                             steps.data(), expect.data(), stride);
                    avx2_ops::token_scores(codes.data(), row_words, sm.data(), tokens, bits, d, group, q.data(), m.data(), heads,
                                           steps.data(), got.data(), stride);
                    INFO("bits " << bits << " d " << d << " group " << group << " heads " << heads);
                    CHECK(same_bits(expect, got));
                    simd_cases += bits != 3 && group % 16 == 0 ? 1 : 0;
                }
    CHECK(simd_cases > 100);  // the SIMD path ran, not only its scalar fallback
}

TEST_CASE("quantize: AVX2 and AVX-512 equal quantize_multipliers for lengths, bounds, ties, zeros and NaN") {
    if (skip_without_avx2()) return;
    for (int n : {1, 7, 8, 9, 15, 16, 17, 64, 128, 130})
        for (int qmax : {127, 2056, 32767})
            for (int kind = 0; kind < 4; ++kind) {
                auto a = pkv_test::normal_floats(static_cast<std::uint64_t>(n * 7 + kind), static_cast<std::size_t>(n), 3.0f);
                if (kind == 1)
                    for (auto& x : a) x = 0.0f;
                if (kind == 2)
                    for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(static_cast<int>(i % 5) - 2) * 0.5f;  // ties
                if (kind == 3) a[a.size() / 2] = std::nanf("");
                const auto input = a;
                const float sa = patternkv::core::quantize_multipliers(a.data(), n, qmax);
                INFO("n " << n << " qmax " << qmax << " kind " << kind);
                for_simd_ops([&]<class Ops>() {
                    auto b = input;
                    const float sb = Ops::quantize(b.data(), n, qmax);
                    CHECK(std::memcmp(&sa, &sb, 4) == 0);
                    CHECK(same_bits(a, b));
                });
            }
}

TEST_CASE("quantize_products: AVX2 and AVX-512 equal core's multiply-then-quantize for lengths, head counts, zeros and NaN") {
    if (skip_without_avx2()) return;
    for (int n : {1, 8, 15, 16, 17, 64, 128, 130})
        for (int heads : {1, 3, 4, 6})
            for (int kind = 0; kind < 3; ++kind) {
                const int stride = n + 3;
                auto x =
                    pkv_test::normal_floats(static_cast<std::uint64_t>(n * 11 + heads), static_cast<std::size_t>(heads) * stride, 3.0f);
                const auto y = pkv_test::normal_floats(static_cast<std::uint64_t>(n + 5), static_cast<std::size_t>(n), 2.0f);
                if (kind == 1)
                    for (int j = 0; j < n; ++j) x[j] = 0.0f;  // head 0 all zero
                if (kind == 2) x[static_cast<std::size_t>(stride + n / 2) % x.size()] = std::nanf("");
                std::vector<float> ma(static_cast<std::size_t>(heads) * n), sa(static_cast<std::size_t>(heads));
                patternkv::core::quantize_products<scalar_ops>(x.data(), stride, y.data(), n, heads, 32767, ma.data(), sa.data());
                INFO("n " << n << " heads " << heads << " kind " << kind);
                for_simd_ops([&]<class Ops>() {
                    std::vector<float> mb(ma.size()), sb(sa.size());
                    patternkv::core::quantize_products<Ops>(x.data(), stride, y.data(), n, heads, 32767, mb.data(), sb.data());
                    CHECK(same_bits(ma, mb));
                    CHECK(same_bits(sa, sb));
                });
            }
}

TEST_CASE("quantize_multipliers: integers in [-qmax, qmax], the largest magnitude maps to qmax, zeros and ties") {
    using patternkv::core::quantize_multipliers;
    std::vector<float> a = {0.5f, -2.0f, 1.0f, 0.0f, 0.01f};
    const float step = quantize_multipliers(a.data(), static_cast<int>(a.size()), 127);
    CHECK(step == 2.0f / 127.0f);
    CHECK(a[1] == -127.0f);
    CHECK(a[0] == 32.0f);  // 0.5 * 63.5 = 31.75 -> 32
    CHECK(a[2] == 64.0f);  // 63.5: ties to even
    CHECK(a[3] == 0.0f);
    CHECK(a[4] == 1.0f);  // 0.635
    std::vector<float> b = {3.0f, -1.0f};
    CHECK(quantize_multipliers(b.data(), 2, 32767) == 3.0f / 32767.0f);
    CHECK(b[0] == 32767.0f);
    CHECK(b[1] == -10922.0f);  // 10922.33
    std::vector<float> z(5, 0.0f);
    CHECK(quantize_multipliers(z.data(), 5, 127) == 0.0f);
    CHECK(patternkv::core::round_even_small(2.5f) == 2.0f);
    CHECK(patternkv::core::round_even_small(-3.5f) == -4.0f);
    CHECK(patternkv::core::round_even_small(126.4f) == 126.0f);
    // the bound keeps the centred sum of a page inside int32; K at 2 bits is int8
    CHECK(patternkv::core::multiplier_max(true, 128, 8) == 32767);
    CHECK(patternkv::core::multiplier_max(true, 4096, 8) == 2056);
    CHECK(patternkv::core::multiplier_max(false, 128, 2) == 127);
    CHECK(patternkv::core::multiplier_max(false, 128, 3) == 32767);
    CHECK(patternkv::core::multiplier_max(false, 512, 8) == 16448);
    CHECK(4096LL * 2056 * 255 < (1LL << 31));
}

TEST_CASE("squared L2 distance and nearest pattern: AVX2 equals core's lane order") {
    if (skip_without_avx2()) return;
    for (int d : {8, 16, 24, 32, 40, 64, 96, 128, 136, 512}) {
        const auto x = pkv_test::normal_floats(static_cast<std::uint64_t>(d), static_cast<std::size_t>(d), 3.0f);
        const auto bank = pkv_test::normal_floats(static_cast<std::uint64_t>(d) + 7, static_cast<std::size_t>(40) * d, 3.0f);
        for (int c = 0; c < 40; ++c) {
            const float a = patternkv::core::lane_sq_dist(x.data(), bank.data() + c * d, d);
            const float b = patternkv::simd::avx2_distance::sq_dist(x.data(), bank.data() + c * d, d);
            INFO("d " << d << " pattern " << c);
            CHECK(std::memcmp(&a, &b, 4) == 0);
        }
        CHECK(patternkv::simd::avx2_distance::nearest_l2(x.data(), bank.data(), 40, d) ==
              patternkv::core::nearest_pattern_l2(x.data(), bank.data(), 40, d));
    }
}

TEST_CASE("min-max nearest pattern: AVX2 picks core's index (ties, zero ranges, signed zeros)") {
    if (skip_without_avx2()) return;
    for (int d : {8, 16, 64, 128, 136, 512}) {
        auto bank = pkv_test::normal_floats(static_cast<std::uint64_t>(d) + 3, static_cast<std::size_t>(40) * d, 2.0f);
        for (int j = 0; j < d; ++j) {  // exact ties and zero ranges: copies of one pattern, and of the query
            bank[static_cast<std::size_t>(7) * d + j] = bank[static_cast<std::size_t>(3) * d + j];
            bank[static_cast<std::size_t>(20) * d + j] = (j % 2 ? 0.0f : -0.0f);
        }
        for (int trial = 0; trial < 20; ++trial) {
            auto x = pkv_test::normal_floats(static_cast<std::uint64_t>(d * 100 + trial), static_cast<std::size_t>(d), 2.0f);
            if (trial % 4 == 1) std::copy(bank.begin() + 3 * d, bank.begin() + 4 * d, x.begin());
            if (trial % 4 == 2)
                for (int j = 0; j < d; ++j) x[static_cast<std::size_t>(j)] = (j % 3 ? -0.0f : 0.0f);
            INFO("d " << d << " trial " << trial);
            CHECK(patternkv::simd::avx2_distance::nearest_dmm(x.data(), bank.data(), 40, d) ==
                  patternkv::core::nearest_pattern_dmm(x.data(), bank.data(), 40, d));
        }
    }
}

TEST_CASE("k-means with the AVX2 distance gives the scalar definition's centroids bit for bit") {
    if (skip_without_avx2()) return;
    for (int d : {8, 64, 128}) {
        const int T = 300, k = 32;
        const auto x = pkv_test::synthetic_kv(static_cast<std::uint64_t>(d), T, 1, d, true);
        const patternkv::core::kmeans_params p{k, 30, 1e-4f, 0, 1, 3, 0};
        std::vector<float> ca(static_cast<std::size_t>(k) * d), cb(ca.size()), sum(ca.size());
        std::vector<int> assign(T), chosen(k);
        std::vector<std::uint64_t> keys(k);
        patternkv::core::kmeans_run(p, x.data(), T, d, ca.data(), assign.data(), chosen.data(), keys.data(), sum.data());
        patternkv::core::kmeans_run<patternkv::simd::avx2_distance>(p, x.data(), T, d, cb.data(), assign.data(), chosen.data(), keys.data(),
                                                                    sum.data());
        INFO("d " << d);
        CHECK(same_bits(ca, cb));
    }
}

TEST_CASE("halves: AVX2 (F16C) equals scalar for all 65,536 halves") {
    if (skip_without_avx2()) return;
    std::vector<std::uint16_t> h(65536 + 3);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint16_t>(i);
    std::vector<float> a(h.size()), b(h.size());
    scalar_ops::halves(h.data(), static_cast<int>(h.size()), a.data());
    avx2_ops::halves(h.data(), static_cast<int>(h.size()), b.data());
    CHECK(same_bits(a, b));
}

TEST_CASE("floats to halves: F16C equals core::float_to_half around every half and on random floats; the check rejects") {
    if (skip_without_avx2()) return;
    std::vector<float> x;
    for (std::uint32_t h = 0; h < 0x10000; ++h) {  // every finite half, and its float neighbours and midpoints
        const std::uint16_t hb = static_cast<std::uint16_t>(h);
        if ((hb & 0x7c00) == 0x7c00) continue;
        const float f = patternkv::core::half_to_float(hb);
        const std::uint32_t u = patternkv::core::float_bits(f);
        for (std::uint32_t du : {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x1fffu})
            for (const std::uint32_t v : {u + du, u - du})
                if (const float g = patternkv::core::bits_float(v); std::fabs(g) <= 16384.0f) x.push_back(g);
    }
    std::mt19937 gen(5);
    for (int i = 0; i < 2000000; ++i) {
        const float g = patternkv::core::bits_float(static_cast<std::uint32_t>(gen()));
        if (std::fabs(g) <= 16384.0f) x.push_back(g);  // also false for NaN
    }
    while (x.size() % 8 != 0) x.push_back(0.0f);
    std::vector<std::uint16_t> a(x.size()), b(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) a[i] = patternkv::core::float_to_half(x[i]);
    CHECK(patternkv::simd::floats_to_halves_checked(x.data(), static_cast<std::int64_t>(x.size()), 16384.0f, b.data()) ==
          static_cast<std::int64_t>(x.size()));
    CHECK(same_bits(a, b));
    for (const float bad : {std::nanf(""), INFINITY, -INFINITY, std::nextafter(16384.0f, 1e9f), -16400.0f}) {
        float row[16] = {};
        row[11] = bad;
        std::uint16_t out[16];
        CHECK(patternkv::simd::floats_to_halves_checked(row, 16, 16384.0f, out) == -1);
    }
    float row[13] = {};
    std::uint16_t out[13];
    CHECK(patternkv::simd::floats_to_halves_checked(row, 13, 16384.0f, out) == 8);  // the tail is the caller's
}

namespace {

// Residual-like rows with the cases the quantizer special-cases: constant groups (scale 0), +0 and
// -0 in one group, extreme values, and ordinary noise.
std::vector<float> quantizer_rows(std::uint64_t seed, int tokens, int d) {
    auto x = pkv_test::normal_floats(seed, static_cast<std::size_t>(tokens) * d, 2.0f);
    for (int t = 0; t < tokens; ++t)
        for (int j = 0; j < d; ++j) {
            float& v = x[static_cast<std::size_t>(t) * d + j];
            if (t % 7 == 3) v = 1.25f;                                                              // constant token row
            if (j % 9 == 4) v = 0.5f;                                                               // constant channel
            if (j % 11 == 5) v = (t % 2 == 0) ? 0.0f : -0.0f;                                       // signed zeros
            if (t % 13 == 6 && j % 16 < 8) v = (t + j) % 2 ? 0.0f : -0.0f;                          // zero extremes in a row group
            if (t % 17 == 8) v = j % 5 == 2 ? ((j / 5) % 2 ? 0.0f : -0.0f) : std::fabs(v) + 0.1f;   // min is a signed zero
            if (t % 19 == 9) v = j % 5 == 3 ? ((j / 5) % 2 ? -0.0f : 0.0f) : -std::fabs(v) - 0.1f;  // max is a signed zero
            if (t == 5 && j == 6) v = 16384.0f;
            if (t == 9 && j == 6) v = -16384.0f;
        }
    return x;
}

}  // namespace

TEST_CASE("quantizers: AVX2 K per-channel and token rows equal core's, bits 2, 3, 4, 8, groups, signed zeros") {
    if (skip_without_avx2()) return;
    for (int bits : {2, 3, 4, 8})
        for (int d : {64, 128})
            for (int group : {32, 128}) {
                const int tokens = 128;
                const auto rows = quantizer_rows(static_cast<std::uint64_t>(bits * 1000 + d + group), tokens, d);
                const patternkv::core::page_geometry g{d, tokens, bits, bits, true, group, d, false, false};
                std::vector<std::uint32_t> ca(static_cast<std::size_t>(g.k_code_words()), 0xdeadbeef), cb(ca);
                std::vector<patternkv::core::scale_min> sa(static_cast<std::size_t>(g.k_groups())), sb(sa.size());
                for (int j = 0; j < d; ++j) patternkv::core::quantize_k_channel(g, rows.data(), j, ca.data(), sa.data());
                for (int j = 0; j < d; j += 8) patternkv::simd::avx2_quantizer::k_channels8(g, rows.data(), j, cb.data(), sb.data());
                INFO("bits " << bits << " d " << d << " group " << group);
                CHECK(same_bits(ca, cb));
                CHECK(same_bits(sa, sb));
                const int vg = group > d ? d : group;
                const int words = patternkv::core::words_for_codes(d, bits);
                std::vector<std::uint32_t> va(static_cast<std::size_t>(tokens) * words, 0xdeadbeef), vb(va);
                std::vector<patternkv::core::scale_min> ta(static_cast<std::size_t>(tokens) * (d / vg)), tb(ta.size());
                for (int t = 0; t < tokens; ++t) {
                    patternkv::core::quantize_token_row(rows.data() + t * d, d, vg, bits, va.data() + t * words, ta.data() + t * (d / vg));
                    patternkv::simd::avx2_quantizer::token_row(rows.data() + t * d, d, vg, bits, vb.data() + t * words,
                                                               tb.data() + t * (d / vg));
                }
                CHECK(same_bits(va, vb));
                CHECK(same_bits(ta, tb));
            }
}

TEST_CASE("add_gathered, finish_scores, add_code_terms: AVX2 and AVX-512 equal scalar for lengths 0 to 40 and every byte index") {
    if (skip_without_avx2()) return;
    const auto table = pkv_test::normal_floats(11, 256, 3.0f);
    std::vector<std::uint8_t> index(300);
    for (std::size_t i = 0; i < index.size(); ++i) index[i] = static_cast<std::uint8_t>((i * 97 + 13) % 256);
    for (int n : {0, 1, 7, 8, 9, 16, 31, 40, 256}) {
        auto a = pkv_test::normal_floats(12 + static_cast<std::uint64_t>(n), static_cast<std::size_t>(n) + 1, 2.0f), b = a;
        scalar_ops::add_gathered(a.data(), table.data(), index.data(), n);
        avx2_ops::add_gathered(b.data(), table.data(), index.data(), n);
        INFO("n " << n);
        CHECK(same_bits(a, b));
        for (const int size : {256, 16, 5, 0}) {  // tables of 256 entries (gathered), 16 and 5 (in a register), none
            const float* t = size > 0 ? table.data() + 256 - size : nullptr;  // the last entries: a read past them would show under ASan
            std::vector<std::uint8_t> at(index.size());
            for (std::size_t i = 0; i < at.size(); ++i) at[i] = static_cast<std::uint8_t>(size > 0 ? index[i] % size : 0);
            const auto input = a;
            scalar_ops::finish_scores(a.data(), n, 0.0123f, 0.37f, t, size, at.data() + 1);
            for_simd_ops([&]<class Ops>() {
                auto c = input;
                Ops::finish_scores(c.data(), n, 0.0123f, 0.37f, t, size, at.data() + 1);
                CHECK(same_bits(a, c));
            });
            b = a;
        }
        const auto sums = pkv_test::normal_floats(13, static_cast<std::size_t>(n) + 1, 1000.0f);
        scalar_ops::add_code_terms(a.data(), sums.data(), n, 0.0071f);
        avx2_ops::add_code_terms(b.data(), sums.data(), n, 0.0071f);
        CHECK(same_bits(a, b));
    }
}

TEST_CASE("scales_and_minimums, multiply: AVX2 (and AVX-512 multiply) equal scalar for lengths, strides, every half pattern class") {
    if (skip_without_avx2()) return;
    std::mt19937 gen(5);
    std::vector<std::uint16_t> sm(2 * 3 * 140);
    for (std::size_t i = 0; i < sm.size(); ++i)  // random halves, with zeros, negative zeros, subnormals and infinities among them
        sm[i] = i % 11 == 0 ? static_cast<std::uint16_t>(std::array<int, 4>{0, 0x8000, 0x0001, 0x7C00}[i / 11 % 4])
                            : static_cast<std::uint16_t>(gen() & 0x7BFF);
    for (int stride : {1, 2, 3})
        for (int n : {0, 1, 7, 8, 9, 16, 33, 128, 140}) {
            if (stride * n > 140 * 3 / stride * stride) continue;
            for (float centre : {0.5f, 1.5f, 7.5f, 127.5f}) {
                std::vector<float> sa(static_cast<std::size_t>(n) + 1, -1.0f), ma(sa), sb(sa), mb(sa);
                scalar_ops::scales_and_minimums(sm.data() + 2, n, stride, centre, sa.data(), ma.data());
                avx2_ops::scales_and_minimums(sm.data() + 2, n, stride, centre, sb.data(), mb.data());
                INFO("stride " << stride << " n " << n << " centre " << centre);
                CHECK(same_bits(sa, sb));
                CHECK(same_bits(ma, mb));
            }
            const auto x = pkv_test::normal_floats(14 + static_cast<std::uint64_t>(n), static_cast<std::size_t>(n), 2.0f);
            const auto y = pkv_test::normal_floats(15 + static_cast<std::uint64_t>(n), static_cast<std::size_t>(n), 1e-3f);
            std::vector<float> pa(static_cast<std::size_t>(n) + 1, 5.0f);
            scalar_ops::multiply(x.data(), y.data(), n, pa.data());
            for_simd_ops([&]<class Ops>() {
                std::vector<float> pb(static_cast<std::size_t>(n) + 1, 5.0f);
                Ops::multiply(x.data(), y.data(), n, pb.data());
                CHECK(same_bits(pa, pb));
            });
        }
}

TEST_CASE("indices: AVX2 unpacking equals pattern_indices for 2, 4 and 8 bits, offsets and lengths") {
    if (skip_without_avx2()) return;
    std::mt19937 gen(9);
    std::vector<std::uint8_t> packed(600);
    for (auto& b : packed) b = static_cast<std::uint8_t>(gen());
    for (int bits : {2, 4, 8})
        for (int first : {0, 1, 4, 16, 128, 130})
            for (int n : {0, 1, 15, 16, 17, 31, 32, 33, 64, 128, 256}) {
                std::vector<std::uint8_t> a(300, 0xAB), b(a);
                const std::uint8_t* pa = patternkv::core::pattern_indices(packed.data(), first, n, bits, a.data());
                const std::uint8_t* pb = avx2_ops::indices(packed.data(), first, n, bits, b.data());
                INFO("bits " << bits << " first " << first << " n " << n);
                CHECK(std::memcmp(pa, pb, static_cast<std::size_t>(n)) == 0);
            }
}

TEST_CASE("dot and lane sum: AVX2 and AVX-512 equal core's lane order for whole and partial 32-lane blocks") {
    if (skip_without_avx2()) return;
    for (int n : {1, 7, 15, 16, 17, 31, 32, 33, 48, 64, 95, 96, 128, 130, 256, 512}) {
        const auto a = pkv_test::normal_floats(static_cast<std::uint64_t>(n) + 40, static_cast<std::size_t>(n), 3.0f);
        const auto b = pkv_test::normal_floats(static_cast<std::uint64_t>(n) + 41, static_cast<std::size_t>(n), 3.0f);
        const float d0 = patternkv::core::lane_dot(a.data(), b.data(), n), s0 = patternkv::core::lane_sum(a.data(), n);
        const float s1 = patternkv::simd::lane_reduce_avx2<false>(a.data(), nullptr, n);
        INFO("n " << n);
        CHECK(std::memcmp(&s0, &s1, 4) == 0);
        for_simd_ops([&]<class Ops>() {
            const float d1 = Ops::dot(a.data(), b.data(), n);
            CHECK(std::memcmp(&d0, &d1, 4) == 0);
        });
        if (patternkv::simd::have_avx512()) {
            const float s2 = patternkv::simd::lane_reduce_avx512<false>(a.data(), nullptr, n);
            CHECK(std::memcmp(&s0, &s2, 4) == 0);
        }
    }
}

TEST_CASE("max: AVX2 and AVX-512 equal scalar, +0 for a zero maximum, for lengths and positions of the maximum") {
    if (skip_without_avx2()) return;
    for (int n : {1, 7, 8, 9, 15, 16, 17, 33, 100, 1024})
        for (int kind = 0; kind < 3; ++kind) {
            auto a = pkv_test::normal_floats(static_cast<std::uint64_t>(n) * 3 + static_cast<std::uint64_t>(kind),
                                             static_cast<std::size_t>(n), 4.0f);
            if (kind == 1)
                for (auto& x : a) x = -std::fabs(x);
            if (kind == 2)
                for (std::size_t i = 0; i < a.size(); ++i) a[i] = i % 3 == 0 ? -0.0f : -1.0f - static_cast<float>(i);  // zero max, -0 only
            const float m0 = scalar_ops::max(a.data(), n);
            INFO("n " << n << " kind " << kind);
            for_simd_ops([&]<class Ops>() {
                const float m1 = Ops::max(a.data(), n);
                CHECK(std::memcmp(&m0, &m1, 4) == 0);
            });
        }
}

TEST_CASE("add_scaled: AVX2 (mul then add) equals scalar") {
    if (skip_without_avx2()) return;
    for (int n : {0, 1, 7, 8, 9, 31, 128, 257}) {
        const auto x = pkv_test::normal_floats(static_cast<std::uint64_t>(n) + 60, static_cast<std::size_t>(n) + 1, 2.0f);
        auto a = pkv_test::normal_floats(static_cast<std::uint64_t>(n) + 61, static_cast<std::size_t>(n) + 1, 2.0f), b = a;
        scalar_ops::add_scaled(0.3711f, x.data(), a.data(), n);
        avx2_ops::add_scaled(0.3711f, x.data(), b.data(), n);
        INFO("n " << n);
        CHECK(same_bits(a, b));
    }
}

TEST_CASE("fma_accumulate: AVX2 equals scalar") {
    if (skip_without_avx2()) return;
    for (int n : {1, 8, 13, 128, 131}) {
        auto x = pkv_test::normal_floats(static_cast<std::uint64_t>(n), static_cast<std::size_t>(n), 3.0f);
        auto y = pkv_test::normal_floats(static_cast<std::uint64_t>(n) + 100, static_cast<std::size_t>(n), 1e3f), y2 = y;
        scalar_ops::fma_accumulate(0.3719f, x.data(), y.data(), n);
        avx2_ops::fma_accumulate(0.3719f, x.data(), y2.data(), n);
        CHECK(same_bits(y, y2));
    }
}

TEST_CASE("exponentiate: AVX2 and AVX-512 exp equal core::exp_fixed on a dense sweep of [-110, 95] and edge values") {
    if (skip_without_avx2()) return;
    std::vector<float> s;
    for (float x = -110.0f; x < 95.0f; x += 0.0009765625f * 1.37f) s.push_back(x);
    for (float x : {0.0f, -0.0f, -103.97283172607422f, -103.9728f, -87.33654f, -87.3366f, 88.72283935546875f, 88.7229f, -126.0f, 1e-30f,
                    -1e-30f, 0.5f, -0.5f, 0.34657359f, -0.34657359f})
        s.push_back(x);
    // every float in two narrow ranges: around 0 and around the subnormal threshold
    for (std::uint32_t u = 0x3f000000u; u < 0x3f000000u + 200000u; ++u) s.push_back(patternkv::core::bits_float(u) - 1.0f);
    for (std::uint32_t u = 0xc2ae0000u; u < 0xc2ae0000u + 200000u; ++u) s.push_back(patternkv::core::bits_float(u));
    // every float around -87 and 88, the bounds of the AVX-512 normal-result path, on both sides
    for (std::uint32_t u = 0xc2ae0000u - 100000u; u < 0xc2ae0000u; ++u) s.push_back(patternkv::core::bits_float(u));
    for (std::uint32_t u = 0x42b00000u - 100000u; u < 0x42b00000u + 100000u; ++u) s.push_back(patternkv::core::bits_float(u));
    for (float m : {0.0f, 1.5f, -3.25f})
        for (std::size_t n :
             {s.size(), std::size_t{0}, std::size_t{1}, std::size_t{17}, std::size_t{32}, std::size_t{45}, std::size_t{100}}) {
            std::vector<float> a(s.begin() + static_cast<std::ptrdiff_t>(s.size() - n), s.end());  // short ones: the +-87/88 sweep's tail
            const auto input = a;
            const float la = scalar_ops::exponentiate(a.data(), static_cast<int>(n), m);
            for_simd_ops([&]<class Ops>() {
                auto b = input;
                const float lb = Ops::exponentiate(b.data(), static_cast<int>(n), m);
                std::size_t bad = 0;
                for (std::size_t i = 0; i < n; ++i)
                    if (std::memcmp(&a[i], &b[i], 4) != 0 && ++bad < 5) MESSAGE("x=" << input[i] << " scalar " << a[i] << " simd " << b[i]);
                INFO("n " << n << " m " << m);
                CHECK(bad == 0);
                CHECK(std::memcmp(&la, &lb, 4) == 0);
            });
        }
}

TEST_CASE("whole history and window splits: AVX2, AVX-512 and AMX primitives equal the scalar definition, every config") {
    if (skip_without_avx2()) return;
    for (const char* method : {"patternkv", "kivi", "pertoken"})
        for (int bits : {2, 3, 4, 8})
            for (int d : {8, 64, 128, 256}) {
                patternkv::config c = std::string(method) == "kivi"       ? patternkv::kivi_config(bits)
                                      : std::string(method) == "pertoken" ? patternkv::per_token_config(bits)
                                                                          : patternkv::patternkv_config(bits);
                c.head_dim = d;
                c.num_kv_heads = 2;
                c.num_q_heads = 8;
                c.residual_length = c.k_group = 64;
                if (d == 128) c.v_group = 32;  // 256: one V group, 512-bit slices at every width
                const int T = 300, H = 2, G = 4;
                patternkv::layer_cache cache(c, 1, T);
                const auto k = pkv_test::synthetic_kv(static_cast<std::uint64_t>(bits * d), T, H, d, true);
                const auto v = pkv_test::synthetic_kv(static_cast<std::uint64_t>(bits * d + 1), T, H, d, false);
                cache.prefill(0, patternkv::view_f32(k.data(), T, H, d), patternkv::view_f32(v.data(), T, H, d));
                const auto& s = patternkv::state_of(cache);
                const int cap = s.bank_capacity, stride = patternkv::core::partial_stride(d, cap);
                const auto q = pkv_test::normal_floats(7, static_cast<std::size_t>(G) * d, 0.3f);
                std::vector<float> qm(static_cast<std::size_t>(G) * (cap + 1), 0.0f);
                for (int h = 0; h < G && cap > 0; ++h)
                    patternkv::core::pattern_scores(q.data() + h * d, s.bank(false, 0, 1), s.k_bank_size[1], d, qm.data() + h * cap);
                std::vector<float> ra(static_cast<std::size_t>(G) * stride), rb(ra.size());
                std::vector<float> work(static_cast<std::size_t>(patternkv::core::split_scratch_floats(G, 4 * 64, d, 64)));
                const patternkv::core::head_group ha{G, q.data(), cap > 0 ? qm.data() : nullptr, cap, ra.data(), stride};
                const patternkv::core::head_group hb{G, q.data(), cap > 0 ? qm.data() : nullptr, cap, rb.data(), stride};
                patternkv::core::attend_history_split<scalar_ops>(s.head(0, 1), 0, 4, ha, cap, work.data());
                INFO(method << "-" << bits << " d=" << d);
                for_simd_ops<true>([&]<class Ops>() {
                    std::fill(rb.begin(), rb.end(), 0.0f);
                    patternkv::core::attend_history_split<Ops>(s.head(0, 1), 0, 4, hb, cap, work.data());
                    CHECK(same_bits(ra, rb));
                });
                patternkv::core::attend_window_split<scalar_ops>(s.window(false, 0, 1), s.window(true, 0, 1), 44, d, ha, cap, work.data());
                patternkv::core::attend_window_split<avx2_ops>(s.window(false, 0, 1), s.window(true, 0, 1), 44, d, hb, cap, work.data());
                CHECK(same_bits(ra, rb));
            }
}

#else
TEST_CASE("AVX2 twins") { pkv_test::skip("not x86-64: only the scalar kernels exist, no twins to compare"); }
#endif
