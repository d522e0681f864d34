#pragma once
// The V gate (method.md section 5): residualize a V token iff the one-sided z-test says its
// residual's variance is smaller than the raw vector's:
//     1 - rho^2 >= c * sqrt(1 + rho^4),   rho = R_flat / R_raw,   c = 2 z / sqrt(5 d).
// c is computed once on the host (z_test_gate's constructor) and passed to every backend as the same float.

#include "exp.hpp"
#include "patterns.hpp"
#include "platform.hpp"

namespace patternkv::core {

/// What a gate does: the z-test, or a fixed answer.
enum class gate_rule : int { z_test = 0, always = 1, never = 2 };

struct gate_params {
    gate_rule rule;
    float c;  ///< 2 z / sqrt(5 d)
};

/// Decision of the z-test for a ratio rho.
PKV_HD bool gate_accepts(float rho, float c) {
    const float rho2 = rho * rho;
    return 1.0f - rho2 >= c * sqrt_rn(1.0f + rho2 * rho2);
}

/// Whether V token v (d channels) is stored as the residual v - m.
PKV_HD bool gate_residualize(const float* v, const float* m, int d, gate_params g) {
    if (g.rule != gate_rule::z_test) return g.rule == gate_rule::always;
    float raw = value_range(v, d), flat = residual_range(v, m, d);
    raw = raw < 1e-12f ? 1e-12f : raw;
    flat = flat < 1e-12f ? 1e-12f : flat;
    return gate_accepts(flat / raw, g.c);
}

}  // namespace patternkv::core
