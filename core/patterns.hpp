#pragma once
// Pattern geometry: nearest pattern by squared L2 (prefill) and by min-max distance (flush), and
// the Chebyshev centre of a window (method.md sections 4 and 6). Patterns are rows of a bank
// [count][d] of floats decoded from fp16.

#include "platform.hpp"
#include "reduce.hpp"

namespace patternkv::core {

/// Index of the bank row nearest to x by squared L2 (canonical order); ties go to the lowest index.
PKV_HD int nearest_pattern_l2(const float* x, const float* bank, int count, int d) {
    int best = 0;
    float best_d = lane_sq_dist(x, bank, d);
    for (int c = 1; c < count; ++c) {
        const float dist = lane_sq_dist(x, bank + c * d, d);
        if (dist < best_d) {
            best_d = dist;
            best = c;
        }
    }
    return best;
}

/// The squared-L2 nearest-pattern search as a swappable primitive (the AVX2 twin in reference/simd/
/// computes the same lane order, so the same bits).
struct scalar_distance {
    PKV_HD static float sq_dist(const float* x, const float* m, int d) { return lane_sq_dist(x, m, d); }
    /// out[i] = sq_dist(x, bank row which[i]) for i < n.
    PKV_HD static void sq_dists(const float* x, const float* bank, const int* which, int n, int d, float* out) {
        for (int i = 0; i < n; ++i) out[i] = lane_sq_dist(x, bank + which[i] * d, d);
    }
    PKV_HD static int nearest_l2(const float* x, const float* bank, int count, int d) { return nearest_pattern_l2(x, bank, count, d); }
};

/// Range of the residual x - m: max_j (x_j - m_j) - min_j (x_j - m_j). Max/min are order-free.
PKV_HD float residual_range(const float* x, const float* m, int d) {
    float lo = x[0] - m[0], hi = lo;
    for (int j = 1; j < d; ++j) {
        const float r = x[j] - m[j];
        lo = r < lo ? r : lo;
        hi = r > hi ? r : hi;
    }
    return hi - lo;
}

/// Range of x itself.
PKV_HD float value_range(const float* x, int d) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < d; ++j) {
        lo = x[j] < lo ? x[j] : lo;
        hi = x[j] > hi ? x[j] : hi;
    }
    return hi - lo;
}

/// Index of the bank row minimizing the min-max distance d_mm(x, m); ties go to the lowest index.
PKV_HD int nearest_pattern_dmm(const float* x, const float* bank, int count, int d) {
    int best = 0;
    float best_d = residual_range(x, bank, d);
    for (int c = 1; c < count; ++c) {
        const float dist = residual_range(x, bank + c * d, d);
        if (dist < best_d) {
            best_d = dist;
            best = c;
        }
    }
    return best;
}

/// Chebyshev centre under L-inf of n vectors (rows of x with row stride `stride`): the per-channel
/// midrange (min + max) / 2, which minimizes max_t ||x_t - c||_inf.
PKV_HD void chebyshev_centre(const float* x, int n, int d, int stride, float* centre) {
    for (int j = 0; j < d; ++j) {
        float lo = x[j], hi = x[j];
        for (int t = 1; t < n; ++t) {
            const float v = x[t * stride + j];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        centre[j] = (lo + hi) * 0.5f;
    }
}

}  // namespace patternkv::core
