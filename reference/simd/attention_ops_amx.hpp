#pragma once
// avx512_ops with the integer code sums on AMX-INT8 tiles (Intel Sapphire Rapids and later; only
// used when simd::have_amx() is true). A code sum is a small integer matrix product,
// C[head][position] = sum_row m[head][row] * code[row][position], and one tdpbsud multiplies a
// 16 x 64 tile of signed multiplier bytes by a 64 x 16 tile of unsigned code bytes, 16 times the
// work of a vpdpbusd. The sums are exact int32 sums, so the result has the bits of core's
// definition whatever the order (core/multipliers.hpp).
//
// Tiles: A (tmm0) holds the multipliers of 64 rows for every head, B (tmm1, 6, 7) 16 positions of
// those 64 rows' codes, four rows per 32-bit lane: exactly one shift of quad_slices' interleaving,
// so B is built by the AVX-512 byte path's own shuffles and stored; C (tmm2 .. tmm5) one accumulator
// per shift of the codes (S = 8 / bits positions per byte). Only int16 multipliers take this path
// (int8 ones are one vpdpbusd per four rows already): each is two signed bytes, m - 128 = 256 hi +
// lo, in A rows h and heads + h, and one shared row of -128 carries the 128 sum_r c_r the offset
// removed, so one tdpbsud serves them all:
//     sum_r m_r c_r = 256 C[hi] + C[lo] - C[-128 row]   (int32, wrapping; the true sum fits).
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstring>
#include <initializer_list>

#include "attention_ops_avx512.hpp"

#define PKV_AMX __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,amx-tile,amx-int8")))

PKV_AVX512_WARNINGS_OFF

namespace patternkv::simd {
namespace detail {

/// ldtilecfg's 64-byte operand, palette 1.
struct tile_config {
    std::uint8_t palette = 1, start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t bytes_per_row[16] = {};
    std::uint8_t rows[16] = {};
};
static_assert(sizeof(tile_config) == 64);

/// Heads per pass of the tile kernel: a tile has at most 16 rows, two per head and the -128 row.
constexpr int amx_heads = 7;

/// A tile rows of `heads` heads' integer-valued int16 multipliers m[h * m_stride + r], r < rows (a
/// multiple of 16), as signed bytes a[row][rows] (the layout above): 2 heads + 1 rows. bias[h]:
/// head h's multiplier sum times code_mask(code_bits) (wrapping), which centres the codes.
PKV_AMX inline void amx_multiplier_rows(const float* m, int m_stride, int heads, int rows, int code_bits, std::int8_t* a,
                                        std::int32_t* bias) {
    const __m512i offset = _mm512_set1_epi32(128);
    for (int h = 0; h < heads; ++h) {
        __m512i sum = _mm512_setzero_si512();
        for (int r = 0; r < rows; r += 16) {
            const __m512i x = _mm512_cvtps_epi32(_mm512_loadu_ps(m + h * m_stride + r));
            sum = _mm512_add_epi32(sum, x);
            const __m512i y = _mm512_sub_epi32(x, offset);
            const __m512i lo = _mm512_srai_epi32(_mm512_slli_epi32(y, 24), 24), hi = _mm512_srai_epi32(_mm512_sub_epi32(y, lo), 8);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(a + h * rows + r), _mm512_cvtepi32_epi8(hi));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(a + (heads + h) * rows + r), _mm512_cvtepi32_epi8(lo));
        }
        bias[h] = static_cast<std::int32_t>(static_cast<std::uint32_t>(_mm512_reduce_add_epi32(sum)) * core::code_mask(code_bits));
    }
    std::memset(a + 2 * heads * rows, 0x80, static_cast<std::size_t>(rows));
}

/// The B tiles of one unit of a code sum, position block pb (16 S positions) and rows [r0, r0 + 64):
/// the codes of rows [4 q, 4 q + 4) at shift s are 64 bytes at b + ((pb * S + s) * rows / 4 + q) * 64,
/// so a tile is 16 rows 64 bytes apart. A code at shift s is left in place, times 2^(Bits s) (one
/// AND, no shift); the sums are shifted back, exactly, once per 16 positions (code_sums_tiles).
template <int Bits>
PKV_AMX inline void amx_code_tiles(const std::uint8_t* codes, int row_bytes, int rows, int pb, int r0, std::uint8_t* b) {
    constexpr int S = 8 / Bits;
    const int quads = rows / 4;
    __m512i masks[S];
    for (int s = 0; s < S; ++s) masks[s] = _mm512_set1_epi8(static_cast<char>(((1 << Bits) - 1) << (Bits * s)));
    for (int q = r0 / 4; q < r0 / 4 + 16; ++q) {
        const __m512i x = quad_slices(codes + pb * 16 + 4 * q * row_bytes, row_bytes);
        for (int s = 0; s < S; ++s) _mm512_store_si512(b + ((pb * S + s) * quads + q) * 64, _mm512_and_si512(x, masks[s]));
    }
    asm volatile("" ::: "memory");  // the tile loads' asm does not tell the compiler that they read b: keep these stores
}

/// code_sums on tiles for `heads` heads (amx_heads at most) whose A rows a were prepared by
/// amx_multiplier_rows: rows a multiple of 64, positions in whole 16-byte slices. The B tiles are
/// built in b when `build` (else b holds them from an earlier pass), each unit while the tile unit
/// works on the one before: a tile load waits for the stores it reads to reach the cache, so a tile
/// built just before its load would stall the pipeline.
template <int Bits>
PKV_AMX inline void code_sums_tiles(const std::uint32_t* codes, int row_words, int rows, int first, int n, std::uint8_t* b, bool build,
                                    const std::int8_t* a, int heads, const std::int32_t* bias, float* out, int out_stride) {
    constexpr int S = 8 / Bits;
    const int tile_rows = 2 * heads + 1;
    alignas(64) tile_config cfg;
    cfg.rows[0] = static_cast<std::uint8_t>(tile_rows);  // A: tile_rows x 64 multiplier bytes
    cfg.bytes_per_row[0] = 64;
    for (int t : {1, 6, 7}) {  // B: 16 quads of rows x 16 positions x 4 code bytes (three, so that loads overlap products)
        cfg.rows[t] = 16;
        cfg.bytes_per_row[t] = 64;
    }
    for (int s = 0; s < S; ++s) {  // C: tile_rows x 16 int32 sums per shift
        cfg.rows[2 + s] = static_cast<std::uint8_t>(tile_rows);
        cfg.bytes_per_row[2 + s] = 64;
    }
    alignas(64) tile_config now;  // ldtilecfg costs as much as the products of a page: only when the shapes change
    _tile_storeconfig(&now);
    if (std::memcmp(&now, &cfg, sizeof cfg) != 0) _tile_loadconfig(&cfg);
    asm volatile("" ::: "memory");  // nor that they read a
    alignas(64) std::int32_t c[S][16 * 16];
    const int quads = rows / 4, row_bytes = 4 * row_words, blocks = n / (16 * S);
    const auto* base = reinterpret_cast<const std::uint8_t*>(codes) + first * Bits / 8;
    if (build) amx_code_tiles<Bits>(base, row_bytes, rows, 0, 0, b);
    for (int pb = 0; pb < blocks; ++pb) {
        const std::uint8_t* bp = b + pb * S * quads * 64;
        _tile_zero(2);
        if constexpr (S > 1) _tile_zero(3);
        if constexpr (S > 2) _tile_zero(4);
        if constexpr (S > 3) _tile_zero(5);
        for (int r0 = 0; r0 < rows; r0 += 64) {
            const std::uint8_t* br = bp + r0 / 4 * 64;
            _tile_loadd(0, a + r0, rows);
            _tile_loadd(1, br, 64);
            if constexpr (S > 1) _tile_loadd(6, br + quads * 64, 64);
            if constexpr (S > 2) _tile_loadd(7, br + 2 * quads * 64, 64);
            _tile_dpbsud(2, 0, 1);
            if constexpr (S > 1) _tile_dpbsud(3, 0, 6);
            if constexpr (S > 2) {
                _tile_dpbsud(4, 0, 7);
                _tile_loadd(1, br + 3 * quads * 64, 64);  // tiles are not renamed: tmm1 again once its product was issued
                _tile_dpbsud(5, 0, 1);
            }
            const int next_r0 = r0 + 64 < rows ? r0 + 64 : 0, next_pb = r0 + 64 < rows ? pb : pb + 1;
            if (build && next_pb < blocks) amx_code_tiles<Bits>(base, row_bytes, rows, next_pb, next_r0, b);
        }
        _tile_stored(2, c[0], 64);
        if constexpr (S > 1) _tile_stored(3, c[1], 64);
        if constexpr (S > 2) {
            _tile_stored(4, c[2], 64);
            _tile_stored(5, c[3], 64);
        }
        for (int h = 0; h < heads; ++h) {
            __m512i x[S];
            for (int s = 0; s < S; ++s) {
                // each row's sums are 2^(Bits s) times the true ones (amx_code_tiles), and bytes keep them small: exact shifts
                const auto row = [&](int i) PKV_AMX { return _mm512_srai_epi32(_mm512_load_si512(c[s] + 16 * i), Bits * s); };
                x[s] = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(row(h), 8), row(heads + h)), row(2 * heads));
            }
            store_slice512<S>(x, bias[h], out + h * out_stride + pb * 16 * S);
        }
    }
}

}  // namespace detail

/// avx512_ops with code_sums on AMX tiles where the shapes allow (rows in 64s, positions in whole
/// 16-byte slices; 3-bit codes expanded to bytes first), the AVX-512 byte path elsewhere.
struct amx_ops : avx512_ops {
    /// Whether code_sums runs on tiles for this shape (else on the AVX-512 byte path): int16
    /// multipliers (int8 ones take one vpdpbusd per four rows, which measured faster than building
    /// the tiles), rows in 64s and positions in whole 16-byte slices.
    static bool on_tiles(int rows, int bits, int first, int n, int multiplier_max) {
        if (multiplier_max <= 127 || rows % 64 != 0 || rows > 256 || rows * n > expanded_bytes || multiplier_max > 32767) return false;
        return bits == 3 ? n % 16 == 0 : (first * bits) % 8 == 0 && (n * bits) % 128 == 0;
    }

    PKV_AMX static void code_sums(const std::uint32_t* codes, int row_words, int rows, int bits, int first, int n, const float* m,
                                  int m_stride, int heads, int multiplier_max, float* out, int out_stride) {
        if (!on_tiles(rows, bits, first, n, multiplier_max))
            return avx512_ops::code_sums(codes, row_words, rows, bits, first, n, m, m_stride, heads, multiplier_max, out, out_stride);
        if (bits == 3) {  // expanded to one byte each, then the 8-bit tiles
            alignas(64) std::uint8_t expanded[expanded_bytes];
            detail::expand_codes3(codes, row_words, rows, first, n, expanded);
            return run<8>(reinterpret_cast<const std::uint32_t*>(expanded), n / 4, rows, 0, n, m, m_stride, heads, 3, out, out_stride);
        }
        if (bits == 2) return run<2>(codes, row_words, rows, first, n, m, m_stride, heads, 2, out, out_stride);
        if (bits == 4) return run<4>(codes, row_words, rows, first, n, m, m_stride, heads, 4, out, out_stride);
        run<8>(codes, row_words, rows, first, n, m, m_stride, heads, 8, out, out_stride);
    }

private:
    template <int Bits>
    PKV_AMX static void run(const std::uint32_t* codes, int row_words, int rows, int first, int n, const float* m, int m_stride, int heads,
                            int code_bits, float* out, int out_stride) {
        alignas(64) std::int8_t a[(2 * detail::amx_heads + 1) * 256];
        alignas(64) std::uint8_t b[expanded_bytes];
        std::int32_t bias[detail::amx_heads];
        for (int h0 = 0; h0 < heads; h0 += detail::amx_heads) {
            const int hb = heads - h0 < detail::amx_heads ? heads - h0 : detail::amx_heads;
            detail::amx_multiplier_rows(m + h0 * m_stride, m_stride, hb, rows, code_bits, a, bias);
            detail::code_sums_tiles<Bits>(codes, row_words, rows, first, n, b, h0 == 0, a, hb, bias, out + h0 * out_stride, out_stride);
        }
    }
};
static_assert(core::AttentionOps<amx_ops>);

}  // namespace patternkv::simd

PKV_AVX512_WARNINGS_ON
#endif
