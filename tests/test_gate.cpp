// The V gate (method.md section 5): z_test_gate, core::gate_accepts / gate_residualize, and the
// always / never gates.
#include <cmath>
#include <random>
#include <span>
#include <vector>

#include <doctest/doctest.h>

#include <patternkv/policies.hpp>

#include "core/v_gate.hpp"

namespace core = patternkv::core;
using patternkv::z_test_gate;

namespace {

// v spans [0, 1] (range 1) over d channels, shuffled; m chosen so that v - m = rho * v (range rho).
void make_pair(int d, double rho, std::mt19937_64& rng, std::vector<float>& v, std::vector<float>& m) {
    v.assign(d, 0.0f);
    m.assign(d, 0.0f);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int j = 0; j < d; ++j) v[j] = static_cast<float>(u(rng));
    v[0] = 0.0f;
    v[d - 1] = 1.0f;
    const double shift = 3.0 * u(rng) - 1.5;  // a constant offset of the residual does not change its range
    for (int j = 0; j < d; ++j) m[j] = static_cast<float>(v[j] - (rho * v[j] + shift));
}

}  // namespace

TEST_CASE("z_test_gate constant and rho* match method.md") {
    struct row {
        int d;
        double rho;
    };
    for (row r : {row{64, 0.8764}, row{96, 0.8984}, row{128, 0.9116}, row{256, 0.9368}}) {
        CAPTURE(r.d);
        const z_test_gate g(0.05, r.d);
        const double c_exact = 2.0 * 1.6448536 / std::sqrt(5.0 * r.d);
        CHECK(std::fabs(g.c - c_exact) <= 1e-6 * c_exact);
        CHECK(std::fabs(g.rho_star() - r.rho) <= 1e-4);
        // rho* solves 1 - rho^2 = c sqrt(1 + rho^4)
        const double rs = g.rho_star(), cd = g.c;
        CHECK(std::fabs(1.0 - rs * rs - cd * std::sqrt(1.0 + rs * rs * rs * rs)) < 1e-9);
    }
    // rho* grows with d (more channels: a smaller reduction is significant)
    CHECK(z_test_gate(0.05, 64).rho_star() < z_test_gate(0.05, 128).rho_star());
    // a stricter level (smaller alpha) demands a smaller ratio
    CHECK(z_test_gate(0.01, 128).rho_star() < z_test_gate(0.05, 128).rho_star());
    CHECK(z_test_gate(0.01, 128).c == doctest::Approx(2.0 * 2.3263479 / std::sqrt(640.0)).epsilon(1e-6));
}

TEST_CASE("gate_accepts switches at rho*") {
    for (int d : {64, 96, 128, 256}) {
        CAPTURE(d);
        const z_test_gate g(0.05, d);
        const double rs = g.rho_star();
        CHECK(core::gate_accepts(static_cast<float>(rs - 1e-4), g.c));
        CHECK_FALSE(core::gate_accepts(static_cast<float>(rs + 1e-4), g.c));
        CHECK(core::gate_accepts(0.0f, g.c));
        CHECK_FALSE(core::gate_accepts(1.0f, g.c));
        // monotone: accepted for every rho below rho* - 1e-5, rejected above rho* + 1e-5
        int bad = 0;
        for (int i = 0; i <= 10000; ++i) {
            const double rho = i / 10000.0;
            const bool acc = core::gate_accepts(static_cast<float>(rho), g.c);
            if (rho < rs - 1e-5 && !acc) ++bad;
            if (rho > rs + 1e-5 && acc) ++bad;
        }
        CHECK(bad == 0);
    }
}

TEST_CASE("z_test_gate residualizes a token well below rho* and not one well above (seed 5005)") {
    std::mt19937_64 rng(5005u);
    for (int d : {64, 96, 128, 256}) {
        CAPTURE(d);
        const z_test_gate g(0.05, d);
        const double rs = g.rho_star();
        std::vector<float> v, m;
        int bad = 0;
        for (int rep = 0; rep < 100; ++rep) {
            for (double rho : {0.05, 0.3, rs - 0.02, rs - 0.005}) {
                make_pair(d, rho, rng, v, m);
                if (!g.residualize(v, m)) ++bad;
                if (!core::gate_residualize(v.data(), m.data(), d, {core::gate_rule::z_test, g.c})) ++bad;
            }
            for (double rho : {rs + 0.005, rs + 0.02, 1.0, 1.5, 3.0}) {
                make_pair(d, rho, rng, v, m);
                if (g.residualize(v, m)) ++bad;
            }
            // scaling v and m together does not change the decision
            make_pair(d, rs - 0.02, rng, v, m);
            for (auto& x : v) x *= 1000.0f;
            for (auto& x : m) x *= 1000.0f;
            if (!g.residualize(v, m)) ++bad;
        }
        CHECK(bad == 0);
    }
}

TEST_CASE("gate clamps: constant vectors do not divide by zero") {
    const z_test_gate g(0.05, 8);
    const std::vector<float> v(8, 2.0f);
    const std::vector<float> m_same(8, 2.0f);
    std::vector<float> m_wide = {0, 1, 2, 3, 4, 5, 6, 7};
    // raw and residual both constant: both clamp to 1e-12, rho = 1: not residualized
    CHECK_FALSE(g.residualize(v, m_same));
    // constant raw, non-constant residual: huge rho
    CHECK_FALSE(g.residualize(v, m_wide));
    // non-constant raw, constant residual: rho ~ 0, residualized
    CHECK(g.residualize(m_wide, std::vector<float>{-1, 0, 1, 2, 3, 4, 5, 6}));
}

TEST_CASE("always / never gates and gate rules") {
    std::mt19937_64 rng(6006u);
    std::vector<float> v, m;
    const patternkv::always_gate a;
    const patternkv::never_gate n;
    for (double rho : {0.0, 0.5, 0.99, 2.0}) {
        make_pair(64, rho, rng, v, m);
        CHECK(a.residualize(v, m));
        CHECK_FALSE(n.residualize(v, m));
        CHECK(core::gate_residualize(v.data(), m.data(), 64, {core::gate_rule::always, 0.0f}));
        CHECK_FALSE(core::gate_residualize(v.data(), m.data(), 64, {core::gate_rule::never, 0.0f}));
    }
}
