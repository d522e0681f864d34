#pragma once
// core::exp_fixed on 16 lanes with AVX-512: where every lane's result is normal (x in [-87, 88]),
// the scalar formula's normal branch, same operations; otherwise each half goes through the AVX2
// version, which has every branch. Either way each lane equals the scalar result bit for bit.
#if defined(__x86_64__)
#include <immintrin.h>

#include "exp_avx2.hpp"

#include "avx512_target.hpp"

PKV_AVX512_WARNINGS_OFF

namespace patternkv::simd {

PKV_AVX512 inline __m512 exp_fixed_avx512(__m512 x) {
    // x >= -87: n >= -126; x <= 88: n <= 127 (ordered compares: a NaN lane takes the full path)
    const __mmask16 normal =
        _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ) & _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.0f), _CMP_LE_OQ);
    if (normal != 0xFFFF) {
        const __m256 lo = exp_fixed_avx2(_mm512_castps512_ps256(x));
        const __m256 hi = exp_fixed_avx2(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
    }
    namespace k = core::exp_constants;
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(k::log2e));
    // n = (float)(int)(t + copysign(0.5, t)), as the scalar code
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(t), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
    const __m512 half = _mm512_castsi512_ps(_mm512_or_si512(sign, _mm512_castps_si512(_mm512_set1_ps(0.5f))));
    const __m512i ni = _mm512_cvttps_epi32(_mm512_add_ps(t, half));
    const __m512 n = _mm512_cvtepi32_ps(ni);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(k::minus_ln2_hi), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(k::minus_ln2_lo), r);
    __m512 p = _mm512_set1_ps(k::c6);
    for (const float c : {k::c5, k::c4, k::c3, k::c2, k::c1}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23)));
}

}  // namespace patternkv::simd

PKV_AVX512_WARNINGS_ON
#endif
