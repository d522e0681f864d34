// reference/kmeans_bounds.hpp: the bounded (Elkan) assignment step returns core::full_assignment's
// result in every iteration, so k-means centroids are bit-identical; and it skips most distances.
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "core/fp16.hpp"
#include "core/hash.hpp"
#include "core/kmeans.hpp"
#include "reference/kmeans_bounds.hpp"
#include "reference/simd/cpu_features.hpp"
#include "reference/simd/distance_avx2.hpp"
#include "support.hpp"

namespace core = patternkv::core;

namespace {

// Runs the bounded step and the defining step on the same centroids each iteration and counts the
// iterations whose assignments differ.
template <class Distance>
struct checked_step {
    patternkv::elkan_assignment<Distance>& bounded;
    std::vector<int> reference;
    int calls = 0, mismatches = 0;

    void operator()(const float* x, int tokens, int d, const float* centroids, int k, int* assign) {
        reference.resize(static_cast<std::size_t>(tokens));
        core::full_assignment<Distance>{}(x, tokens, d, centroids, k, reference.data());
        bounded(x, tokens, d, centroids, k, assign);
        ++calls;
        if (std::memcmp(reference.data(), assign, reference.size() * sizeof(int)) != 0) ++mismatches;
    }
};

struct outcome {
    std::int64_t evaluated = 0, full = 0;
};

// k-means with the bounded step against kmeans_run<Distance>: every iteration's assignment and the
// final centroids must match bit for bit.
template <class Distance>
outcome compare(const std::vector<float>& x, int tokens, int d, int k, int iterations, const std::string& what) {
    const core::kmeans_params p{k, iterations, 1e-4f, 0, core::stream_kmeans_init_k, core::stream_empty_cluster_k, 3};
    std::vector<float> ca(static_cast<std::size_t>(k) * d), cb(ca.size()), sum(ca.size());
    std::vector<int> assign_a(tokens), assign_b(tokens), chosen(k);
    std::vector<std::uint64_t> keys(k);
    core::kmeans_run<Distance>(p, x.data(), tokens, d, ca.data(), assign_a.data(), chosen.data(), keys.data(), sum.data());
    patternkv::elkan_assignment<Distance> bounded(tokens, k, d);
    checked_step<Distance> step{bounded, {}};
    core::kmeans_iterate(p, x.data(), tokens, d, cb.data(), assign_b.data(), chosen.data(), keys.data(), sum.data(), step);
    INFO(what << ": d " << d << ", " << tokens << " tokens, k " << k);
    CHECK(step.mismatches == 0);
    CHECK(std::memcmp(ca.data(), cb.data(), ca.size() * sizeof(float)) == 0);
    CHECK(assign_a == assign_b);
    return {bounded.evaluated(), static_cast<std::int64_t>(step.calls) * tokens * k};
}

std::vector<float> rounded(std::vector<float> x) {  // the library feeds k-means fp16 values
    for (float& v : x) v = core::round_to_half(v);
    return x;
}

std::vector<float> uniform(std::uint64_t seed, std::size_t n, float scale) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> x(n);
    for (float& v : x) v = u(gen);
    return rounded(x);
}

// Only `distinct` different rows, repeated: exact distance ties, identical centroids, empty clusters.
std::vector<float> repeated_rows(std::uint64_t seed, int tokens, int d, int distinct) {
    const auto rows = uniform(seed, static_cast<std::size_t>(distinct) * d, 2.0f);
    std::vector<float> x(static_cast<std::size_t>(tokens) * d);
    for (int t = 0; t < tokens; ++t) {
        const int r =
            static_cast<int>(core::counter_hash(seed, 1, static_cast<std::uint64_t>(t), 0) % static_cast<std::uint64_t>(distinct));
        std::memcpy(x.data() + static_cast<std::size_t>(t) * d, rows.data() + static_cast<std::size_t>(r) * d,
                    static_cast<std::size_t>(d) * 4);
    }
    return x;
}

template <class Distance>
void compare_all(const char* distance_name) {
    INFO("distance " << distance_name);
    for (int d : {8, 24, 64, 128}) {
        compare<Distance>(uniform(static_cast<std::uint64_t>(d), static_cast<std::size_t>(700) * d, 2.0f), 700, d, 32, 30, "uniform noise");
        compare<Distance>(rounded(pkv_test::synthetic_kv(static_cast<std::uint64_t>(d), 900, 1, d, true)), 900, d, 32, 30,
                          "clustered keys");
        compare<Distance>(rounded(pkv_test::synthetic_kv(static_cast<std::uint64_t>(d) + 1, 900, 1, d, false)), 900, d, 16, 30,
                          "clustered values");
        compare<Distance>(repeated_rows(static_cast<std::uint64_t>(d), 400, d, 5), 400, d, 32, 30, "5 distinct rows");
        compare<Distance>(repeated_rows(static_cast<std::uint64_t>(d) + 9, 400, d, 40), 400, d, 32, 30, "40 distinct rows");
        compare<Distance>(uniform(static_cast<std::uint64_t>(d) + 2, static_cast<std::size_t>(300) * d, 3e-6f), 300, d, 32, 30,
                          "fp16 subnormal range");
        compare<Distance>(uniform(static_cast<std::uint64_t>(d) + 3, static_cast<std::size_t>(300) * d, 16384.0f), 300, d, 32, 30,
                          "largest inputs");
        compare<Distance>(uniform(static_cast<std::uint64_t>(d) + 4, static_cast<std::size_t>(200) * d, 1.0f), 200, d, 1, 30, "k = 1");
        compare<Distance>(uniform(static_cast<std::uint64_t>(d) + 5, static_cast<std::size_t>(33) * d, 1.0f), 33, d, 32, 30,
                          "k = tokens - 1");
        compare<Distance>(uniform(static_cast<std::uint64_t>(d) + 6, static_cast<std::size_t>(300) * d, 1.0f), 300, d, 32, 1,
                          "one iteration");
    }
}

}  // namespace

TEST_CASE("bounded k-means assignment equals the defining step in every iteration (scalar distance)") {
    compare_all<core::scalar_distance>("scalar");
}

TEST_CASE("bounded k-means assignment equals the defining step in every iteration (AVX2 distance)") {
    if (!patternkv::simd::have_avx2()) return pkv_test::skip("AVX2 distance: this CPU has no AVX2 (or PATTERNKV_NO_SIMD is set)");
    compare_all<patternkv::simd::avx2_distance>("avx2");
}

TEST_CASE("the bounds skip most distances once k-means settles (clustered keys, 2000 tokens, d = 128, k = 32)") {
    const int tokens = 2000, d = 128, k = 32;
    const outcome o =
        compare<core::scalar_distance>(rounded(pkv_test::synthetic_kv(77, tokens, 1, d, true)), tokens, d, k, 30, "clustered keys");
    MESSAGE("distances evaluated: " << o.evaluated << " of " << o.full << " ("
                                    << 100.0 * static_cast<double>(o.evaluated) / static_cast<double>(o.full) << "%)");
    CHECK(o.evaluated * 2 < o.full);
    const outcome n =
        compare<core::scalar_distance>(uniform(78, static_cast<std::size_t>(tokens) * d, 2.0f), tokens, d, k, 30, "uniform noise");
    MESSAGE("uniform noise (no structure; reported, not checked): "
            << n.evaluated << " of " << n.full << " (" << 100.0 * static_cast<double>(n.evaluated) / static_cast<double>(n.full) << "%)");
}
