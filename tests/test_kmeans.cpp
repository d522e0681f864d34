// core/kmeans.hpp and patternkv::kmeans_miner: seeded, deterministic k-means (method.md section 4).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <patternkv/patternkv.hpp>
#include <patternkv/policies.hpp>

#include "core/fp16.hpp"
#include "core/hash.hpp"
#include "core/kmeans.hpp"

namespace core = patternkv::core;

namespace {

core::kmeans_params params(int k, std::uint64_t seed, std::uint64_t head = 0, int iters = 30) {
    return {k, iters, 1e-4f, seed, core::stream_kmeans_init_k, core::stream_empty_cluster_k, head};
}

std::vector<float> run_kmeans(const core::kmeans_params& p, const std::vector<float>& x, int tokens, int d) {
    std::vector<float> cent(static_cast<std::size_t>(p.k) * d, -7.0f);
    std::vector<int> assign(tokens), chosen(p.k);
    std::vector<std::uint64_t> keys(p.k);
    std::vector<float> sum(static_cast<std::size_t>(p.k) * d);
    core::kmeans_run(p, x.data(), tokens, d, cent.data(), assign.data(), chosen.data(), keys.data(), sum.data());
    return cent;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<int> init_tokens(const core::kmeans_params& p, int tokens) {
    std::vector<int> chosen(p.k);
    std::vector<std::uint64_t> keys(p.k);
    core::kmeans_init_tokens(p, tokens, chosen.data(), keys.data());
    return chosen;
}

// Well-separated clusters: `centres` [k][d] far apart; token t belongs to cluster `member[t]`.
// The k initial tokens of the given params are put into k distinct clusters (Lloyd's algorithm with
// a random init is only guaranteed to find the clusters from such a start).
struct clustered {
    std::vector<float> x, centres;
    std::vector<int> member;
};
clustered make_clusters(const core::kmeans_params& p, int tokens, int d, std::mt19937_64& rng) {
    clustered c;
    std::normal_distribution<double> nd(0.0, 1.0);
    c.centres.resize(static_cast<std::size_t>(p.k) * d);
    for (auto& v : c.centres) v = static_cast<float>(20.0 * nd(rng));
    c.member.resize(tokens);
    for (auto& m : c.member) m = static_cast<int>(rng() % static_cast<std::uint64_t>(p.k));
    const std::vector<int> chosen = init_tokens(p, tokens);
    for (int i = 0; i < p.k; ++i) c.member[chosen[i]] = i;
    c.x.resize(static_cast<std::size_t>(tokens) * d);
    for (int t = 0; t < tokens; ++t)
        for (int j = 0; j < d; ++j) c.x[t * d + j] = static_cast<float>(c.centres[c.member[t] * d + j] + 0.5 * nd(rng));
    return c;
}

}  // namespace

TEST_CASE("kmeans_init_tokens returns the k distinct tokens with the smallest hashes, sorted") {
    for (std::uint64_t seed : {0ull, 1ull, 12345ull}) {
        for (int tokens : {1, 8, 50, 1000}) {
            for (int k : {1, 8, 32}) {
                if (k > tokens) continue;
                CAPTURE(seed);
                CAPTURE(tokens);
                CAPTURE(k);
                const core::kmeans_params p = params(k, seed, 3);
                std::vector<int> chosen(k, -1);
                std::vector<std::uint64_t> keys(k);
                core::kmeans_init_tokens(p, tokens, chosen.data(), keys.data());
                const std::set<int> distinct(chosen.begin(), chosen.end());
                CHECK(static_cast<int>(distinct.size()) == k);
                CHECK(*distinct.begin() >= 0);
                CHECK(*distinct.rbegin() < tokens);
                CHECK(std::is_sorted(keys.begin(), keys.end()));
                bool keys_ok = true;
                for (int i = 0; i < k; ++i)
                    keys_ok = keys_ok &&
                              keys[i] == core::counter_hash(seed, core::stream_kmeans_init_k, 3, static_cast<std::uint64_t>(chosen[i]));
                CHECK(keys_ok);
                // brute force: sort all (hash, token) pairs
                std::vector<std::pair<std::uint64_t, int>> all;
                for (int t = 0; t < tokens; ++t)
                    all.push_back({core::counter_hash(seed, core::stream_kmeans_init_k, 3, static_cast<std::uint64_t>(t)), t});
                std::sort(all.begin(), all.end());
                bool brute_ok = true;
                for (int i = 0; i < k; ++i) brute_ok = brute_ok && all[i].second == chosen[i];
                CHECK(brute_ok);
            }
        }
    }
    // K and V streams and different heads pick different tokens
    CHECK(init_tokens(params(8, 0, 0), 1000) != init_tokens(params(8, 0, 1), 1000));
    core::kmeans_params pv = params(8, 0, 0);
    pv.init_stream = core::stream_kmeans_init_v;
    CHECK(init_tokens(params(8, 0, 0), 1000) != init_tokens(pv, 1000));
}

TEST_CASE("kmeans_empty_cluster_token is deterministic and in range") {
    const core::kmeans_params p = params(8, 9);
    std::set<int> seen;
    for (int iter = 0; iter < 30; ++iter)
        for (int c = 0; c < 8; ++c) {
            const int t = core::kmeans_empty_cluster_token(p, 37, iter, c);
            CHECK(t >= 0);
            CHECK(t < 37);
            CHECK(t == core::kmeans_empty_cluster_token(p, 37, iter, c));
            seen.insert(t);
        }
    CHECK(seen.size() > 20);  // spreads over the tokens
}

TEST_CASE("kmeans_run is deterministic per seed and differs across seeds (seeds 0, 1)") {
    std::mt19937_64 rng(777u);
    std::normal_distribution<double> nd(0.0, 1.0);
    const int tokens = 300, d = 16;
    std::vector<float> x(tokens * d);
    for (auto& v : x) v = static_cast<float>(nd(rng));
    const auto a0 = run_kmeans(params(8, 0), x, tokens, d);
    const auto b0 = run_kmeans(params(8, 0), x, tokens, d);
    const auto a1 = run_kmeans(params(8, 1), x, tokens, d);
    const auto b1 = run_kmeans(params(8, 1), x, tokens, d);
    CHECK(bit_identical(a0, b0));
    CHECK(bit_identical(a1, b1));
    CHECK_FALSE(bit_identical(a0, a1));
    bool finite = true;
    for (float v : a0) finite = finite && std::isfinite(v);
    CHECK(finite);

    // the miner: same seed, same bank; another seed, another bank
    patternkv::kmeans_miner m;
    m.num_patterns = 8;
    std::vector<float> bank0(8 * d), bank0b(8 * d), bank1(8 * d);
    CHECK(m.mine(x, d, 2, false, bank0) == 8);
    CHECK(m.mine(x, d, 2, false, bank0b) == 8);
    m.seed = 1;
    CHECK(m.mine(x, d, 2, false, bank1) == 8);
    CHECK(bit_identical(bank0, bank0b));
    CHECK_FALSE(bit_identical(bank0, bank1));
    bool half_ok = true;
    for (float v : bank0) half_ok = half_ok && core::round_to_half(v) == v;
    CHECK(half_ok);
}

TEST_CASE("kmeans_run recovers well-separated clusters (8 clusters, 400 tokens, d = 16, seed 8080)") {
    std::mt19937_64 rng(8080u);
    const int tokens = 400, d = 16, k = 8;
    for (std::uint64_t seed : {0ull, 5ull}) {
        CAPTURE(seed);
        const core::kmeans_params p = params(k, seed, 1);
        const clustered c = make_clusters(p, tokens, d, rng);
        const auto cent = run_kmeans(p, c.x, tokens, d);
        // centroid i sits at the mean of cluster i (the cluster of initial token i)
        double worst_mean = 0, worst_true = 0;
        for (int i = 0; i < k; ++i) {
            std::vector<double> mean(d, 0.0);
            int cnt = 0;
            for (int t = 0; t < tokens; ++t)
                if (c.member[t] == i) {
                    ++cnt;
                    for (int j = 0; j < d; ++j) mean[j] += c.x[t * d + j];
                }
            REQUIRE(cnt > 0);
            for (int j = 0; j < d; ++j) {
                worst_mean = std::max(worst_mean, std::fabs(mean[j] / cnt - cent[i * d + j]));
                worst_true = std::max(worst_true, std::fabs(static_cast<double>(c.centres[i * d + j]) - cent[i * d + j]));
            }
        }
        MESSAGE("max |centroid - cluster mean| = " << worst_mean << ", max |centroid - true centre| = " << worst_true);
        CHECK(worst_mean < 1e-4);  // float sums of ~50 values of magnitude ~60
        CHECK(worst_true < 0.5);   // noise sd 0.5, ~50 members per cluster
    }
}

TEST_CASE("kmeans_miner::mine recovers well-separated clusters as fp16 patterns (seed 9090)") {
    std::mt19937_64 rng(9090u);
    const int tokens = 400, d = 16, k = 8, head = 5;
    for (bool is_v : {false, true}) {
        CAPTURE(is_v);
        core::kmeans_params p = params(k, 0, head);
        if (is_v) {
            p.init_stream = core::stream_kmeans_init_v;
            p.empty_stream = core::stream_empty_cluster_v;
        }
        const clustered c = make_clusters(p, tokens, d, rng);
        patternkv::kmeans_miner m;
        m.num_patterns = k;
        std::vector<float> bank(k * d);
        REQUIRE(m.mine(c.x, d, head, is_v, bank) == k);
        const auto ref = run_kmeans(p, c.x, tokens, d);
        bool same = true;
        for (int i = 0; i < k * d; ++i) same = same && bank[i] == core::round_to_half(ref[i]);
        CHECK(same);  // the miner is kmeans_run with the stream of K or V, rounded to fp16
        double worst = 0;
        for (int i = 0; i < k * d; ++i) worst = std::max(worst, std::fabs(static_cast<double>(bank[i]) - c.centres[i]));
        CHECK(worst < 0.5);
    }
}

TEST_CASE("kmeans with empty clusters completes and reseeds deterministically") {
    const int d = 4;
    SUBCASE("all tokens identical") {
        const int tokens = 20;
        std::vector<float> x(tokens * d);
        for (int t = 0; t < tokens; ++t)
            for (int j = 0; j < d; ++j) x[t * d + j] = 0.25f * static_cast<float>(j) - 1.0f;
        const auto cent = run_kmeans(params(4, 3), x, tokens, d);
        bool ok = true;
        for (int c = 0; c < 4; ++c)
            for (int j = 0; j < d; ++j) ok = ok && cent[c * d + j] == x[j];
        CHECK(ok);
        CHECK(bit_identical(cent, run_kmeans(params(4, 3), x, tokens, d)));
    }
    SUBCASE("two distinct values, five clusters") {
        const int tokens = 30;
        const core::kmeans_params p = params(5, 11, 2);
        const std::vector<int> chosen = init_tokens(p, tokens);
        const float A[d] = {0.5f, -1.25f, 3.0f, 0.0f}, B[d] = {-2.0f, 4.5f, 0.75f, 1.0f};
        std::vector<int> is_b(tokens);
        for (int t = 0; t < tokens; ++t) is_b[t] = t % 3 == 0;
        is_b[chosen[0]] = 0;  // the init holds an A and a B token
        is_b[chosen[1]] = 1;
        std::vector<float> x(tokens * d);
        for (int t = 0; t < tokens; ++t)
            for (int j = 0; j < d; ++j) x[t * d + j] = is_b[t] ? B[j] : A[j];
        const auto cent = run_kmeans(p, x, tokens, d);
        // every centroid is exactly A or B (three clusters go empty and are refilled with tokens)
        int n_a = 0, n_b = 0;
        for (int c = 0; c < 5; ++c) {
            const bool ea = std::equal(A, A + d, cent.begin() + c * d);
            const bool eb = std::equal(B, B + d, cent.begin() + c * d);
            CHECK((ea || eb));
            n_a += ea;
            n_b += eb;
        }
        CHECK(n_a >= 1);
        CHECK(n_b >= 1);
        CHECK(std::equal(A, A + d, cent.begin()));      // centroid 0 started at an A token
        CHECK(std::equal(B, B + d, cent.begin() + d));  // centroid 1 at a B token
        CHECK(bit_identical(cent, run_kmeans(p, x, tokens, d)));
        // a single iteration reseeds the empty clusters from kmeans_empty_cluster_token(iter 0)
        core::kmeans_params p1 = p;
        p1.max_iterations = 1;
        const auto one = run_kmeans(p1, x, tokens, d);
        for (int c = 2; c < 5; ++c) {
            const int t = core::kmeans_empty_cluster_token(p1, tokens, 0, c);
            CHECK(std::equal(x.begin() + t * d, x.begin() + (t + 1) * d, one.begin() + c * d));
        }
    }
}

TEST_CASE("kmeans_miner::mine with T <= k tokens, T = 0, and no patterns") {
    const int d = 8;
    std::mt19937_64 rng(1212u);
    std::normal_distribution<double> nd(0.0, 3.0);
    patternkv::kmeans_miner m;  // 32 patterns
    std::vector<float> bank(32 * d, -99.0f);
    for (int tokens : {1, 5, 31, 32}) {
        CAPTURE(tokens);
        std::vector<float> x(tokens * d);
        for (auto& v : x) v = static_cast<float>(nd(rng));
        std::fill(bank.begin(), bank.end(), -99.0f);
        REQUIRE(m.mine(x, d, 0, tokens % 2 == 0, bank) == tokens);
        bool ok = true;
        for (int i = 0; i < tokens * d; ++i) ok = ok && bank[i] == core::round_to_half(x[i]);
        CHECK(ok);
    }
    CHECK(m.mine(std::span<const float>(), d, 0, false, bank) == 0);
    patternkv::kmeans_miner none;
    none.num_patterns = 0;
    std::vector<float> x(10 * d, 1.0f);
    CHECK(none.mine(x, d, 0, false, bank) == 0);
    patternkv::no_pattern_miner np;
    CHECK(np.mine(x, d, 0, false, bank) == 0);
}

TEST_CASE("tokens_per_pattern: one pattern per that many mined tokens, rounded up, at most num_patterns") {
    CHECK(core::mined_patterns(0, 8, 128) == 0);
    CHECK(core::mined_patterns(1, 8, 128) == 1);
    CHECK(core::mined_patterns(128, 8, 128) == 1);
    CHECK(core::mined_patterns(129, 8, 128) == 2);
    CHECK(core::mined_patterns(511, 8, 128) == 4);
    CHECK(core::mined_patterns(1023, 8, 128) == 8);
    CHECK(core::mined_patterns(100000, 8, 128) == 8);
    CHECK(core::mined_patterns(5, 8, 0) == 8);  // 0: always num_patterns (the paper)
    CHECK(core::mined_patterns(5, 0, 128) == 0);

    const int d = 8, tokens = 300;
    std::mt19937_64 rng(3131u);
    std::normal_distribution<double> nd(0.0, 2.0);
    std::vector<float> x(tokens * d);
    for (auto& v : x) v = static_cast<float>(nd(rng));
    patternkv::kmeans_miner m;
    m.num_patterns = 8;
    m.tokens_per_pattern = 128;
    std::vector<float> bank(8 * d);
    CHECK(m.mine(x, d, 0, false, bank) == 3);
    // the three patterns are exactly what a miner of k = 3 writes
    patternkv::kmeans_miner three = m;
    three.num_patterns = 3;
    three.tokens_per_pattern = 0;
    std::vector<float> bank3(8 * d);
    REQUIRE(three.mine(x, d, 0, false, bank3) == 3);
    CHECK(std::memcmp(bank.data(), bank3.data(), 3 * d * sizeof(float)) == 0);

    // through a cache (defaults: 16 patterns, one per 128 tokens): a 200-token prompt (one sink token,
    // 199 mined) gets 2 patterns, a 1200-token one 10, a 5000-token one 16
    for (const auto& case_ : {std::pair{200, 2}, std::pair{1200, 10}, std::pair{5000, 16}}) {
        const int prompt = case_.first, expect = case_.second;  // not a structured binding: CAPTURE is a lambda (clang 15)
        patternkv::config c = patternkv::patternkv_config(2);
        c.head_dim = d;
        c.num_kv_heads = 1;
        c.num_q_heads = 1;
        patternkv::layer_cache cache(c, 1, prompt + 1);
        std::vector<float> k(static_cast<std::size_t>(prompt) * d), v(k.size());
        for (auto& e : k) e = static_cast<float>(nd(rng));
        for (auto& e : v) e = static_cast<float>(nd(rng));
        cache.prefill(0, patternkv::view_f32(k.data(), prompt, 1, d), patternkv::view_f32(v.data(), prompt, 1, d));
        CAPTURE(prompt);
        CHECK(cache.bank_size(0, 0, true) == expect);
    }
}

TEST_CASE("kmeans_miner::propose is the fp16-rounded per-channel midrange") {
    const int d = 4, n = 3;
    const std::vector<float> w = {0.0f, 1.0f, -2.0f, 0.1f, 2.0f, 1.0f, 4.0f, 0.2f, 1.0f, 3.0f, 0.0f, 0.3f};
    std::vector<float> c(d);
    patternkv::kmeans_miner m;
    CHECK(m.propose(w, d, c));
    CHECK(c[0] == 1.0f);
    CHECK(c[1] == 2.0f);
    CHECK(c[2] == 1.0f);
    CHECK(c[3] == core::round_to_half((0.1f + 0.3f) * 0.5f));
    (void)n;
    m.grow = false;
    CHECK_FALSE(m.propose(w, d, c));
    CHECK_FALSE(patternkv::no_pattern_miner{}.propose(w, d, c));
}

TEST_CASE("kmeans stops on tolerance only from the second iteration, and after max_iterations (seed 4321)") {
    std::mt19937_64 rng(4321u);
    std::normal_distribution<double> nd(0.0, 1.0);
    const int tokens = 200, d = 8;
    std::vector<float> x(tokens * d);
    for (auto& v : x) v = static_cast<float>(nd(rng));
    core::kmeans_params huge_tol = params(8, 0);
    huge_tol.tolerance = 1e30f;  // any shift passes: stops as early as allowed
    core::kmeans_params two = params(8, 0, 0, 2), one = params(8, 0, 0, 1);
    two.tolerance = one.tolerance = 0.0f;
    const auto a = run_kmeans(huge_tol, x, tokens, d);
    CHECK(bit_identical(a, run_kmeans(two, x, tokens, d)));
    CHECK_FALSE(bit_identical(a, run_kmeans(one, x, tokens, d)));
    // max_iterations bounds the work: 3 and 4 iterations differ on this data, 30 converges
    core::kmeans_params three = params(8, 0, 0, 3), four = params(8, 0, 0, 4);
    three.tolerance = four.tolerance = 0.0f;
    CHECK_FALSE(bit_identical(run_kmeans(three, x, tokens, d), run_kmeans(four, x, tokens, d)));
}
