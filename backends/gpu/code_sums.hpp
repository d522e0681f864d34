#pragma once
// The integer code sums of decode attention on a device (core/attention.hpp: sum_r m_r (2 c_r -
// (2^bits - 1)) over a page's channels for K, its tokens for V, per position and query head), the
// three ways a split block computes them: one product at a time (any width and geometry), byte dot
// products on byte-gathered codes (dp4a, 2 and 4 bits) and warp matrix products (int8 MMA, 2 and 4
// bits, on devices that have them). Integer sums are exact, so all three give the same bits.
#include <cstdint>
#include <type_traits>

#include "byte_dot.hpp"
#include "core/packing.hpp"
#include "runtime.hpp"
#include "warp_mma.hpp"

// Keeps a device loop rolled: unrolled, the split kernel's matrix-product loop spills registers
// (ptxas, sm_90). Host compilers (the emulation) need no hint.
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define PKV_ROLLED _Pragma("unroll 1")
#else
#define PKV_ROLLED
#endif

namespace patternkv::PKV_GPU_NS {

/// Heads whose integer sums one thread keeps in registers at once: each code is unpacked once for
/// all of them (the GQA group's heads share the KV head's codes).
inline constexpr int head_regs = 8;

/// One head's integer multipliers (core/multipliers.hpp) as bytes in shared memory, the layout the
/// byte dot products read: 4 multipliers per word, `quads` words of low bytes, then `quads` words of
/// high bytes, then their sum. Narrow multipliers (|m| <= 127: K at 2 bits) are their low byte as a
/// signed byte; wide ones (int16) are 256 hi + lo, hi signed and lo unsigned.
struct packed_multipliers {
    std::uint32_t* words;
    int quads;
    bool narrow;

    PKV_HD static int words_per_head(int n) { return 2 * ((n + 3) / 4) + 1; }
    /// Whether multipliers bounded by qmax in magnitude are narrow.
    PKV_HD static bool narrow_for(int qmax) { return qmax <= 127; }
    __device__ std::uint32_t lo(int quad) const { return words[quad]; }
    __device__ std::uint32_t hi(int quad) const { return words[quads + quad]; }
    __device__ std::int32_t sum() const { return static_cast<std::int32_t>(words[2 * quads]); }
    __device__ std::int32_t at(int i) const {
        const auto* lo_bytes = reinterpret_cast<const std::uint8_t*>(words);
        if (narrow) return static_cast<std::int8_t>(lo_bytes[i]);
        const auto* hi_bytes = reinterpret_cast<const std::int8_t*>(words + quads);
        return 256 * hi_bytes[i] + lo_bytes[i];
    }
    __device__ void set(int i, std::int32_t m) const {
        reinterpret_cast<std::uint8_t*>(words)[i] = static_cast<std::uint8_t>(m);
        reinterpret_cast<std::uint8_t*>(words + quads)[i] = static_cast<std::uint8_t>(m >> 8);  // arithmetic shift: the signed high byte
    }
    __device__ void set_sum(std::int32_t v) const { words[2 * quads] = static_cast<std::uint32_t>(v); }
};

/// The plain sum sum_r m_r c_r from the byte products' sums: narrow multipliers, the signed sum
/// itself; int16 ones, 256 times the sum over their signed high bytes plus the sum over their
/// unsigned low bytes (wrapping in uint32, exact as centred() says).
template <bool narrow>
__device__ std::uint32_t joined(std::int32_t high, std::uint32_t low) {
    return narrow ? static_cast<std::uint32_t>(high) : 256u * static_cast<std::uint32_t>(high) + low;
}

/// The centred sum sum_r m_r (2 c_r - (2^bits - 1)) from the plain sum sum_r m_r c_r and sum_r m_r:
/// exact in int32 (core::multiplier_max bounds the centred sum; the parts wrap in uint32).
__device__ inline std::int32_t centred(std::uint32_t plain, std::int32_t multiplier_sum, int bits) {
    return static_cast<std::int32_t>(2u * plain - core::code_mask(bits) * static_cast<std::uint32_t>(multiplier_sum));
}

/// For heads hh < hn (<= head_regs): acc[hh] = the integer sum over r < rows of
/// pm[hh].at(first + r) * (2 c_r - (2^bits - 1)), c_r the code at position + r * step of the row at
/// codes + r * row_words (K per channel and V: a column, step 0; per-token K: along one row,
/// row_words 0). Exact in int32 (core::multiplier_max bounds it): the sums of
/// core::scalar_ops::code_sums and token_scores. The path of widths and geometries byte_code_sums
/// does not take.
__device__ inline void centred_code_sums(const std::uint32_t* codes, int row_words, int rows, int bits, int position, int step,
                                         const packed_multipliers (&pm)[head_regs], int first, int hn, std::int32_t (&acc)[head_regs]) {
    const auto off = static_cast<std::int32_t>(core::code_mask(bits));
    for (int hh = 0; hh < head_regs; ++hh) acc[hh] = 0;
    for (int r = 0; r < rows; ++r) {
        const std::int32_t c = 2 * static_cast<std::int32_t>(core::unpack_code(codes + r * row_words, position + r * step, bits)) - off;
        for (int hh = 0; hh < head_regs; ++hh)
            if (hh < hn) acc[hh] += pm[hh].at(first + r) * c;
    }
}

/// Whether columns of `positions` codes (a K group's tokens, a V group's channels) summed over `rows`
/// rows take the byte dot products: 2 or 4 bits, whole words of codes per column run, rows in fours.
__device__ inline bool byte_columns(int bits, int rows, int positions) {
    return (bits == 2 || bits == 4) && rows % 4 == 0 && positions % core::codes_per_word(bits) == 0;
}

/// byte_columns' path: for heads hh < hn and the 8 / bits positions p_m = word * codes_per_word +
/// byte * (8 / bits) + m of the row codes + r * row_words, sums[m][hh] = the centred sum
/// centred_code_sums gives at p_m. Byte `byte` of word `word` of four rows at a time is gathered into
/// one word, so that each dp4a multiplies four rows' codes by four multipliers.
template <int bits, bool narrow>
__device__ void byte_code_sums(const std::uint32_t* codes, int row_words, int rows, int word, int byte,
                               const packed_multipliers (&pm)[head_regs], int hn, std::int32_t (&sums)[4][head_regs]) {
    constexpr int per_byte = 8 / bits;
    std::int32_t high[per_byte][head_regs] = {};  // narrow: the whole sum
    std::uint32_t low[per_byte][head_regs] = {};
    for (int r = 0; r < rows; r += 4) {
        const std::uint32_t* w = codes + static_cast<std::int64_t>(r) * row_words + word;
        const std::uint32_t x = gpu::gather_byte(w[0], w[row_words], w[2 * row_words], w[3 * row_words], byte);
        for (int m = 0; m < per_byte; ++m) {
            const std::uint32_t c = gpu::byte_codes(x, bits, m);
            for (int hh = 0; hh < head_regs; ++hh) {
                if (hh >= hn) continue;
                if constexpr (narrow) {
                    high[m][hh] = gpu::dot4_signed(pm[hh].lo(r / 4), c, high[m][hh]);
                } else {
                    high[m][hh] = gpu::dot4_signed(pm[hh].hi(r / 4), c, high[m][hh]);
                    low[m][hh] = gpu::dot4_unsigned(pm[hh].lo(r / 4), c, low[m][hh]);
                }
            }
        }
    }
    for (int m = 0; m < per_byte; ++m)
        for (int hh = 0; hh < hn; ++hh) sums[m][hh] = centred(joined<narrow>(high[m][hh], low[m][hh]), pm[hh].sum(), bits);
}

/// f(width, narrow) with a byte path's code width (2 or 4) and multiplier kind (narrow or int16) as
/// compile-time constants (std::integral_constant), from their values at run time (both uniform over a launch).
template <class F>
__device__ void with_byte_kind(int bits, bool narrow, F f) {
    using two = std::integral_constant<int, 2>;
    using four = std::integral_constant<int, 4>;
    if (bits == 2)
        narrow ? f(two{}, std::true_type{}) : f(two{}, std::false_type{});
    else
        narrow ? f(four{}, std::true_type{}) : f(four{}, std::false_type{});
}

/// Whether a column run of `positions` codes summed over `rows` rows takes warp matrix products
/// (mma_tile_sums): the device has them, 2 or 4 bits, whole words of codes, rows in 32s (one product's k).
__device__ inline bool mma_columns(bool device_mma, int bits, int rows, int positions) {
    return gpu::int8_mma && device_mma && rows % 32 == 0 && byte_columns(bits, rows, positions);
}

/// Warp-wide (every lane calls it): the plain sums sum_r m_r c_r of one tile, 4 words of a column
/// run (16 byte columns of 8 / bits positions each) over `rows` rows, for up to 8 heads, by warp
/// matrix products (warp_mma.hpp: A = codes, positions x rows; B = multipliers, rows x heads).
/// Lane (g, c) = (lane / 4, lane % 4) brings head g's multipliers (B's column g; `pm` is null past
/// the heads) and A's rows g and g + 8, which are bytes g % 2 and 2 + g % 2 of the tile's word g / 2
/// (`word` points at it; null past the run), so that it gets back the sums of its own positions:
/// plain[m][i] is code m of the byte of row g (i = 0, 1) or g + 8 (i = 2, 3) and head 2c + i % 2.
/// Code m is masked in place (byte & mask << bits m), so its products are 2^(bits m) times the
/// code's; the shift back is exact (at 4096 rows every sum stays below 2^28 in magnitude).
template <int bits, bool narrow>
__device__ void mma_tile_sums(const std::uint32_t* word, int row_words, int rows, int lane, const packed_multipliers* pm,
                              std::uint32_t (&plain)[8 / bits][4]) {
    constexpr int per_byte = 8 / bits;
    constexpr std::uint32_t mask = gpu::first_code_of_bytes(bits);
    const int g = lane / 4, c = lane % 4;
    std::int32_t high[per_byte][4] = {}, low[per_byte][4] = {};  // narrow: the whole sum in high
    PKV_ROLLED for (int k0 = 0; k0 < rows; k0 += 32) {
        std::uint32_t x[4] = {};  // A's words before masking: rows g, g + 8 at k0 + 4c, then at k0 + 16 + 4c
        for (int half = 0; half < 2 && word != nullptr; ++half) {
            const std::uint32_t* w = word + static_cast<std::int64_t>(k0 + 16 * half + 4 * c) * row_words;
            const std::uint32_t w0 = w[0], w1 = w[row_words], w2 = w[2 * row_words], w3 = w[3 * row_words];
            x[2 * half] = gpu::gather_byte(w0, w1, w2, w3, g % 2);
            x[2 * half + 1] = gpu::gather_byte(w0, w1, w2, w3, 2 + g % 2);
        }
        const int q = k0 / 4 + c;  // B's rows k0 + 4c .. as one word of packed multipliers, and 16 rows on
        const std::uint32_t lo0 = pm ? pm->lo(q) : 0u, lo1 = pm ? pm->lo(q + 4) : 0u;
        const std::uint32_t hi0 = pm && !narrow ? pm->hi(q) : 0u, hi1 = pm && !narrow ? pm->hi(q + 4) : 0u;
        for (int m = 0; m < per_byte; ++m) {
            const std::uint32_t mm = mask << (bits * m);
            const std::uint32_t a[4] = {x[0] & mm, x[1] & mm, x[2] & mm, x[3] & mm};
            if constexpr (narrow) {
                gpu::mma_m16n8k32<true>(high[m], a, lo0, lo1);
            } else {
                gpu::mma_m16n8k32<true>(high[m], a, hi0, hi1);
                gpu::mma_m16n8k32<false>(low[m], a, lo0, lo1);
            }
        }
    }
    for (int m = 0; m < per_byte; ++m)
        for (int i = 0; i < 4; ++i)  // the signed part's shift is arithmetic: exact for a negative sum
            plain[m][i] = joined<narrow>(high[m][i] >> (bits * m), static_cast<std::uint32_t>(low[m][i]) >> (bits * m));
}

}  // namespace patternkv::PKV_GPU_NS
