#pragma once
// Bit packing of quantization codes into 32-bit words. A word holds floor(32 / bits) codes
// (16 at 2 bits, 10 at 3, 8 at 4, 4 at 8), lowest code in the lowest bits; a code never straddles
// two words, so any code is one shift and mask away. Unused high bits are zero.

#include <cstdint>

#include "platform.hpp"

namespace patternkv::core {

PKV_HD constexpr bool supported_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 8; }
PKV_HD constexpr int codes_per_word(int bits) { return 32 / bits; }
PKV_HD constexpr int words_for_codes(int n, int bits) { return (n + codes_per_word(bits) - 1) / codes_per_word(bits); }
PKV_HD constexpr std::uint32_t code_mask(int bits) { return (1u << bits) - 1u; }

/// Word holding code i, and the shift of code i inside it.
PKV_HD constexpr int code_word(int i, int bits) { return i / codes_per_word(bits); }
PKV_HD constexpr int code_shift(int i, int bits) { return (i % codes_per_word(bits)) * bits; }

/// Code i of a packed row.
PKV_HD std::uint32_t unpack_code(const std::uint32_t* words, int i, int bits) {
    return (words[code_word(i, bits)] >> code_shift(i, bits)) & code_mask(bits);
}

/// Packs n codes (each < 2^bits) into words_for_codes(n, bits) words, zeroing unused bits.
/// Word by word, so that no code index is divided (the layout is code_word / code_shift's).
PKV_HD void pack_codes(const std::uint8_t* codes, int n, int bits, std::uint32_t* words) {
    const int per_word = codes_per_word(bits);
    for (int i0 = 0; i0 < n; i0 += per_word) {
        const int m = n - i0 < per_word ? n - i0 : per_word;
        std::uint32_t w = 0;
        for (int c = 0; c < m; ++c) w |= static_cast<std::uint32_t>(codes[i0 + c]) << (c * bits);
        words[i0 / per_word] = w;
    }
}

/// Unpacks n codes.
PKV_HD void unpack_codes(const std::uint32_t* words, int n, int bits, std::uint8_t* codes) {
    for (int i = 0; i < n; ++i) codes[i] = static_cast<std::uint8_t>(unpack_code(words, i, bits));
}

}  // namespace patternkv::core
