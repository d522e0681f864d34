#pragma once
// AVX2/FMA/F16C versions of core::scalar_ops (core/attention.hpp): identical bits, 8 lanes.
// Only called when simd::have_avx2() is true.
#if defined(__x86_64__)
#include <immintrin.h>

#include "core/attention.hpp"
#include "exp_avx2.hpp"
#include "lanes_avx2.hpp"

namespace patternkv::simd {
namespace detail {

/// Whether 8 consecutive codes starting at `first` (a multiple of 8) can be unpacked with word
/// broadcasts (2, 3, 4 bits) or one 8-byte load (8 bits); n must be a multiple of 8.
inline bool vector_codes(int bits, int first, int n) { return core::supported_bits(bits) && first % 8 == 0 && n % 8 == 0; }

/// Unpacks codes first .. first + 7 of packed rows (first % 8 == 0) at a fixed position: the word
/// offset and shifts are computed once, then each row costs one load (two where 3-bit codes cross
/// a word), shift, mask and convert.
template <int Bits>
struct code_lanes {
    int word;         ///< word (2, 3, 4 bits) or byte (8 bits) offset of the first code in a row
    __m256i shift;    ///< per-lane shift inside its word (2, 3, 4 bits)
    __m256i second;   ///< 3 bits: all-ones in the lanes whose code lies in word + 1
    bool spans = false;  ///< 3 bits: some lane reads word + 1 (10 codes per word, so 8 may cross)

    PKV_AVX2 explicit code_lanes(int first) {
        constexpr int cpw = core::codes_per_word(Bits);
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        second = _mm256_setzero_si256();
        if constexpr (Bits == 8) {
            word = first;
            shift = _mm256_setzero_si256();
        } else {
            word = first / cpw;
            const int base = first % cpw;
            if constexpr (Bits == 3) {  // lane i: code base + i of word `word`, or code base + i - 10 of the next
                spans = base + 7 >= cpw;
                second = _mm256_cmpgt_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(base)), _mm256_set1_epi32(cpw - 1));
                const __m256i pos = _mm256_sub_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(base)), _mm256_and_si256(second, _mm256_set1_epi32(cpw)));
                shift = _mm256_mullo_epi32(pos, _mm256_set1_epi32(Bits));
            } else {
                shift = _mm256_mullo_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(base)), _mm256_set1_epi32(Bits));
            }
        }
    }
    PKV_AVX2 __m256 operator()(const std::uint32_t* row) const {
        if constexpr (Bits == 8) {
            return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint8_t*>(row) + word))));
        } else {
            __m256i w = _mm256_set1_epi32(static_cast<int>(row[word]));
            if (Bits == 3 && spans) w = _mm256_blendv_epi8(w, _mm256_set1_epi32(static_cast<int>(row[word + 1])), second);
            return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, shift), _mm256_set1_epi32((1 << Bits) - 1)));
        }
    }
};

/// Calls f.template operator()<B>() for B = bits in {2, 3, 4, 8}.
template <class F>
PKV_AVX2 inline void dispatch_bits(int bits, F&& f) {
    switch (bits) {
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    default: return f.template operator()<8>();
    }
}

/// Calls f.template operator()<HB>() for HB = hb in 1 .. Max (hb <= Max).
template <int Max, int HB = 1, class F>
PKV_AVX2 inline void dispatch_heads(int hb, F&& f) {
    if constexpr (HB == Max) {
        f.template operator()<HB>();
    } else {
        if (hb == HB) return f.template operator()<HB>();
        dispatch_heads<Max, HB + 1>(hb, static_cast<F&&>(f));
    }
}

// The accumulators below are named registers, not arrays: GCC keeps an array of __m256 in memory
// and stores it back every iteration, which serializes the FMA chains through store forwarding.
#define PKV_FOR_HEADS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/// 8 tokens x HB heads of channel_scores, accumulators in registers, channels in order.
template <int HB, int Bits>
PKV_AVX2 inline void channel_scores_block(const std::uint32_t* codes, int row_words, int first, int d, const float* qs,
                                          float* scores, int stride) {
    const code_lanes<Bits> lanes(first);
    __m256 a0, a1, a2, a3, a4, a5, a6, a7;
#define PKV_LOAD(h) if constexpr (HB > h) a##h = _mm256_loadu_ps(scores + h * stride);
    PKV_FOR_HEADS(PKV_LOAD)
#undef PKV_LOAD
    for (int j = 0; j < d; ++j) {
        const __m256 c = lanes(codes + j * row_words);
#define PKV_FMA(h) if constexpr (HB > h) a##h = _mm256_fmadd_ps(_mm256_broadcast_ss(qs + h * d + j), c, a##h);
        PKV_FOR_HEADS(PKV_FMA)
#undef PKV_FMA
    }
#define PKV_STORE(h) if constexpr (HB > h) _mm256_storeu_ps(scores + h * stride, a##h);
    PKV_FOR_HEADS(PKV_STORE)
#undef PKV_STORE
}

/// 16 channels x HB (<= 4) heads of accumulate_rows, accumulators in registers, tokens in order;
/// Wide = false does 8 channels.
template <int HB, bool Wide, int Bits>
PKV_AVX2 inline void accumulate_block(const std::uint32_t* codes, int row_words, int tokens, int j, const float* w, int w_stride,
                                      float* o, int o_stride) {
    static_assert(HB <= 4);
    const code_lanes<Bits> lanes0(j), lanes1(j + 8);
    __m256 a0, a1, a2, a3, b0, b1, b2, b3;
#define PKV_LOAD(h)                                                           \
    if constexpr (HB > h) {                                                   \
        a##h = _mm256_loadu_ps(o + h * o_stride);                             \
        if constexpr (Wide) b##h = _mm256_loadu_ps(o + h * o_stride + 8);     \
    }
    PKV_LOAD(0) PKV_LOAD(1) PKV_LOAD(2) PKV_LOAD(3)
#undef PKV_LOAD
    for (int t = 0; t < tokens; ++t) {
        const std::uint32_t* row = codes + t * row_words;
        const __m256 c0 = lanes0(row);
        __m256 c1 = c0;
        if constexpr (Wide) c1 = lanes1(row);
#define PKV_FMA(h)                                                            \
    if constexpr (HB > h) {                                                   \
        const __m256 x = _mm256_broadcast_ss(w + h * w_stride + t);           \
        a##h = _mm256_fmadd_ps(x, c0, a##h);                                  \
        if constexpr (Wide) b##h = _mm256_fmadd_ps(x, c1, b##h);              \
    }
        PKV_FMA(0) PKV_FMA(1) PKV_FMA(2) PKV_FMA(3)
#undef PKV_FMA
    }
#define PKV_STORE(h)                                                          \
    if constexpr (HB > h) {                                                   \
        _mm256_storeu_ps(o + h * o_stride, a##h);                             \
        if constexpr (Wide) _mm256_storeu_ps(o + h * o_stride + 8, b##h);     \
    }
    PKV_STORE(0) PKV_STORE(1) PKV_STORE(2) PKV_STORE(3)
#undef PKV_STORE
}
#undef PKV_FOR_HEADS

} // namespace detail

// table[index[0..7]] (byte indices).
PKV_AVX2 inline __m256 gather8(const float* table, const std::uint8_t* index) {
    return _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(index))), 4);
}

struct avx2_ops {
    // helpers live in detail:: so the struct stays the list of primitives

    PKV_AVX2 static void channel_scores(const std::uint32_t* codes, int row_words, int first, int n, int bits, int d,
                                        const float* qs, int heads, float* scores, int stride) {
        if (!detail::vector_codes(bits, first, n)) return core::scalar_ops::channel_scores(codes, row_words, first, n, bits, d, qs, heads, scores, stride);
        for (int h0 = 0; h0 < heads; h0 += 8) {
            const int hb = heads - h0 < 8 ? heads - h0 : 8;
            for (int t = 0; t < n; t += 8)
                detail::dispatch_heads<8>(hb, [&]<int HB>() {
                    detail::dispatch_bits(bits, [&]<int B>() {
                        detail::channel_scores_block<HB, B>(codes, row_words, first + t, d, qs + h0 * d, scores + h0 * stride + t, stride);
                    });
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
                detail::dispatch_heads<4>(hb, [&]<int HB>() {
                    detail::dispatch_bits(bits, [&]<int B>() {
                        detail::accumulate_block<HB, true, B>(codes, row_words, tokens, j0 + j, w + h0 * w_stride, w_stride, o + h0 * o_stride + j, o_stride);
                    });
                });
            if (j < n)
                detail::dispatch_heads<4>(hb, [&]<int HB>() {
                    detail::dispatch_bits(bits, [&]<int B>() {
                        detail::accumulate_block<HB, false, B>(codes, row_words, tokens, j0 + j, w + h0 * w_stride, w_stride, o + h0 * o_stride + j, o_stride);
                    });
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

    PKV_AVX2 static void add_scaled(float a, const float* x, float* y, int n) {
        const __m256 va = _mm256_set1_ps(a);
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
        core::scalar_ops::add_scaled(a, x + i, y + i, n - i);
    }

    PKV_AVX2 static void add_gathered(float* s, const float* table, const std::uint8_t* index, int n) {
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_add_ps(_mm256_loadu_ps(s + i), gather8(table, index + i)));
        core::scalar_ops::add_gathered(s + i, table, index + i, n - i);
    }

    PKV_AVX2 static void add_term_and_gathered(float* s, float z, const float* table, const std::uint8_t* index, int n) {
        const __m256 vz = _mm256_set1_ps(z);
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(s + i, _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(s + i), vz), gather8(table, index + i)));
        core::scalar_ops::add_term_and_gathered(s + i, z, table, index + i, n - i);
    }

    PKV_AVX2 static float exponentiate(float* s, int n, float m) {
        const __m256 vm = _mm256_set1_ps(m);
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, exp_fixed_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm)));
        for (; i < n; ++i) s[i] = core::exp_fixed(s[i] - m);
        return lane_reduce_avx2<false>(s, nullptr, n);
    }

    PKV_AVX2 static float dot(const float* a, const float* b, int n) { return lane_reduce_avx2<true>(a, b, n); }

    PKV_AVX2 static float max(const float* s, int n) {  // order-free; +0 for a zero maximum, as the definition
        if (n < 8) return core::scalar_ops::max(s, n);
        __m256 v = _mm256_loadu_ps(s);
        int i = 8;
        for (; i + 8 <= n; i += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(s + i));
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, v);
        float m = lanes[0];
        for (int l = 1; l < 8; ++l) m = lanes[l] > m ? lanes[l] : m;
        for (; i < n; ++i) m = s[i] > m ? s[i] : m;
        return m + 0.0f;
    }
};

} // namespace patternkv::simd
#endif
