#pragma once
// AVX2/FMA/F16C versions of core::scalar_ops (core/attention.hpp): identical bits, 8 lanes.
// Only called when simd::have_avx2() is true.
#if defined(__x86_64__)
#include <immintrin.h>

#include "core/attention.hpp"
#include "exp_avx2.hpp"

namespace patternkv::simd {
namespace detail {

/// Whether 8 consecutive codes starting at `first` (a multiple of 8) can be unpacked with one
/// word broadcast (2 and 4 bits) or one 8-byte load (8 bits); n must be a multiple of 8.
inline bool vector_codes(int bits, int first, int n) { return (bits == 2 || bits == 4 || bits == 8) && first % 8 == 0 && n % 8 == 0; }

/// Codes first .. first + 7 of a packed row as 8 floats (first % 8 == 0).
PKV_AVX2 inline __m256 unpack8(const std::uint32_t* row, int first, int bits) {
    if (bits == 8)
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint8_t*>(row) + first))));
    const int cpw = 32 / bits;
    const __m256i word = _mm256_set1_epi32(static_cast<int>(row[first / cpw]));
    const __m256i shift = bits == 2 ? (first % 16 == 0 ? _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14) : _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30))
                                    : _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(word, shift), _mm256_set1_epi32((1 << bits) - 1)));
}

/// Calls f.template operator()<HB>() for HB = hb in 1 .. 8.
template <class F>
PKV_AVX2 inline void dispatch_heads(int hb, F&& f) {
    switch (hb) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 7: return f.template operator()<7>();
    default: return f.template operator()<8>();
    }
}

/// 8 tokens x HB heads of channel_scores, accumulators in registers, channels in order.
template <int HB>
PKV_AVX2 inline void channel_scores_block(const std::uint32_t* codes, int row_words, int first, int bits, int d, const float* qs,
                                          float* scores, int stride) {
    __m256 acc[HB];
    for (int h = 0; h < HB; ++h) acc[h] = _mm256_loadu_ps(scores + h * stride);
    for (int j = 0; j < d; ++j) {
        const __m256 c = unpack8(codes + j * row_words, first, bits);
        for (int h = 0; h < HB; ++h) acc[h] = _mm256_fmadd_ps(_mm256_broadcast_ss(qs + h * d + j), c, acc[h]);
    }
    for (int h = 0; h < HB; ++h) _mm256_storeu_ps(scores + h * stride, acc[h]);
}

/// 8 * NV channels x HB heads of accumulate_rows, accumulators in registers, tokens in order.
template <int HB, int NV>
PKV_AVX2 inline void accumulate_block(const std::uint32_t* codes, int row_words, int tokens, int bits, int j, const float* w,
                                      int w_stride, float* o, int o_stride) {
    __m256 acc[HB][NV];
    for (int h = 0; h < HB; ++h)
        for (int v = 0; v < NV; ++v) acc[h][v] = _mm256_loadu_ps(o + h * o_stride + 8 * v);
    for (int t = 0; t < tokens; ++t) {
        __m256 c[NV];
        for (int v = 0; v < NV; ++v) c[v] = unpack8(codes + t * row_words, j + 8 * v, bits);
        for (int h = 0; h < HB; ++h) {
            const __m256 a = _mm256_broadcast_ss(w + h * w_stride + t);
            for (int v = 0; v < NV; ++v) acc[h][v] = _mm256_fmadd_ps(a, c[v], acc[h][v]);
        }
    }
    for (int h = 0; h < HB; ++h)
        for (int v = 0; v < NV; ++v) _mm256_storeu_ps(o + h * o_stride + 8 * v, acc[h][v]);
}

} // namespace detail

struct avx2_ops {
    // helpers live in detail:: so the struct stays the list of primitives

    PKV_AVX2 static void channel_scores(const std::uint32_t* codes, int row_words, int first, int n, int bits, int d,
                                        const float* qs, int heads, float* scores, int stride) {
        if (!detail::vector_codes(bits, first, n)) return core::scalar_ops::channel_scores(codes, row_words, first, n, bits, d, qs, heads, scores, stride);
        for (int h0 = 0; h0 < heads; h0 += 8) {
            const int hb = heads - h0 < 8 ? heads - h0 : 8;
            for (int t = 0; t < n; t += 8)
                detail::dispatch_heads(hb, [&]<int HB>() {
                    detail::channel_scores_block<HB>(codes, row_words, first + t, bits, d, qs + h0 * d, scores + h0 * stride + t, stride);
                });
        }
    }

    PKV_AVX2 static void accumulate_rows(const std::uint32_t* codes, int row_words, int tokens, int bits, int j0, int n,
                                         const float* w, int w_stride, int heads, float* o, int o_stride) {
        if (!detail::vector_codes(bits, j0, n))
            return core::scalar_ops::accumulate_rows(codes, row_words, tokens, bits, j0, n, w, w_stride, heads, o, o_stride);
        for (int h0 = 0; h0 < heads; h0 += 4) {
            const int hb = heads - h0 < 4 ? heads - h0 : 4;
            int j = 0;
            for (; j + 16 <= n; j += 16)
                detail::dispatch_heads(hb, [&]<int HB>() {
                    detail::accumulate_block<HB, 2>(codes, row_words, tokens, bits, j0 + j, w + h0 * w_stride, w_stride, o + h0 * o_stride + j, o_stride);
                });
            if (j < n)
                detail::dispatch_heads(hb, [&]<int HB>() {
                    detail::accumulate_block<HB, 1>(codes, row_words, tokens, bits, j0 + j, w + h0 * w_stride, w_stride, o + h0 * o_stride + j, o_stride);
                });
        }
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
