// core/patterns.hpp and core/reduce.hpp: Chebyshev centre, nearest pattern (d_mm and L2), and the
// canonical reduction order.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "core/patterns.hpp"
#include "core/reduce.hpp"

namespace core = patternkv::core;

namespace {

// max_t ||x_t - c||_inf, in double
double linf_radius(const std::vector<float>& x, int n, int d, const double* c) {
    double r = 0;
    for (int t = 0; t < n; ++t)
        for (int j = 0; j < d; ++j) r = std::max(r, std::fabs(static_cast<double>(x[t * d + j]) - c[j]));
    return r;
}

std::vector<float> random_rows(std::mt19937_64& rng, int n, int d, double scale) {
    std::normal_distribution<double> nd(0.0, 1.0);
    std::vector<double> chan_off(d), chan_sc(d);
    for (int j = 0; j < d; ++j) {
        chan_off[j] = nd(rng) * scale * 3;
        chan_sc[j] = scale * std::exp(nd(rng));  // outlier-ish channels
    }
    std::vector<float> x(static_cast<std::size_t>(n) * d);
    for (int t = 0; t < n; ++t)
        for (int j = 0; j < d; ++j) x[t * d + j] = static_cast<float>(chan_off[j] + chan_sc[j] * nd(rng));
    return x;
}

// Explicit re-implementation of the documented order: element j accumulates into lane j % 32 in
// increasing j; then lanes fold pairwise: offset 16, then 8, 4, 2, 1 (lane l += lane l + offset).
float ref_lane_sum(const std::vector<float>& terms) {
    float lane[32];
    for (float& l : lane) l = 0.0f;
    for (std::size_t j = 0; j < terms.size(); ++j) lane[j % 32] = lane[j % 32] + terms[j];
    for (int off : {16, 8, 4, 2, 1})
        for (int l = 0; l < off; ++l) lane[l] = lane[l] + lane[l + off];
    return lane[0];
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST_CASE("chebyshev_centre minimizes the L-inf radius (seed 1001)") {
    std::mt19937_64 rng(1001u);
    for (int d : {8, 64, 128}) {
        for (int n : {1, 2, 17, 128}) {
            CAPTURE(d);
            CAPTURE(n);
            const int stride = d + (n % 3);  // also exercise a row stride larger than d
            const std::vector<float> dense = random_rows(rng, n, d, 0.5);
            std::vector<float> x(static_cast<std::size_t>(n) * stride, 1e6f);  // poison padding
            for (int t = 0; t < n; ++t)
                for (int j = 0; j < d; ++j) x[t * stride + j] = dense[t * d + j];
            std::vector<float> c(d);
            core::chebyshev_centre(x.data(), n, d, stride, c.data());
            std::vector<double> cd(c.begin(), c.end());
            const double rc = linf_radius(dense, n, d, cd.data());
            // the optimum (exact) is max_j (max_t - min_t) / 2
            double opt = 0, lo_hi_scale = 0;
            for (int j = 0; j < d; ++j) {
                double lo = 1e300, hi = -1e300;
                for (int t = 0; t < n; ++t) {
                    lo = std::min(lo, static_cast<double>(dense[t * d + j]));
                    hi = std::max(hi, static_cast<double>(dense[t * d + j]));
                }
                opt = std::max(opt, (hi - lo) / 2);
                lo_hi_scale = std::max(lo_hi_scale, std::max(std::fabs(lo), std::fabs(hi)));
                // per channel, c_j is the float midrange (one rounding of the sum, exact halving)
                CHECK(c[j] == static_cast<float>(static_cast<float>(lo + hi) * 0.5f));
            }
            const double tol = lo_hi_scale * 0x1p-23;  // rounding of (lo + hi) in float
            CHECK(rc <= opt + tol);
            // 1000 random candidate centres, some close to c, some anywhere in the bounding box
            std::normal_distribution<double> nd(0.0, 1.0);
            int beaten = 0;
            for (int k = 0; k < 1000; ++k) {
                std::vector<double> cand(d);
                const double eps = std::ldexp(1.0, -static_cast<int>(k % 20));
                for (int j = 0; j < d; ++j) cand[j] = (k % 2 == 0) ? cd[j] + eps * nd(rng) : dense[(k % n) * d + j] + nd(rng);
                if (linf_radius(dense, n, d, cand.data()) < rc - tol) ++beaten;
            }
            CHECK(beaten == 0);
        }
    }
}

TEST_CASE("nearest_pattern_dmm picks the smallest residual range; ties to the lowest index (seed 2002)") {
    std::mt19937_64 rng(2002u);
    std::normal_distribution<double> nd(0.0, 1.0);
    for (int d : {8, 64, 128}) {
        for (int count : {1, 2, 5, 33, 64}) {
            CAPTURE(d);
            CAPTURE(count);
            int mismatch_float = 0, mismatch_double = 0, unambiguous = 0;
            for (int rep = 0; rep < 40; ++rep) {
                const std::vector<float> bank = random_rows(rng, count, d, 1.0);
                std::vector<float> x(d);
                const int src = static_cast<int>(rng() % count);
                for (int j = 0; j < d; ++j) x[j] = bank[src * d + j] + static_cast<float>(0.3 * nd(rng));
                const int got = core::nearest_pattern_dmm(x.data(), bank.data(), count, d);
                // brute force in float (same arithmetic: x_j - m_j rounded, max - min rounded)
                int best_f = 0;
                float best_fd = 0;
                std::vector<double> rd(count);
                for (int c = 0; c < count; ++c) {
                    float lo = 1e30f, hi = -1e30f;
                    double lod = 1e300, hid = -1e300;
                    for (int j = 0; j < d; ++j) {
                        const float r = x[j] - bank[c * d + j];
                        lo = std::min(lo, r);
                        hi = std::max(hi, r);
                        const double rdd = static_cast<double>(x[j]) - bank[c * d + j];
                        lod = std::min(lod, rdd);
                        hid = std::max(hid, rdd);
                    }
                    const float dist = hi - lo;
                    if (c == 0 || dist < best_fd) {
                        best_fd = dist;
                        best_f = c;
                    }
                    rd[c] = hid - lod;
                }
                if (got != best_f) ++mismatch_float;
                // double brute force where the winner is unambiguous (margin far above float rounding)
                const int best_d = static_cast<int>(std::min_element(rd.begin(), rd.end()) - rd.begin());
                double second = 1e300;
                for (int c = 0; c < count; ++c)
                    if (c != best_d) second = std::min(second, rd[c]);
                if (second - rd[best_d] > 1e-4 * (1 + rd[best_d])) {
                    ++unambiguous;
                    if (got != best_d) ++mismatch_double;
                }
            }
            CHECK(mismatch_float == 0);
            CHECK(mismatch_double == 0);
            if (count > 1) CHECK(unambiguous > 20);
        }
    }
}

TEST_CASE("nearest_pattern_dmm: exact ties go to the lowest index") {
    const int d = 8;
    const float x[d] = {1, 2, 3, 4, 5, 6, 7, 8};
    // pattern 1 and 3 give residual range 0 (x - m constant); pattern 0 range 7, pattern 2 range 3
    std::vector<float> bank(4 * d);
    for (int j = 0; j < d; ++j) {
        bank[0 * d + j] = 0.0f;
        bank[1 * d + j] = x[j] - 1.0f;
        bank[2 * d + j] = static_cast<float>(j % 4);
        bank[3 * d + j] = x[j] + 2.0f;
    }
    CHECK(core::nearest_pattern_dmm(x, bank.data(), 4, d) == 1);
    CHECK(core::nearest_pattern_dmm(x, bank.data() + d, 3, d) == 0);  // bank {1,2,3}: 1 first
    // all-identical bank: index 0
    std::vector<float> same(5 * d, 0.5f);
    CHECK(core::nearest_pattern_dmm(x, same.data(), 5, d) == 0);
    // residual_range / value_range values
    CHECK(core::residual_range(x, bank.data() + 2 * d, d) == 4.0f);  // x - (j%4): 1,1,1,1,5,5,5,5
    CHECK(core::value_range(x, d) == 7.0f);
}

TEST_CASE("nearest_pattern_l2 picks the nearest pattern; ties to the lowest index (seed 3003)") {
    std::mt19937_64 rng(3003u);
    std::normal_distribution<double> nd(0.0, 1.0);
    for (int d : {8, 64, 128}) {
        for (int count : {1, 2, 7, 32, 64}) {
            CAPTURE(d);
            CAPTURE(count);
            int mismatch = 0, mismatch_canon = 0;
            for (int rep = 0; rep < 40; ++rep) {
                // well separated bank: pattern c is a random direction scaled by 10
                const std::vector<float> bank = random_rows(rng, count, d, 10.0);
                const int src = static_cast<int>(rng() % count);
                std::vector<float> x(d);
                for (int j = 0; j < d; ++j) x[j] = bank[src * d + j] + static_cast<float>(0.01 * nd(rng));
                const int got = core::nearest_pattern_l2(x.data(), bank.data(), count, d);
                // brute force in double
                int best = 0;
                double best_dd = 1e300;
                for (int c = 0; c < count; ++c) {
                    double s = 0;
                    for (int j = 0; j < d; ++j) {
                        const double t = static_cast<double>(x[j]) - bank[c * d + j];
                        s += t * t;
                    }
                    if (s < best_dd) {
                        best_dd = s;
                        best = c;
                    }
                }
                if (got != best) ++mismatch;
                // and in the canonical float order
                int best_c = 0;
                float best_cd = 0;
                for (int c = 0; c < count; ++c) {
                    std::vector<float> terms(d);
                    for (int j = 0; j < d; ++j) {
                        const float t = x[j] - bank[c * d + j];
                        terms[j] = t * t;
                    }
                    const float s = ref_lane_sum(terms);
                    if (c == 0 || s < best_cd) {
                        best_cd = s;
                        best_c = c;
                    }
                }
                if (got != best_c) ++mismatch_canon;
            }
            CHECK(mismatch == 0);
            CHECK(mismatch_canon == 0);
        }
    }
}

TEST_CASE("nearest_pattern_l2: exact tie goes to the lowest index") {
    const int d = 4;
    const float x[d] = {0, 0, 0, 0};
    // patterns 1 and 2 are mirror images at distance 1; pattern 0 is farther; pattern 3 equals 1
    const std::vector<float> bank = {2, 0, 0, 0, 0, 1, 0, 0, 0, -1, 0, 0, 0, 1, 0, 0};
    CHECK(core::nearest_pattern_l2(x, bank.data(), 4, d) == 1);
    CHECK(core::nearest_pattern_l2(x, bank.data() + d, 3, d) == 0);
    const std::vector<float> bank2 = {3, 0, 0, 0, 0, 0, 0, -1, 0, 0, 1, 0};  // 1 and 2 tie at 1
    CHECK(core::nearest_pattern_l2(x, bank2.data(), 3, d) == 1);
}

TEST_CASE("lane_dot / lane_sq_dist follow the documented order bit for bit (seed 4004)") {
    std::mt19937_64 rng(4004u);
    for (int n : {1, 8, 31, 32, 33, 64, 100, 128, 512}) {
        CAPTURE(n);
        int bad_dot = 0, bad_sq = 0, differs_from_sequential = 0;
        for (int rep = 0; rep < 50; ++rep) {
            // wide dynamic range makes the summation order visible in the bits
            std::vector<float> a(n), b(n);
            for (int j = 0; j < n; ++j) {
                const int e = static_cast<int>(rng() % 24) - 12;
                a[j] = std::ldexp(static_cast<float>(static_cast<double>(rng() % 2000001) / 1e6 - 1.0), e);
                b[j] = std::ldexp(static_cast<float>(static_cast<double>(rng() % 2000001) / 1e6 - 1.0), e / 2);
            }
            std::vector<float> prod(n), sq(n);
            for (int j = 0; j < n; ++j) {
                prod[j] = a[j] * b[j];
                const float t = a[j] - b[j];
                sq[j] = t * t;
            }
            const float dot = core::lane_dot(a.data(), b.data(), n);
            const float sqd = core::lane_sq_dist(a.data(), b.data(), n);
            if (!same_bits(dot, ref_lane_sum(prod))) ++bad_dot;
            if (!same_bits(sqd, ref_lane_sum(sq))) ++bad_sq;
            float seq = 0;
            for (float p : prod) seq = seq + p;
            if (!same_bits(seq, dot)) ++differs_from_sequential;
        }
        CHECK(bad_dot == 0);
        CHECK(bad_sq == 0);
        if (n > 64) CHECK(differs_from_sequential > 0);  // the check above can tell orders apart
    }
    // n = 0: the empty sum is +0
    CHECK(same_bits(core::lane_dot(nullptr, nullptr, 0), 0.0f));
}

TEST_CASE("fold_lanes uses the butterfly 16, 8, 4, 2, 1") {
    // lanes 0 and 16 hold +-2^30, lane 1 holds 1: (l0 + l16) first cancels, then 1 survives;
    // a sequential sum would give l0 + l1 = 2^30 (1 absorbed), then - 2^30 = 0.
    float acc[32] = {};
    acc[0] = 0x1p30f;
    acc[1] = 1.0f;
    acc[16] = -0x1p30f;
    CHECK(core::fold_lanes(acc) == 1.0f);
}
