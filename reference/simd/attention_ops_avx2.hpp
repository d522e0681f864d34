#pragma once
// AVX2/FMA/F16C versions of core::scalar_ops (core/attention.hpp): identical bits, 8 lanes.
// Only called when simd::have_avx2() is true.
#if defined(__x86_64__)
#include <immintrin.h>

#include "core/attention.hpp"
#include "exp_avx2.hpp"

namespace patternkv::simd {

struct avx2_ops {
    PKV_AVX2 static void unpack(const std::uint32_t* row, int first, int n, int bits, float* out) {
        int i = 0;
        if (first % 8 == 0 && (bits == 2 || bits == 4)) {
            const int cpw = 32 / bits;
            const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            const __m256i mask = _mm256_set1_epi32((1 << bits) - 1);
            for (; i + 8 <= n; i += 8) {
                const int pos = first + i;
                const __m256i word = _mm256_set1_epi32(static_cast<int>(row[pos / cpw]));
                const __m256i shift = _mm256_mullo_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(pos % cpw)), _mm256_set1_epi32(bits));
                _mm256_storeu_ps(out + i, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(word, shift), mask)));
            }
        } else if (first % 4 == 0 && bits == 8) {
            const auto* bytes = reinterpret_cast<const std::uint8_t*>(row) + first;  // 4 codes per word, little-endian
            for (; i + 8 <= n; i += 8) {
                const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes + i));
                _mm256_storeu_ps(out + i, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
            }
        }
        core::scalar_ops::unpack(row, first + i, n - i, bits, out + i);
    }

    PKV_AVX2 static void halves(const std::uint16_t* x, int n, float* out) {
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
        core::scalar_ops::halves(x + i, n - i, out + i);
    }

    PKV_AVX2 static void fma_accumulate(float a, const float* x, float* y, int n) {
        const __m256 va = _mm256_set1_ps(a);
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
        for (; i < n; ++i) y[i] = core::fma_exact(a, x[i], y[i]);
    }

    PKV_AVX2 static float exponentiate(float* s, int n, float m) {
        const __m256 vm = _mm256_set1_ps(m);
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, exp_fixed_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm)));
        for (; i < n; ++i) s[i] = core::exp_fixed(s[i] - m);
        float l = 0.0f;
        for (i = 0; i < n; ++i) l = l + s[i];  // the sum stays in index order
        return l;
    }
};

} // namespace patternkv::simd
#endif
