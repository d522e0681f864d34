#pragma once
// core::lane_sum / core::lane_dot (reduce.hpp) with AVX2: the 32 logical lanes are four 8-wide
// vectors over whole 32-element blocks; a partial last block goes lane by lane; then the scalar
// butterfly. Same operations per lane, same bits.
#if defined(__x86_64__)
#include <immintrin.h>

#include "core/reduce.hpp"
#include "exp_avx2.hpp"

namespace patternkv::simd {

/// sum_j a[j] (Mul = false) or sum_j a[j] * b[j] (Mul = true, mul then add) in lane order.
template <bool Mul>
PKV_AVX2 inline float lane_reduce_avx2(const float* a, const float* b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    const auto term = [&](int j) PKV_AVX2 {
        const __m256 x = _mm256_loadu_ps(a + j);
        if constexpr (Mul) return _mm256_mul_ps(x, _mm256_loadu_ps(b + j));
        else return x;
    };
    int j0 = 0;
    for (; j0 + 32 <= n; j0 += 32) {
        s0 = _mm256_add_ps(s0, term(j0));
        s1 = _mm256_add_ps(s1, term(j0 + 8));
        s2 = _mm256_add_ps(s2, term(j0 + 16));
        s3 = _mm256_add_ps(s3, term(j0 + 24));
    }
    alignas(32) float lanes[core::reduction_lanes];
    _mm256_store_ps(lanes, s0);
    _mm256_store_ps(lanes + 8, s1);
    _mm256_store_ps(lanes + 16, s2);
    _mm256_store_ps(lanes + 24, s3);
    for (int l = 0; j0 + l < n; ++l) lanes[l] = lanes[l] + (Mul ? a[j0 + l] * b[j0 + l] : a[j0 + l]);
    return core::fold_lanes(lanes);
}

} // namespace patternkv::simd
#endif
