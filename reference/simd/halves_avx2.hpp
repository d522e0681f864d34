#pragma once
// floats to fp16 with F16C: vcvtps2ph rounding to nearest even is core::float_to_half's rounding
// for every finite float (tests/test_kernels.cpp compares them); the bound check rejects NaN and Inf.
#if defined(__x86_64__)
#include <cstdint>

#include <immintrin.h>

#include "exp_avx2.hpp"

namespace patternkv::simd {

/// Converts the first n - n % 8 floats of x to halves; returns how many it converted, or -1 when
/// one of them is NaN or has |x| > bound (out is then unspecified).
PKV_AVX2 inline std::int64_t floats_to_halves_checked(const float* x, std::int64_t n, float bound, std::uint16_t* out) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), lim = _mm256_set1_ps(bound);
    __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    std::int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 v = _mm256_loadu_ps(x + k);
        ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), lim, _CMP_LE_OQ));  // false for NaN
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    return _mm256_movemask_ps(ok) == 0xff ? k : -1;
}

}  // namespace patternkv::simd
#endif
