#pragma once
// Warp-wide int8 matrix products on tensor cores: PTX mma.sync.aligned.m16n8k32 with unsigned 8-bit
// A (codes), signed or unsigned 8-bit B (multipliers) and int32 accumulators, as NVIDIA GPUs from
// sm_80 (Ampere, Hopper) run them. The integer products are exact, so a sum computed this way has the
// bits of the same sum computed by byte dot products or one product at a time.
//
// The fragments (PTX ISA, "Matrix Fragments for mma.m16n8k32", .u8/.s8): lane l of the warp holds,
// with g = l / 4 and c = l % 4,
//   A (16 x 32, row-major), four words of four bytes (byte i is the lower column index + i):
//       a[0] = A[g][4c ..],  a[1] = A[g + 8][4c ..],  a[2] = A[g][16 + 4c ..],  a[3] = A[g + 8][16 + 4c ..]
//   B (32 x 8), two words:  b[0] = B[4c ..][g],  b[1] = B[16 + 4c ..][g]
//   C, D (16 x 8, int32):   d[0] = D[g][2c],  d[1] = D[g][2c + 1],  d[2] = D[g + 8][2c],  d[3] = D[g + 8][2c + 1]
// The emulation computes D from every lane's fragments with exactly these maps, so the kernels'
// packing is checked against them on the CPU; a device run checks the maps themselves.
//
// AMD's matrix cores (MFMA) have other shapes and fragment maps, and NVIDIA targets before sm_80
// lack this shape: there the callers sum byte dot products instead (int8_mma is false).
#include <cstdint>

#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS::gpu {

/// Whether the code being compiled can issue mma_m16n8k32: CUDA device code for sm_80 or later, and
/// the emulation (uniform over a kernel, so a branch on it is decided at compile time).
#if defined(PKV_GPU_EMULATION) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
inline constexpr bool int8_mma = true;
#else
inline constexpr bool int8_mma = false;
#endif

/// d += A B for the warp's fragments (layout above): A unsigned bytes, B signed bytes when
/// `b_signed`, else unsigned. Every lane of the warp must call it together (int8_mma only).
template <bool b_signed>
__device__ inline void mma_m16n8k32(std::int32_t (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
#if defined(PKV_GPU_EMULATION)
    const std::uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
    std::uint32_t lanes[32 * 6];
    pkv_emulated_block::running_block->warp_exchange(threadIdx.x, mine, 6, lanes);
    const auto byte = [&](int lane, int word, int k) { return lanes[lane * 6 + word] >> (8 * (k % 4)) & 0xFFu; };
    const auto a_at = [&](int row, int k) { return static_cast<std::int32_t>(byte(row % 8 * 4 + k % 16 / 4, row / 8 + 2 * (k / 16), k)); };
    const auto b_at = [&](int k, int col) {
        const std::uint32_t v = byte(col * 4 + k % 16 / 4, 4 + k / 16, k);
        return b_signed ? static_cast<std::int32_t>(static_cast<std::int8_t>(v)) : static_cast<std::int32_t>(v);
    };
    const int g = static_cast<int>(threadIdx.x % 32) / 4, c = static_cast<int>(threadIdx.x % 4);
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * c + i % 2;
        std::uint32_t sum = static_cast<std::uint32_t>(d[i]);  // int32 accumulation wraps, as the device's does
        for (int k = 0; k < 32; ++k) sum += static_cast<std::uint32_t>(a_at(row, k) * b_at(k, col));
        d[i] = static_cast<std::int32_t>(sum);
    }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (b_signed)
        asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    (void)d, (void)a, (void)b0, (void)b1;  // not reached: callers branch on int8_mma
#endif
}

}  // namespace patternkv::PKV_GPU_NS::gpu
