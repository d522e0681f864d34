#pragma once
// avx2_ops (attention_ops_avx2.hpp) with its per-element primitives on 512-bit vectors (AVX-512
// F, BW, VL, VNNI, VBMI): the byte path of code_sums, 3-bit codes included (exact integer sums, so
// the same bits in a quarter of the instructions); exponentiate, quantize, finish_scores, multiply,
// dot and max (the same per-lane operations, the same lane order). Only used when
// simd::have_avx512() is true.
#if defined(__x86_64__)
#include <immintrin.h>

#include "attention_ops_avx2.hpp"
#include "avx512_target.hpp"
#include "exp_avx512.hpp"

PKV_AVX512_WARNINGS_OFF

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
        0, 16, 32, 48, 1, 17, 33, 49, 2,  18, 34, 50, 3,  19, 35, 51, 4,  20, 36, 52, 5,  21, 37, 53, 6,  22, 38, 54, 7,  23, 39, 55,
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
            // accumulator i: codes at shift Bits * (i / HB), head h0 + i % HB (one shift's codes serve every head, then die)
#define PKV_DOT(i)                                                                                                             \
    if constexpr (i < S * HB) {                                                                                                \
        const __m512i xs = _mm512_srli_epi32(x, Bits * (i / HB));                                                              \
        if constexpr (Narrow) {                                                                                                \
            std::int32_t q;                                                                                                    \
            __builtin_memcpy(&q, mu.bytes + (h0 + i % HB) * rows + r, 4);                                                      \
            acc##i = _mm512_dpbusd_epi32(acc##i, _mm512_and_si512(xs, mask8), _mm512_set1_epi32(q));                           \
        } else {                                                                                                               \
            const std::int32_t* q = mu.pairs + (h0 + i % HB) * rows + r / 2;                                                   \
            acc##i = _mm512_dpwssd_epi32(acc##i, _mm512_and_si512(xs, mask16), _mm512_set1_epi32(q[0]));                       \
            acc##i = _mm512_dpwssd_epi32(acc##i, _mm512_and_si512(_mm512_srli_epi32(xs, 8), mask16), _mm512_set1_epi32(q[1])); \
        }                                                                                                                      \
    }
            PKV_FOR_ACC16(PKV_DOT)
#undef PKV_DOT
        }
        const __m512i v[16] = {acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, acc8, acc9, acc10, acc11, acc12, acc13, acc14, acc15};
        for (int hh = 0; hh < HB; ++hh) {
            __m512i x[S];
            for (int k = 0; k < S; ++k) x[k] = v[k * HB + hh];
            store_slice512<S>(x, mu.bias[h0 + hh], out + hh * out_stride + p0);
        }
    }
}
#undef PKV_FOR_ACC16

/// Codes first .. first + n - 1 of `rows` packed 3-bit rows (ten codes per word), one byte each:
/// out[r * n + p]. Per 64 codes of a row: the (at most 8) words they span are loaded, each qword
/// of the result gets the two words its 8 codes lie in (vpermd), and vpmultishiftqb takes each
/// code's bits to its own byte.
PKV_AVX512 inline void expand_codes3(const std::uint32_t* codes, int row_words, int rows, int first, int n, std::uint8_t* out) {
    constexpr int cpw = core::codes_per_word(3);
    for (int p0 = 0; p0 < n; p0 += 64) {
        const int count = n - p0 < 64 ? n - p0 : 64, pos0 = first + p0, w0 = pos0 / cpw;
        const int words = (pos0 + count - 1) / cpw - w0 + 1;  // at most 8
        alignas(64) std::int32_t pick[16];                    // qword q: words w0 + wq and w0 + wq + 1 (at most 8: a zero lane)
        alignas(64) std::uint8_t offset[64];                  // code 8 q + j: its bit offset in qword q
        for (int q = 0; q < 8; ++q) {
            const int wq = (pos0 + 8 * q) / cpw - w0;
            pick[2 * q] = wq;
            pick[2 * q + 1] = wq + 1;
            for (int j = 0; j < 8; ++j) {
                const int pos = pos0 + 8 * q + j;
                offset[8 * q + j] = static_cast<std::uint8_t>(3 * (pos % cpw) + 32 * (pos / cpw - w0 - wq));
            }
        }
        const __m512i vpick = _mm512_load_si512(pick), voffset = _mm512_load_si512(offset), seven = _mm512_set1_epi8(7);
        const auto load_mask = static_cast<__mmask16>((1u << words) - 1u);
        const __mmask64 store_mask = count == 64 ? ~0ull : (1ull << count) - 1ull;
        for (int r = 0; r < rows; ++r) {
            const __m512i w = _mm512_maskz_loadu_epi32(load_mask, codes + static_cast<std::ptrdiff_t>(r) * row_words + w0);
            const __m512i x = _mm512_multishift_epi64_epi8(voffset, _mm512_permutexvar_epi32(vpick, w));
            _mm512_mask_storeu_epi8(out + r * n + p0, store_mask, _mm512_and_si512(x, seven));
        }
    }
}

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

}  // namespace detail

/// core::fold_lanes of the 32 lanes held as two vectors (lanes 0-15 in a, 16-31 in b).
PKV_AVX512 inline float fold_lanes_avx512(__m512 a, __m512 b) {
    const __m512 w16 = _mm512_add_ps(a, b);
    return fold8_avx2(_mm256_add_ps(_mm512_castps512_ps256(w16), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w16), 1))));
}

/// core::lane_sum (Mul = false) or core::lane_dot (Mul = true, mul then add) with the 32 lanes
/// held as two vectors.
template <bool Mul>
PKV_AVX512 inline float lane_reduce_avx512(const float* x, const float* y, int n) {
    __m512 a = _mm512_setzero_ps(), b = a;
    const auto term = [&](int j) PKV_AVX512 {
        const __m512 v = _mm512_loadu_ps(x + j);
        if constexpr (Mul)
            return _mm512_mul_ps(v, _mm512_loadu_ps(y + j));
        else
            return v;
    };
    int j0 = 0;
    for (; j0 + 32 <= n; j0 += 32) {
        a = _mm512_add_ps(a, term(j0));
        b = _mm512_add_ps(b, term(j0 + 16));
    }
    if (j0 == n) return fold_lanes_avx512(a, b);
    alignas(64) float lanes[core::reduction_lanes];
    _mm512_store_ps(lanes, a);
    _mm512_store_ps(lanes + 16, b);
    return fold_partial(lanes, n - j0, [&](int l) { return Mul ? x[j0 + l] * y[j0 + l] : x[j0 + l]; });
}

/// avx2_ops with the primitives that run per element of a split on 512-bit vectors (identical bits).
struct avx512_ops : avx2_ops {
    static constexpr int expanded_bytes = 32768;  ///< 3-bit codes expanded on the stack: a 128 x 128 page and more

    static void code_sums(const std::uint32_t* codes, int row_words, int rows, int bits, int first, int n, const float* m, int m_stride,
                          int heads, int multiplier_max, float* out, int out_stride) {
        const bool narrow = multiplier_max <= 127;
        if (rows > core::max_page_tokens || multiplier_max > 32767)
            return avx2_ops::code_sums(codes, row_words, rows, bits, first, n, m, m_stride, heads, multiplier_max, out, out_stride);
        if (bits == 3 && !narrow && rows % 4 == 0 && n % 16 == 0 && rows * n <= expanded_bytes) {
            // 3-bit codes straddle bytes: expanded to one byte each, then the 8-bit path (int16 multipliers)
            alignas(64) std::uint8_t expanded[expanded_bytes];
            detail::expand_codes3(codes, row_words, rows, first, n, expanded);
            return detail::code_sums_on_bytes<detail::slices_kernel>(reinterpret_cast<const std::uint32_t*>(expanded), n / 4, rows, 8, 0, n,
                                                                     m, m_stride, heads, false, out, out_stride, 3);
        }
        if (!detail::slice_codes(bits, narrow, rows, first, n))
            return avx2_ops::code_sums(codes, row_words, rows, bits, first, n, m, m_stride, heads, multiplier_max, out, out_stride);
        detail::code_sums_on_bytes<detail::slices_kernel>(codes, row_words, rows, bits, first, n, m, m_stride, heads, narrow, out,
                                                          out_stride);
    }

    PKV_AVX512 static float exponentiate(float* s, int n, float m) {  // exp and the lane sum in one pass
        const __m512 vm = _mm512_set1_ps(m);
        __m512 a = _mm512_setzero_ps(), b = a;
        int i = 0;
        for (; i + 32 <= n; i += 32) {
            const __m512 x = exp_fixed_avx512(_mm512_sub_ps(_mm512_loadu_ps(s + i), vm));
            const __m512 y = exp_fixed_avx512(_mm512_sub_ps(_mm512_loadu_ps(s + i + 16), vm));
            _mm512_storeu_ps(s + i, x);
            _mm512_storeu_ps(s + i + 16, y);
            a = _mm512_add_ps(a, x);
            b = _mm512_add_ps(b, y);
        }
        if (i == n) return fold_lanes_avx512(a, b);
        alignas(64) float lanes[core::reduction_lanes];
        _mm512_store_ps(lanes, a);
        _mm512_store_ps(lanes + 16, b);
        return fold_partial(lanes, n - i, [&](int l) { return s[i + l] = core::exp_fixed(s[i + l] - m); });
    }

    PKV_AVX512 static float quantize(float* a, int n, int qmax) {  // core::quantize_multipliers, 16 lanes
        __m512 vmax = _mm512_setzero_ps();
        int i = 0;
        for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(a + i)), vmax);  // a NaN lane keeps vmax
        return round_multipliers(a, n, qmax, core::max_magnitude(a + i, n - i, _mm512_reduce_max_ps(vmax)));
    }

    /// core::quantize_products fused: the products of four heads at a time and their largest
    /// magnitudes in one pass (four independent max chains; a tail of fewer than 16 as quantize
    /// takes it), then each head's rounding.
    PKV_AVX512 static void quantize_products(const float* x, int x_stride, const float* y, int n, int heads, int qmax, float* m,
                                             float* half_steps) {
        for (int h0 = 0; h0 < heads; h0 += 4) {
            const int hb = heads - h0 < 4 ? heads - h0 : 4;
            __m512 vmax[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            int i = 0;
            for (; i + 16 <= n; i += 16) {
                const __m512 yv = _mm512_loadu_ps(y + i);
                for (int hh = 0; hh < hb; ++hh) {
                    const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(x + (h0 + hh) * x_stride + i), yv);
                    _mm512_storeu_ps(m + (h0 + hh) * n + i, p);
                    vmax[hh] = _mm512_max_ps(_mm512_abs_ps(p), vmax[hh]);  // a NaN lane keeps vmax
                }
            }
            for (int hh = 0; hh < hb; ++hh) {
                float* mh = m + (h0 + hh) * n;
                multiply(x + (h0 + hh) * x_stride + i, y + i, n - i, mh + i);
                const float amax = core::max_magnitude(mh + i, n - i, _mm512_reduce_max_ps(vmax[hh]));
                half_steps[h0 + hh] = 0.5f * round_multipliers(mh, n, qmax, amax);
            }
        }
    }

    PKV_AVX512 static void finish_scores(float* s, int n, float half_step, float z, const float* table, int table_size,
                                         const std::uint8_t* index) {
        const __m512 hs = _mm512_set1_ps(half_step), vz = _mm512_set1_ps(z);
        // up to 16 entries (4-bit indices): the table in one register, looked up by vpermps
        const bool in_register = table != nullptr && table_size <= 16;
        const __m512 entries =
            in_register ? _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << table_size) - 1u), table) : _mm512_setzero_ps();
        int i = 0;
        for (; i + 16 <= n; i += 16) {
            __m512 y = _mm512_add_ps(_mm512_mul_ps(hs, _mm512_loadu_ps(s + i)), vz);
            if (table != nullptr) {
                const __m512i at = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(index + i)));
                y = _mm512_add_ps(y, in_register ? _mm512_permutexvar_ps(at, entries) : _mm512_i32gather_ps(at, table, 4));
            }
            _mm512_storeu_ps(s + i, y);
        }
        avx2_ops::finish_scores(s + i, n - i, half_step, z, table, table_size, table != nullptr ? index + i : index);
    }

    PKV_AVX512 static void multiply(const float* a, const float* b, int n, float* out) {
        int i = 0;
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
        avx2_ops::multiply(a + i, b + i, n - i, out + i);
    }

    PKV_AVX512 static float dot(const float* a, const float* b, int n) { return lane_reduce_avx512<true>(a, b, n); }

    PKV_AVX512 static float max(const float* s, int n) {  // order-free; +0 for a zero maximum, as the definition
        if (n < 16) return avx2_ops::max(s, n);
        __m512 v = _mm512_loadu_ps(s);
        int i = 16;
        for (; i + 16 <= n; i += 16) v = _mm512_max_ps(v, _mm512_loadu_ps(s + i));
        float m = _mm512_reduce_max_ps(v);
        for (; i < n; ++i) m = s[i] > m ? s[i] : m;
        return m + 0.0f;
    }

private:
    /// The rounding half of core::quantize_multipliers, given amax = max |a[i]| (NaN passed over).
    PKV_AVX512 static float round_multipliers(float* a, int n, int qmax, float amax) {
        const core::multiplier_rounding round = core::rounding_for(amax, qmax);
        if (round.zero) return core::quantize_multipliers(a, n, qmax);
        const float r = round.r, top = round.top;
        const __m512 vr = _mm512_set1_ps(r), vtop = _mm512_set1_ps(top), vbot = _mm512_set1_ps(-top), magic = _mm512_set1_ps(12582912.0f);
        int i = 0;
        for (; i + 16 <= n; i += 16) {
            // min(top, x) and max(-top, x) return x when it is NaN (the second operand), then NaN -> +0
            __m512 x = _mm512_max_ps(vbot, _mm512_min_ps(vtop, _mm512_mul_ps(_mm512_loadu_ps(a + i), vr)));
            x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, x, _CMP_ORD_Q), x);
            _mm512_storeu_ps(a + i, _mm512_sub_ps(_mm512_add_ps(x, magic), magic));
        }
        for (; i < n; ++i) a[i] = round(a[i]);
        return round.step;
    }
};
static_assert(core::AttentionOps<avx512_ops>);

}  // namespace patternkv::simd

PKV_AVX512_WARNINGS_ON
#endif
