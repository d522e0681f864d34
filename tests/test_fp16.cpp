// core/fp16.hpp: binary16 and bfloat16 conversions against the compiler's IEEE conversions
// (_Float16, round to nearest even) and against references computed independently in double.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ios>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "core/fp16.hpp"

namespace core = patternkv::core;

namespace {

std::uint16_t hw_float_to_half(float f) {
    const _Float16 h = static_cast<_Float16>(f);
    std::uint16_t u;
    std::memcpy(&u, &h, sizeof u);
    return u;
}
float hw_half_to_float(std::uint16_t u) {
    _Float16 h;
    std::memcpy(&h, &u, sizeof h);
    return static_cast<float>(h);
}
bool half_is_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
bool bits_equal(float a, float b) { return core::float_bits(a) == core::float_bits(b); }

// Value of a half as a double (exact), +-inf as +-2^16 so it can serve as the "next value above
// the largest finite half" in rounding decisions (IEEE rounds as if the exponent were unbounded).
double half_value_unbounded(std::uint16_t h) {
    const double s = (h & 0x8000u) ? -1.0 : 1.0;
    const int e = (h >> 10) & 0x1f;
    const int m = h & 0x3ff;
    if (e == 0x1f) return s * 65536.0;
    if (e == 0) return s * std::ldexp(static_cast<double>(m), -24);
    return s * std::ldexp(static_cast<double>(m + 1024), e - 25);
}

// Independent RNE reference for float -> half: compare against the two neighbouring halves in double.
std::uint16_t ref_float_to_half(float f) {
    if (std::isnan(f)) return 0x7e00;
    const std::uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
    const double a = std::fabs(static_cast<double>(f));
    if (std::isinf(f)) return sign | 0x7c00u;
    // largest magnitude code with value <= a (codes are monotone in magnitude, 0x7c00 is "2^16")
    std::uint16_t lo = 0;
    for (int bit = 14; bit >= 0; --bit) {
        const std::uint16_t cand = static_cast<std::uint16_t>(lo | (1u << bit));
        if (cand <= 0x7c00u && half_value_unbounded(cand) <= a) lo = cand;
    }
    if (lo == 0x7c00u) return sign | 0x7c00u;
    const std::uint16_t hi = static_cast<std::uint16_t>(lo + 1);
    const double dlo = a - half_value_unbounded(lo), dhi = half_value_unbounded(hi) - a;
    std::uint16_t r = lo;
    if (dhi < dlo || (dhi == dlo && (hi & 1u) == 0)) r = hi;
    return sign | r;
}

// Independent RNE reference for float -> bfloat16 via double arithmetic.
std::uint16_t ref_float_to_bf16(float f) {
    if (std::isnan(f)) return 0x7fc0;
    const std::uint32_t u = core::float_bits(f);
    const std::uint32_t sign = u & 0x80000000u;
    const std::uint32_t mag = u & 0x7fffffffu;
    if (mag == 0x7f800000u) return static_cast<std::uint16_t>(u >> 16);
    const std::uint32_t lo_bits = mag & 0xffff0000u;  // truncation toward zero
    const double a = std::fabs(static_cast<double>(f));
    const double lo = static_cast<double>(core::bits_float(lo_bits));
    // next bfloat16 above lo in magnitude; above the largest finite one, use 2^128 (unbounded exponent)
    const std::uint32_t hi_bits = lo_bits + 0x10000u;
    const double hi = hi_bits == 0x7f800000u ? std::ldexp(1.0, 128) : static_cast<double>(core::bits_float(hi_bits));
    const double dlo = a - lo, dhi = hi - a;
    std::uint32_t r = lo_bits;
    if (dhi < dlo || (dhi == dlo && ((hi_bits >> 16) & 1u) == 0)) r = hi_bits;
    return static_cast<std::uint16_t>((sign | r) >> 16);
}

// Floats covering every exponent (normal and subnormal), both signs, and the half's rounding
// boundaries: ties, one float ulp either side, subnormal/overflow thresholds.
std::vector<float> interesting_floats() {
    std::vector<float> v;
    for (std::uint32_t h = 0; h < 0x7c00u; ++h) {
        const float x = core::half_to_float(static_cast<std::uint16_t>(h));
        const double mid =
            (half_value_unbounded(static_cast<std::uint16_t>(h)) + half_value_unbounded(static_cast<std::uint16_t>(h + 1))) * 0.5;
        const float t = static_cast<float>(mid);  // exact: a half midpoint has <= 12 significant bits
        for (float y : {x, t, std::nextafter(t, 0.0f), std::nextafter(t, 1e30f), std::nextafter(x, 0.0f), std::nextafter(x, 1e30f)}) {
            v.push_back(y);
            v.push_back(-y);
        }
    }
    for (float y : {0.0f,
                    std::numeric_limits<float>::denorm_min(),
                    std::numeric_limits<float>::min(),
                    std::numeric_limits<float>::max(),
                    std::numeric_limits<float>::infinity(),
                    65504.0f,
                    65519.996f,
                    65520.0f,
                    65536.0f,
                    1e10f,
                    0x1p-24f,
                    0x1p-25f,
                    0x1.000002p-25f,
                    0x1.fffffep-26f,
                    0x1p-14f,
                    0x1.ffcp-15f,
                    0x1.ffep-15f,
                    0x1p-26f,
                    0x1.8p-24f,
                    0x1.4p-24f,
                    0x1.cp-24f}) {
        v.push_back(y);
        v.push_back(-y);
    }
    return v;
}

}  // namespace

TEST_CASE("_Float16 is an IEEE round-to-nearest-even conversion (sanity of the oracle)") {
    CHECK(hw_float_to_half(1.0f) == 0x3c00);
    CHECK(hw_float_to_half(65504.0f) == 0x7bff);
    CHECK(hw_float_to_half(65520.0f) == 0x7c00);
    CHECK(hw_float_to_half(0x1p-24f) == 0x0001);
    CHECK(hw_float_to_half(0x1p-25f) == 0x0000);           // tie -> even (0)
    CHECK(hw_float_to_half(0x1.8p-24f) == 0x0002);         // tie -> even (2)
    CHECK(hw_float_to_half(1.0f + 0x1p-11f) == 0x3c00);    // tie -> even
    CHECK(hw_float_to_half(1.0f + 0x1.8p-10f) == 0x3c02);  // tie -> even
}

TEST_CASE("half_to_float agrees with the hardware for all 65536 halves") {
    int mismatches = 0;
    for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
        const float a = core::half_to_float(static_cast<std::uint16_t>(h));
        const float b = hw_half_to_float(static_cast<std::uint16_t>(h));
        if (half_is_nan(static_cast<std::uint16_t>(h))) {
            if (!std::isnan(a)) ++mismatches;
        } else if (!bits_equal(a, b)) {
            if (++mismatches < 10) MESSAGE("half 0x" << std::hex << h << ": core " << a << " hw " << b);
        }
        // and the exact value
        if (!half_is_nan(static_cast<std::uint16_t>(h)) && (h & 0x7c00u) != 0x7c00u &&
            static_cast<double>(a) != half_value_unbounded(static_cast<std::uint16_t>(h)))
            ++mismatches;
    }
    CHECK(mismatches == 0);
}

TEST_CASE("float_to_half round-trips all 65536 halves; NaN stays NaN") {
    int mismatches = 0, nan_fail = 0;
    for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
        const std::uint16_t hh = static_cast<std::uint16_t>(h);
        const std::uint16_t back = core::float_to_half(core::half_to_float(hh));
        if (half_is_nan(hh)) {
            if (!half_is_nan(back)) ++nan_fail;
        } else if (back != hh) {
            if (++mismatches < 10) MESSAGE("half 0x" << std::hex << h << " came back as 0x" << back);
        }
    }
    CHECK(mismatches == 0);
    CHECK(nan_fail == 0);
    CHECK(half_is_nan(core::float_to_half(std::numeric_limits<float>::quiet_NaN())));
    CHECK(half_is_nan(core::float_to_half(-std::numeric_limits<float>::quiet_NaN())));
    CHECK(half_is_nan(core::float_to_half(core::bits_float(0x7f800001u))));  // signalling NaN, low payload
    CHECK(half_is_nan(core::float_to_half(core::bits_float(0xff800001u))));
}

TEST_CASE("float_to_half agrees with hardware and an independent reference on boundary values") {
    const std::vector<float> v = interesting_floats();
    int hw_mis = 0, ref_mis = 0;
    for (float f : v) {
        const std::uint16_t c = core::float_to_half(f);
        if (c != hw_float_to_half(f) && ++hw_mis < 10) MESSAGE("f=" << f << " core 0x" << std::hex << c << " hw 0x" << hw_float_to_half(f));
        if (c != ref_float_to_half(f)) ++ref_mis;
    }
    MESSAGE("boundary values checked: " << v.size());
    CHECK(hw_mis == 0);
    CHECK(ref_mis == 0);
    CHECK(core::float_to_half(-0.0f) == 0x8000);
    CHECK(core::float_to_half(std::numeric_limits<float>::infinity()) == 0x7c00);
    CHECK(core::float_to_half(-std::numeric_limits<float>::infinity()) == 0xfc00);
}

TEST_CASE("float_to_half agrees with hardware on 2,000,000 random floats (seed 20240611)") {
    std::mt19937_64 rng(20240611u);
    int mismatches = 0;
    for (int i = 0; i < 2'000'000; ++i) {
        float f;
        switch (i % 4) {
            case 0:  // any bit pattern
                f = core::bits_float(static_cast<std::uint32_t>(rng()));
                break;
            case 1: {  // exponents around the half range: 2^-30 .. 2^17
                const std::uint32_t e = 97u + static_cast<std::uint32_t>(rng() % 48u);
                f = core::bits_float((static_cast<std::uint32_t>(rng() & 1u) << 31) | (e << 23) |
                                     static_cast<std::uint32_t>(rng() & 0x7fffffu));
                break;
            }
            case 2: {  // a random half plus a small number of float ulps either side of its midpoint
                const std::uint16_t h = static_cast<std::uint16_t>(rng() % 0x7c00u);
                const double mid = (half_value_unbounded(h) + half_value_unbounded(static_cast<std::uint16_t>(h + 1))) * 0.5;
                const std::uint32_t b = core::float_bits(static_cast<float>(mid));
                f = core::bits_float(b + static_cast<std::uint32_t>(static_cast<int>(rng() % 7u) - 3));
                if (rng() & 1u) f = -f;
                break;
            }
            default: {  // uniform reals in the typical KV range
                std::uniform_real_distribution<float> u(-70000.0f, 70000.0f);
                f = u(rng);
                break;
            }
        }
        const std::uint16_t c = core::float_to_half(f);
        const std::uint16_t h = hw_float_to_half(f);
        const bool ok = std::isnan(f) ? half_is_nan(c) : c == h;
        if (!ok && ++mismatches < 10) MESSAGE("f bits 0x" << std::hex << core::float_bits(f) << " core 0x" << c << " hw 0x" << h);
    }
    CHECK(mismatches == 0);
}

TEST_CASE("float_to_half_down / float_to_half_up give the neighbouring halves") {
    std::mt19937_64 rng(7u);
    auto check_one = [](float f, int& bad) {
        const std::uint16_t d = core::float_to_half_down(f), u = core::float_to_half_up(f);
        const double vd = core::half_to_float(d), vu = core::half_to_float(u);
        const double x = f;
        bool ok = vd <= x && vu >= x && !half_is_nan(d) && !half_is_nan(u);
        if (vd == x) ok = ok && vu == x;  // exact: both give f
        if (vd != x) {
            // no half strictly between: the next half above d is > f, the next below u is < f
            ok = ok && vu > x;
            ok = ok && core::float_to_half(static_cast<float>(vd)) == d;
            // the code right above d (by value) must exceed f
            const std::uint16_t next_up =
                (d & 0x8000u) ? (d == 0x8000u ? std::uint16_t(1) : static_cast<std::uint16_t>(d - 1)) : static_cast<std::uint16_t>(d + 1);
            const std::uint16_t next_dn =
                (u & 0x8000u) ? static_cast<std::uint16_t>(u + 1) : (u == 0 ? std::uint16_t(0x8001) : static_cast<std::uint16_t>(u - 1));
            ok = ok && static_cast<double>(core::half_to_float(next_up)) > x;
            ok = ok && static_cast<double>(core::half_to_float(next_dn)) < x;
        }
        if (!ok && ++bad < 10) MESSAGE("f=" << f << " down 0x" << std::hex << d << " (" << vd << ") up 0x" << u << " (" << vu << ")");
    };
    int bad = 0;
    for (std::uint32_t h = 0; h < 0x7c00u; ++h) {  // every finite half and values just around it
        const float x = core::half_to_float(static_cast<std::uint16_t>(h));
        for (float y : {x, std::nextafter(x, 0.0f), std::nextafter(x, 1e30f)}) {
            if (std::fabs(y) > 65504.0f) continue;
            check_one(y, bad);
            check_one(-y, bad);
        }
    }
    for (int i = 0; i < 500'000; ++i) {
        const std::uint32_t e = 90u + static_cast<std::uint32_t>(rng() % 53u);  // 2^-37 .. 2^15
        float f = core::bits_float((e << 23) | static_cast<std::uint32_t>(rng() & 0x7fffffu));
        if (rng() & 1u) f = -f;
        check_one(f, bad);
    }
    CHECK(bad == 0);
    CHECK(core::float_to_half_down(1.0f + 0x1p-20f) == 0x3c00);
    CHECK(core::float_to_half_up(1.0f + 0x1p-20f) == 0x3c01);
    CHECK(core::float_to_half_down(-(1.0f + 0x1p-20f)) == 0xbc01);
    CHECK(core::float_to_half_up(-(1.0f + 0x1p-20f)) == 0xbc00);
    CHECK(core::half_to_float(core::float_to_half_down(-1e-30f)) < 0.0f);  // -smallest subnormal
    CHECK(core::float_to_half_down(-1e-30f) == 0x8001);
    CHECK(core::float_to_half_up(1e-30f) == 0x0001);
    CHECK(core::float_to_half_up(-1e-30f) == 0x8000);  // -0 >= -1e-30
    CHECK(core::float_to_half_down(1e-30f) == 0x0000);
    CHECK(core::float_to_half_up(65504.0f) == 0x7bff);
    CHECK(core::float_to_half_down(65503.0f) == 0x7bfe);
    CHECK(core::float_to_half_up(65503.0f) == 0x7bff);
}

TEST_CASE("float_to_bf16 rounds to nearest even (independent double reference); NaN preserved") {
    std::mt19937_64 rng(12345u);
    int mismatches = 0;
    auto check_one = [&](float f) {
        const std::uint16_t c = core::float_to_bf16(f);
        if (std::isnan(f)) {
            const float back = core::bf16_to_float(c);
            if (!std::isnan(back) || (c & 0x8000u) != ((core::float_bits(f) >> 16) & 0x8000u)) ++mismatches;
            return;
        }
        const std::uint16_t r = ref_float_to_bf16(f);
        if (c != r && ++mismatches < 10) MESSAGE("f bits 0x" << std::hex << core::float_bits(f) << " core 0x" << c << " ref 0x" << r);
    };
    for (int i = 0; i < 2'000'000; ++i) {
        std::uint32_t u = static_cast<std::uint32_t>(rng());
        if (i % 3 == 1) u = (u & 0xffff0000u) | 0x8000u;                                   // exact tie
        if (i % 3 == 2) u = (u & 0xffff0000u) | 0x8000u | (u & 0x1u ? 0x0001u : 0x0000u);  // tie / just above
        check_one(core::bits_float(u));
    }
    // every bf16 value: exact round trip; its ties and neighbours
    for (std::uint32_t b = 0; b <= 0xffffu; ++b) {
        const std::uint32_t u = b << 16;
        const float f = core::bits_float(u);
        if (!std::isnan(f) && core::float_to_bf16(f) != b) ++mismatches;
        if (!std::isnan(f) && core::bf16_to_float(static_cast<std::uint16_t>(b)) != f) ++mismatches;
        for (std::uint32_t low : {0x7fffu, 0x8000u, 0x8001u, 0x0001u, 0xffffu}) check_one(core::bits_float(u | low));
    }
    CHECK(mismatches == 0);
    CHECK(core::float_to_bf16(1.0f) == 0x3f80);
    CHECK(core::float_to_bf16(core::bits_float(0x3f808000u)) == 0x3f80);      // tie, even stays
    CHECK(core::float_to_bf16(core::bits_float(0x3f818000u)) == 0x3f82);      // tie, odd rounds up
    CHECK(core::float_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // overflows to inf
    CHECK(core::float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
    CHECK(std::isnan(core::bf16_to_float(core::float_to_bf16(core::bits_float(0x7f800001u)))));  // payload only in low bits
    CHECK(std::isnan(core::bf16_to_float(core::float_to_bf16(core::bits_float(0xffffffffu)))));
    CHECK(std::isnan(core::bf16_to_float(core::float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}
