#pragma once
// Asymmetric uniform quantization of one group (method.md section 2).
// The stored fp16 minimum is rounded down and the fp16 scale up, so the code grid always covers
// [min, max] of the group and no value is clamped: the error of every element is at most s/2
// (plus one float rounding of the dequantization). A constant group stores s = 0 and code 0.

#include <cstdint>

#include "fp16.hpp"
#include "platform.hpp"

namespace patternkv::core {

/// fp16 scale and minimum of one group, as stored.
struct scale_min {
    std::uint16_t scale;
    std::uint16_t min;
};
static_assert(sizeof(scale_min) == 4 && alignof(scale_min) == 2);

/// Round half to even of y >= 0 (y < 2^23); written out because GPU and CPU rint must agree.
PKV_HD std::uint32_t round_half_even_nonneg(float y) {
    std::uint32_t i = static_cast<std::uint32_t>(y);
    const float frac = y - static_cast<float>(i);  // exact
    if (frac > 0.5f || (frac == 0.5f && (i & 1u))) ++i;
    return i;
}

/// Scale/min of a group with the given range; levels = 2^bits - 1.
PKV_HD scale_min group_scale_min(float mn, float mx, int levels) {
    const std::uint16_t mn_h = float_to_half_down(mn);
    if (mx == mn) return {0, float_to_half(mn)};
    const float step = (mx - half_to_float(mn_h)) / static_cast<float>(levels);
    return {float_to_half_up(step), mn_h};
}

/// Code of x under scale s and minimum mn (floats decoded from a scale_min).
PKV_HD std::uint32_t quantize_value(float x, float s, float mn, int levels) {
    if (s == 0.0f) return 0;
    float y = (x - mn) / s;
    y = y < 0.0f ? 0.0f : y;
    const float top = static_cast<float>(levels);
    y = y > top ? top : y;
    return round_half_even_nonneg(y);
}

/// code * s + mn (mul then add, never fused).
PKV_HD float dequantize_value(std::uint32_t code, float s, float mn) { return static_cast<float>(code) * s + mn; }

/// Minimum and maximum of n values read with a stride, scanning in order (of +0 and -0 the first
/// met is kept, which decides the sign of a zero extreme).
PKV_HD void group_range(const float* x, int n, int stride, float* mn, float* mx) {
    *mn = *mx = x[0];
    for (int i = 1; i < n; ++i) {
        const float v = x[i * stride];
        *mn = v < *mn ? v : *mn;
        *mx = v > *mx ? v : *mx;
    }
}

/// Quantizes n values read with a stride into codes (one byte each) and returns the group's scale/min.
PKV_HD scale_min quantize_group(const float* x, int n, int stride, int bits, std::uint8_t* codes) {
    float mn, mx;
    group_range(x, n, stride, &mn, &mx);
    const int levels = (1 << bits) - 1;
    const scale_min sm = group_scale_min(mn, mx, levels);
    const float s = half_to_float(sm.scale), m = half_to_float(sm.min);
    for (int i = 0; i < n; ++i) codes[i] = static_cast<std::uint8_t>(quantize_value(x[i * stride], s, m, levels));
    return sm;
}

}  // namespace patternkv::core
