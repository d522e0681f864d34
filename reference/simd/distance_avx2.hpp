#pragma once
// core::nearest_pattern_l2 with AVX2: the 32 logical lanes of core::lane_sq_dist are four 8-wide
// vectors, each lane summing (x_j - m_j)^2 for j = lane (mod 32) in order (mul then add, as the
// scalar code), then the same butterfly 16, 8, 4, 2, 1. Identical bits; tests/test_kernels.cpp.
#if defined(__x86_64__)
#include <immintrin.h>

#include "core/patterns.hpp"
#include "exp_avx2.hpp"
#include "lanes_avx2.hpp"

namespace patternkv::simd {

struct avx2_distance {
    /// lane_sq_dist(x, m, d) for any d (the vector path needs d % 8 == 0).
    PKV_AVX2 static float sq_dist(const float* x, const float* m, int d) {
        if (d % 8 != 0) return core::lane_sq_dist(x, m, d);
        const int first = 0;
        float q;
        rows<1>(x, m, &first, d, &q);
        return q;
    }

    /// sq_dist of x to R bank rows at once (x is loaded once for all of them).
    template <int R>
    PKV_AVX2 static void rows(const float* x, const float* bank, const int* which, int d, float* out) {
        const float* m[R];
        __m256 acc[R][4];
        for (int r = 0; r < R; ++r) {
            m[r] = bank + which[r] * d;
            for (int v = 0; v < 4; ++v) acc[r][v] = _mm256_setzero_ps();
        }
        for (int j0 = 0; j0 < d; j0 += 32)
            for (int v = 0; v < 4 && j0 + 8 * v < d; ++v) {
                const __m256 xv = _mm256_loadu_ps(x + j0 + 8 * v);
                for (int r = 0; r < R; ++r) {
                    const __m256 t = _mm256_sub_ps(xv, _mm256_loadu_ps(m[r] + j0 + 8 * v));
                    acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_mul_ps(t, t));
                }
            }
        for (int r = 0; r < R; ++r) out[r] = fold_lanes_avx2(acc[r]);
    }

    /// out[i] = sq_dist(x, bank row which[i]) for i < n, two rows per pass over x.
    PKV_AVX2 static void sq_dists(const float* x, const float* bank, const int* which, int n, int d, float* out) {
        if (d % 8 != 0) return core::scalar_distance::sq_dists(x, bank, which, n, d, out);
        int i = 0;
        for (; i + 2 <= n; i += 2) rows<2>(x, bank, which + i, d, out + i);
        for (; i < n; ++i) out[i] = sq_dist(x, bank + which[i] * d, d);
    }

    /// core::nearest_pattern_dmm for d % 8 == 0. Each residual x_j - m_j is the scalar one; max
    /// and min are order-free in value, and only the sign of a zero range could differ, which no
    /// comparison sees (-0 < +0 is false): the index is the definition's.
    PKV_AVX2 static int nearest_dmm(const float* x, const float* bank, int count, int d) {
        if (d % 8 != 0) return core::nearest_pattern_dmm(x, bank, count, d);
        int best = 0;
        float best_d = 0.0f;
        for (int c = 0; c < count; ++c) {
            const float* m = bank + c * d;
            __m256 r = _mm256_sub_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(m));
            __m256 lo = r, hi = r;
            for (int j = 8; j < d; j += 8) {
                r = _mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(m + j));
                lo = _mm256_min_ps(lo, r);
                hi = _mm256_max_ps(hi, r);
            }
            const float dist = lanes_extreme_avx2<true>(hi) - lanes_extreme_avx2<false>(lo);
            if (c == 0 || dist < best_d) {
                best_d = dist;
                best = c;
            }
        }
        return best;
    }

    PKV_AVX2 static int nearest_l2(const float* x, const float* bank, int count, int d) {
        if (d % 8 != 0) return core::nearest_pattern_l2(x, bank, count, d);
        int best = 0;
        float best_d = sq_dist(x, bank, d);
        for (int c = 1; c < count; ++c) {
            const float dist = sq_dist(x, bank + c * d, d);
            if (dist < best_d) {
                best_d = dist;
                best = c;
            }
        }
        return best;
    }
};

}  // namespace patternkv::simd
#endif
