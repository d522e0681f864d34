#pragma once
// What cooperative kernels (launched with gpu::launch_with_barriers) share: dynamic shared memory
// and the folds of core/reduce.hpp's canonical order over a warp's 32 lanes.
//
// A "warp" here is 32 consecutive threads of a block, whatever the hardware's width: the canonical
// order folds 32 lanes, so HIP's shuffles run with width 32 (a 64-wide AMD wavefront holds two such
// groups) and blocks are a whole number of 32-thread groups. The butterfly over offsets 16 .. 1
// leaves every lane with the same bits as core::fold_lanes: after the step at offset w, lanes l and
// l ^ w hold fold_lanes' lane (l mod w), their operands only swapped (addition and max commute).
#include <cstdint>
#include <cstring>

#include "runtime.hpp"

namespace patternkv::PKV_GPU_NS::gpu {

inline constexpr unsigned warp_lanes = 32;  ///< core::reduction_lanes

/// The block's dynamic shared memory (the shared_bytes of its launch), 16-byte aligned.
template <class T>
__device__ T* dynamic_shared() {
#if defined(PKV_GPU_EMULATION)
    return reinterpret_cast<T*>(pkv_emulated_dynamic_shared);
#else
    extern __shared__ float4 pkv_dynamic_shared[];  // float4: 16-byte alignment
    return reinterpret_cast<T*>(pkv_dynamic_shared);
#endif
}

__device__ inline float fold_add(float a, float b) { return a + b; }
__device__ inline float fold_max(float a, float b) { return b > a ? b : a; }  // no NaN reaches a fold
__device__ inline std::int32_t fold_add_int(std::int32_t a, std::int32_t b) { return a + b; }

/// The butterfly fold of one value per lane over the 32 lanes of the calling thread's warp, with
/// `op` (fold_add, fold_max or fold_add_int); every lane of the warp must call it, and gets the total.
template <auto op, class T>
__device__ T lane_fold(T v) {
    static_assert(sizeof(T) == sizeof(std::uint32_t), "one 32-bit exchange slot per lane");
#if defined(PKV_GPU_EMULATION)
    // Each lane posts its value, the warp meets, each lane runs the device's butterfly on the 32
    // posted values.
    std::uint32_t word, posted[warp_lanes];
    std::memcpy(&word, &v, sizeof v);
    pkv_emulated_block::running_block->warp_exchange(threadIdx.x, &word, 1, posted);
    T lanes[warp_lanes];
    std::memcpy(lanes, posted, sizeof lanes);
    for (unsigned w = warp_lanes / 2; w >= 1; w /= 2) {
        T next[warp_lanes];
        for (unsigned l = 0; l < warp_lanes; ++l) next[l] = op(lanes[l], lanes[l ^ w]);
        std::memcpy(lanes, next, sizeof lanes);
    }
    return lanes[threadIdx.x % warp_lanes];
#else
    for (int w = warp_lanes / 2; w >= 1; w /= 2) {
#if defined(__HIP__)
        v = op(v, __shfl_xor(v, w, warp_lanes));
#else
        v = op(v, __shfl_xor_sync(0xffffffffu, v, w));
#endif
    }
    return v;
#endif
}

}  // namespace patternkv::PKV_GPU_NS::gpu
