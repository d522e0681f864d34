// core/exp.hpp: exp_fixed against long double std::exp, in ulps of the float spacing at the true value.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <doctest/doctest.h>

#include "core/exp.hpp"

namespace core = patternkv::core;

namespace {

// Spacing of floats at |v| (v finite, below the float range): 2^(e-23) for normal, 2^-149 for
// subnormal results.
long double float_ulp_at(long double v) {
    v = std::fabs(v);
    if (v < 0x1p-126L) return 0x1p-149L;
    int e;
    std::frexp(v, &e);  // v = f * 2^e, f in [0.5, 1): v in [2^(e-1), 2^e)
    return std::ldexp(1.0L, e - 1 - 23);
}

struct ulp_stats {
    long double max_ulp = 0;
    float worst_x = 0;
    long long count = 0;
    long long over = 0;  // points above the bound
    void add(float x, long double bound) {
        const long double exact = std::exp(static_cast<long double>(x));
        const float got = core::exp_fixed(x);
        long double err;
        if (!std::isfinite(got))
            err = std::numeric_limits<long double>::infinity();
        else
            err = std::fabs(static_cast<long double>(got) - exact) / float_ulp_at(exact);
        if (err > max_ulp) {
            max_ulp = err;
            worst_x = x;
        }
        if (err > bound) ++over;
        ++count;
    }
    // every float from a to b inclusive (a <= b, same sign or crossing zero handled by caller)
    void sweep(float a, float b, long double bound) {
        for (float x = a; x <= b; x = std::nextafter(x, std::numeric_limits<float>::infinity())) add(x, bound);
    }
};

}  // namespace

TEST_CASE("exp_fixed special values") {
    CHECK(core::exp_fixed(0.0f) == 1.0f);
    CHECK(core::exp_fixed(-0.0f) == 1.0f);
    CHECK(core::exp_fixed(-200.0f) == 0.0f);
    CHECK(core::exp_fixed(-104.0f) == 0.0f);
    CHECK(core::exp_fixed(-1e30f) == 0.0f);
    CHECK(core::exp_fixed(-std::numeric_limits<float>::infinity()) == 0.0f);
    CHECK(std::isinf(core::exp_fixed(89.0f)));
    CHECK(core::exp_fixed(89.0f) > 0.0f);
    CHECK(std::isinf(core::exp_fixed(1e30f)));
    CHECK(std::isinf(core::exp_fixed(std::numeric_limits<float>::infinity())));
    CHECK(std::isnan(core::exp_fixed(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::isnan(core::exp_fixed(-std::numeric_limits<float>::quiet_NaN())));
    // largest float whose exp is finite: ln(FLT_MAX) = 88.7228390...; next float up overflows
    CHECK(std::isfinite(core::exp_fixed(88.72283172607422f)));
    CHECK(std::isinf(core::exp_fixed(std::nextafter(88.72283172607422f, 100.0f))));
    // subnormal results are produced (not flushed)
    const float sub = core::exp_fixed(-95.0f);
    CHECK(sub > 0.0f);
    CHECK(sub < std::numeric_limits<float>::min());
    CHECK(core::exp_fixed(1.0f) == doctest::Approx(2.718281828f).epsilon(1e-6));
}

TEST_CASE("exp_fixed is within 2 ulp on [-100, 80] (dense sweeps + 5M evenly spread points, seed 99)") {
    ulp_stats st;
    const long double bound = 2.0L;
    // dense: every float in these sub-ranges
    st.sweep(-100.0f, -99.0f, bound);  // deep subnormal results
    st.sweep(-87.5f, -87.0f, bound);   // normal/subnormal boundary (-87.336)
    st.sweep(-0.36f, -0.34f, bound);   // around -ln2/2 (range-reduction switch)
    st.sweep(0.34f, 0.36f, bound);     // around +ln2/2
    st.sweep(1.0f, 1.0625f, bound);
    st.sweep(-1.0625f, -1.0f, bound);
    st.sweep(79.0f, 80.0f, bound);
    const long long dense = st.count;
    // 5 million evenly spread points on [-100, 80]
    const int n = 5'000'000;
    for (int i = 0; i <= n; ++i) {
        const double x = -100.0 + 180.0 * static_cast<double>(i) / n;
        st.add(static_cast<float>(x), bound);
    }
    // random floats with random exponents (small |x| gets its share), seed 99
    std::mt19937_64 rng(99u);
    for (int i = 0; i < 1'000'000; ++i) {
        const std::uint32_t e = 100u + static_cast<std::uint32_t>(rng() % 33u);  // 2^-27 .. 2^5 (*2 mantissa)
        float x = core::bits_float((e << 23) | static_cast<std::uint32_t>(rng() & 0x7fffffu));
        if (rng() & 1u) x = -x;
        if (x < -100.0f || x > 80.0f) continue;
        st.add(x, bound);
    }
    MESSAGE("exp_fixed on [-100, 80]: " << st.count << " points (" << dense << " dense), max error " << static_cast<double>(st.max_ulp)
                                        << " ulp at x = " << st.worst_x);
    CHECK(st.over == 0);
    CHECK(st.max_ulp <= bound);
}

TEST_CASE("exp_fixed is within 2 ulp on the rest of its finite range [-103.97, -100] and [80, 88.7228]") {
    ulp_stats st;
    st.sweep(-103.97f, -100.0f, 2.0L);          // every float: subnormal results down to 2^-149
    st.sweep(80.0f, 88.72283172607422f, 2.0L);  // every float up to the overflow threshold
    MESSAGE("exp_fixed on the range ends: " << st.count << " points, max error " << static_cast<double>(st.max_ulp)
                                            << " ulp at x = " << st.worst_x);
    CHECK(st.over == 0);
    // below -103.9721 the exact value is under 2^-150 and rounds to 0
    for (float x = -103.98f; x >= -104.5f; x = std::nextafter(x, -200.0f)) {
        if (core::exp_fixed(x) != 0.0f) {
            FAIL_CHECK("exp_fixed(" << x << ") = " << core::exp_fixed(x) << ", expected 0");
            break;
        }
    }
}

TEST_CASE("exp_fixed is monotone non-decreasing on a dense grid") {
    float prev = core::exp_fixed(-104.0f);
    int bad = 0;
    for (int i = 1; i <= 2'000'000; ++i) {
        const float x = static_cast<float>(-104.0 + 193.0 * i / 2'000'000.0);
        const float y = core::exp_fixed(x);
        if (y < prev) ++bad;
        prev = y;
    }
    CHECK(bad == 0);
}
