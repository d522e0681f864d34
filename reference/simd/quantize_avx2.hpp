#pragma once
// core::quantize_k_channel and core::quantize_token_row with AVX2: 8 channels (K per channel) or
// 8 consecutive values (token rows) per vector, the same operations per element as
// core::quantize_group: min/max as the scalar compare-select (minps(v, mn) is v < mn ? v : mn),
// core::group_scale_min per group, (x - min) / s, the clamps, round-half-even. Identical bits;
// tests/test_kernels.cpp compares them.
#if defined(__x86_64__)
#include <cstdint>

#include <immintrin.h>

#include "core/packing.hpp"
#include "core/page_layout.hpp"
#include "core/quantize.hpp"
#include "exp_avx2.hpp"
#include "lanes_avx2.hpp"

namespace patternkv::simd {

struct avx2_quantizer {
    /// Codes of 8 values under per-lane s and mn (s = 0: code 0), as core::quantize_value.
    PKV_AVX2 static __m256i codes8(__m256 x, __m256 s, __m256 mn, __m256 top) {
        __m256 y = _mm256_div_ps(_mm256_sub_ps(x, mn), s);
        y = _mm256_min_ps(_mm256_max_ps(y, _mm256_setzero_ps()), top);
        const __m256i c = _mm256_cvttps_epi32(_mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        return _mm256_andnot_si256(_mm256_castps_si256(_mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_EQ_OQ)), c);
    }

    /// Scale/min of 8 groups from their lane min/max; the decoded floats go to s and m.
    PKV_AVX2 static void scale_min8(__m256 mn, __m256 mx, int levels, core::scale_min* out, int out_stride, __m256& s, __m256& m) {
        alignas(32) float lo[8], hi[8], sv[8], mv[8];
        _mm256_store_ps(lo, mn);
        _mm256_store_ps(hi, mx);
        for (int l = 0; l < 8; ++l) {
            const core::scale_min sm = core::group_scale_min(lo[l], hi[l], levels);
            out[l * out_stride] = sm;
            sv[l] = core::half_to_float(sm.scale);
            mv[l] = core::half_to_float(sm.min);
        }
        s = _mm256_load_ps(sv);
        m = _mm256_load_ps(mv);
    }

    /// core::quantize_k_channel for channels j0 .. j0 + 7 (g.d % 8 == 0).
    PKV_AVX2 static void k_channels8(const core::page_geometry& g, const float* rows, int j0, std::uint32_t* codes, core::scale_min* sm) {
        alignas(32) std::uint8_t buf[8][core::max_page_tokens];
        alignas(32) std::int32_t lane[8];
        const int levels = (1 << g.k_bits) - 1;
        const __m256 top = _mm256_set1_ps(static_cast<float>(levels));
        for (int t0 = 0, gi = 0; t0 < g.tokens; t0 += g.k_group, ++gi) {
            const float* x = rows + t0 * g.d + j0;
            __m256 mn = _mm256_loadu_ps(x), mx = mn;
            for (int t = 1; t < g.k_group; ++t) {
                const __m256 v = _mm256_loadu_ps(x + t * g.d);
                mn = _mm256_min_ps(v, mn);
                mx = _mm256_max_ps(v, mx);
            }
            __m256 s, m;
            scale_min8(mn, mx, levels, sm + gi * g.d + j0, 1, s, m);
            for (int t = 0; t < g.k_group; ++t) {
                _mm256_store_si256(reinterpret_cast<__m256i*>(lane), codes8(_mm256_loadu_ps(x + t * g.d), s, m, top));
                for (int l = 0; l < 8; ++l) buf[l][t0 + t] = static_cast<std::uint8_t>(lane[l]);
            }
        }
        for (int l = 0; l < 8; ++l) core::pack_codes(buf[l], g.tokens, g.k_bits, codes + (j0 + l) * g.k_row_words());
    }

    /// core::quantize_token_row for d % 8 == 0 and group % 8 == 0.
    PKV_AVX2 static void token_row(const float* row, int d, int group, int bits, std::uint32_t* codes, core::scale_min* sm) {
        alignas(32) std::uint8_t buf[core::max_head_dim];
        alignas(32) std::int32_t lane[8];
        const int levels = (1 << bits) - 1;
        const __m256 top = _mm256_set1_ps(static_cast<float>(levels));
        for (int j0 = 0, gi = 0; j0 < d; j0 += group, ++gi) {
            const float* x = row + j0;
            float lo, hi;
            group_range(x, group, lo, hi);
            sm[gi] = core::group_scale_min(lo, hi, levels);
            const __m256 s = _mm256_set1_ps(core::half_to_float(sm[gi].scale)), m = _mm256_set1_ps(core::half_to_float(sm[gi].min));
            for (int j = 0; j < group; j += 8) {
                _mm256_store_si256(reinterpret_cast<__m256i*>(lane), codes8(_mm256_loadu_ps(x + j), s, m, top));
                for (int l = 0; l < 8; ++l) buf[j0 + j + l] = static_cast<std::uint8_t>(lane[l]);
            }
        }
        core::pack_codes(buf, d, bits, codes);
    }

private:
    // Min and max of n contiguous values as the scalar scan finds them. Values are order-free
    // except the sign of a zero (the scan keeps the first of +0 / -0), so a zero result is rescanned.
    PKV_AVX2 static void group_range(const float* x, int n, float& lo, float& hi) {
        __m256 mn = _mm256_loadu_ps(x), mx = mn;
        for (int j = 8; j < n; j += 8) {
            const __m256 v = _mm256_loadu_ps(x + j);
            mn = _mm256_min_ps(v, mn);
            mx = _mm256_max_ps(v, mx);
        }
        lo = lanes_extreme_avx2<false>(mn);
        hi = lanes_extreme_avx2<true>(mx);
        if (lo == 0.0f || hi == 0.0f) core::group_range(x, n, 1, &lo, &hi);
    }
};

}  // namespace patternkv::simd
#endif
