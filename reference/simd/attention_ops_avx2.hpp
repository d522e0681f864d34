#pragma once
// AVX2/FMA/F16C versions of core::scalar_ops (core/attention.hpp): identical bits. The integer code
// sums reduce in whatever order is fastest (they are exact); float steps keep the scalar order.
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
    int word;            ///< word (2, 3, 4 bits) or byte (8 bits) offset of the first code in a row
    __m256i shift;       ///< per-lane shift inside its word (2, 3, 4 bits)
    __m256i second;      ///< 3 bits: all-ones in the lanes whose code lies in word + 1
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
                const __m256i pos =
                    _mm256_sub_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(base)), _mm256_and_si256(second, _mm256_set1_epi32(cpw)));
                shift = _mm256_mullo_epi32(pos, _mm256_set1_epi32(Bits));
            } else {
                shift = _mm256_mullo_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32(base)), _mm256_set1_epi32(Bits));
            }
        }
    }
    PKV_AVX2 __m256i operator()(const std::uint32_t* row) const {
        if constexpr (Bits == 8) {
            return _mm256_cvtepu8_epi32(
                _mm_loadl_epi64(reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint8_t*>(row) + word)));
        } else {
            __m256i w = _mm256_set1_epi32(static_cast<int>(row[word]));
            if (Bits == 3 && spans) w = _mm256_blendv_epi8(w, _mm256_set1_epi32(static_cast<int>(row[word + 1])), second);
            return _mm256_and_si256(_mm256_srlv_epi32(w, shift), _mm256_set1_epi32((1 << Bits) - 1));
        }
    }
};

/// Calls f.template operator()<B>() for B = bits in {2, 3, 4, 8}.
template <class F>
PKV_AVX2 inline void dispatch_bits(int bits, F&& f) {
    switch (bits) {
        case 2:
            return f.template operator()<2>();
        case 3:
            return f.template operator()<3>();
        case 4:
            return f.template operator()<4>();
        default:
            return f.template operator()<8>();
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

// The accumulators below are named registers, not arrays: GCC keeps an array of __m256i in memory
// and stores it back every iteration, which serializes the chains through store forwarding.
#define PKV_FOR_ACC(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/// The integer multipliers of up to 8 heads, prepared for the kernels below from integer-valued
/// floats m[h * m_stride + r]: bytes (int8, for the byte path with |m| <= 127) or int16 pairs
/// (rows r, r + 2 and r + 1, r + 3 of each quad for the byte path; r, r + 1 for the pair path), and
/// each head's sum times 2^bits - 1, which centres the codes. bytes and pairs point to storage for
/// 8 * rows entries (multiplier_storage).
struct multipliers {
    std::int8_t* bytes;
    std::int32_t* pairs;
    std::int32_t bias[8];

    PKV_AVX2 void prepare(const float* m, int m_stride, int heads, int rows, int bits, bool narrow, bool quads) {
        // int16 order of a quad's pairs: rows r, r + 2, r + 1, r + 3
        const __m256i quad_order =
            _mm256_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15, 0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
        for (int h = 0; h < heads; ++h) {
            const float* src = m + h * m_stride;
            __m256i vsum = _mm256_setzero_si256();
            int r = 0;
            for (; r + 16 <= rows; r += 16) {
                const __m256i a = _mm256_cvtps_epi32(_mm256_loadu_ps(src + r)), b = _mm256_cvtps_epi32(_mm256_loadu_ps(src + r + 8));
                vsum = _mm256_add_epi32(vsum, _mm256_add_epi32(a, b));
                const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);  // rows r .. r + 15 as int16
                if (narrow) {
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes + h * rows + r),
                                     _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
                } else {
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pairs + h * rows + r / 2),
                                        quads ? _mm256_shuffle_epi8(w, quad_order) : w);
                }
            }
            alignas(32) std::int32_t lanes[8];
            _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vsum);
            std::int32_t sum = 0;
            for (int l = 0; l < 8; ++l) sum += lanes[l];
            const int done = r;
            for (; r < rows; ++r) sum += static_cast<std::int32_t>(src[r]);
            bias[h] = static_cast<std::int32_t>(static_cast<std::uint32_t>(sum) * core::code_mask(bits));
            if (narrow) {
                for (r = done; r < rows; ++r) bytes[h * rows + r] = static_cast<std::int8_t>(src[r]);
                continue;
            }
            const auto at = [&](int i) { return i < rows ? static_cast<std::uint32_t>(static_cast<std::int32_t>(src[i])) : 0u; };
            const auto pair = [](std::uint32_t lo, std::uint32_t hi) { return static_cast<std::int32_t>((lo & 0xFFFFu) | (hi << 16)); };
            std::int32_t* dst = pairs + h * rows;
            if (quads) {
                for (r = done; r < rows; r += 4) {
                    dst[r / 2] = pair(at(r), at(r + 2));
                    dst[r / 2 + 1] = pair(at(r + 1), at(r + 3));
                }
            } else {
                for (r = done; r < rows; r += 2) dst[r / 2] = pair(at(r), at(r + 1));
            }
        }
    }
};

/// Lane k: bytes k of the 8-byte slices p0..p3 (four rows), i.e. one position's codes of four rows.
PKV_AVX2 inline __m256i quad_bytes(const std::uint8_t* p0, const std::uint8_t* p1, const std::uint8_t* p2, const std::uint8_t* p3) {
    const auto load = [](const std::uint8_t* p) PKV_AVX2 { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); };
    const __m128i ab = _mm_unpacklo_epi8(load(p0), load(p1)), cd = _mm_unpacklo_epi8(load(p2), load(p3));
    return _mm256_set_m128i(_mm_unpackhi_epi16(ab, cd), _mm_unpacklo_epi16(ab, cd));
}

/// Centred sums 2 S - bias (int32, wrapping: the result fits) as floats.
PKV_AVX2 inline __m256 centred(__m256i sum, std::int32_t bias) {
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_slli_epi32(sum, 1), _mm256_set1_epi32(bias)));
}

/// Stores the 8 * S sums of one slice, in position order: vector i (head i / S, shift s = i % S)
/// lane k holds position k * S + s.
template <int S, int HB>
PKV_AVX2 inline void store_slice(const __m256i (&v)[8], const std::int32_t* bias, float* out, int out_stride) {
    for (int hh = 0; hh < HB; ++hh) {
        float* o = out + hh * out_stride;
        const __m256i* x = v + hh * S;
        const std::int32_t b = bias[hh];
        if constexpr (S == 1) {
            _mm256_storeu_ps(o, centred(x[0], b));
        } else if constexpr (S == 2) {  // lanes: x0 = p0 p2 p4 ..., x1 = p1 p3 ...
            const __m256i lo = _mm256_unpacklo_epi32(x[0], x[1]), hi = _mm256_unpackhi_epi32(x[0], x[1]);  // p0-3|p8-11, p4-7|p12-15
            _mm256_storeu_ps(o, centred(_mm256_permute2x128_si256(lo, hi, 0x20), b));
            _mm256_storeu_ps(o + 8, centred(_mm256_permute2x128_si256(lo, hi, 0x31), b));
        } else {  // S == 4: x_s lane k = position 4 k + s
            const __m256i l01 = _mm256_unpacklo_epi32(x[0], x[1]), l23 = _mm256_unpacklo_epi32(x[2], x[3]);
            const __m256i h01 = _mm256_unpackhi_epi32(x[0], x[1]), h23 = _mm256_unpackhi_epi32(x[2], x[3]);
            const __m256i a = _mm256_unpacklo_epi64(l01, l23), bb = _mm256_unpackhi_epi64(l01, l23);  // p0-3|p16-19, p4-7|p20-23
            const __m256i c = _mm256_unpacklo_epi64(h01, h23), d = _mm256_unpackhi_epi64(h01, h23);   // p8-11|p24-27, p12-15|p28-31
            _mm256_storeu_ps(o, centred(_mm256_permute2x128_si256(a, bb, 0x20), b));
            _mm256_storeu_ps(o + 8, centred(_mm256_permute2x128_si256(c, d, 0x20), b));
            _mm256_storeu_ps(o + 16, centred(_mm256_permute2x128_si256(a, bb, 0x31), b));
            _mm256_storeu_ps(o + 24, centred(_mm256_permute2x128_si256(c, d, 0x31), b));
        }
    }
}

/// Whether code_sums can take the byte path: whole codes per byte (2 and 4 bits; 8 bits with int16
/// multipliers, since unsigned bytes times int8 could saturate maddubs' int16 pairs), rows in
/// fours, positions in whole 8-byte slices.
inline bool byte_codes(int bits, bool narrow, int rows, int first, int n) {
    return (bits == 2 || bits == 4 || (bits == 8 && !narrow)) && rows % 4 == 0 && (first * bits) % 8 == 0 && (n * bits) % 64 == 0;
}

/// code_sums on the byte path for HB heads (HB * S <= 8 accumulators, S = 8 / Bits codes per
/// byte): per 8-byte slice of the rows (8 S positions), four rows at a time are interleaved so that
/// each 32-bit lane holds one byte of each row; shifting and masking leaves one position's four
/// codes per lane. Narrow (int8 multipliers): maddubs multiplies the four code bytes by the four
/// rows' multiplier bytes (no saturation: codes < 16, |m| <= 127). Wide (int16): the codes of rows
/// r, r + 2 and r + 1, r + 3 are split into 16-bit halves for madd.
template <int Bits, int HB, bool Narrow>
PKV_AVX2 inline void code_sums_bytes(const std::uint32_t* codes, int row_words, int rows, int first, int n, const multipliers& mu, int h0,
                                     float* out, int out_stride) {
    constexpr int S = 8 / Bits, P = 8 * S;
    const int row_bytes = 4 * row_words;
    const auto* base = reinterpret_cast<const std::uint8_t*>(codes) + first * Bits / 8;
    const __m256i mask8 = _mm256_set1_epi8(static_cast<char>((1 << Bits) - 1)), mask16 = _mm256_set1_epi16((1 << Bits) - 1);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int p0 = 0; p0 < n; p0 += P) {
        __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0, acc6 = acc0, acc7 = acc0;
        const std::uint8_t* slice = base + p0 * Bits / 8;
        for (int r = 0; r < rows; r += 4) {
            const std::uint8_t* row = slice + r * row_bytes;
            const __m256i x = quad_bytes(row, row + row_bytes, row + 2 * row_bytes, row + 3 * row_bytes);
            // accumulator i: head h0 + i / S, codes at shift Bits * (i % S) (equal shifts are computed once)
#define PKV_DOT(i)                                                                                                                        \
    if constexpr (i < S * HB) {                                                                                                           \
        const __m256i xs = _mm256_srli_epi32(x, Bits * (i % S));                                                                          \
        if constexpr (Narrow) {                                                                                                           \
            std::int32_t q;                                                                                                               \
            __builtin_memcpy(&q, mu.bytes + (h0 + i / S) * rows + r, 4);                                                                  \
            acc##i = _mm256_add_epi32(acc##i,                                                                                             \
                                      _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(xs, mask8), _mm256_set1_epi32(q)), ones));  \
        } else {                                                                                                                          \
            const std::int32_t* q = mu.pairs + (h0 + i / S) * rows + r / 2;                                                               \
            acc##i = _mm256_add_epi32(acc##i, _mm256_madd_epi16(_mm256_and_si256(xs, mask16), _mm256_set1_epi32(q[0])));                  \
            acc##i =                                                                                                                      \
                _mm256_add_epi32(acc##i, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(xs, 8), mask16), _mm256_set1_epi32(q[1]))); \
        }                                                                                                                                 \
    }
            PKV_FOR_ACC(PKV_DOT)
#undef PKV_DOT
        }
        const __m256i v[8] = {acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7};
        store_slice<S, HB>(v, mu.bias + h0, out + p0, out_stride);
    }
}

/// code_sums on 8 positions (first % 8 == 0) for HB <= 8 heads with int16 multiplier pairs: codes
/// of rows r and r + 1 share a 32-bit lane (low and high half), madd multiplies them by the two
/// rows' multipliers and adds. Any width, 3 bits included.
template <int Bits, int HB>
PKV_AVX2 inline void code_sums_pairs(const std::uint32_t* codes, int row_words, int rows, int first, const multipliers& mu, int h0,
                                     float* out, int out_stride) {
    const code_lanes<Bits> lanes(first);
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0, acc6 = acc0, acc7 = acc0;
    for (int r = 0; r < rows; r += 2) {
        __m256i c = lanes(codes + r * row_words);
        if (r + 1 < rows) c = _mm256_or_si256(c, _mm256_slli_epi32(lanes(codes + (r + 1) * row_words), 16));
#define PKV_MADD(i) \
    if constexpr (i < HB) acc##i = _mm256_add_epi32(acc##i, _mm256_madd_epi16(c, _mm256_set1_epi32(mu.pairs[(h0 + i) * rows + r / 2])));
        PKV_FOR_ACC(PKV_MADD)
#undef PKV_MADD
    }
#define PKV_STORE(i) \
    if constexpr (i < HB) _mm256_storeu_ps(out + i * out_stride, centred(acc##i, mu.bias[h0 + i]));
    PKV_FOR_ACC(PKV_STORE)
#undef PKV_STORE
}
#undef PKV_FOR_ACC

/// Room for the multipliers of 8 heads over Rows rows.
template <int Rows>
struct multiplier_storage {
    alignas(32) std::int8_t bytes[8 * Rows];
    alignas(32) std::int32_t pairs[8 * Rows];
};

/// Calls f(multipliers&) with storage for `rows` rows: on the stack up to 256 rows (10 KiB; the
/// common pages), else the calling thread's storage for max_page_tokens rows (160 KiB, too large
/// for a worker's stack frame; a thread_local costs a TLS lookup in a shared library, per call).
template <class F>
inline void with_multipliers(int rows, F&& f) {
    if (rows <= 256) {
        multiplier_storage<256> st;
        multipliers mu{st.bytes, st.pairs, {}};
        return f(mu);
    }
    thread_local multiplier_storage<core::max_page_tokens> st;
    multipliers mu{st.bytes, st.pairs, {}};
    f(mu);
}

/// code_sums_bytes as a byte-path kernel of code_sums_on_bytes: up to max_heads(bits) heads per
/// pass (8 accumulators of 8 positions).
struct bytes_kernel {
    static constexpr int max_heads(int bits) { return bits == 2 ? 2 : bits == 4 ? 4 : 8; }
    template <int Bits, int HB, bool Narrow>
    PKV_AVX2 static void run(const std::uint32_t* codes, int row_words, int rows, int first, int n, const multipliers& mu, int h0,
                             float* out, int out_stride) {
        code_sums_bytes<Bits, HB, Narrow>(codes, row_words, rows, first, n, mu, h0, out, out_stride);
    }
};

/// code_sums on the byte path (2, 4 or 8 bits; the caller checked the kernel's conditions): the
/// multipliers are prepared for up to 8 heads at a time, then Kernel::run takes passes of up to
/// Kernel::max_heads(bits) heads. code_bits: the width the codes are centred for, when narrower
/// codes were expanded to bytes (bits 8); 0: bits.
template <class Kernel>
PKV_AVX2 inline void code_sums_on_bytes(const std::uint32_t* codes, int row_words, int rows, int bits, int first, int n, const float* m,
                                        int m_stride, int heads, bool narrow, float* out, int out_stride, int code_bits = 0) {
    const int per_pass = Kernel::max_heads(bits);
    with_multipliers(rows, [&](multipliers& mu) {
        for (int h0 = 0; h0 < heads; h0 += 8) {
            const int hb = heads - h0 < 8 ? heads - h0 : 8;
            mu.prepare(m + h0 * m_stride, m_stride, hb, rows, code_bits > 0 ? code_bits : bits, narrow, true);
            for (int hh = 0; hh < hb; hh += per_pass) {
                const int k = hb - hh < per_pass ? hb - hh : per_pass;
                float* oh = out + (h0 + hh) * out_stride;
                const auto heads_of = [&]<int B>() {
                    dispatch_heads<Kernel::max_heads(B)>(k, [&]<int HB>() {
                        if (narrow)
                            Kernel::template run<B, HB, true>(codes, row_words, rows, first, n, mu, hh, oh, out_stride);
                        else
                            Kernel::template run<B, HB, false>(codes, row_words, rows, first, n, mu, hh, oh, out_stride);
                    });
                };
                if (bits == 2)
                    heads_of.template operator()<2>();
                else if (bits == 4)
                    heads_of.template operator()<4>();
                else
                    heads_of.template operator()<8>();
            }
        }
    });
}

}  // namespace detail

// table[index[0..7]] (byte indices).
PKV_AVX2 inline __m256 gather8(const float* table, const std::uint8_t* index) {
    return _mm256_i32gather_ps(table, _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(index))), 4);
}

struct avx2_ops {
    // helpers live in detail:: so the struct stays the list of primitives

    PKV_AVX2 static void code_sums(const std::uint32_t* codes, int row_words, int rows, int bits, int first, int n, const float* m,
                                   int m_stride, int heads, int multiplier_max, float* out, int out_stride) {
        const bool narrow = multiplier_max <= 127, bytes = detail::byte_codes(bits, narrow, rows, first, n);
        if ((!bytes && !detail::vector_codes(bits, first, n)) || rows > core::max_page_tokens || multiplier_max > 32767)
            return core::scalar_ops::code_sums(codes, row_words, rows, bits, first, n, m, m_stride, heads, multiplier_max, out, out_stride);
        if (bytes)
            return detail::code_sums_on_bytes<detail::bytes_kernel>(codes, row_words, rows, bits, first, n, m, m_stride, heads, narrow, out,
                                                                    out_stride);
        detail::with_multipliers(rows, [&](detail::multipliers& mu) {
            for (int h0 = 0; h0 < heads; h0 += 8) {
                const int hb = heads - h0 < 8 ? heads - h0 : 8;
                mu.prepare(m + h0 * m_stride, m_stride, hb, rows, bits, false, false);
                float* o = out + h0 * out_stride;
                for (int p = 0; p < n; p += 8)
                    detail::dispatch_heads<8>(hb, [&]<int HB>() {
                        detail::dispatch_bits(bits, [&]<int B>() {
                            detail::code_sums_pairs<B, HB>(codes, row_words, rows, first + p, mu, 0, o + p, out_stride);
                        });
                    });
            }
        });
    }

    PKV_AVX2 static float quantize(float* a, int n, int qmax) {  // core::quantize_multipliers, 8 lanes
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 vmax = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(a + i)), vmax);  // a NaN lane keeps vmax
        const float amax = core::max_magnitude(a + i, n - i, lanes_extreme_avx2<true>(vmax));
        const core::multiplier_rounding round = core::rounding_for(amax, qmax);
        if (round.zero) return core::quantize_multipliers(a, n, qmax);
        const float r = round.r, top = round.top;
        const __m256 vr = _mm256_set1_ps(r), vtop = _mm256_set1_ps(top), vbot = _mm256_set1_ps(-top), magic = _mm256_set1_ps(12582912.0f);
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(a + i), vr);
            x = _mm256_blendv_ps(x, vtop, _mm256_cmp_ps(x, vtop, _CMP_GT_OQ));
            x = _mm256_blendv_ps(x, vbot, _mm256_cmp_ps(x, vbot, _CMP_LT_OQ));
            x = _mm256_and_ps(x, _mm256_cmp_ps(x, x, _CMP_ORD_Q));  // NaN -> +0
            _mm256_storeu_ps(a + i, _mm256_sub_ps(_mm256_add_ps(x, magic), magic));
        }
        for (; i < n; ++i) a[i] = round(a[i]);
        return round.step;
    }

    PKV_AVX2 static void scales_and_minimums(const std::uint16_t* sm, int n, int stride, float centre, float* scale, float* mnc) {
        int i = 0;
        if (stride == 1) {  // 8 pairs per step: convert, then gather the even (scale) and odd (min) lanes
            const __m256 c = _mm256_set1_ps(centre);
            const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
            for (; i + 8 <= n; i += 8) {
                const __m256 a =
                    _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm + 2 * i))), even);
                const __m256 b =
                    _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sm + 2 * i + 8))), even);
                const __m256 s = _mm256_permute2f128_ps(a, b, 0x20), mn = _mm256_permute2f128_ps(a, b, 0x31);
                _mm256_storeu_ps(scale + i, s);
                _mm256_storeu_ps(mnc + i, _mm256_add_ps(mn, _mm256_mul_ps(c, s)));
            }
        }
        core::scalar_ops::scales_and_minimums(sm + 2 * stride * i, n - i, stride, centre, scale + i, mnc + i);
    }

    PKV_AVX2 static void multiply(const float* a, const float* b, int n, float* out) {
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
        core::scalar_ops::multiply(a + i, b + i, n - i, out + i);
    }

    PKV_AVX2 static void add_code_terms(float* o, const float* sums, int n, float half_step) {
        const __m256 hs = _mm256_set1_ps(half_step);
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_loadu_ps(o + i), _mm256_mul_ps(hs, _mm256_loadu_ps(sums + i))));
        core::scalar_ops::add_code_terms(o + i, sums + i, n - i, half_step);
    }

    PKV_AVX2 static void finish_scores(float* s, int n, float half_step, float z, const float* table, int table_size,
                                       const std::uint8_t* index) {
        const __m256 hs = _mm256_set1_ps(half_step), vz = _mm256_set1_ps(z);
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 y = _mm256_add_ps(_mm256_mul_ps(hs, _mm256_loadu_ps(s + i)), vz);
            if (table != nullptr) y = _mm256_add_ps(y, gather8(table, index + i));
            _mm256_storeu_ps(s + i, y);
        }
        core::scalar_ops::finish_scores(s + i, n - i, half_step, z, table, table_size, table != nullptr ? index + i : index);
    }

    PKV_AVX2 static void halves(const std::uint16_t* x, int n, float* out) {
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
        core::scalar_ops::halves(x + i, n - i, out + i);
    }

    PKV_AVX2 static void fma_accumulate(float a, const float* x, float* y, int n) {
        const __m256 va = _mm256_set1_ps(a);
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
        for (; i < n; ++i) y[i] = core::fma_exact(a, x[i], y[i]);
    }

    /// core::scalar_ops::token_scores with each token's codes unpacked to bytes once (indices()) for
    /// up to four heads, each (token, group, head) integer sum on 16 channels per pmaddwd (exact),
    /// and the float terms in the definition's order. 2, 4 and 8 bits, groups of whole 16 channels.
    PKV_AVX2 static void token_scores(const std::uint32_t* codes, int row_words, const core::scale_min* sm, int tokens, int bits, int d,
                                      int group, const float* q, const float* m, int heads, const float* half_steps, float* scores,
                                      int score_stride) {
        if (bits == 3 || group % 16 != 0 || d > core::max_head_dim)
            return core::scalar_ops::token_scores(codes, row_words, sm, tokens, bits, d, group, q, m, heads, half_steps, scores,
                                                  score_stride);
        constexpr int block = 4;
        const int groups = d / group;
        const float centre = 0.5f * static_cast<float>(core::code_mask(bits));
        alignas(32) std::int16_t m16[block][core::max_head_dim];
        std::uint32_t bias[block][core::max_head_dim / 16];  // per group: (2^bits - 1) * sum of its multipliers
        float qsum[block][core::max_head_dim / 16];
        std::uint8_t buf[core::max_head_dim];
        for (int h0 = 0; h0 < heads; h0 += block) {
            const int hb = heads - h0 < block ? heads - h0 : block;
            for (int hh = 0; hh < hb; ++hh) {
                const float* mh = m + (h0 + hh) * d;
                core::scalar_ops::group_sums(q + (h0 + hh) * d, d, group, qsum[hh]);
                for (int gi = 0; gi < groups; ++gi) {
                    std::uint32_t sum = 0;
                    for (int j = gi * group; j < (gi + 1) * group; ++j) {
                        m16[hh][j] = static_cast<std::int16_t>(mh[j]);
                        sum += static_cast<std::uint32_t>(static_cast<std::int32_t>(mh[j]));
                    }
                    bias[hh][gi] = sum * core::code_mask(bits);
                }
            }
            for (int t = 0; t < tokens; ++t) {
                const std::uint8_t* c = indices(reinterpret_cast<const std::uint8_t*>(codes + t * row_words), 0, d, bits, buf);
                for (int hh = 0; hh < hb; ++hh) {
                    float total = 0.0f;
                    for (int gi = 0; gi < groups; ++gi) {
                        __m256i acc = _mm256_setzero_si256();
                        for (int j = gi * group; j < (gi + 1) * group; j += 16) {
                            const __m256i c16 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j)));
                            acc = _mm256_add_epi32(
                                acc, _mm256_madd_epi16(c16, _mm256_load_si256(reinterpret_cast<const __m256i*>(&m16[hh][j]))));
                        }
                        alignas(32) std::uint32_t lanes[8];
                        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
                        std::uint32_t sum = 0;
                        for (std::uint32_t l : lanes) sum += l;
                        const auto code = static_cast<std::int32_t>(2u * sum - bias[hh][gi]);  // wrapping: the centred sum fits
                        total =
                            core::scalar_ops::token_group_term(total, sm[t * groups + gi], centre, half_steps[h0 + hh], code, qsum[hh][gi]);
                    }
                    scores[(h0 + hh) * score_stride + t] = total;
                }
            }
        }
    }

    PKV_AVX2 static const std::uint8_t* indices(const std::uint8_t* idx, int first, int n, int bits, std::uint8_t* buf) {
        if (bits == 8 || (first * bits) % 8 != 0) return core::pattern_indices(idx, first, n, bits, buf);
        const std::uint8_t* src = idx + first * bits / 8;
        const __m128i low = _mm_set1_epi8(static_cast<char>((1 << bits) - 1));
        const auto field = [&](__m128i x, int shift) PKV_AVX2 { return _mm_and_si128(_mm_srli_epi16(x, shift), low); };
        int t = 0;
        if (bits == 4) {  // 16 indices from 8 bytes: low nibble first
            for (; t + 16 <= n; t += 16) {
                const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + t / 2));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + t), _mm_unpacklo_epi8(field(x, 0), field(x, 4)));
            }
        } else {  // 2 bits: 32 indices from 8 bytes, lowest bits first
            for (; t + 32 <= n; t += 32) {
                const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + t / 4));
                const __m128i a = _mm_unpacklo_epi8(field(x, 0), field(x, 2)), b = _mm_unpacklo_epi8(field(x, 4), field(x, 6));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + t), _mm_unpacklo_epi16(a, b));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + t + 16), _mm_unpackhi_epi16(a, b));
            }
        }
        core::pattern_indices(idx, first + t, n - t, bits, buf + t);
        return buf;
    }

    PKV_AVX2 static void add_scaled(float a, const float* x, float* y, int n) {
        const __m256 va = _mm256_set1_ps(a);
        int i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
        core::scalar_ops::add_scaled(a, x + i, y + i, n - i);
    }

    PKV_AVX2 static void add_gathered(float* s, const float* table, const std::uint8_t* index, int n) {
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_add_ps(_mm256_loadu_ps(s + i), gather8(table, index + i)));
        core::scalar_ops::add_gathered(s + i, table, index + i, n - i);
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
static_assert(core::AttentionOps<avx2_ops>);

}  // namespace patternkv::simd
#endif
