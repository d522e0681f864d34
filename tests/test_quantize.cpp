// core/quantize.hpp: asymmetric uniform quantization of one group (method.md section 2).
//
// Error bound used below, per element, with s and mn the stored fp16 scale and minimum as floats:
//     |x - x_hat| <= s/2 + eps,   eps = 2^-22 * (|x| + |mn| + s).
// Why: code = rne(y), y = fl(fl(x - mn) / s). Each of the two float operations has a relative error
// <= 2^-24, so |y - (x - mn)/s| <= 2 * 2^-24 * |x - mn| / s (+ higher order), i.e. the chosen code
// is at most s/2 + 2^-23 |x - mn| away from x - mn in units of value. code * s is exact in float
// (<= 8-bit integer times an 11-bit half significand) and code * s + mn rounds once:
// <= 2^-24 |x_hat| <= 2^-24 (|x| + s). Both are below 2^-22 (|x| + |mn| + s).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "core/fp16.hpp"
#include "core/page_quantizer.hpp"
#include "core/quantize.hpp"

namespace core = patternkv::core;

namespace {

struct group_result {
    double max_excess = -1e300;  // largest |x - x_hat| - (s/2 + eps), should stay <= 0
    double max_ratio = 0;        // largest |x - x_hat| / (s/2)
    bool codes_in_range = true;
    bool covers = true;         // mn_h <= min and the grid reaches max (exact arithmetic, with eps)
    bool never_clamped = true;  // float-evaluated (max - mn)/s <= levels: the top value is not clipped
};

group_result check_group(const std::vector<float>& buf, int n, int stride, int bits) {
    group_result r;
    std::vector<std::uint8_t> codes(n, 0xff);
    const core::scale_min sm = core::quantize_group(buf.data(), n, stride, bits, codes.data());
    const float s = core::half_to_float(sm.scale), mn = core::half_to_float(sm.min);
    const int levels = (1 << bits) - 1;
    float lo = buf[0], hi = buf[0];
    for (int i = 0; i < n; ++i) {
        lo = std::min(lo, buf[i * stride]);
        hi = std::max(hi, buf[i * stride]);
    }
    if (lo == hi) {  // constant group: s = 0, code 0, x_hat = fp16(x) (round to nearest)
        if (sm.scale != 0 || sm.min != core::float_to_half(lo)) r.covers = false;
        for (int i = 0; i < n; ++i) {
            if (codes[i] != 0) r.codes_in_range = false;
            if (core::dequantize_value(codes[i], s, mn) != core::round_to_half(buf[i * stride])) r.max_excess = 1.0;
        }
        return r;
    }
    if (static_cast<double>(mn) > lo) r.covers = false;
    const double eps_top = std::ldexp(std::fabs(static_cast<double>(hi)) + std::fabs(static_cast<double>(mn)) + s, -23);
    if (static_cast<double>(mn) + levels * static_cast<double>(s) < static_cast<double>(hi) - eps_top) r.covers = false;
    if (s > 0.0f && (hi - mn) / s > static_cast<float>(levels)) r.never_clamped = false;
    for (int i = 0; i < n; ++i) {
        const float x = buf[i * stride];
        if (codes[i] > levels) r.codes_in_range = false;
        const float xh = core::dequantize_value(codes[i], s, mn);
        const double err = std::fabs(static_cast<double>(x) - xh);
        const double eps = std::ldexp(std::fabs(static_cast<double>(x)) + std::fabs(static_cast<double>(mn)) + s, -22);
        r.max_excess = std::max(r.max_excess, err - (0.5 * s + eps));
        r.max_ratio = std::max(r.max_ratio, err / (0.5 * s));
        // the code is the nearest grid point (up to the same float allowance)
        if (codes[i] > 0) {
            const double e_dn = std::fabs(static_cast<double>(x) - core::dequantize_value(codes[i] - 1u, s, mn));
            r.max_excess = std::max(r.max_excess, err - e_dn - 2 * eps);
        }
        if (codes[i] < levels) {
            const double e_up = std::fabs(static_cast<double>(x) - core::dequantize_value(codes[i] + 1u, s, mn));
            r.max_excess = std::max(r.max_excess, err - e_up - 2 * eps);
        }
    }
    return r;
}

}  // namespace

TEST_CASE("round_half_even_nonneg") {
    CHECK(core::round_half_even_nonneg(0.0f) == 0);
    CHECK(core::round_half_even_nonneg(0.49999997f) == 0);
    CHECK(core::round_half_even_nonneg(0.5f) == 0);
    CHECK(core::round_half_even_nonneg(0.50000006f) == 1);
    CHECK(core::round_half_even_nonneg(1.5f) == 2);
    CHECK(core::round_half_even_nonneg(2.5f) == 2);
    CHECK(core::round_half_even_nonneg(3.5f) == 4);
    CHECK(core::round_half_even_nonneg(254.5f) == 254);
    CHECK(core::round_half_even_nonneg(253.5f) == 254);
    CHECK(core::round_half_even_nonneg(255.0f) == 255);
    CHECK(core::round_half_even_nonneg(2.4999998f) == 2);
    CHECK(core::round_half_even_nonneg(2.5000002f) == 3);
    CHECK(core::round_half_even_nonneg(8388607.5f) == 8388608);  // 2^23 - 0.5: odd -> up
    CHECK(core::round_half_even_nonneg(8388606.5f) == 8388606);
    // against the FE_TONEAREST nearbyint on a grid of halves and random values
    std::mt19937 rng(31u);
    std::uniform_real_distribution<float> u(0.0f, 300.0f);
    int bad = 0;
    for (int i = 0; i < 2000; ++i) {
        const float h = static_cast<float>(i) * 0.5f;
        if (core::round_half_even_nonneg(h) != static_cast<std::uint32_t>(std::nearbyint(h))) ++bad;
        const float y = u(rng);
        if (core::round_half_even_nonneg(y) != static_cast<std::uint32_t>(std::nearbyint(y))) ++bad;
    }
    CHECK(bad == 0);
}

TEST_CASE("quantize_group error <= s/2 (+ float allowance) for random groups (seed 777)") {
    std::mt19937_64 rng(777u);
    for (int bits : {2, 3, 4, 8}) {
        CAPTURE(bits);
        double worst = -1e300;
        double worst_ratio = 0;
        int constant_groups = 0;
        bool codes_ok = true, covers = true, unclamped = true;
        for (int g = 0; g < 3000; ++g) {
            const int lengths[] = {2, 3, 7, 16, 32, 64, 100, 128};
            const int n = lengths[rng() % 8];
            const int stride = 1 + static_cast<int>(rng() % 5);
            // scale 2^-28 .. 2^12 (below 2^-14 the fp16 scale is subnormal), offset up to +-4 * scale
            // (or a large offset relative to the spread)
            const double scale = std::ldexp(1.0, static_cast<int>(rng() % 41) - 28);
            const double offset = (static_cast<double>(rng() % 2001) / 1000.0 - 1.0) * 4.0 * scale * (g % 10 == 0 ? 50.0 : 1.0);
            std::normal_distribution<double> nd(0.0, 1.0);
            std::vector<float> buf(static_cast<std::size_t>(n) * stride, 12345.0f);  // poison between strided elements
            for (int i = 0; i < n; ++i) {
                double v = offset + scale * nd(rng);
                if (g % 7 == 3) v = offset + scale * (static_cast<double>(rng() % 5));  // few distinct values: ties
                v = std::clamp(v, -16000.0, 16000.0);
                buf[static_cast<std::size_t>(i) * stride] = static_cast<float>(v);
            }
            const group_result r = check_group(buf, n, stride, bits);
            worst = std::max(worst, r.max_excess);
            worst_ratio = std::max(worst_ratio, r.max_ratio);
            constant_groups += r.max_ratio == 0 && r.max_excess == -1e300;
            codes_ok = codes_ok && r.codes_in_range;
            covers = covers && r.covers;
            unclamped = unclamped && r.never_clamped;
        }
        MESSAGE("bits " << bits << ": worst (error - bound) = " << worst << ", worst error / (s/2) = " << worst_ratio
                        << ", constant groups " << constant_groups << " of 3000");
        CHECK(constant_groups < 300);
        CHECK(worst <= 0.0);
        CHECK(codes_ok);
        CHECK(covers);
        CHECK(unclamped);
    }
}

TEST_CASE("quantize_group: the fp16 minimum is rounded down and the grid covers the group") {
    // values whose min is not an fp16 value and whose range is not a multiple of an fp16 step
    const std::vector<float> v = {0.1f, 0.7f, 0.33f, 1.2345f, -0.0001234f, 0.9f, 0.2f};
    for (int bits : {2, 3, 4, 8}) {
        CAPTURE(bits);
        std::vector<std::uint8_t> codes(v.size());
        const core::scale_min sm = core::quantize_group(v.data(), static_cast<int>(v.size()), 1, bits, codes.data());
        const double mn = core::half_to_float(sm.min), s = core::half_to_float(sm.scale);
        CHECK(mn <= -0.0001234f);
        CHECK(mn > -0.0001234 - 0x1p-23);  // the largest half below: within one half ulp (2^-23 at 2^-13)
        CHECK(core::float_to_half(static_cast<float>(mn)) == core::float_to_half_down(-0.0001234f));
        CHECK(mn + ((1 << bits) - 1) * s >= 1.2345f);
        CHECK(s > 0.0);
        CHECK(codes[4] == 0);                // the minimum quantizes to code 0
        CHECK(codes[3] == (1 << bits) - 1);  // the maximum to the top code (step rounded up slightly)
    }
}

TEST_CASE("quantize_group: a constant group stores scale 0 and reconstructs to fp16(x)") {
    for (float x : {0.0f, 1.0f, -3.14159f, 0.1f, 1e-6f, -7.77e-5f, 1000.3f, 16000.1f, -16384.0f}) {
        for (int bits : {2, 3, 4, 8}) {
            CAPTURE(x);
            CAPTURE(bits);
            std::vector<float> v(33, x);
            std::vector<std::uint8_t> codes(33, 0xff);
            const core::scale_min sm = core::quantize_group(v.data(), 33, 1, bits, codes.data());
            CHECK(sm.scale == 0);
            CHECK(sm.min == core::float_to_half(x));
            bool zero = true;
            for (auto c : codes) zero = zero && c == 0;
            CHECK(zero);
            const float xh = core::dequantize_value(0, core::half_to_float(sm.scale), core::half_to_float(sm.min));
            CHECK(xh == core::round_to_half(x));
            // half an fp16 ulp: distance to fp16(x) not larger than to its neighbours
            const float up = core::half_to_float(core::float_to_half_up(std::nextafter(xh, 1e9f)));
            CHECK(std::fabs(static_cast<double>(x) - xh) <= 0.5 * (static_cast<double>(up) - xh));
        }
    }
    // one element is a constant group too
    float one = 2.5f;
    std::uint8_t code = 9;
    const core::scale_min sm = core::quantize_group(&one, 1, 1, 4, &code);
    CHECK(sm.scale == 0);
    CHECK(code == 0);
    CHECK(core::half_to_float(sm.min) == 2.5f);
}

TEST_CASE("quantize_value clamps and handles s == 0") {
    CHECK(core::quantize_value(5.0f, 0.0f, 1.0f, 3) == 0);
    CHECK(core::quantize_value(-1.0f, 1.0f, 0.0f, 3) == 0);  // below the grid: code 0
    CHECK(core::quantize_value(10.0f, 1.0f, 0.0f, 3) == 3);  // above the grid: top code
    CHECK(core::quantize_value(1.5f, 1.0f, 0.0f, 3) == 2);   // tie -> even
    CHECK(core::quantize_value(2.5f, 1.0f, 0.0f, 3) == 2);
    CHECK(core::quantize_value(0.5f, 1.0f, 0.0f, 15) == 0);
    CHECK(core::dequantize_value(3, 0.5f, -1.0f) == 0.5f);
}

TEST_CASE("group_scale_min: the scale is the smallest fp16 >= the float step") {
    std::mt19937 rng(55u);
    std::uniform_real_distribution<float> u(-100.0f, 100.0f);
    int bad = 0;
    for (int i = 0; i < 20000; ++i) {
        float a = u(rng), b = u(rng);
        if (a > b) std::swap(a, b);
        if (a == b) continue;
        for (int levels : {3, 7, 15, 255}) {
            const core::scale_min sm = core::group_scale_min(a, b, levels);
            const float mn = core::half_to_float(sm.min);
            const float step = (b - mn) / static_cast<float>(levels);
            if (sm.min != core::float_to_half_down(a)) ++bad;
            if (sm.scale != core::float_to_half_up(step)) ++bad;
            if (core::half_to_float(sm.scale) < step) ++bad;
        }
    }
    CHECK(bad == 0);
}

TEST_CASE("quantize_group: ties between grid points go to the even code") {
    const std::vector<float> v = {0.0f, 3.0f, 0.5f, 1.5f, 2.5f, 1.0f, 2.0f};
    std::vector<std::uint8_t> codes(v.size());
    const core::scale_min sm = core::quantize_group(v.data(), static_cast<int>(v.size()), 1, 2, codes.data());
    CHECK(core::half_to_float(sm.scale) == 1.0f);
    CHECK(core::half_to_float(sm.min) == 0.0f);
    CHECK(codes == std::vector<std::uint8_t>{0, 3, 0, 2, 2, 1, 2});
    // 4 bits: step 0.2 is not an fp16; grid 0, s, 2s, ...; the maximum still maps to the top code
    const std::vector<float> w = {0.0f, 3.0f};
    std::vector<std::uint8_t> c2(2);
    const core::scale_min sm2 = core::quantize_group(w.data(), 2, 1, 4, c2.data());
    CHECK(core::half_to_float(sm2.scale) >= 0.2f);
    CHECK(c2[0] == 0);
    CHECK(c2[1] == 15);
}

TEST_CASE("quantize_group: a range that rounds down in float still reconstructs within bound") {
    // mn = -2^-24 (an fp16 subnormal), mx = 3: fl(3 + 2^-24) = 3, step 1 is an fp16, so s = 1 and
    // mn + 3 s = 3 - 2^-24 falls 2^-24 short of mx in exact arithmetic; in float the top code
    // reconstructs to fl(3 - 2^-24) = 3 exactly, and nothing is clamped.
    const std::vector<float> v = {-0x1p-24f, 3.0f, 1.0f};
    std::vector<std::uint8_t> codes(3);
    const core::scale_min sm = core::quantize_group(v.data(), 3, 1, 2, codes.data());
    const float s = core::half_to_float(sm.scale), mn = core::half_to_float(sm.min);
    CHECK(mn == -0x1p-24f);
    CHECK(s == 1.0f);
    CHECK(codes[1] == 3);
    CHECK(core::dequantize_value(codes[1], s, mn) == 3.0f);
    CHECK((3.0f - mn) / s <= 3.0f);
    CHECK(core::dequantize_value(codes[0], s, mn) == -0x1p-24f);
}

TEST_CASE("page_quantizer: K per-channel, K per-token and V rows round trip within s/2 (seed 6161)") {
    std::mt19937_64 rng(6161u);
    std::normal_distribution<double> nd(0.0, 1.0);
    for (int bits : {2, 3, 4, 8}) {
        for (bool per_channel : {true, false}) {
            CAPTURE(bits);
            CAPTURE(per_channel);
            const int d = 64, tokens = 64;
            const int kg = per_channel ? 32 : 16, vg = 32;
            const core::page_geometry g{d, tokens, bits, bits, per_channel, kg, vg, false, false};
            std::vector<float> rows(tokens * d);
            for (int t = 0; t < tokens; ++t)
                for (int j = 0; j < d; ++j) rows[t * d + j] = static_cast<float>((j % 5) + std::exp(0.5 * nd(rng)) * nd(rng));
            std::vector<std::uint32_t> kc(g.k_code_words()), vc(g.v_code_words());
            std::vector<core::scale_min> ks(g.k_groups()), vs(g.v_groups());
            if (per_channel) {
                for (int j = 0; j < d; ++j) core::quantize_k_channel(g, rows.data(), j, kc.data(), ks.data());
            } else {
                for (int t = 0; t < tokens; ++t)
                    core::quantize_token_row(rows.data() + t * d, d, kg, bits, kc.data() + t * g.k_row_words(), ks.data() + t * (d / kg));
            }
            for (int t = 0; t < tokens; ++t)
                core::quantize_token_row(rows.data() + t * d, d, vg, bits, vc.data() + t * g.v_row_words(), vs.data() + t * (d / vg));
            const core::page_view pv{kc.data(), ks.data(), nullptr, vc.data(), vs.data(), nullptr, nullptr};
            double worst = -1e300;
            std::vector<float> ko(d), vo(d);
            for (int t = 0; t < tokens; ++t) {
                core::dequantize_k_row(g, pv, t, ko.data());
                core::dequantize_v_row(g, pv, t, vo.data());
                for (int j = 0; j < d; ++j) {
                    const core::scale_min ksm = per_channel ? ks[(t / kg) * d + j] : ks[t * (d / kg) + j / kg];
                    const core::scale_min vsm = vs[t * (d / vg) + j / vg];
                    for (auto [out, sm] : {std::pair{ko[j], ksm}, std::pair{vo[j], vsm}}) {
                        const double s = core::half_to_float(sm.scale), mn = core::half_to_float(sm.min);
                        const double x = rows[t * d + j];
                        worst = std::max(worst, std::fabs(x - out) - (0.5 * s + std::ldexp(std::fabs(x) + std::fabs(mn) + s, -22)));
                    }
                }
            }
            CHECK(worst <= 0.0);
        }
    }
}
