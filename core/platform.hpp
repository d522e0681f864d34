#pragma once
// Portability macros of the kernel template layer. Every core function is callable from host code
// and from CUDA / HIP device code; nothing here allocates, throws or calls libm transcendentals.

#include <bit>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
// Spelled without __forceinline__: that macro comes from the CUDA/HIP runtime headers, which hipcc
// does not include before a core header.
#define PKV_HD __host__ __device__ inline __attribute__((always_inline))
#else
#define PKV_HD inline
#endif

namespace patternkv::core {

/// Logical lanes of every fixed-order reduction. It equals an NVIDIA warp but is a property of the
/// math, not of the hardware: AMD wavefronts (64) and CPU SIMD map onto the same 32 logical lanes.
inline constexpr int reduction_lanes = 32;

/// Largest head_dim supported by the core templates (bounds on-stack arrays).
inline constexpr int max_head_dim = 512;

/// Largest residual_length (page size in tokens).
inline constexpr int max_page_tokens = 4096;

/// History tokens (at least one whole page) handled by one split of decode attention; splits are
/// combined in index order, window last (attention.hpp).
inline constexpr int split_target_tokens = 1024;

/// Largest |value| accepted into a cache: keeps residuals x - m and group ranges inside fp16's range.
inline constexpr float max_abs_input = 16384.0f;

/// Bound on the pattern bank (pattern indices are stored as one byte).
inline constexpr int max_bank_patterns = 256;

/// Index of the lowest set bit of w (w != 0).
PKV_HD int lowest_bit(std::uint32_t w) {
#if defined(__HIP_DEVICE_COMPILE__)
    return __builtin_ctz(w);  // clang builtin: no HIP header needed
#elif defined(__CUDA_ARCH__)
    return __ffs(static_cast<int>(w)) - 1;
#else
    return std::countr_zero(w);
#endif
}

PKV_HD constexpr int pages_per_split(int page_tokens) { return page_tokens >= split_target_tokens ? 1 : split_target_tokens / page_tokens; }

}  // namespace patternkv::core
