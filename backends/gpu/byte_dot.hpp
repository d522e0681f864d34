#pragma once
// Four-way byte dot products (dp4a) and the byte gathers that feed them, one line per runtime.
//
// Codes are packed along the axis that is not summed (per-channel K packs a channel's tokens into a
// word, V a token's channels), so the four products of one dp4a come from four words: byte k of four
// rows' words, gathered into one word (three byte permutes on a device), holds 8 / bits codes of each
// of the four rows; shifting by bits * m and masking leaves code m of every row in its own byte.
// All of it is integer and exact, so it gives the bits of the scalar sums in any order.
#include <cstdint>

#include "core/platform.hpp"
#include "runtime.hpp"

// AMD targets with v_dot4 (dot1/dot2 instructions), as Debian's hipcc 5.2 builds them; the others
// (gfx900, ...) sum plain byte products, with the same result.
#if defined(__HIP_DEVICE_COMPILE__) && (defined(__gfx906__) || defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || \
                                        defined(__gfx1030__) || defined(__gfx1031__))
#define PKV_AMD_DOT4 1
#endif

namespace patternkv::PKV_GPU_NS::gpu {

/// acc + the sum of the four signed byte products of a and b.
__device__ inline std::int32_t dot4_signed(std::uint32_t a, std::uint32_t b, std::int32_t acc) {
#if defined(__CUDACC__) && !defined(PKV_GPU_EMULATION)
    return __dp4a(static_cast<int>(a), static_cast<int>(b), acc);
#elif defined(PKV_AMD_DOT4)
    return __builtin_amdgcn_sdot4(static_cast<int>(a), static_cast<int>(b), acc, false);
#else
    for (int i = 0; i < 32; i += 8)
        acc += static_cast<std::int32_t>(static_cast<std::int8_t>(a >> i)) * static_cast<std::int32_t>(static_cast<std::int8_t>(b >> i));
    return acc;
#endif
}

/// acc + the sum of the four unsigned byte products of a and b.
__device__ inline std::uint32_t dot4_unsigned(std::uint32_t a, std::uint32_t b, std::uint32_t acc) {
#if defined(__CUDACC__) && !defined(PKV_GPU_EMULATION)
    return __dp4a(a, b, acc);
#elif defined(PKV_AMD_DOT4)
    return __builtin_amdgcn_udot4(a, b, acc, false);
#else
    for (int i = 0; i < 32; i += 8) acc += ((a >> i) & 0xFFu) * ((b >> i) & 0xFFu);
    return acc;
#endif
}

/// Byte k (0..3) of w0, w1, w2, w3, as bytes 0, 1, 2, 3 of one word.
__device__ inline std::uint32_t gather_byte(std::uint32_t w0, std::uint32_t w1, std::uint32_t w2, std::uint32_t w3, int k) {
#if defined(__CUDACC__) && !defined(PKV_GPU_EMULATION)
    const unsigned pick = static_cast<unsigned>(k) | static_cast<unsigned>(k + 4) << 4;  // byte k of the first, of the second
    return __byte_perm(__byte_perm(w0, w1, pick), __byte_perm(w2, w3, pick), 0x5410);
#else
    const int s = 8 * k;
    return (w0 >> s & 0xFFu) | (w1 >> s & 0xFFu) << 8 | (w2 >> s & 0xFFu) << 16 | (w3 >> s & 0xFFu) << 24;
#endif
}

/// Code 0 of each byte of a word whose bytes hold 8 / bits codes of `bits` bits (2 or 4) each.
PKV_HD constexpr std::uint32_t first_code_of_bytes(int bits) { return bits == 2 ? 0x03030303u : 0x0F0F0F0Fu; }

/// Code m of each byte of x, the bytes holding 8 / bits codes of `bits` bits (2 or 4) each.
__device__ inline std::uint32_t byte_codes(std::uint32_t x, int bits, int m) { return x >> (bits * m) & first_code_of_bytes(bits); }

}  // namespace patternkv::PKV_GPU_NS::gpu
