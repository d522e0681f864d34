#pragma once
// The one summation order of every dot product and squared distance in result paths:
// element j goes to logical lane j % 32 (sequentially within a lane), then a fixed butterfly
// tree (offsets 16, 8, 4, 2, 1) folds the lanes. A warp does this with shuffles; the CPU with SIMD.

#include "platform.hpp"

namespace patternkv::core {

/// Folds 32 lane partials in the canonical butterfly order; returns the total.
PKV_HD float fold_lanes(float (&acc)[reduction_lanes]) {
    for (int w = reduction_lanes / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l) acc[l] = acc[l] + acc[l + w];
    return acc[0];
}

/// sum_j a[j] * b(j) in the canonical order (mul then add, never fused), b(j) the j-th element of
/// the second operand (read where it is used, so a converted operand needs no buffer).
template <class B>
PKV_HD float lane_dot_of(const float* a, B b, int n) {
    float acc[reduction_lanes] = {};
    for (int j0 = 0; j0 < n; j0 += reduction_lanes) {
        const int m = n - j0 < reduction_lanes ? n - j0 : reduction_lanes;
        for (int l = 0; l < m; ++l) acc[l] = acc[l] + a[j0 + l] * b(j0 + l);
    }
    return fold_lanes(acc);
}

/// sum_j a[j] * b[j] in the canonical order (mul then add, never fused).
PKV_HD float lane_dot(const float* a, const float* b, int n) {
    return lane_dot_of(
        a, [b](int j) { return b[j]; }, n);
}

/// sum_j a[j] in the canonical order.
PKV_HD float lane_sum(const float* a, int n) {
    float acc[reduction_lanes] = {};
    for (int j0 = 0; j0 < n; j0 += reduction_lanes) {
        const int m = n - j0 < reduction_lanes ? n - j0 : reduction_lanes;
        for (int l = 0; l < m; ++l) acc[l] = acc[l] + a[j0 + l];
    }
    return fold_lanes(acc);
}

/// sum_j (a[j] - b[j])^2 in the canonical order.
PKV_HD float lane_sq_dist(const float* a, const float* b, int n) {
    float acc[reduction_lanes] = {};
    for (int j0 = 0; j0 < n; j0 += reduction_lanes) {
        const int m = n - j0 < reduction_lanes ? n - j0 : reduction_lanes;
        for (int l = 0; l < m; ++l) {
            const float t = a[j0 + l] - b[j0 + l];
            acc[l] = acc[l] + t * t;
        }
    }
    return fold_lanes(acc);
}

}  // namespace patternkv::core
