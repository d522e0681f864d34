#pragma once
// The byte path of code_sums (attention_ops_avx2.hpp) on 512-bit vectors with AVX-512 VNNI and
// VBMI: same sums (exact integers, so the same bits), a quarter of the instructions. avx512_ops is
// avx2_ops with this code_sums; only used when simd::have_avx512() is true.
#if defined(__x86_64__)
#include <immintrin.h>

#include "attention_ops_avx2.hpp"

#define PKV_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_* as the unused merge source, which
// -Wmaybe-uninitialized reports at every use (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace patternkv::simd {
namespace detail {

/// Whether the 512-bit byte path applies: the AVX2 byte path's conditions, and positions in whole
/// 16-byte slices of a row.
inline bool slice_codes(int bits, bool narrow, int rows, int first, int n) {
    return byte_codes(bits, narrow, rows, first, n) && (n * bits) % 128 == 0;
}

/// Lane k (of 16): byte k of the 16-byte slices at p, p + stride, p + 2 stride, p + 3 stride (four
/// rows), row i in byte i: one vpermb gathers the four rows loaded into the 128-bit quarters.
PKV_AVX512 inline __m512i quad_slices(const std::uint8_t* p, int stride) {
    const auto load = [](const std::uint8_t* q) PKV_AVX512 { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(q)); };
    __m512i x = _mm512_castsi128_si512(load(p));
    x = _mm512_inserti32x4(x, load(p + stride), 1);
    x = _mm512_inserti32x4(x, load(p + 2 * stride), 2);
    x = _mm512_inserti32x4(x, load(p + 3 * stride), 3);
    alignas(64) static constexpr std::uint8_t order[64] = {
        0, 16, 32, 48, 1, 17, 33, 49, 2, 18, 34, 50, 3, 19, 35, 51, 4, 20, 36, 52, 5, 21, 37, 53, 6, 22, 38, 54, 7, 23, 39, 55,
        8, 24, 40, 56, 9, 25, 41, 57, 10, 26, 42, 58, 11, 27, 43, 59, 12, 28, 44, 60, 13, 29, 45, 61, 14, 30, 46, 62, 15, 31, 47, 63};
    return _mm512_permutexvar_epi8(_mm512_load_si512(order), x);
}

/// Lanes 0-7 (Hi: 8-15) of a and b interleaved: a0 b0 a1 b1 ... (32-bit lanes).
template <bool Hi>
PKV_AVX512 inline __m512i interleave(__m512i a, __m512i b) {
    const __m512i idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    return _mm512_permutex2var_epi32(a, Hi ? _mm512_add_epi32(idx, _mm512_set1_epi32(8)) : idx, b);
}

/// Stores 2 S - bias as floats at o[16 i .. 16 i + 15] for the 16 S sums of one slice of one head,
/// in position order: x[s] lane k holds position k S + s.
template <int S>
PKV_AVX512 inline void store_slice512(const __m512i* x, std::int32_t bias, float* o) {
    const auto put = [&](int i, __m512i v) PKV_AVX512 {
        _mm512_storeu_ps(o + 16 * i, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_slli_epi32(v, 1), _mm512_set1_epi32(bias))));
    };
    if constexpr (S == 1) {
        put(0, x[0]);
    } else if constexpr (S == 2) {
        put(0, interleave<false>(x[0], x[1]));
        put(1, interleave<true>(x[0], x[1]));
    } else {  // S == 4: (x0, x2) and (x1, x3) interleaved, then those two: x0 x1 x2 x3 per lane
        const __m512i a = interleave<false>(x[0], x[2]), b = interleave<true>(x[0], x[2]);
        const __m512i c = interleave<false>(x[1], x[3]), d = interleave<true>(x[1], x[3]);
        put(0, interleave<false>(a, c));
        put(1, interleave<true>(a, c));
        put(2, interleave<false>(b, d));
        put(3, interleave<true>(b, d));
    }
}

#define PKV_FOR_ACC16(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

/// code_sums_bytes on 16-byte slices (16 S positions, S = 8 / Bits) for HB heads, HB * S <= 16
/// accumulators: four rows interleaved per 32-bit lane as in the AVX2 path; narrow multipliers
/// go through vpdpbusd (code bytes times int8, four rows per lane), wide ones through two vpdpwssd
/// (rows r, r + 2 and r + 1, r + 3 as 16-bit halves).
template <int Bits, int HB, bool Narrow>
PKV_AVX512 inline void code_sums_slices(const std::uint32_t* codes, int row_words, int rows, int first, int n, const multipliers& mu,
                                        int h0, float* out, int out_stride) {
    constexpr int S = 8 / Bits, P = 16 * S;
    static_assert(S * HB <= 16);
    const int row_bytes = 4 * row_words;
    const auto* base = reinterpret_cast<const std::uint8_t*>(codes) + first * Bits / 8;
    const __m512i mask8 = _mm512_set1_epi8(static_cast<char>((1 << Bits) - 1)), mask16 = _mm512_set1_epi16((1 << Bits) - 1);
    for (int p0 = 0; p0 < n; p0 += P) {
#define PKV_ZERO(i) __m512i acc##i = _mm512_setzero_si512();
        PKV_FOR_ACC16(PKV_ZERO)
#undef PKV_ZERO
        const std::uint8_t* slice = base + p0 * Bits / 8;
        for (int r = 0; r < rows; r += 4) {
            const __m512i x = quad_slices(slice + r * row_bytes, row_bytes);
            // accumulator i: head h0 + i / S, codes at shift Bits * (i % S)
#define PKV_DOT(i)                                                                                                        \
    if constexpr (i < S * HB) {                                                                                           \
        const __m512i xs = _mm512_srli_epi32(x, Bits * (i % S));                                                          \
        if constexpr (Narrow) {                                                                                           \
            std::int32_t q;                                                                                               \
            __builtin_memcpy(&q, mu.bytes + (h0 + i / S) * rows + r, 4);                                                  \
            acc##i = _mm512_dpbusd_epi32(acc##i, _mm512_and_si512(xs, mask8), _mm512_set1_epi32(q));                      \
        } else {                                                                                                          \
            const std::int32_t* q = mu.pairs + (h0 + i / S) * rows + r / 2;                                               \
            acc##i = _mm512_dpwssd_epi32(acc##i, _mm512_and_si512(xs, mask16), _mm512_set1_epi32(q[0]));                  \
            acc##i = _mm512_dpwssd_epi32(acc##i, _mm512_and_si512(_mm512_srli_epi32(xs, 8), mask16), _mm512_set1_epi32(q[1])); \
        }                                                                                                                 \
    }
            PKV_FOR_ACC16(PKV_DOT)
#undef PKV_DOT
        }
        const __m512i v[16] = {acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, acc8, acc9, acc10, acc11, acc12, acc13, acc14, acc15};
        for (int hh = 0; hh < HB; ++hh) store_slice512<S>(v + hh * S, mu.bias[h0 + hh], out + hh * out_stride + p0);
    }
}
#undef PKV_FOR_ACC16

/// code_sums_slices as a byte-path kernel of code_sums_on_bytes: up to max_heads(bits) heads per
/// pass (16 accumulators of 16 positions).
struct slices_kernel {
    static constexpr int max_heads(int bits) { return bits == 2 ? 4 : 8; }
    template <int Bits, int HB, bool Narrow>
    PKV_AVX512 static void run(const std::uint32_t* codes, int row_words, int rows, int first, int n, const multipliers& mu, int h0,
                               float* out, int out_stride) {
        code_sums_slices<Bits, HB, Narrow>(codes, row_words, rows, first, n, mu, h0, out, out_stride);
    }
};

} // namespace detail

/// avx2_ops with the byte path of code_sums on 512-bit vectors (identical bits).
struct avx512_ops : avx2_ops {
    static void code_sums(const std::uint32_t* codes, int row_words, int rows, int bits, int first, int n, const float* m, int m_stride,
                          int heads, int multiplier_max, float* out, int out_stride) {
        const bool narrow = multiplier_max <= 127;
        if (!detail::slice_codes(bits, narrow, rows, first, n) || rows > core::max_page_tokens || multiplier_max > 32767)
            return avx2_ops::code_sums(codes, row_words, rows, bits, first, n, m, m_stride, heads, multiplier_max, out, out_stride);
        detail::code_sums_on_bytes<detail::slices_kernel>(codes, row_words, rows, bits, first, n, m, m_stride, heads, narrow, out, out_stride);
    }
};

} // namespace patternkv::simd

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
