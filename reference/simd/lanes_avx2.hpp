#pragma once
// core::lane_sum / core::lane_dot (reduce.hpp) with AVX2: the 32 logical lanes are four 8-wide
// vectors over whole 32-element blocks; a partial last block goes lane by lane; then the butterfly
// (in vectors when there was no partial block). Same operations per lane, same bits.
#if defined(__x86_64__)
#include <immintrin.h>

#include "core/reduce.hpp"
#include "exp_avx2.hpp"

namespace patternkv::simd {

/// The last three halvings of core::fold_lanes, from its 8 lanes w8.
PKV_AVX2 inline float fold8_avx2(__m256 w8) {
    const __m128 w4 = _mm_add_ps(_mm256_castps256_ps128(w8), _mm256_extractf128_ps(w8, 1));
    const __m128 w2 = _mm_add_ps(w4, _mm_movehl_ps(w4, w4));
    const __m128 w1 = _mm_add_ss(w2, _mm_shuffle_ps(w2, w2, 1));
    return _mm_cvtss_f32(w1);
}

/// core::fold_lanes of the 32 lanes held as four vectors (lanes 8v .. 8v + 7 in acc[v]).
PKV_AVX2 inline float fold_lanes_avx2(const __m256 (&acc)[4]) {
    const __m256 w16 = _mm256_add_ps(acc[0], acc[2]);   // lanes 0-7 (+16-23)
    const __m256 w16b = _mm256_add_ps(acc[1], acc[3]);  // lanes 8-15 (+24-31)
    return fold8_avx2(_mm256_add_ps(w16, w16b));        // lanes 0-7 (+8-15)
}

/// Largest (Max) or smallest of 8 lanes (exact in value; the sign of a zero result is unspecified).
template <bool Max>
PKV_AVX2 inline float lanes_extreme_avx2(__m256 v) {
    const auto op = [](__m128 a, __m128 b) PKV_AVX2 { return Max ? _mm_max_ps(a, b) : _mm_min_ps(a, b); };
    __m128 m = op(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = op(m, _mm_movehl_ps(m, m));
    m = op(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/// core's order after whole 32-element blocks: lanes holds their 32 lane sums; term(l) joins lane l
/// for each of the `left` (< 32) remaining elements, then the lanes fold.
template <class Term>
inline float fold_partial(float (&lanes)[core::reduction_lanes], int left, Term&& term) {
    for (int l = 0; l < left; ++l) lanes[l] = lanes[l] + term(l);
    return core::fold_lanes(lanes);
}

/// sum_j a[j] (Mul = false) or sum_j a[j] * b[j] (Mul = true, mul then add) in lane order.
template <bool Mul>
PKV_AVX2 inline float lane_reduce_avx2(const float* a, const float* b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const auto term = [&](int j) PKV_AVX2 {
        const __m256 x = _mm256_loadu_ps(a + j);
        if constexpr (Mul)
            return _mm256_mul_ps(x, _mm256_loadu_ps(b + j));
        else
            return x;
    };
    int j0 = 0;
    for (; j0 + 32 <= n; j0 += 32) {
        s0 = _mm256_add_ps(s0, term(j0));
        s1 = _mm256_add_ps(s1, term(j0 + 8));
        s2 = _mm256_add_ps(s2, term(j0 + 16));
        s3 = _mm256_add_ps(s3, term(j0 + 24));
    }
    if (j0 == n) return fold_lanes_avx2({s0, s1, s2, s3});
    alignas(32) float lanes[core::reduction_lanes];
    _mm256_store_ps(lanes, s0);
    _mm256_store_ps(lanes + 8, s1);
    _mm256_store_ps(lanes + 16, s2);
    _mm256_store_ps(lanes + 24, s3);
    return fold_partial(lanes, n - j0, [&](int l) { return Mul ? a[j0 + l] * b[j0 + l] : a[j0 + l]; });
}

}  // namespace patternkv::simd
#endif
