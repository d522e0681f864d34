#pragma once
// Integer multipliers of decode attention on codes (attention.hpp). The per-element work of decode
// is a sum of products of quantization codes with one multiplier per row: the query times the
// channel's scale for K, the softmax weight times the token's scale for V. Those multipliers are
// rounded to integers (int8 or int16, multiplier_max) with one float step per (group, query head), so the
// sums of products are integer sums: exact in any order, which lets every backend reduce them
// however is fastest (SIMD bytes, dp4a, MMA) and still give the same bits.

#include <cstdint>

#include "platform.hpp"

namespace patternkv::core {

/// Largest |multiplier| for a sum over `rows` rows of b-bit codes, of K (query times channel scale)
/// or V (softmax weight times token scale). The multiplier's rounding error meets a code whose own
/// step is 1 / (2^b - 1) of its range, so the bound grows with the width:
/// * K at 2 bits: int8 (127), so that SIMD multiplies unsigned code bytes by signed bytes;
/// * K at 3, 4 and 8 bits, and V at every width: int16 (32767), lowered where the centred sum of
///   `rows` products would not fit int32.
/// Measured (docs/bit-exactness.md): int8 K costs < 0.5% of KL or attention error at 2 bits, but
/// 6.7% of SmolLM2's KL at 3 bits and 2% of the Qwen attention error at 4 bits; int8 V costs 20% at
/// 4 bits (within a page a few tokens carry most of the softmax weight, and int8 steps erase the
/// many small ones); int16 < 0.1%.
PKV_HD constexpr int multiplier_max(bool v, int rows, int bits) {
    if (!v && bits <= 2) return 127;
    const long long fit = 2147483647LL / (static_cast<long long>(rows) * ((1LL << bits) - 1));
    return fit < 32767 ? static_cast<int>(fit) : 32767;
}

/// x rounded to the nearest integer, ties to even, for |x| <= 2^22: adding and subtracting 1.5 * 2^23
/// leaves no fraction bits (contraction is off, so this is two correctly rounded operations; no
/// libm and no rounding-mode dependence beyond the default).
PKV_HD float round_even_small(float x) {
    constexpr float magic = 12582912.0f;
    return (x + magic) - magic;
}

/// One multiplier: x (the input times qmax / max|a|) clamped to [-top, top], NaN to 0, rounded to
/// even.
PKV_HD float round_multiplier(float x, float top) {
    x = x > top ? top : (x < -top ? -top : x);
    if (!(x == x)) x = 0.0f;
    return round_even_small(x);
}

/// The larger of `from` and max_i |a[i]| (NaN entries are passed over): the order-free part of
/// quantize_multipliers, also the scalar tail of its SIMD twins.
PKV_HD float max_magnitude(const float* a, int n, float from = 0.0f) {
    for (int i = 0; i < n; ++i) {
        const float v = a[i] < 0.0f ? -a[i] : a[i];
        from = v > from ? v : from;
    }
    return from;
}

/// quantize_multipliers' rounding once max|a| = amax is known (a backend that finds the maximum
/// its own way, a warp's fold, applies this to each element): the multiplier of a and the step.
struct multiplier_rounding {
    float r, top, step;  ///< qmax / amax, qmax, amax / qmax; all 0 when amax is not > 0
    bool zero;           ///< amax is not > 0: every multiplier is 0
    PKV_HD float operator()(float a) const { return zero ? 0.0f : round_multiplier(a * r, top); }
};
PKV_HD multiplier_rounding rounding_for(float amax, int qmax) {
    if (!(amax > 0.0f)) return {0.0f, 0.0f, 0.0f, true};
    return {static_cast<float>(qmax) / amax, static_cast<float>(qmax), amax / static_cast<float>(qmax), false};
}

/// Rounds a[0 .. n) in place to integer-valued floats m_i = round_even(a_i * (qmax / max|a|)),
/// clamped to [-qmax, qmax] (a non-finite product becomes 0). Returns the step max|a| / qmax such
/// that a_i ~ step * m_i; 0 (and all m_i = 0) when max|a| is 0.
PKV_HD float quantize_multipliers(float* a, int n, int qmax) {
    const multiplier_rounding round = rounding_for(max_magnitude(a, n), qmax);
    for (int i = 0; i < n; ++i) a[i] = round(a[i]);
    return round.step;
}

}  // namespace patternkv::core
