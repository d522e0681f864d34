#pragma once
// Our own single-precision exp: identical bits on every backend (libm versions differ in the last
// ulp). Range reduction by ln2 in two parts, degree-6 polynomial with explicit fma.

#include <cmath>
#include <cstdint>

#include "fp16.hpp"
#include "platform.hpp"

namespace patternkv::core {

PKV_HD float fma_exact(float a, float b, float c) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);  // correctly rounded by IEEE 754 definition, hardware or software
#endif
}

/// IEEE sqrt, correctly rounded on every backend: host std::sqrt; CUDA __fsqrt_rn (also with
/// -prec-sqrt=true); HIP's sqrtf is __ocml_sqrt_f32, correctly rounded when hipcc links
/// oclc_correctly_rounded_sqrt_on (-fhip-fp32-correctly-rounded-divide-sqrt, the default, passed
/// explicitly by backends/meson.build).
PKV_HD float sqrt_rn(float x) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(x);
#else
    return std::sqrt(x);
#endif
}

/// 2^n as a float for n in [-126, 127].
PKV_HD float exp2_int(int n) { return bits_float(static_cast<std::uint32_t>(n + 127) << 23); }

/// The constants of exp_fixed, shared with its SIMD twins (reference/simd/exp_avx*.hpp).
namespace exp_constants {
inline constexpr float overflow = 88.72283935546875f;     ///< larger x: +inf
inline constexpr float underflow = -103.97283172607422f;  ///< smaller x: 0
inline constexpr float log2e = 1.44269502162933349609375f;
inline constexpr float minus_ln2_hi = -0.693145751953125f;  ///< n * ln2_hi is exact
inline constexpr float minus_ln2_lo = -1.428606765330187045e-06f;
/// exp(r) on |r| <= ln2/2: Taylor-like minimax coefficients, highest degree first (Horner).
inline constexpr float c6 = 1.9875691500e-4f, c5 = 1.3981999507e-3f, c4 = 8.3334519073e-3f, c3 = 4.1665795894e-2f, c2 = 1.6666665459e-1f,
                       c1 = 5.0000001201e-1f;
}  // namespace exp_constants

/// e^x, within 2 ulp of the exact value for every float x (subnormal results included).
PKV_HD float exp_fixed(float x) {
    namespace k = exp_constants;
    if (x != x) return x;
    if (x > k::overflow) return bits_float(0x7f800000u);
    if (x < k::underflow) return 0.0f;
    // n = round(x / ln2); r = x - n ln2 with ln2 split so n * ln2_hi is exact.
    const float t = x * k::log2e;
    const float n = static_cast<float>(static_cast<int>(t + (t >= 0.0f ? 0.5f : -0.5f)));
    float r = fma_exact(n, k::minus_ln2_hi, x);
    r = fma_exact(n, k::minus_ln2_lo, r);
    float p = k::c6;
    p = fma_exact(p, r, k::c5);
    p = fma_exact(p, r, k::c4);
    p = fma_exact(p, r, k::c3);
    p = fma_exact(p, r, k::c2);
    p = fma_exact(p, r, k::c1);
    p = fma_exact(p * r, r, r);
    p = p + 1.0f;
    const int ni = static_cast<int>(n);
    if (ni >= -126) return ni > 127 ? p * exp2_int(127) * exp2_int(ni - 127) : p * exp2_int(ni);
    return (p * exp2_int(ni + 64)) * exp2_int(-64);  // subnormal result: one rounding, at the end
}

}  // namespace patternkv::core
