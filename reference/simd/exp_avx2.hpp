#pragma once
// core::exp_fixed on 8 lanes with AVX2 + FMA: the same operations in the same order, so every
// lane equals the scalar result bit for bit (tests/test_kernels.cpp checks it).
#if defined(__x86_64__)
#include <immintrin.h>

#include <initializer_list>

#include "core/exp.hpp"

#define PKV_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace patternkv::simd {

PKV_AVX2 inline __m256 exp_fixed_avx2(__m256 x) {
    namespace k = core::exp_constants;
    const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(k::log2e));
    // n = (float)(int)(t + copysign(0.5, t)), as the scalar code (t >= 0 ? +0.5 : -0.5; -0 takes -0.5, same int)
    const __m256 half = _mm256_or_ps(_mm256_and_ps(t, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(0.5f));
    const __m256i ni = _mm256_cvttps_epi32(_mm256_add_ps(t, half));
    const __m256 n = _mm256_cvtepi32_ps(ni);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(k::minus_ln2_hi), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(k::minus_ln2_lo), r);
    __m256 p = _mm256_set1_ps(k::c6);
    for (const float c : {k::c5, k::c4, k::c3, k::c2, k::c1}) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    // normal results: p * 2^n (n in [-126, 127]); n = 128: p * 2^127 * 2^1; n < -126: two steps
    const __m256i n_lo = _mm256_max_epi32(_mm256_min_epi32(ni, _mm256_set1_epi32(127)), _mm256_set1_epi32(-126));
    const __m256 pow_lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n_lo, _mm256_set1_epi32(127)), 23));
    __m256 normal = _mm256_mul_ps(p, pow_lo);
    const __m256i over = _mm256_cmpgt_epi32(ni, _mm256_set1_epi32(127));
    normal = _mm256_blendv_ps(normal, _mm256_mul_ps(normal, _mm256_set1_ps(2.0f)), _mm256_castsi256_ps(over));
    const __m256i sub_n = _mm256_add_epi32(ni, _mm256_set1_epi32(64 + 127));
    const __m256 sub_pow = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_max_epi32(sub_n, _mm256_set1_epi32(1)), 23));
    const __m256 sub = _mm256_mul_ps(_mm256_mul_ps(p, sub_pow), _mm256_set1_ps(5.42101086242752217e-20f));  // 2^-64
    const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(-126), ni);
    __m256 y = _mm256_blendv_ps(normal, sub, _mm256_castsi256_ps(is_sub));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(k::underflow), _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, _mm256_set1_ps(k::overflow), _CMP_GT_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

}  // namespace patternkv::simd
#endif
