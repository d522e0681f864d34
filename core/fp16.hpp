#pragma once
// IEEE binary16 and bfloat16 conversions, written out so every backend rounds identically
// (round to nearest even unless a directed mode is asked for). No hardware conversion is used.

#include <bit>
#include <cstdint>

#include "platform.hpp"

namespace patternkv::core {

// std::bit_cast, not std::memcpy: memcpy is a host function under hipcc; bit_cast is constexpr,
// hence callable from device code on both GPU compilers, and the same bits on the CPU.
PKV_HD std::uint32_t float_bits(float f) { return std::bit_cast<std::uint32_t>(f); }
PKV_HD float bits_float(std::uint32_t u) { return std::bit_cast<float>(u); }

/// binary16 bits -> float (exact; a signaling NaN comes back quiet, as F16C and GPUs do).
PKV_HD float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f)
        return bits_float(sign | 0x7f800000u | (mant != 0 ? 0x400000u : 0u) | (mant << 13));  // inf; NaN quieted as by hardware
    if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0) return bits_float(sign);
    // subnormal half: value = mant * 2^-24, exactly representable as a normal float
    int e = -1;
    do {
        mant <<= 1;
        ++e;
    } while ((mant & 0x400u) == 0);
    return bits_float(sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13));
}

/// float -> binary16 bits, round to nearest even; overflow gives inf, NaN stays NaN (quiet).
PKV_HD std::uint16_t float_to_half(float f) {
    const std::uint32_t u = float_bits(f);
    const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t abs = u & 0x7fffffffu;
    if (abs >= 0x7f800000u)  // inf or nan
        return static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
    if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520
    if (abs < 0x38800000u) {                                                    // below 2^-14: subnormal half or zero
        if (abs < 0x33000000u) return sign;                                     // below 2^-25: rounds to zero (ties to even: 0)
        const std::uint32_t e = abs >> 23;
        const std::uint32_t m = (abs & 0x7fffffu) | 0x800000u;
        const std::uint32_t shift = 126u - e;  // 14..24 (value = m * 2^(e-150), half unit 2^-24)
        std::uint32_t q = m >> shift;
        const std::uint32_t rem = m & ((1u << shift) - 1u);
        const std::uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) ++q;
        return static_cast<std::uint16_t>(sign | q);
    }
    std::uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
    const std::uint32_t rem = r & 0x1fffu;
    r >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // carry may roll into the exponent: correct
    return static_cast<std::uint16_t>(sign | r);
}

/// Largest binary16 value <= f (f finite and within the half range).
PKV_HD std::uint16_t float_to_half_down(float f) {
    std::uint16_t h = float_to_half(f);
    if (half_to_float(h) > f)
        h = (h & 0x8000u) ? static_cast<std::uint16_t>(h + 1) : (h == 0 ? std::uint16_t(0x8001u) : static_cast<std::uint16_t>(h - 1));
    return h;
}

/// Smallest binary16 value >= f (f finite and within the half range).
PKV_HD std::uint16_t float_to_half_up(float f) {
    std::uint16_t h = float_to_half(f);
    if (half_to_float(h) < f)
        h = (h & 0x8000u) ? (h == 0x8000u ? std::uint16_t(1) : static_cast<std::uint16_t>(h - 1)) : static_cast<std::uint16_t>(h + 1);
    return h;
}

/// The binary16 rounding of f, as a float.
PKV_HD float round_to_half(float f) { return half_to_float(float_to_half(f)); }

/// bfloat16 bits -> float (exact).
PKV_HD float bf16_to_float(std::uint16_t b) { return bits_float(static_cast<std::uint32_t>(b) << 16); }

/// float -> bfloat16 bits, round to nearest even; NaN stays NaN.
PKV_HD std::uint16_t float_to_bf16(float f) {
    const std::uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
    const std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>((u + rounding) >> 16);
}

}  // namespace patternkv::core
